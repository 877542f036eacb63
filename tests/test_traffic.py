"""Traffic report: exact bytes between sites, tasks per site, reads, picture."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from dask.sizeof import sizeof
from distributed import Client

from catalog_pools import pool
from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX, grid, make_data
from catalog_pools.traffic.logs import since
from catalog_pools.traffic.reads import counting_active
from catalog_pools.traffic.report import CLIENT, traffic

N = 100_000  # float64 elements: 800_000 bytes
# Task functions come from numpy: the workers cannot import this test module.
make, consume = np.arange, np.sum


def site_workers(client: Client) -> dict[str, list[str]]:
    from catalog_pools import worker_sites

    out: dict[str, list[str]] = collections.defaultdict(list)
    for addr, site in sorted(worker_sites(client).items()):
        out[site].append(addr)
    return dict(out)


def test_cross_site_bytes_exact(client: Client) -> None:
    with traffic(client) as t:
        a = client.submit(make, N, dtype="float64", resources={"pool-eumetsat": 0}, pure=False)
        b = client.submit(consume, a, resources={"pool-ecmwf": 0}, pure=False)
        result = b.result()
    nbytes = make(N, dtype="float64").nbytes
    assert nbytes == 800_000
    # The logs count dask's sizeof of the data (for numpy, arr.nbytes), not
    # pickled bytes: the figure is exact.
    assert t.by_site_pair == {
        ("eumetsat", "ecmwf"): nbytes,
        ("ecmwf", CLIENT): sizeof(result),
    }
    assert t.cross_site_bytes == nbytes
    assert t.client_bytes == sizeof(result)
    assert t.within_site_bytes == 0
    assert t.tasks_by_site == {"ecmwf": 1, "eumetsat": 1}
    assert t.task_sites == {a.key: "eumetsat", b.key: "ecmwf"}
    assert t.complete
    assert t.wall_time > 0
    [cross] = [tr for tr in t.transfers if tr.dst != CLIENT]
    assert (cross.src, cross.dst, cross.nbytes, cross.n_keys) == ("eumetsat", "ecmwf", nbytes, 1)
    assert cross.src_worker in site_workers(client)["eumetsat"]
    assert cross.dst_worker in site_workers(client)["ecmwf"]


def test_within_site_transfer_is_not_cross_site(client: Client) -> None:
    w1, w2 = site_workers(client)["ecmwf"][:2]
    with traffic(client) as t:
        a = client.submit(make, N, dtype="float64", workers=[w1], allow_other_workers=False, pure=False)
        b = client.submit(consume, a, workers=[w2], allow_other_workers=False, pure=False)
        b.result()
    assert t.by_site_pair[("ecmwf", "ecmwf")] == 800_000
    assert t.cross_site_bytes == 0
    assert t.within_site_bytes == 800_000
    assert t.tasks_by_site["ecmwf"] == 2 and t.tasks_by_site["eumetsat"] == 0


def test_only_new_log_entries_count(client: Client) -> None:
    a = client.submit(make, N, dtype="float64", resources={"pool-eumetsat": 0}, pure=False)
    client.submit(consume, a, resources={"pool-ecmwf": 0}, pure=False).result()
    with traffic(client) as t:
        pass
    assert t.by_site_pair == {}
    assert t.tasks_by_site == {"ecmwf": 0, "eumetsat": 0}
    assert t.cross_site_bytes == 0


def test_marker_logic_on_a_rotated_log() -> None:
    def entry(i: int) -> dict[str, Any]:
        return {"start": float(i), "stop": float(i), "who": "w", "total": i}

    log = collections.deque([entry(i) for i in range(3)], maxlen=3)
    mark = (1.0, 1.0, "w", 1)
    assert since(log, mark) == ([entry(2)], False)
    log.extend([entry(3), entry(4)])  # the marker rotates out: entries may be lost
    new, lost = since(log, mark)
    assert [e["total"] for e in new] == [2, 3, 4] and lost
    assert since(collections.deque([entry(0)], maxlen=3), None) == ([entry(0)], False)


@pytest.fixture(scope="module")
def site_data(sites_env: Any) -> Path:
    root = sites_env.data_dirs["ecmwf"].parent
    assert sites_env.data_dirs["eumetsat"] == root / "eumetsat"
    make_data(root, scale="small", progress=False)
    return root


def test_xarray_compute_reads_in_site_and_moves_little(
    client: Client, site_data: Path, tmp_path: Path
) -> None:
    with pool("ecmwf"):
        pred = xr.open_zarr(site_data / "ecmwf" / "predictions.zarr")
    with pool("eumetsat"):
        obs = xr.open_zarr(site_data / "eumetsat" / "observations.zarr")
    diff = pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX)
    diff = diff - obs.air_pressure
    with traffic(client) as t:
        result = diff.compute()

    g = grid("small")
    field = g.nlat * g.nlon * 4  # one 2-D field: the mean, or the observations
    # Each site read exactly its own data, once: the whole ensemble (one chunk
    # per member, all heights; the slice comes after the mean) and the observations.
    assert t.bytes_read_by_site == {"ecmwf": g.prediction_nbytes, "eumetsat": field}
    # One 2-D field had to meet the other: at least that crossed, and not a
    # single prediction chunk (a member: 33 heights of the field).
    member_chunk = 33 * g.lat_chunk * g.nlon * 4
    assert field <= t.cross_site_bytes < member_chunk
    assert t.tasks_by_site["ecmwf"] > 0 and t.tasks_by_site["eumetsat"] > 0
    assert set(t.task_sites.values()) == {"ecmwf", "eumetsat"}
    assert t.client_bytes >= result.nbytes

    text = t.summary()
    assert "ecmwf" in text and "eumetsat" in text
    assert f"({t.cross_site_bytes} B)" in text
    png = t.plot(tmp_path / "traffic.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_getters_restored_and_report_filled_on_error(client: Client) -> None:
    with pytest.raises(ZeroDivisionError), traffic(client) as t:
        # The read-counting worker plugin is set up on every worker for the block.
        assert all(client.run(counting_active).values())
        client.submit(make, 10, resources={"pool-ecmwf": 0}, pure=False).result()
        1 / 0  # noqa: B018
    # Filled in and cleaned up even though the block failed.
    assert not any(client.run(counting_active).values())
    assert t.tasks_by_site == {"ecmwf": 1, "eumetsat": 0}
    assert t.wall_time > 0
