"""The pool engine on real clusters: scheduler and workers in their own processes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from distributed import Client, get_task_stream

import catalog_pools
from catalog_pools import ForeignSiteError, SiteUnavailableError, pool, worker_sites
from catalog_pools.traffic import traffic

LAT, LON = 24, 36


def forecast_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(1000.0, 5.0, size=(6, 4, LAT, LON)).astype("f4")


def observed_values() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(1000.0, 5.0, size=(LAT, LON)).astype("f4")


@pytest.fixture(scope="module")
def site_files(sites_env) -> dict[str, Path]:
    """Forecast as zarr at ecmwf, observations as netCDF4 at eumetsat."""
    coords = {"latitude": np.linspace(-60, 60, LAT), "longitude": np.linspace(0, 350, LON)}
    forecast = xr.Dataset(
        {"forecast": (("realization", "height", "latitude", "longitude"), forecast_values())},
        coords=coords,
    )
    observed = xr.Dataset({"observed": (("latitude", "longitude"), observed_values())}, coords=coords)
    zarr_path = sites_env.data_dirs["ecmwf"] / "engine-forecast.zarr"
    nc_path = sites_env.data_dirs["eumetsat"] / "engine-observed.nc"
    forecast.chunk({"realization": 1, "height": 2}).to_zarr(zarr_path, mode="w")
    observed.to_netcdf(nc_path, engine="h5netcdf")
    for path in (zarr_path, nc_path):
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    return {"ecmwf": zarr_path, "eumetsat": nc_path}


def test_loads_run_in_their_site_and_values_match_numpy(sites_env, site_files, client) -> None:
    with pool("ecmwf"):
        forecast = xr.open_dataset(site_files["ecmwf"], engine="zarr", chunks={})
    with pool("eumetsat"):
        observed = xr.open_dataset(site_files["eumetsat"], engine="h5netcdf", chunks={})
    diff = forecast.forecast.mean("realization").isel(height=1) - observed.observed
    with traffic(client) as report:
        result = diff.compute()
    expected = forecast_values().mean(axis=0)[1] - observed_values()
    np.testing.assert_allclose(result.values, expected, atol=1e-3)  # float32 sums

    # Where the bytes were read, recorded on the workers themselves: each site
    # read exactly its own data (of the forecast, the height chunk holding 1).
    assert report.bytes_read_by_site == {
        "ecmwf": forecast_values()[:, :2].nbytes,
        "eumetsat": observed_values().nbytes,
    }
    # The join has equal bytes on both sides; the tie goes to the first site
    # name, so only the observations (and the result, to the client) move.
    crossed = {pair: n for pair, n in report.by_site_pair.items() if len(set(pair) - {"client"}) == 2}
    assert crossed == {("eumetsat", "ecmwf"): observed_values().nbytes}
    assert report.cross_site_bytes == observed_values().nbytes
    assert set(report.task_sites.values()) == {"ecmwf", "eumetsat"}


def test_loads_spread_over_the_site_workers(site_files, client) -> None:
    """Pinned loads are not queued by the scheduler; they must still use every worker."""
    with pool("ecmwf"):
        forecast = xr.open_dataset(site_files["ecmwf"], engine="zarr", chunks={})
    with get_task_stream(client) as stream:
        forecast.forecast.mean("realization").compute()
    sites = worker_sites(client)
    ecmwf_workers = {a for a, s in sites.items() if s == "ecmwf"}
    # loads are fused into the per-member means
    loads = Counter(r["worker"] for r in stream.data if "mean_chunk" in str(r["key"]))
    assert sum(loads.values()) == 6 * 2 and set(loads) == ecmwf_workers, loads


def test_foreign_reads_fail_when_sites_are_isolated(isolated_env, site_files, client) -> None:
    """The isolation is real: a site cannot read the other's files."""
    eumetsat = next(a for a, s in worker_sites(client).items() if s == "eumetsat")

    def read(path: str) -> int:
        with open(path, "rb") as f:
            return len(f.read())

    with pytest.raises(PermissionError):
        client.submit(read, str(site_files["ecmwf"] / "zarr.json"), workers=[eumetsat], pure=False).result()


def test_persisted_data_keeps_downstream_tasks_in_site(client) -> None:
    with pool("eumetsat"):
        persisted = (da.arange(40_000, chunks=5_000) * 2.0).persist()
    with get_task_stream(client) as stream:
        total = (persisted.reshape(200, 200).sum(axis=0) + 1).compute()
    np.testing.assert_array_equal(total, (np.arange(40_000) * 2.0).reshape(200, 200).sum(axis=0) + 1)
    sites = worker_sites(client)
    assert {sites[r["worker"]] for r in stream.data} == {"eumetsat"}


def test_unpooled_constant_is_created_in_the_site_that_uses_it(client) -> None:
    with pool("eumetsat"):
        x = da.arange(1000, chunks=100) * 1.0
    offset = da.ones(1000, chunks=100) * 5  # created outside any pool
    with get_task_stream(client) as stream:
        result = (x + offset).compute()
    np.testing.assert_array_equal(result, np.arange(1000) + 5.0)
    sites = worker_sites(client)
    assert {sites[r["worker"]] for r in stream.data} == {"eumetsat"}


def test_delayed_is_pinned(client) -> None:
    @dask.delayed(pure=False)
    def where() -> str:
        from distributed import get_worker

        return get_worker().address

    with pool("eumetsat"):
        calls = [where() for _ in range(6)]
    sites = worker_sites(client)
    assert {sites[a] for a in dask.compute(*calls)} == {"eumetsat"}


