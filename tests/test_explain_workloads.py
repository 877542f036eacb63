"""explain() against traffic() for every workflow of the engine benchmark (benchmarks/workloads.py).

Real processes: a three-site ``LocalSitesCluster`` with two one-thread workers
per site, the benchmark's own data (fields of 129,600 B) and workflow builders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from benchmarks.workloads import CLUSTER_ENV, WORKFLOWS, A, B, C, expected_values, measure
from catalog_pools.cluster import LocalSitesCluster

TOLERANCE = 0.10


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    directory: Path = tmp_path_factory.mktemp("explain-workloads")
    with (
        LocalSitesCluster(
            {A: 2, B: 2, C: 2},
            threads_per_worker=1,
            memory_limit="1GiB",
            local_directory=directory,
            env=CLUSTER_ENV,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(6, timeout=120)
        yield client


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_explain_within_ten_percent_of_measured(three_sites: Client, name: str) -> None:
    measured, _, values, estimate = measure(three_sites, name, pooled=True)
    assert np.allclose(values, expected_values(name), equal_nan=True)
    assert measured > 0
    assert abs(estimate - measured) <= TOLERANCE * measured, (name, estimate, measured)
