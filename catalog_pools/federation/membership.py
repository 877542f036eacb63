"""Mark a federated site cluster's workers as members of that site.

A site's own cluster needs no configuration: when :func:`catalog_pools.federated`
first uses it, this worker plugin gives every worker, present and future, the
resource ``pool-<site>``. No task asks for that resource (federated tasks carry
no restrictions), so scheduling is unchanged; but the guard
(:mod:`catalog_pools.engine.guard`) then accepts the site's own pinned tasks
there and still refuses another site's, should one ever be sent to the wrong
cluster.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from ..engine.sites import resource_name, validate_site


class SiteMembership(WorkerPlugin):
    """Worker plugin: declare the worker a member of ``site`` (``pool-<site>=1``)."""

    def __init__(self, site: str) -> None:
        self.site = validate_site(site)
        self.name = f"catalog-pools-federated-{site}"

    async def setup(self, worker: Any) -> None:
        await worker.set_resources(**{resource_name(self.site): 1})


def join_site(client: Any, site: str) -> None:
    """Register :class:`SiteMembership` for ``site`` on ``client``'s cluster."""
    plugin = SiteMembership(site)
    client.register_plugin(plugin, name=plugin.name)
