"""The engine benchmark's workflows run federated (one plain cluster per site): values and bytes.

Real processes: one ``LocalCluster`` per site (own scheduler, one worker, no
resources) and, for the one-cluster figure, a three-site ``LocalSitesCluster``.
Data and workflows are the benchmark's own (benchmarks/workloads.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from benchmarks.workloads import (
    CLUSTER_ENV,
    NOT_FEDERATED,
    WORKFLOWS,
    A,
    B,
    C,
    expected_values,
    measure,
    measure_federated,
    start_site_clusters,
)
from catalog_pools.cluster import LocalSitesCluster

#: federated cross-site bytes may exceed the one-cluster figure by at most this factor
BOUND = 1.2

FEDERATED = [name for name in WORKFLOWS if name not in NOT_FEDERATED]


@pytest.fixture(scope="module")
def site_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Client]]:
    clusters = start_site_clusters(1, tmp_path_factory.mktemp("federated-sites"))
    clients = {site: Client(c, set_as_default=False) for site, c in clusters.items()}
    try:
        yield clients
    finally:
        for site, site_client in clients.items():
            site_client.close()
            clusters[site].close()


@pytest.fixture(scope="module")
def one_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    directory: Path = tmp_path_factory.mktemp("one-cluster")
    with (
        LocalSitesCluster(
            {A: 1, B: 1, C: 1},
            threads_per_worker=1,
            memory_limit="1GiB",
            local_directory=directory,
            env=CLUSTER_ENV,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(3, timeout=120)
        yield client


@pytest.mark.parametrize("name", FEDERATED)
def test_workflow_federated_equals_xarray_within_bound(
    site_clients: dict[str, Client], one_cluster: Client, name: str
) -> None:
    one, _, one_values, _ = measure(one_cluster, name, pooled=True)
    federated_bytes, values = measure_federated(site_clients, name)
    expected = expected_values(name)
    assert np.allclose(values, expected, equal_nan=True)
    assert np.allclose(one_values, expected, equal_nan=True)
    assert one > 0
    assert 0 < federated_bytes <= BOUND * one, (name, federated_bytes, one)


def test_persisted_workflows_are_the_documented_limit() -> None:
    text = (Path(__file__).parents[1] / "docs" / "federation.md").read_text()
    assert set(WORKFLOWS) >= NOT_FEDERATED
    for name in sorted(NOT_FEDERATED):
        assert f"`{name}`" in text, name
