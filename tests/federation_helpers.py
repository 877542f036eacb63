"""Shared by the federated-workflow tests: the one-cluster reference and the check.

``one_cluster`` (module fixture): a three-site ``LocalSitesCluster`` (one worker
per site) whose pooled run gives the one-cluster cross-site bytes.
:func:`check_workflow` runs one workflow of benchmarks/workloads.py there and
federated over given site clients, and asserts values and bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
)
from catalog_pools.cluster import LocalSitesCluster

#: federated cross-site bytes may exceed the one-cluster figure by at most this factor
BOUND = 1.2

#: every workflow of the engine benchmark that can run federated
FEDERATED = [name for name in WORKFLOWS if name not in NOT_FEDERATED]


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


def check_workflow(site_clients: Mapping[str, Client], one_cluster: Client, name: str) -> tuple[int, int]:
    """Assert ``name`` federated equals plain xarray within :data:`BOUND` of one cluster's bytes.

    Returns ``(one-cluster bytes, federated bytes)``.
    """
    one, _, one_values, _ = measure(one_cluster, name, pooled=True)
    federated_bytes, values = measure_federated(dict(site_clients), name)
    expected = expected_values(name)
    assert np.allclose(values, expected, equal_nan=True)
    assert np.allclose(one_values, expected, equal_nan=True)
    assert one > 0
    assert 0 < federated_bytes <= BOUND * one, (name, federated_bytes, one)
    print(f"{name}: one cluster {one:,d} B, federated {federated_bytes:,d} B ({federated_bytes / one:.2f}x)")
    return one, federated_bytes
