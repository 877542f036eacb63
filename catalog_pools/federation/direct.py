"""Direct transfers: a site's worker pulls a value from another site's cluster.

Used by ``federated(clients, direct=True)`` when the site clusters can reach
each other's schedulers (plain ``dask scheduler`` deployments on a shared
network, not Gateway proxies). The value then crosses the WAN once, from the
source site to the destination site, instead of twice through a coordinator
that sits outside both. Runs on the destination site's workers, so it must be
importable there (it is part of ``catalog_pools``).
"""

from __future__ import annotations

from typing import Any


def pull(address: str, dataset: str, timeout: float) -> tuple[Any, ...]:
    """Gather the futures published as ``dataset`` on the cluster at ``address``.

    Runs on a destination worker. The coordinator published the futures
    (``Client.publish_dataset``) and unpublishes them once the destination has
    the values. Data comes through the source scheduler (distributed's default
    for a client outside the cluster), so only that scheduler must be reachable.
    """
    from distributed import Client

    with Client(address, timeout=timeout, set_as_default=False) as client:
        return tuple(client.gather(client.get_dataset(dataset)))


def pick(values: tuple[Any, ...], index: int) -> Any:
    """One of the values :func:`pull` returned."""
    return values[index]
