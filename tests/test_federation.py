"""Federated runs: one plain cluster per site (no worker resources), values and bytes checked."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.sizeof import sizeof
from dead_host import dead_host_server
from distributed import Client, LocalCluster, get_task_stream

import catalog_pools
from catalog_pools import CatalogError, SiteClusterUnavailableError, SiteUnavailableError, federated, pool
from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX, make_data
from catalog_pools.federation.connect import gateway_specs
from catalog_pools.federation.run import federated_get
from catalog_pools.federation.split import COORDINATOR
from catalog_pools.traffic import traffic
from catalog_pools.traffic.report import CLIENT

SITES = ("ecmwf", "eumetsat", "ewc")


def start_site_cluster(n_workers: int = 1) -> LocalCluster:
    """A plain cluster for one site: its own scheduler and worker processes, no resources."""
    return LocalCluster(
        processes=True,
        n_workers=n_workers,
        threads_per_worker=1,
        dashboard_address=":0",
        worker_dashboard_address=":0",
    )


@pytest.fixture(scope="module")
def site_clients() -> Iterator[dict[str, Client]]:
    clusters = {site: start_site_cluster() for site in SITES}
    clients = {site: Client(c, set_as_default=False) for site, c in clusters.items()}
    try:
        yield clients
    finally:
        for site in SITES:
            clients[site].close()
            clusters[site].close()


@pytest.fixture(scope="module")
def site_data(sites_env) -> Path:
    """The small synthetic ECMWF/EUMETSAT data, also readable by the session cluster's sites."""
    root = sites_env.data_dirs["ecmwf"].parent
    make_data(root, scale="small", progress=False)
    return root


def seed_workload(root: Path, pinned: bool = True) -> xr.DataArray:
    """``predictions.mean("realization").isel(height=10) - observations``, lazily."""
    with pool("ecmwf" if pinned else None):
        pred = xr.open_zarr(root / "ecmwf" / "predictions.zarr")
    with pool("eumetsat" if pinned else None):
        obs = xr.open_zarr(root / "eumetsat" / "observations.zarr")
    return pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - obs.air_pressure


def test_seed_workload_federated_values_and_bytes(site_clients, site_data, client) -> None:
    expected = seed_workload(site_data, pinned=False).compute(scheduler="sync")
    field = expected.values.nbytes  # one lat x lon float32 map: the smaller side, and the result
    diff = seed_workload(site_data)

    with (
        traffic(site_clients["ecmwf"]) as at_ecmwf,
        traffic(site_clients["eumetsat"]) as at_eumetsat,
        get_task_stream(client=site_clients["ecmwf"]) as ran_ecmwf,
        get_task_stream(client=site_clients["eumetsat"]) as ran_eumetsat,
        federated(site_clients) as fed,
    ):
        result = diff.compute()
    xr.testing.assert_allclose(result, expected, rtol=1e-6)
    np.testing.assert_allclose(result.values, expected.values, rtol=1e-6)

    # The join runs where most bytes are (a tie between two equal maps goes to
    # 'ecmwf'): the observations map crosses once, the result map comes back.
    assert fed.traffic.by_site_pair == {("eumetsat", "ecmwf"): field, ("ecmwf", CLIENT): field}
    assert fed.traffic.cross_site_bytes == field
    assert fed.traffic.client_bytes == field
    assert "eumetsat -> ecmwf" in fed.traffic.summary() and "CROSS-SITE" in fed.traffic.summary()
    assert dask.config.get("scheduler", None) is not federated_get  # the block restored the scheduler

    # Each site's part ran on its own cluster: every task the plan put at a
    # site ran there and nowhere else; nothing ran in the coordinator.
    plan = fed.runs[0].task_sites
    assert COORDINATOR not in plan.values()
    assert {r["key"] for r in ran_ecmwf.data} == {k for k, s in plan.items() if s == "ecmwf"}
    assert {r["key"] for r in ran_eumetsat.data} == {k for k, s in plan.items() if s == "eumetsat"}
    # The bulk was read in its site (the whole ensemble at ECMWF, one map at EUMETSAT)...
    pred_nbytes = xr.open_zarr(site_data / "ecmwf" / "predictions.zarr").air_pressure.nbytes
    # (federated made each cluster's workers members of their site: pool-<site>=1).
    assert at_ecmwf.bytes_read_by_site == {"ecmwf": pred_nbytes}
    assert at_eumetsat.bytes_read_by_site == {"eumetsat": field}
    # ...and distributed's own logs agree with the coordinator's count of what left each site.
    assert at_eumetsat.client_bytes == field
    assert at_ecmwf.client_bytes == field
    assert at_ecmwf.cross_site_bytes == at_eumetsat.cross_site_bytes == 0

    # One spanning cluster (workers with pool-<site> resources) moves the same.
    with traffic(client) as one:
        spanning = seed_workload(site_data).compute()
    xr.testing.assert_allclose(spanning, expected, rtol=1e-6)
    assert one.cross_site_bytes > 0
    assert one.cross_site_bytes <= fed.traffic.cross_site_bytes <= 1.2 * one.cross_site_bytes


