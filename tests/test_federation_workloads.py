"""The engine benchmark's workflows run federated (one plain cluster per site): values and bytes.

Real processes: one ``LocalCluster`` per site (own scheduler, one worker, no
resources) and, for the one-cluster figure, a three-site ``LocalSitesCluster``.
Data and workflows are the benchmark's own (benchmarks/workloads.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from federation_helpers import FEDERATED, check_workflow, one_cluster

from benchmarks.workloads import NOT_FEDERATED, WORKFLOWS, start_site_clusters

__all__ = ["one_cluster"]  # a fixture: used by name


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


@pytest.mark.parametrize("name", FEDERATED)
def test_workflow_federated_equals_xarray_within_bound(
    site_clients: dict[str, Client], one_cluster: Client, name: str
) -> None:
    check_workflow(site_clients, one_cluster, name)


def test_persisted_workflows_are_the_documented_limit() -> None:
    text = (Path(__file__).parents[1] / "docs" / "federation.md").read_text()
    assert set(WORKFLOWS) >= NOT_FEDERATED
    for name in sorted(NOT_FEDERATED):
        assert f"`{name}`" in text, name
