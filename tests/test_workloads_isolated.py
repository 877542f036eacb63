"""The workflow benchmark (benchmarks/workloads.py) with sites isolated as Unix users.

Root only: each site's data are zarr stores in a mode-0700 directory owned by
the site's user (``cp-<site>``); the cluster test runs each site's two workers
as that user, so a load placed on the wrong site would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.isolated_sites import SiteStores, importable_pythonpath, prepare_sites, write_site_stores
from benchmarks.workloads import HOMES, A, B, C, make_data, run_workflows, write
from catalog_pools.cluster.isolation import isolation_available

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="site users and their private directories need root")
#: Workflows whose pooled bytes are exactly their smallest possible (F, F/8, Y*8).
EXACT = ["std", "where", "weighted"]


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Path, SiteStores]]:
    # Under /tmp, not pytest's mode-700 tmp_path: the site users must reach their directories.
    directory = Path(tempfile.mkdtemp(prefix="workloads-isolated-"))
    try:
        yield directory, write_site_stores(directory / "sites", make_data(pooled=False), HOMES, [A, B, C])
    finally:
        shutil.rmtree(directory)


def _cat(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)], capture_output=True, text=True)


@ROOT_ONLY
def test_a_site_user_cannot_read_another_sites_data(stores: tuple[Path, SiteStores]) -> None:
    _, site_stores = stores
    for name, home in HOMES.items():
        private = site_stores.private[name]
        owner = site_stores.users[home]
        assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
        assert private.parent.owner() == owner and private.owner() == owner
        for site, user in site_stores.users.items():
            got = _cat(user, private / "zarr.json")
            if site == home:
                assert got.returncode == 0 and '"zarr_format"' in got.stdout, (name, user, got.stderr)
            else:
                assert got.returncode != 0 and "Permission denied" in got.stderr, (name, user)
            # The unpooled runs' copy: the same metadata, readable by every site.
            shared = _cat(user, site_stores.shared[name] / "zarr.json")
            assert shared.returncode == 0 and shared.stdout == (private / "zarr.json").read_text()


@ROOT_ONLY
@pytest.mark.slow
def test_isolated_workflows_cross_their_minimum(stores: tuple[Path, SiteStores]) -> None:
    ok, reason = isolation_available(A)
    if not ok:
        pytest.skip(f"sites cannot be isolated on this machine: {reason}")
    directory, site_stores = stores
    site_stores.pythonpath = importable_pythonpath(site_stores.users[A], directory / "pythonpath")
    # run_workflows checks first that every worker runs as its site's user and
    # that a load pinned to the wrong site fails with PermissionError.
    rows = run_workflows(2, EXACT, directory, site_stores)
    assert [r.workflow for r in rows] == EXACT
    for row in rows:
        assert row.values_equal, row
        assert row.pooled_bytes == row.minimum, row
        assert row.unpooled_bytes > row.minimum, row


def test_no_isolation_is_said_in_the_results(tmp_path: Path) -> None:
    stores, isolation = prepare_sites(tmp_path, make_data(pooled=False), HOMES, disabled=True)
    assert stores is None and isolation.startswith("no (--no-isolation given)")
    write(tmp_path / "out", 2, [], [], isolation)
    assert f"Sites isolated as Unix users: {isolation}" in (tmp_path / "out.md").read_text()
    payload = json.loads((tmp_path / "out.json").read_text())
    assert payload["sites_isolated"] is False and payload["isolation"] == isolation