def test_direct_transfers_skip_the_coordinator(site_clients, site_data, monkeypatch) -> None:
    """direct=True: the ECMWF worker pulls the observations from EUMETSAT's scheduler."""
    expected = seed_workload(site_data, pinned=False).compute(scheduler="sync")
    gathered: list[str] = []
    for site, c in site_clients.items():
        original = c.gather
        monkeypatch.setattr(
            c, "gather", lambda *a, _s=site, _o=original, **k: gathered.append(_s) or _o(*a, **k)
        )
    with federated(site_clients, direct=True) as fed:
        result = seed_workload(site_data).compute()
    xr.testing.assert_allclose(result, expected, rtol=1e-6)
    field = expected.values.nbytes
    assert fed.traffic.by_site_pair == {("eumetsat", "ecmwf"): field, ("ecmwf", CLIENT): field}
    assert gathered == ["ecmwf"]  # only the result passed through the coordinator


def test_three_site_workflow(site_clients, site_data, tmp_path: Path) -> None:
    """Predictions at ECMWF, observations at EUMETSAT, a land mask at the EWC."""
    obs_plain = xr.open_zarr(site_data / "eumetsat" / "observations.zarr").air_pressure
    mask = xr.DataArray(
        (np.arange(obs_plain.size).reshape(obs_plain.shape) % 3 == 0).astype("f4"),
        dims=obs_plain.dims,
        coords={d: obs_plain[d] for d in obs_plain.dims},
        name="land",
    )
    mask.to_dataset().to_zarr(tmp_path / "mask.zarr")
    with pool("ewc"):
        land = xr.open_zarr(tmp_path / "mask.zarr").land
    expected = float(((seed_workload(site_data, pinned=False) * mask).mean()).compute(scheduler="sync"))

    with federated(site_clients) as fed:
        got = float((seed_workload(site_data) * land).mean().compute())
    assert got == pytest.approx(expected, rel=1e-6)
    field = obs_plain.values.nbytes
    # Each join goes where most bytes are (ties to the first name): the
    # observations and the mask each cross once to ECMWF; a scalar comes back.
    pairs = fed.traffic.by_site_pair
    assert pairs.keys() == {("eumetsat", "ecmwf"), ("ewc", "ecmwf"), ("ecmwf", CLIENT)}
    assert pairs[("eumetsat", "ecmwf")] == pairs[("ewc", "ecmwf")] == field
    assert pairs[("ecmwf", CLIENT)] < 100
    assert set(fed.traffic.tasks_by_site) == set(SITES)


