"""Putting catalog_pools in place on a Dask cluster, from the client side."""

from __future__ import annotations

import logging
import weakref
from types import TracebackType
from typing import Any

import dask

from ..errors import SchedulerSetupError
from .optimize import activate, optimizers
from .plugin import PLUGIN_NAME, PoolsSchedulerPlugin

logger = logging.getLogger(__name__)

PRELOAD = "catalog_pools.preload"
_installed: weakref.WeakSet[Any] = weakref.WeakSet()


def use_pooled_optimizers() -> None:
    """Make dask.array / xarray / dask.delayed graphs keep and propagate pins.

    Sets the ``array_optimize`` and ``delayed_optimize`` config entries unless
    the user already set their own (then pins may be lost; a warning says so).
    """
    current = {k: dask.config.get(k, None) for k in ("array_optimize", "delayed_optimize")}
    updates = {k: v for k, v in optimizers().items() if current[k] is None}
    for key, value in current.items():
        if value is not None and type(value).__name__ != "PoolOptimizer":
            logger.warning(
                "dask config %r is set to %r; catalog_pools leaves it alone, so pins may be lost in fusion",
                key,
                value,
            )
    if updates:
        dask.config.set(updates)


def add_client_preload() -> None:
    """Have every Client created from now on install the scheduler plugin."""
    preloads = list(dask.config.get("distributed.client.preload", []) or [])
    if PRELOAD not in preloads:
        dask.config.set({"distributed.client.preload": [*preloads, PRELOAD]})


def install(client: Any = None) -> None:
    """Install the catalog_pools scheduler plugin on ``client``'s scheduler.

    Idempotent. Called automatically by :func:`catalog_pools.pool` and by
    every Client created after ``import catalog_pools``; call it yourself only
    for a Client made before the import and used without ``pool``.

    Parameters
    ----------
    client
        A ``distributed.Client``; the default client if omitted.

    Raises
    ------
    SchedulerSetupError
        If the scheduler cannot import catalog_pools.
    """
    from distributed import default_client

    activate()
    client = client or default_client()
    if client in _installed:
        return
    try:
        client.register_plugin(PoolsSchedulerPlugin(), name=PLUGIN_NAME)
    except (ModuleNotFoundError, ImportError) as exc:
        raise SchedulerSetupError(
            f"the scheduler at {client.scheduler.address} cannot import catalog_pools "
            f"({exc}); install it in the scheduler's and every worker's environment "
            "(pip install catalog_pools) or start the scheduler with "
            f"'dask scheduler --preload {PRELOAD}'"
        ) from exc
    _installed.add(client)
    logger.debug("scheduler plugin installed via client %s", client.id)


def install_on_default_client() -> None:
    """Install the plugin on the default Client, if there is one (else no-op)."""
    activate()
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return
    if client in _installed or client.asynchronous:
        return
    install(client)


async def install_async(client: Any) -> None:
    """Coroutine form of :func:`install` for clients starting up (preload)."""
    from distributed.protocol.pickle import dumps

    activate()
    if client in _installed:
        return
    await client.scheduler.register_scheduler_plugin(
        plugin=dumps(PoolsSchedulerPlugin()), name=PLUGIN_NAME, idempotent=True
    )
    _installed.add(client)


class propagate_pools:  # noqa: N801 - lower case, as in the 2022 API
    """Give downstream tasks the site of their pooled inputs.

    Propagation is on by default; this exists for parity with code written for
    dask-worker-pools. Call it once to switch propagation on (or off with
    ``enabled=False``) for the session, or use it as a context manager to
    change it for a block.

    Parameters
    ----------
    enabled
        Whether to propagate sites when pooled collections are computed.

    Examples
    --------
    >>> with propagate_pools(False):   # doctest: +SKIP
    ...     x.compute()                # only the load tasks are pinned
    """

    def __init__(self, enabled: bool = True) -> None:
        use_pooled_optimizers()
        install_on_default_client()
        self._previous = dask.config.get("catalog_pools.propagate", True)
        dask.config.set({"catalog_pools.propagate": bool(enabled)})

    def __enter__(self) -> propagate_pools:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dask.config.set({"catalog_pools.propagate": self._previous})
