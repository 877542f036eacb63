"""Replicas: one dataset at several sites, read where it moves least, served while a site is down.

Cluster tests run on real processes; with root, each site's workers run as
their own Unix user and a site's copy lives in a mode-700 directory, so a load
reading another site's copy fails with ``PermissionError``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from catalog_data import observations, predictions, write, write_catalog
from distributed import Client

import catalog_pools
from catalog_pools import pool
from catalog_pools.catalog import load_from_catalog, open_catalog
from catalog_pools.catalog.replicas import ReplicaStore
from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.cluster.isolation import ensure_site_user, isolation_available, make_site_dir
from catalog_pools.engine.replicas import choose_replicas, replica_sites
from catalog_pools.engine.sites import REPLICAS
from catalog_pools.errors import CatalogError, ForeignSiteError, SiteUnavailableError
from catalog_pools.traffic import traffic

ENV = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "50"}


def replicated_catalog(
    path: Path, primary: Path, replica: Path, obs: Path | None = None, **roots: Path
) -> Path:
    """predictions at ECMWF (primary) and EUMETSAT (replica); observations at EUMETSAT."""
    sites = "".join(f'\n            {s}: {{roots: ["{r}"]}}' for s, r in roots.items()) or " {}"
    obs_entry = (
        f"""
          observations:
            driver: site_zarr
            args: {{urlpath: "{obs}", chunks: {{}}}}
            metadata: {{site: eumetsat}}"""
        if obs
        else ""
    )
    return write_catalog(
        path,
        f"""
        metadata:
          sites:{sites}
        sources:
          predictions:
            driver: site_zarr
            args: {{urlpath: "{primary}", chunks: {{}}}}
            metadata:
              site: ecmwf
              replicas:
                eumetsat: {{urlpath: "{replica}"}}{obs_entry}
        """,
    )


def _join(cat: Any) -> Any:
    pred, obs = cat.predictions.to_dask(), cat.observations.to_dask()
    return pred.air_pressure.mean("realization").isel(height=1) - obs.air_pressure


def _expected_join() -> xr.DataArray:
    return predictions().air_pressure.mean("realization").isel(height=1) - observations().air_pressure


# ------------------------------------------------------------------ catalog form
BAD = [
    ("[eumetsat]", "must map each other site"),
    (
        "{eumetsat: {storage_options: {anon: true}}}",
        r"replicas.eumetsat must be a mapping with the copy's `urlpath:`",
    ),
    ('{ecmwf: {urlpath: "/elsewhere.zarr"}}', "names the primary site 'ecmwf'"),
    ('{eumetsat: {urlpath: "/elsewhere.zarr", chunks: {}}}', r"overrides \['chunks'\]"),
    ('{"bad site": {urlpath: "/elsewhere.zarr"}}', "invalid site name 'bad site'"),
]


@pytest.mark.parametrize(("replicas", "match"), BAD)
def test_bad_replicas_name_file_and_entry(tmp_path: Path, replicas: str, match: str) -> None:
    path = write(predictions(), tmp_path / "p.zarr", "zarr3")
    cat_file = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          predictions:
            driver: site_zarr
            args: {{urlpath: "{path}"}}
            metadata: {{site: ecmwf, replicas: {replicas}}}
        """,
    )
    with pytest.raises(CatalogError, match=match) as info:
        open_catalog(cat_file).predictions.to_dask()
    assert info.value.file == str(cat_file) and info.value.entry == "predictions"