def test_missing_site_fails_within_the_timeout(client) -> None:
    with pool("nowhere"):
        x = da.ones(10, chunks=5) + 1
    start = time.monotonic()
    with (
        dask.config.set({"catalog_pools.no-worker-timeout": "1s"}),
        pytest.raises(SiteUnavailableError) as info,
    ):
        x.compute()
    assert time.monotonic() - start < 15  # fails, rather than hanging
    message = str(info.value)
    assert "'nowhere'" in message and "dask worker" in message and '"pool-nowhere=1"' in message
    assert client.scheduler.address in message


def test_guard_refuses_to_run_outside_the_site(client) -> None:
    eumetsat = next(a for a, s in worker_sites(client).items() if s == "eumetsat")
    future = client.submit(catalog_pools.check_site, "ecmwf", workers=[eumetsat], pure=False)
    with pytest.raises(ForeignSiteError) as info:
        future.result()
    assert "'ecmwf'" in str(info.value) and eumetsat in str(info.value)


def test_guarded_graph_whose_restrictions_were_lost_refuses(client) -> None:
    """A pinned graph sent without its restrictions fails in the guard, never reads."""
    from catalog_pools.engine.optimize import optimize_pooled

    with pool("ecmwf"):
        x = da.arange(100, chunks=50) + 1
    graph = dict(optimize_pooled(x.__dask_graph__(), list(x.__dask_keys__())))
    eumetsat = next(a for a, s in worker_sites(client).items() if s == "eumetsat")
    key = x.__dask_keys__()[0]
    with pytest.raises(ForeignSiteError):
        client.get(graph, key, workers=[eumetsat], sync=True)


def test_client_created_before_import_is_set_up(sites_env) -> None:
    """A Client made in a fresh process before importing catalog_pools still pins."""
    import subprocess
    import sys

    code = f"""
from distributed import Client, get_task_stream
client = Client({sites_env.address!r})
import dask.array as da
import catalog_pools
with catalog_pools.pool("eumetsat"):
    x = da.arange(2000, chunks=100).sum()
with get_task_stream(client) as ts:
    assert int(x.compute()) == sum(range(2000))
sites = catalog_pools.worker_sites(client)
print(sorted({{sites[r["worker"]] for r in ts.data}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "['eumetsat']", out.stderr[-2000:]


def test_in_process_cluster_shares_config_and_still_pins() -> None:
    """``LocalCluster``-style in-process scheduler and workers, two sites."""
    from distributed import Scheduler, SpecCluster, Worker

    workers = {
        f"{site}-{i}": {"cls": Worker, "options": {"nthreads": 1, "resources": {f"pool-{site}": 1}}}
        for site in ("ecmwf", "eumetsat")
        for i in range(2)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with pool("ecmwf"):
        a = da.arange(4000, chunks=500).astype("f8")  # opened before the client
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        with pool("eumetsat"):
            b = da.ones(4000, chunks=4000) * 2  # opened after
        with get_task_stream(client) as stream:
            result = (a + b).sum().compute()
        assert result == np.arange(4000).sum() + 8000
        sites = worker_sites(client)
        ran = Counter(sites[r["worker"]] for r in stream.data)
        assert set(ran) == {"ecmwf", "eumetsat"}
        # b's creation (``ones`` fused into ``mul``) and its rechunk stay at eumetsat
        made_b = {
            sites[r["worker"]] for r in stream.data if "mul" in str(r["key"]) or "rechunk" in str(r["key"])
        }
        assert made_b == {"eumetsat"}
        made_a = {sites[r["worker"]] for r in stream.data if "arange" in str(r["key"])}
        assert made_a == {"ecmwf"}


@pytest.mark.slow
def test_killed_worker_mid_compute_stays_in_site(tmp_path) -> None:
    from catalog_pools.cluster import LocalSitesCluster

    def slow(block: np.ndarray) -> np.ndarray:
        time.sleep(0.15)
        return block * 2

    with (
        LocalSitesCluster({"ecmwf": 2, "eumetsat": 1}, local_directory=tmp_path) as cluster,
        Client(cluster) as client,
    ):
        with pool("ecmwf"):
            x = da.arange(4000, chunks=100).map_blocks(slow, dtype="i8")
        sites = worker_sites(client)  # before the kill, so the victim is mapped
        with get_task_stream(client) as stream:
            future = client.compute(x.sum())
            time.sleep(1.0)
            victim = sorted(n for n in cluster.worker_pids if n.startswith("ecmwf"))[0]
            cluster.kill_worker(victim)
            result = future.result(timeout=120)
        assert result == 2 * np.arange(4000).sum()
        sites.update(worker_sites(client))
        assert {sites[r["worker"]] for r in stream.data} == {"ecmwf"}


def test_site_loads_are_co_assigned_in_blocks(client) -> None:
    """Neighbouring loads go to the same worker, so reductions combine locally."""
    values = np.arange(32 * 500.0).reshape(32, 500)
    with pool("ecmwf"):
        x = da.from_array(values, chunks=(1, 500), name="loads") * 2
    with get_task_stream(client) as stream:
        total = x.sum(axis=0).compute()
    np.testing.assert_array_equal(total, (values * 2).sum(axis=0))
    sites = worker_sites(client)
    blocks: dict[str, list[int]] = {}
    for r in stream.data:  # per-chunk tasks (load, multiply and first sum, fused)
        key = r["key"]
        if isinstance(key, tuple) and len(key) == 3 and dask.utils.key_split(key[0]) == "sum":
            blocks.setdefault(r["worker"], []).append(key[1])
    assert {sites[w] for w in blocks} == {"ecmwf"} and len(blocks) == 2
    for indices in blocks.values():  # each worker got one contiguous run of chunks
        indices.sort()
        assert indices == list(range(indices[0], indices[0] + len(indices))), blocks
