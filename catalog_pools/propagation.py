"""``propagate_pools()``: the 2022 switch, kept for existing code."""
from __future__ import annotations

import logging
from types import TracebackType

import dask

from .install import install_on_default_client, use_pooled_optimizers

logger = logging.getLogger(__name__)


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
