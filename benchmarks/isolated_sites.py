"""The workflow benchmark's data in files only their site can read (root only).

:func:`write_site_stores` makes one Unix user per site
(:func:`catalog_pools.cluster.isolation.ensure_site_user`), writes each named
array as a zarr store (one chunk per dask chunk) into its site's private
directory (:func:`~catalog_pools.cluster.isolation.make_site_dir`: mode 0700,
owned by the site's user), and a world-readable copy of the same stores for
runs with no pins. :meth:`SiteStores.open` opens them lazily, each under
``pool(site)`` when pooled, so a load run on another site's worker fails with
``PermissionError``; :func:`check_isolation` verifies both on the running cluster.

Site users must import this repository's code: :func:`importable_pythonpath`
gives the repository itself when they can read it, else a readable copy of its
packages. They must also run this interpreter
(:func:`~catalog_pools.cluster.isolation.isolation_available` checks that).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import xarray as xr

from catalog_pools import pool
from catalog_pools.cluster.isolation import (
    ensure_site_user,
    isolation_available,
    make_site_dir,
    open_to_site_users,
)

REPO = Path(__file__).resolve().parents[1]
#: The packages cluster processes import: the engine, and the workflows' own functions.
PACKAGES = ("catalog_pools", "benchmarks")
_PROBE = "import catalog_pools, benchmarks.workloads; print(catalog_pools.__file__)"


@dataclass
class SiteStores:
    """Where the data are: ``private[name]`` in its site's directory, ``shared[name]`` for all."""

    homes: dict[str, str]
    private: dict[str, Path]
    shared: dict[str, Path]
    users: dict[str, str]
    pythonpath: str = ""

    def open(self, pooled: bool) -> dict[str, xr.DataArray]:
        """Every array, lazily: its private store under ``pool(site)`` if ``pooled``, else the shared copy."""
        out = {}
        for name, site in self.homes.items():
            if pooled:
                with pool(site):
                    out[name] = _open(self.private[name], name)
            else:
                out[name] = _open(self.shared[name], name)
        return out

    def describe(self) -> str:
        users = ", ".join(f"{site}: {user}" for site, user in self.users.items())
        return (
            f"yes: each site's workers run as its own Unix user ({users}) and pooled runs read each "
            "site's data from zarr stores in a mode-0700 directory only that user can read; "
            "unpooled runs read a world-readable copy of the same stores"
        )


def _open(path: Path, name: str) -> xr.DataArray:
    # chunks={}: the stores' own chunks (one time step each); inline_array: one task per chunk.
    ds = xr.open_dataset(path, engine="zarr", chunks={}, consolidated=False, inline_array=True)
    return ds[name]


def _write(array: xr.DataArray, path: Path) -> None:
    with dask.config.set(scheduler="sync"):
        array.to_dataset().to_zarr(path, mode="w-", consolidated=False)


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for parent, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            shutil.chown(Path(parent) / entry, user, user)


def write_site_stores(
    root: Path, data: Mapping[str, xr.DataArray], homes: Mapping[str, str], sites: list[str]
) -> SiteStores:
    """Write each ``data[name]`` into ``root/<homes[name]>`` (private) and ``root/shared``.

    ``root`` must be new or empty and enterable by other users (e.g. under
    ``/tmp``); the caller removes it. Needs root.
    """
    root.mkdir(parents=True, exist_ok=True)
    open_to_site_users(root.parent, f"reach {root}")
    users = {site: ensure_site_user(site) for site in sites}
    site_dirs = {site: make_site_dir(root, site, users[site]) for site in sites}
    shared_dir = root / "shared"
    shared_dir.mkdir(mode=0o755)
    shared_dir.chmod(0o755)
    private, shared = {}, {}
    for name, site in homes.items():
        private[name] = site_dirs[site] / f"{name}.zarr"
        shared[name] = shared_dir / f"{name}.zarr"
        _write(data[name], private[name])
        shutil.copytree(private[name], shared[name])
        _open_tree(shared[name])
        _chown_tree(private[name], users[site])
    return SiteStores(dict(homes), private, shared, users)


def _open_tree(path: Path) -> None:
    """Directories 0755, files 0644 (copies keep the source's modes)."""
    path.chmod(0o755)
    for parent, dirs, files in os.walk(path):
        for d in dirs:
            (Path(parent) / d).chmod(0o755)
        for f in files:
            (Path(parent) / f).chmod(0o644)


def _run_as(user: str, python: str, code: str, pythonpath: Path = REPO) -> subprocess.CompletedProcess[str]:
    cmd = ["runuser", "-u", user, "--", python, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)


def _imports_from(user: str, pythonpath: Path) -> bool:
    """Whether ``user`` imports this repository's packages from ``pythonpath`` (not another install)."""
    proc = _run_as(user, sys.executable, _PROBE, pythonpath)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode == 0 and bool(lines) and Path(lines[-1]).is_relative_to(pythonpath)


def importable_pythonpath(user: str, scratch: Path) -> str:
    """A ``PYTHONPATH`` from which ``user`` imports this repository's code.

    The repository itself when the user can read it, else a world-readable
    copy of :data:`PACKAGES` in ``scratch`` (which must not exist).

    Raises
    ------
    PermissionError
        If the user cannot import even the copy.
    """
    if _imports_from(user, REPO):
        return str(REPO)
    skip = shutil.ignore_patterns("__pycache__", "results")
    for package in PACKAGES:
        shutil.copytree(REPO / package, scratch / package, ignore=skip)
    _open_tree(scratch)
    if not _imports_from(user, scratch):
        raise PermissionError(f"site user {user!r} cannot import {', '.join(PACKAGES)} from {scratch}")
    return str(scratch)


def prepare_sites(
    directory: Path, data: Mapping[str, xr.DataArray], homes: Mapping[str, str], disabled: bool = False
) -> tuple[SiteStores | None, str]:
    """The sites' stores and ``PYTHONPATH`` under ``directory`` if sites can be isolated; what was done.

    ``(None, "no (<reason>)...")``, after printing the reason, when ``disabled``
    (``--no-isolation``) or :func:`~catalog_pools.cluster.isolation.isolation_available`
    says no: the caller then makes the data in memory.
    """
    sites = list(dict.fromkeys(homes.values()))
    ok, reason = (False, "--no-isolation given") if disabled else isolation_available(sites[0])
    if not ok:
        print(
            f"sites are not isolated ({reason}): data made in memory, workers run as the caller", flush=True
        )
        return None, f"no ({reason}); data made in memory by tasks pinned to their site"
    stores = write_site_stores(directory / "sites", data, homes, sites)
    stores.pythonpath = importable_pythonpath(stores.users[sites[0]], directory / "pythonpath")
    return stores, stores.describe()


def _whoami() -> str:
    return getpass.getuser()


def check_isolation(client: Any, cluster: Any, stores: SiteStores) -> None:
    """Raise unless every worker runs as its site's user and a load on the wrong site is refused."""
    for address, user in client.run(_whoami).items():
        want = stores.users[cluster.site_of(address)]
        if user != want:
            raise RuntimeError(f"worker {address} runs as {user!r}, not its site's user {want!r}")
    name, home = next(iter(stores.homes.items()))
    other = next(s for s in stores.users if s != home)
    with pool(other):
        misplaced = _open(stores.private[name], name)
    try:
        dask.compute(misplaced.isel({d: 0 for d in misplaced.dims}), scheduler=client.get)
    except PermissionError:
        return
    raise RuntimeError(f"a worker of {other} read {stores.private[name]}: sites are not isolated")