def test_a_value_needed_by_many_tasks_moves_once(site_clients) -> None:
    with pool("ecmwf"):
        big = da.arange(4 * 1000, dtype="f8", chunks=1000).reshape(4, 1000).rechunk((1, 1000))
    with pool("eumetsat"):
        small = da.arange(1000, dtype="f8", chunks=1000) * 2
    with federated(site_clients) as fed:
        result = (big - small).sum(axis=1).compute()
    values = np.arange(4000.0).reshape(4, 1000) - 2 * np.arange(1000.0)
    np.testing.assert_array_equal(result, values.sum(axis=1))
    # Four ECMWF tasks use the EUMETSAT chunk; it crosses once (8000 bytes).
    assert fed.traffic.by_site_pair[("eumetsat", "ecmwf")] == 8000
    assert fed.traffic.cross_site_bytes == 8000


def test_several_stages_and_scheduler_form(site_clients) -> None:
    """ecmwf -> eumetsat -> ecmwf: each crossing in its own stage, values still right."""
    with pool("ecmwf"):
        a = dask.delayed(np.arange)(1000.0)
    with pool("eumetsat"):
        b1 = dask.delayed(np.full)(1000, 2.0)
        b2 = dask.delayed(np.full)(1000, 3.0)
    # Delayed values have no size estimate: each input weighs the same, so the
    # sum runs at eumetsat (two inputs there); the difference is pinned back to
    # ecmwf by the user, which still holds ``a`` from stage 0.
    c = dask.delayed(sum)([b1, b2, a])
    with pool("ecmwf"):
        d = dask.delayed(np.subtract)(a, c)
    fed = federated(site_clients)
    (got,) = dask.compute(d, scheduler=fed)
    np.testing.assert_array_equal(got, np.full(1000, -5.0))
    assert fed.traffic.by_site_pair == {
        ("ecmwf", "eumetsat"): 8000,
        ("eumetsat", "ecmwf"): 8000,
        ("ecmwf", CLIENT): 8000,
    }
    stages = fed.runs[0]
    assert stages.task_sites[d.key] == "ecmwf" and stages.task_sites[c.key] == "eumetsat"


def test_unpinned_work_runs_in_the_coordinator(site_clients) -> None:
    x = da.arange(100, chunks=10)
    with get_task_stream(client=site_clients["ecmwf"]) as ran, federated(site_clients) as fed:
        assert x.sum().compute() == 4950
    assert ran.data == []
    assert set(fed.traffic.tasks_by_site) == {COORDINATOR}
    assert fed.traffic.by_site_pair == {}
    # Called as a get function on a plain (legacy) graph: everything runs here.
    assert fed({"a": 1, "b": (sum, ["a", "a"])}, ["b"]) == [2]
    assert fed({"a": 1, "b": (sum, ["a", "a"])}, "b") == 2


def test_unpinned_constant_is_made_in_the_site_using_it(site_clients) -> None:
    with pool("ecmwf"):
        x = da.arange(1000, chunks=100, dtype="f8")
    ones = da.ones(1000, chunks=100)  # unpinned, used only by ECMWF tasks
    with federated(site_clients) as fed:
        total = (x + ones).sum().compute()
    assert total == pytest.approx(np.arange(1000.0).sum() + 1000)
    assert set(fed.traffic.tasks_by_site) == {"ecmwf"}
    assert fed.traffic.by_site_pair == {("ecmwf", CLIENT): sizeof(total)}