def test_replica_of_another_format_or_under_another_sites_root(tmp_path: Path) -> None:
    pred = write(predictions(), tmp_path / "ecmwf" / "p.nc", "netcdf4")
    cat_file = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites:
            ecmwf: {{roots: ["{tmp_path / "ecmwf"}"]}}
            eumetsat: {{roots: ["{tmp_path / "eumetsat"}"]}}
        sources:
          netcdf:
            driver: site_netcdf
            args: {{urlpath: "{pred}"}}
            metadata: {{site: ecmwf, replicas: {{eumetsat: {{urlpath: "{tmp_path / "eumetsat" / "p.nc"}"}}}}}}
          misplaced:
            driver: site_zarr
            args: {{urlpath: "{tmp_path / "ecmwf" / "p.zarr"}"}}
            metadata: {{site: ecmwf, replicas: {{eumetsat: {{urlpath: "{tmp_path / "ecmwf" / "q.zarr"}"}}}}}}
        """,
    )
    cat = open_catalog(cat_file)
    with pytest.raises(CatalogError, match=r"site_zarr .* only, not site_netcdf"):
        cat.netcdf.to_dask()
    with pytest.raises(
        CatalogError, match=r"replicas\.eumetsat: .*q\.zarr lies under a root of site 'ecmwf'"
    ):
        cat.misplaced.to_dask()


def test_opened_from_the_readable_copy_with_every_replica_site(tmp_path: Path) -> None:
    """The primary copy is missing here: metadata and values come from the replica."""
    replica = write(predictions(), tmp_path / "eumetsat" / "p.zarr", "zarr3")
    cat_file = replicated_catalog(tmp_path / "cat.yaml", tmp_path / "ecmwf" / "p.zarr", replica)
    src = open_catalog(cat_file).predictions
    ds = src.to_dask()
    assert catalog_pools.pool_of(ds) == "ecmwf"  # the primary, until a computation chooses
    assert catalog_pools.replicas_of(ds.air_pressure.mean()) == ("ecmwf", "eumetsat")
    assert set(replica_sites(ds.air_pressure).values()) == {("ecmwf", "eumetsat")}
    assert src.describe()["replicas"] == {
        "ecmwf": str(tmp_path / "ecmwf" / "p.zarr"),
        "eumetsat": str(replica),
    }
    xr.testing.assert_equal(ds.compute(), predictions())
    # found from either copy's path
    for path in (replica, tmp_path / "ecmwf" / "p.zarr"):
        found = load_from_catalog(path, cat_file)
        assert set(replica_sites(found.air_pressure).values()) == {("ecmwf", "eumetsat")}


# ------------------------------------------------------------------ placement (optimizer)
def _replicated(n: int) -> Any:
    with pool("ecmwf"), dask.annotate(**{REPLICAS: ("ecmwf", "eumetsat")}):
        return da.ones(n, chunks=10)


def _sites_of(hlg: Any, array: Any) -> set[str]:
    return {hlg.layers[name].annotations["pool"] for name in replica_sites(array)}


def test_replica_site_is_where_the_other_inputs_are() -> None:
    a = _replicated(1000)
    with pool("eumetsat"):
        b = da.ones(10, chunks=10)
    assert _sites_of(choose_replicas((a.sum() + b.sum()).__dask_graph__()), a) == {"eumetsat"}
    # alone, or with equal bytes on both sides: the primary
    assert _sites_of(choose_replicas(a.sum().__dask_graph__()), a) == {"ecmwf"}
    with pool("ecmwf"):
        c = da.ones(10, chunks=10)
    assert _sites_of(choose_replicas((a.sum() + b.sum() + c.sum()).__dask_graph__()), a) == {"ecmwf"}


# ------------------------------------------------------------------ real processes
def _site_dirs(root: Path, sites: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Per-site data directories: private to the site's Unix user when isolation is available."""
    isolated, _ = isolation_available(sites[0])
    users = {s: ensure_site_user(s) for s in sites} if isolated else {}
    dirs = {}
    for site in sites:
        if isolated:
            dirs[site] = make_site_dir(root, site, users[site])
        else:
            dirs[site] = root / site
            dirs[site].mkdir(parents=True)
    return dirs, users


