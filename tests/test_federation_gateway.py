"""Federated runs on two real dask-gateway-server instances, one per site, started here.

The seed workload (two sites, one server each) and the engine benchmark's
workflows (benchmarks/workloads.py: three sites; ``dwd``'s cluster runs on the
ECMWF server) run through ``catalog_pools.connect(cat)``: values equal plain
xarray, cross-site bytes within 1.2x of one spanning cluster's.

Each server uses the local backend (``UnsafeLocalBackend``: clusters are local
``dask scheduler`` / ``dask worker`` processes of this user) and listens on
loopback only. Skipped with the reason when dask-gateway or
dask-gateway-server (with sqlalchemy) is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from federation_helpers import FEDERATED, check_workflow, one_cluster

import catalog_pools
from benchmarks.workloads import A, B, C
from catalog_pools import SiteClusterUnavailableError, federated
from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX, make_data
from catalog_pools.federation.connect import SiteClients, gateway_specs
from catalog_pools.traffic.report import CLIENT

for _module in ("dask_gateway", "dask_gateway_server", "sqlalchemy"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: pip install 'catalog_pools[test]'")

pytestmark = [
    pytest.mark.slow,
    # dask-gateway 2026.3: GatewayCluster.close() closes its Gateway, whose
    # __del__ then closes it again and raises on the stopped loop (harmless).
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

SITES = ("ecmwf", "eumetsat")
__all__ = ["one_cluster"]  # a fixture: used by name

#: One benchmark workflow per kind of crossing (the others are more joins of
#: a field at ecmwf with one at dwd, like ``std``); all of them with
#: CATALOG_POOLS_ALL_WORKFLOWS=1 (about 30 s more).
GATEWAY_WORKFLOWS = (
    FEDERATED
    if os.environ.get("CATALOG_POOLS_ALL_WORKFLOWS") == "1"
    else ["std", "where", "concat", "corr", "three_sites", "weighted"]
)
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayServer:
    """One ``dask-gateway-server`` process on loopback."""

    address: str
    proxy_address: str
    process: subprocess.Popen[bytes]
    log: Path


def start_gateway(directory: Path) -> GatewayServer:
    directory.mkdir(parents=True)
    api, proxy = free_port(), free_port()
    dask_cmd = str(BIN / "dask") if (BIN / "dask").exists() else "dask"
    config = directory / "dask_gateway_config.py"
    config.write_text(
        textwrap.dedent(
            f"""
            c.DaskGateway.address = "127.0.0.1:{api}"
            c.Proxy.address = "127.0.0.1:{proxy}"
            c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
            c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
            # dask 2026 has no dask-scheduler / dask-worker scripts any more.
            c.ClusterConfig.scheduler_cmd = [{dask_cmd!r}, "scheduler"]
            c.ClusterConfig.worker_cmd = [{dask_cmd!r}, "worker"]
            c.ClusterConfig.worker_cores = 1
            c.ClusterConfig.worker_threads = 1
            c.ClusterConfig.worker_memory = "1 G"
            c.ClusterConfig.scheduler_memory = "1 G"
            c.ClusterConfig.cluster_max_workers = 2
            c.LocalBackend.clusters_directory = {str(directory / "clusters")!r}
            """
        )
    )
    log = directory / "server.log"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "dask-gateway-server"), "-f", str(config)],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = GatewayServer(f"http://127.0.0.1:{api}", f"gateway://127.0.0.1:{proxy}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask-gateway-server exited: {log.read_text()[-2000:]}")
        try:
            with (
                socket.create_connection(("127.0.0.1", api), timeout=0.5),
                socket.create_connection(("127.0.0.1", proxy), timeout=0.5),
            ):
                return server
        except OSError:
            time.sleep(0.2)
    stop_gateway(server)
    raise RuntimeError(f"dask-gateway-server did not listen within 30 s: {log.read_text()[-2000:]}")


def stop_gateway(server: GatewayServer) -> None:
    server.process.terminate()  # the server stops its clusters on SIGTERM
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GatewayServer]]:
    root = tmp_path_factory.mktemp("gateways")
    servers: dict[str, GatewayServer] = {}
    try:
        for site in SITES:
            servers[site] = start_gateway(root / site)
        yield servers
    finally:
        for server in servers.values():
            stop_gateway(server)
        shutil.rmtree(root, ignore_errors=True)


def write_catalog(path: Path, data: Path, gateways: dict[str, GatewayServer]) -> Path:
    """A multi-site catalog whose sites each declare a Dask Gateway (two may share one server)."""
    sites = {}
    for site, server in gateways.items():
        sites[site] = {
            "roots": [str(data / site)],
            "gateway": {
                "address": server.address,
                "proxy_address": server.proxy_address,
                "auth": {"type": "basic", "username": "{{ env('USER') or 'catalog-pools' }}"},
                "cluster_options": {},
                "workers": 1,
            },
        }
    entries = {
        "predictions": ("ecmwf", data / "ecmwf" / "predictions.zarr"),
        "observations": ("eumetsat", data / "eumetsat" / "observations.zarr"),
    }
    sources = {
        name: {"driver": "site_zarr", "args": {"urlpath": str(url)}, "metadata": {"site": site}}
        for name, (site, url) in entries.items()
    }
    import yaml

    path.write_text(yaml.safe_dump({"metadata": {"version": 1, "sites": sites}, "sources": sources}))
    return path


def test_connect_and_federated_seed_workload(gateways, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data(data, scale="small", progress=False)
    cat = catalog_pools.open_catalog(write_catalog(tmp_path / "catalog.yaml", data, gateways))
    assert sorted(gateway_specs(cat)) == list(SITES)
    pred = cat.predictions.to_dask().air_pressure
    obs = cat.observations.to_dask().air_pressure
    diff = pred.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - obs
    with (
        xr.open_zarr(data / "ecmwf" / "predictions.zarr") as p,
        xr.open_zarr(data / "eumetsat" / "observations.zarr") as o,
    ):
        expected = (
            p.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - o.air_pressure
        ).compute(scheduler="sync")

    with catalog_pools.connect(cat, timeout=60) as clients:
        assert sorted(clients) == list(SITES)
        addresses = {site: c.scheduler.address for site, c in clients.items()}
        assert all(a.startswith("gateway://") for a in addresses.values()), addresses
        with federated(clients) as fed:
            result = diff.compute()
        xr.testing.assert_allclose(result, expected, rtol=1e-6)
        field = expected.values.nbytes
        assert fed.traffic.by_site_pair == {("eumetsat", "ecmwf"): field, ("ecmwf", CLIENT): field}

        # A second connect reuses the running clusters instead of starting new ones.
        with catalog_pools.connect(cat, timeout=60) as again:
            assert {s: c.scheduler.address for s, c in again.items()} == addresses
            assert again.created == set()
            np.testing.assert_allclose(
                diff.compute(scheduler=federated(again)).values, expected.values, rtol=1e-6
            )


@pytest.fixture(scope="module")
def three_site_clients(
    gateways: dict[str, GatewayServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SiteClients]:
    """The benchmark's three sites over the two servers: ``dwd``'s cluster lives on ECMWF's server."""
    root = tmp_path_factory.mktemp("three-sites")
    servers = {A: gateways["ecmwf"], B: gateways["eumetsat"], C: gateways["ecmwf"]}
    cat = catalog_pools.open_catalog(write_catalog(root / "catalog.yaml", root / "data", servers))
    clients = catalog_pools.connect(cat, timeout=90)
    try:
        addresses = {site: c.scheduler.address for site, c in clients.items()}
        assert sorted(addresses) == sorted(servers)
        assert len(set(addresses.values())) == 3, f"sites share a cluster: {addresses}"
        assert all(a.startswith("gateway://") for a in addresses.values()), addresses
        yield clients
    finally:
        clients.close()


@pytest.mark.parametrize("name", GATEWAY_WORKFLOWS)
def test_benchmark_workflow_over_gateways(three_site_clients: SiteClients, one_cluster, name: str) -> None:
    check_workflow(three_site_clients, one_cluster, name)


def test_unreachable_gateway_is_named_within_the_timeout(gateways, silent_port: int) -> None:
    metadata = {
        "sites": {
            "ecmwf": {"gateway": {"address": gateways["ecmwf"].address}},
            "eumetsat": {"gateway": {"address": f"http://127.0.0.1:{silent_port}"}},
        }
    }
    start = time.monotonic()
    with pytest.raises(SiteClusterUnavailableError, match="'eumetsat'") as info:
        catalog_pools.connect(metadata, sites=["eumetsat"], timeout=3)
    assert time.monotonic() - start < 3 + 3
    assert info.value.site == "eumetsat"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()