def test_task_errors_reach_the_user(site_clients) -> None:
    def fail(block: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("from the site")

    with pool("eumetsat"):
        x = da.ones(10, chunks=5).map_blocks(fail, dtype="f8")
    with federated(site_clients), pytest.raises(ZeroDivisionError, match="from the site"):
        x.compute()


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A TCP server on loopback that accepts connections and never answers."""
    with dead_host_server("tcp") as address:
        yield address


def test_unreachable_site_is_named_within_the_timeout(site_clients, silent_address) -> None:
    start = time.monotonic()
    with pytest.raises(SiteClusterUnavailableError, match="'eumetsat'") as info:
        federated({"ecmwf": site_clients["ecmwf"], "eumetsat": silent_address}, timeout=2)
    assert time.monotonic() - start < 2 + 3
    assert info.value.site == "eumetsat"
    assert isinstance(info.value, SiteUnavailableError)
    assert silent_address in str(info.value)


def test_site_without_workers_is_named_within_the_timeout(site_clients) -> None:
    with start_site_cluster(n_workers=0) as empty, Client(empty, set_as_default=False) as idle:
        with pool("eumetsat"):
            x = da.ones(10, chunks=5)
        fed = federated({"ecmwf": site_clients["ecmwf"], "eumetsat": idle}, timeout=1)
        start = time.monotonic()
        with pytest.raises(SiteClusterUnavailableError, match=r"'eumetsat' at tcp:.* has no workers"):
            x.sum().compute(scheduler=fed)
        assert time.monotonic() - start < 1 + 3


def test_site_losing_a_worker_mid_run_recovers() -> None:
    def slow(block: np.ndarray) -> np.ndarray:
        import time

        time.sleep(0.5)
        return block * 2

    with start_site_cluster(n_workers=2) as cluster, Client(cluster, set_as_default=False) as site_client:
        with pool("eumetsat"):
            x = da.arange(80, chunks=10, dtype="f8").map_blocks(slow, dtype="f8")
        victim = sorted(site_client.scheduler_info()["workers"])[0]
        pid = site_client.run(os.getpid, workers=[victim])[victim]
        # Kill one worker process mid-run (its nanny restarts it, as distributed does).
        threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
        with federated({"eumetsat": site_client}, timeout=5):
            # The nanny pickles dask config to restart the worker: it must not hold clients.
            pickle.dumps(dask.config.config)
            assert x.sum().compute() == 2 * np.arange(80.0).sum()
        assert victim not in site_client.scheduler_info()["workers"]


def test_site_losing_all_workers_mid_run_is_named() -> None:
    def slow(block: np.ndarray) -> np.ndarray:
        import time

        time.sleep(3)
        return block

    with start_site_cluster() as cluster, Client(cluster, set_as_default=False) as site_client:
        with pool("eumetsat"):
            x = da.ones(10, chunks=10).map_blocks(slow, dtype="f8")
        fed = federated({"eumetsat": site_client}, timeout=1)
        threading.Timer(1.0, cluster.scale, (0,)).start()
        start = time.monotonic()
        with pytest.raises(SiteClusterUnavailableError, match=r"'eumetsat' at tcp:.* has no workers left"):
            x.sum().compute(scheduler=fed)
        assert time.monotonic() - start < 3 + 1 + 3


def test_site_missing_from_the_clients_is_named(site_clients) -> None:
    with pool("eumetsat"):
        x = da.ones(10, chunks=5)
    with (
        pytest.raises(SiteClusterUnavailableError, match="'eumetsat' is not among the federated clients"),
        federated({"ecmwf": site_clients["ecmwf"]}),
    ):
        x.sum().compute()


def test_gateway_declarations_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CP_TEST_GATEWAY", "http://127.0.0.1:9")
    metadata = {
        "sites": {
            "ecmwf": {"roots": ["/data/ecmwf"], "gateway": {"address": '{{ env("CP_TEST_GATEWAY") }}'}},
            "eumetsat": {"roots": ["/data/eumetsat"]},
        }
    }
    assert gateway_specs(metadata) == {"ecmwf": {"address": "http://127.0.0.1:9"}}
    with pytest.raises(CatalogError, match=r"metadata\.sites\.ecmwf\.gateway must be a mapping"):
        gateway_specs({"sites": {"ecmwf": {"gateway": {"workers": 2}}}})
    with pytest.raises(CatalogError, match=r"unknown keys \['adress'\]"):
        gateway_specs({"sites": {"ecmwf": {"gateway": {"address": "http://x", "adress": "y"}}}})
    with pytest.raises(CatalogError, match=r"no metadata\.sites\.<site>\.gateway for \['eumetsat'\]"):
        catalog_pools.connect(metadata, sites=["eumetsat"])


def test_public_names() -> None:
    assert catalog_pools.federated is federated
    assert callable(catalog_pools.connect)