@pytest.fixture
def shared_replicas(isolated_env: Any) -> Iterator[Path]:
    """A replicated catalog on the session cluster's isolated site directories."""
    sub = f"replica-tests-{uuid.uuid4().hex[:8]}"
    ecmwf, eumetsat = isolated_env.data_dirs["ecmwf"] / sub, isolated_env.data_dirs["eumetsat"] / sub
    cat_dir = Path(tempfile.mkdtemp(prefix="catalog-pools-replicas-", dir="/tmp"))
    try:
        yield replicated_catalog(
            cat_dir / "cat.yaml",
            write(predictions(), ecmwf / "predictions.zarr", "zarr3"),
            write(predictions(), eumetsat / "predictions.zarr", "zarr3"),
            write(observations(), eumetsat / "observations.zarr", "zarr2"),
            ecmwf=isolated_env.data_dirs["ecmwf"],
            eumetsat=isolated_env.data_dirs["eumetsat"],
        )
    finally:
        for d in (cat_dir, ecmwf, eumetsat):
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.root
def test_join_runs_at_the_replica_site_and_only_the_result_moves(
    isolated_env: Any, client: Any, shared_replicas: Path
) -> None:
    cat = open_catalog(shared_replicas)
    diff = _join(cat)
    with traffic(client) as report:
        result = diff.compute()
    xr.testing.assert_allclose(result, _expected_join(), rtol=1e-6)
    assert report.cross_site_bytes == 0
    assert report.client_bytes == result.nbytes
    assert report.tasks_by_site["ecmwf"] == 0
    assert report.bytes_read_by_site == {"ecmwf": 0, "eumetsat": report.bytes_read_by_site["eumetsat"]}
    assert report.bytes_read_by_site["eumetsat"] >= observations().air_pressure.nbytes

    # joined with persisted observations (outside the graph): the scheduler chooses the copy
    obs = cat.observations.to_dask().air_pressure.persist()
    pred = cat.predictions.to_dask().air_pressure
    with traffic(client) as persisted:
        result = (pred.mean("realization").isel(height=1) - obs).compute()
    xr.testing.assert_allclose(result, _expected_join(), rtol=1e-6)
    assert persisted.cross_site_bytes == 0 and persisted.tasks_by_site["ecmwf"] == 0
    del obs

    # a load on a worker of no replica site refuses to read: no copy is its site's
    copies = {"ewc": (str(shared_replicas), {}), "dwd": (str(shared_replicas), {})}
    future = client.submit(lambda: ReplicaStore(copies, "ewc").site(), pure=False)
    with pytest.raises(ForeignSiteError, match="pinned to site 'ewc'"):
        future.result(timeout=30)

    # the same dataset alone is read from the primary copy
    with traffic(client) as alone:
        mean = float(cat.predictions.to_dask().air_pressure.mean().compute())
    np.testing.assert_allclose(mean, float(predictions().air_pressure.mean()), rtol=1e-6)
    assert alone.bytes_read_by_site == {"ecmwf": predictions().air_pressure.nbytes, "eumetsat": 0}


def _slow() -> Any:
    # A closure, so it travels by value (workers cannot import this module).
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return x * 2.0

    return slow


def _series(n: int = 40) -> xr.Dataset:
    rng = np.random.default_rng(3)
    return xr.Dataset({"t": (("time", "x"), rng.standard_normal((n, 50)))})


