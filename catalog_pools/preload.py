"""Preload module for schedulers and clients.

``dask scheduler --preload catalog_pools.preload`` installs the scheduler plugin
at start-up; ``import catalog_pools`` adds this module to
``distributed.client.preload`` so every new Client installs it too.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


async def dask_setup(dask_object: Any) -> None:
    """Install catalog_pools on a starting scheduler or client."""
    from distributed import Client
    from distributed.scheduler import Scheduler

    from .engine.install import install_async
    from .engine.optimize import activate
    from .engine.plugin import PLUGIN_NAME, PoolsSchedulerPlugin

    if isinstance(dask_object, Scheduler):
        activate()
        dask_object.add_plugin(PoolsSchedulerPlugin(), name=PLUGIN_NAME, idempotent=True)
        from .traffic.dashboard import add_sites_page

        add_sites_page(dask_object)
        logger.info("catalog_pools installed on scheduler %s", dask_object.address)
    elif isinstance(dask_object, Client):
        try:
            await install_async(dask_object)
        except Exception as exc:  # a preload failing would only be logged by distributed
            logger.warning(
                "catalog_pools could not install its scheduler plugin (%s); is "
                "catalog_pools installed where the scheduler runs?",
                exc,
            )
