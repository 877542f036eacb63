"""Real catalogs from the field, with sites added as an author would (tests/field_catalogs/README.md).

`catalog-pools check`, `open_catalog` and plain intake over each: counts per
status, no traceback, bounded time; with no network, remote entries are
"unreachable", never "missing". A local server that accepts and never answers
stands in for a dead host.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

import dask
import intake
import pytest
from dead_host import dead_host_server

from catalog_pools.catalog import open_catalog
from catalog_pools.cli import app as cli
from catalog_pools.cli.check import check_catalog, counts

FIELD = Path(__file__).parent / "field_catalogs"
#: catalog -> (entries, (OK, missing, unreachable, site-private, error)) with no network
EXPECTED = {
    "pangeo/intake-catalogs/master.yaml": (98, (0, 0, 90, 0, 8)),
    "ncar-lens/intake-catalogs/master.yaml": (254, (0, 0, 254, 0, 0)),
    "intake-xarray/examples/catalog.yml": (6, (0, 0, 6, 0, 0)),
    "intake-xarray/tests-data/catalog.yaml": (12, (2, 6, 2, 0, 2)),
    "intake-core/intake/catalog/tests/catalog1.yml": (11, (4, 1, 0, 0, 6)),
    "intake-core/intake/catalog/tests/catalog_alias.yml": (9, (5, 1, 0, 0, 3)),
    "intake-core/intake/catalog/tests/dot-nest.yaml": (6, (3, 0, 0, 0, 3)),
    "intake-core/intake/catalog/tests/multi_plugins.yaml": (8, (0, 5, 0, 0, 3)),
    "intake-core/intake/catalog/tests/catalog_hierarchy.yml": (4, (3, 0, 0, 0, 1)),
}
TIMEOUT = 1.0


def _network() -> bool:
    try:
        socket.create_connection(("s3.amazonaws.com", 443), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def offline() -> bool:
    return not _network()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_field_catalog(name: str, offline: bool, capsys: pytest.CaptureFixture[str]) -> None:
    path = FIELD / name
    start = time.monotonic()
    with dask.config.set({"catalog_pools.check.timeout": TIMEOUT}):
        code = cli.main(["check", str(path)])
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert all(line.startswith("ERROR: catalog ") for line in out.err.splitlines())  # no retry noise
    entries, per_status = EXPECTED[name]
    assert elapsed < 30
    assert code == (1 if per_status[4] else 0)
    results = check_catalog(str(path), timeout=TIMEOUT)
    got = counts(results)
    assert len(results) == entries
    assert got["error"] == per_status[4] and got["site-private"] == per_status[3]
    if offline:
        assert tuple(got.values()) == per_status
    for r in results:  # no remote URL called missing without a server saying so
        if r.status == "missing":
            assert "does not exist" in r.reason or "no file matches" in r.reason or "server" in r.reason


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_open_with_catalog_pools_and_plain_intake(name: str) -> None:
    ours = open_catalog(FIELD / name)  # opens every field catalog
    try:
        plain = intake.open_catalog(str(FIELD / name))
    except Exception as exc:  # intake fails the whole file for one entry; we report that entry
        # catalog1.yml: `plugins:` names intake's test modules; catalog_hierarchy.yml: a duplicate key
        assert name.endswith(("catalog1.yml", "catalog_hierarchy.yml")), exc
        return
    assert sorted(ours) == sorted(plain)


def test_ncar_against_a_dead_host(tmp_path: Path) -> None:
    copy = tmp_path / "ncar"
    shutil.copytree(FIELD / "ncar-lens", copy)
    with dead_host_server() as url:
        for f in copy.rglob("*.yaml"):
            text = f.read_text().replace("s3://ncar-cesm-lens/", f"{url}/ncar-cesm-lens/")
            f.write_text(text.replace("      storage_options:\n        anon: True\n", ""))
        start = time.monotonic()
        results = check_catalog(str(copy / "intake-catalogs/master.yaml"), timeout=TIMEOUT)
        elapsed = time.monotonic() - start
    assert counts(results)["unreachable"] == 254 and len(results) == 254
    assert elapsed < 10 * TIMEOUT  # the dead host is asked once, then remembered
    assert all("127.0.0.1" in r.reason for r in results)


def test_offline_intake_xarray_entries_open(tmp_path: Path) -> None:
    cat = open_catalog(FIELD / "intake-xarray/tests-data/catalog.yaml")
    assert cat.xarray_source.site == "local" and cat.xarray_source.to_dask().sizes
    assert cat.blank.to_dask().sizes


def test_whole_catalog_deadline(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(dead_host_server()) for _ in range(3)]
        path = tmp_path / "cat.yaml"
        lines = [f"  e{i}: {{driver: zarr, args: {{urlpath: '{u}/x.zarr'}}}}" for i, u in enumerate(urls)]
        path.write_text("metadata: {sites: {x: {roots: ['http://']}}}\nsources:\n" + "\n".join(lines))
        start = time.monotonic()
        with dask.config.set({"catalog_pools.check.deadline": 0.5}):
            results = check_catalog(str(path), timeout=5.0)
        elapsed = time.monotonic() - start
    assert elapsed < 3  # not 3 x 5 s
    assert [r.status for r in results] == ["unreachable"] * 3
    assert all("deadline" in r.reason for r in results[1:])