@pytest.fixture
def own_sites() -> Iterator[tuple[Path, dict[str, Path], dict[str, str]]]:
    root = Path(tempfile.mkdtemp(prefix="catalog-pools-replicas-", dir="/tmp"))
    root.chmod(0o755)
    dirs, users = _site_dirs(root / "data", ["ecmwf", "eumetsat"])
    try:
        yield root, dirs, users
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _series_catalog(root: Path, dirs: dict[str, Path]) -> Path:
    enc = {"t": {"chunks": (1, 50)}}
    for d in dirs.values():
        _series().to_zarr(d / "t.zarr", mode="w", zarr_format=3, encoding=enc)
        for p in [d / "t.zarr", *(d / "t.zarr").rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    return replicated_catalog(
        root / "cat.yaml", dirs["ecmwf"] / "t.zarr", dirs["eumetsat"] / "t.zarr", **dirs
    )


@pytest.mark.slow
def test_every_primary_worker_killed_mid_compute(own_sites: Any) -> None:
    root, dirs, users = own_sites
    cat_file = _series_catalog(root, dirs)
    with (
        LocalSitesCluster(
            {"ecmwf": 1, "eumetsat": 1},
            users=users or None,
            env=ENV,
            respawn=False,
            local_directory=root / "c",
        ) as cluster,
        Client(cluster) as client,
    ):
        ds = open_catalog(cat_file).predictions.to_dask()
        x = ds.t.map_blocks(_slow()).sum("x")
        with traffic(client) as report:
            future = client.compute(x)
            time.sleep(1.5)
            cluster.kill_worker("ecmwf-0")
            result = future.result(timeout=120)
        xr.testing.assert_allclose(result, (_series().t * 2.0).sum("x"))
        assert report.tasks_by_site.get("ecmwf", 0) > 0, "premise: work had started at ECMWF"
        assert report.bytes_read_by_site is not None and report.bytes_read_by_site["eumetsat"] > 0


@pytest.mark.slow
def test_primary_site_absent_and_no_replica_site_left(own_sites: Any, tmp_path: Path) -> None:
    root, dirs, users = own_sites
    cat_file = _series_catalog(root, dirs)
    with (
        LocalSitesCluster(
            {"eumetsat": 1},
            users={"eumetsat": users["eumetsat"]} if users else None,
            local_directory=root / "c",
        ) as cluster,
        Client(cluster) as client,
    ):
        ds = open_catalog(cat_file).predictions.to_dask()
        with traffic(client) as report:
            result = ds.t.sum().compute()
        np.testing.assert_allclose(float(result), float(_series().t.sum()))
        assert report.tasks_by_site == {"eumetsat": report.tasks_by_site["eumetsat"]}

        # no site of the entry has a worker: fails, naming them all
        other = write(predictions(), tmp_path / "p.zarr", "zarr3")
        copy = write(predictions(), tmp_path / "q.zarr", "zarr3")
        nowhere = write_catalog(
            tmp_path / "nowhere.yaml",
            f"""
            sources:
              predictions:
                driver: site_zarr
                args: {{urlpath: "{other}"}}
                metadata: {{site: ecmwf, replicas: {{ewc: {{urlpath: "{copy}"}}}}}}
            """,
        )
        pred = open_catalog(nowhere).predictions.to_dask()
        with (
            dask.config.set({"catalog_pools.no-worker-timeout": "1s"}),
            pytest.raises(SiteUnavailableError, match="site 'ecmwf' nor of its replica sites 'ewc'"),
        ):
            pred.air_pressure.mean().compute()


def test_check_verifies_each_copy_and_their_structure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalog_pools import cli

    primary = write(predictions(), tmp_path / "ecmwf" / "p.zarr", "zarr3")
    same = write(predictions(), tmp_path / "eumetsat" / "p.zarr", "zarr3")
    roots = {"ecmwf": tmp_path / "ecmwf", "eumetsat": tmp_path / "eumetsat"}
    assert cli.main(["check", str(replicated_catalog(tmp_path / "ok.yaml", primary, same, **roots))]) == 0
    assert f"OK           predictions  (site_zarr)  site=ecmwf  {primary} {same}" in capsys.readouterr().out

    other = tmp_path / "eumetsat" / "other.zarr"
    predictions().to_zarr(other, zarr_format=3, encoding={"air_pressure": {"chunks": (1, 1, 8, 6)}})
    assert cli.main(["check", str(replicated_catalog(tmp_path / "bad.yaml", primary, other, **roots))]) == 1
    assert "the copies of ecmwf and eumetsat differ in air_pressure" in "".join(capsys.readouterr())

    gone = tmp_path / "eumetsat" / "gone.zarr"
    cli.main(["check", str(replicated_catalog(tmp_path / "gone.yaml", primary, gone, **roots))])
    assert f"copy of eumetsat: {gone} does not exist" in "".join(capsys.readouterr())


def test_demo_with_replicas_moves_only_the_result(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    cmd = [
        sys.executable,
        str(repo / "examples" / "demo.py"),
        "--scale",
        "small",
        "--replicas",
        "--no-progress",
    ]
    cmd += ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cross_site_bytes"] == 0
    assert report["tasks_by_site"]["ecmwf"] == 0 and report["bytes_read_by_site"]["ecmwf"] == 0
    assert report["client_bytes"] >= report["result_nbytes"] and report["max_abs_vs_plain_xarray"] == 0.0


def test_the_contract_form_with_an_object_store_mirror(tmp_path: Path) -> None:
    """The issue's catalog form, exactly: the mirror is never contacted while the primary is readable."""
    primary = write(predictions(), tmp_path / "ecmwf" / "predictions.zarr", "zarr3")
    cat_file = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          predictions:
            driver: site_zarr
            args: {{urlpath: "{primary}", chunks: {{}}}}
            metadata:
              site: ecmwf
              replicas:
                eumetsat: {{urlpath: "s3://eumetsat-mirror/predictions.zarr",
                           storage_options: {{anon: true}}}}
        """,
    )
    src = open_catalog(cat_file).predictions
    start = time.monotonic()
    ds = src.to_dask()
    assert catalog_pools.replicas_of(ds) == ("ecmwf", "eumetsat")
    assert src.describe()["replicas"]["eumetsat"] == "s3://eumetsat-mirror/predictions.zarr"
    xr.testing.assert_equal(ds.compute(scheduler="sync"), predictions())
    assert time.monotonic() - start < 10
