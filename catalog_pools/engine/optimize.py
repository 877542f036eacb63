"""Graph optimizers that keep site pins through fusion and propagate them.

Dask 2026 runs low-level optimization on the scheduler (``HLGExpr._optimized_dsk``)
and linear fusion returns a plain dict, so layer annotations -- and with them every
``resources`` restriction -- are lost. These optimizers are installed as the
``array_optimize`` / ``delayed_optimize`` config callables: the client resolves
them, they are pickled with the graph and run wherever the graph is
materialized. For a graph with no pooled layer they defer to dask's own
optimizer unchanged.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import pkgutil
from collections.abc import Hashable, Iterator
from typing import Any

import dask

from .._compat.dask_internals import convert_legacy_graph, culled_names
from .cull import needs_every_task
from .guard import guarded_site
from .layers import LayerInfo, has_pools, materialize, spread_layer_pins
from .plan import Kind, Plan, relay
from .regroup import spread_layers
from .replicas import choose_replicas
from .sites import REPLICAS

__all__ = ["PoolOptimizer", "activate", "optimize_pooled", "optimizers", "relay"]

logger = logging.getLogger(__name__)

_BASE = {"array": "dask.array.optimization:optimize", "delayed": "dask.delayed:optimize"}

#: ``active``: pools are in use in this process (see :func:`activate`).
_state = {"active": False}


def activate() -> None:
    """Mark pools as in use in this process.

    Until then the optimizers pickle as dask's own, so importing the package
    never requires it on a scheduler that runs no pooled work.
    """
    _state["active"] = True


class PoolOptimizer:
    """Dask optimizer that keeps and propagates site pins.

    Parameters
    ----------
    kind
        ``"array"`` (dask.array and xarray) or ``"delayed"``.
    propagate, guard, wait
        Settings; ``None`` reads dask config (``catalog_pools.propagate``,
        ``catalog_pools.guard``, ``catalog_pools.no-worker-timeout``) when the
        optimizer is pickled on the client, so the scheduler applies the
        client's settings.
    """

    def __init__(
        self,
        kind: Kind,
        propagate: bool | None = None,
        guard: bool | None = None,
        wait: float | None = None,
    ) -> None:
        self.kind = kind
        self.propagate = propagate
        self.guard = guard
        self.wait = wait

    def settings(self) -> tuple[bool, bool, float | None]:
        propagate = self.propagate
        if propagate is None:
            propagate = bool(dask.config.get("catalog_pools.propagate", True))
        guard = self.guard
        if guard is None:
            guard = bool(dask.config.get("catalog_pools.guard", True))
        wait = self.wait
        if wait is None:
            raw = dask.config.get("catalog_pools.no-worker-timeout", "10s")
            wait = None if raw is None else dask.utils.parse_timedelta(raw, default="s")
        return propagate, guard, wait

    def __reduce__(self) -> tuple[Any, ...]:
        if not _state["active"]:
            return (pkgutil.resolve_name, (_BASE[self.kind],))
        return (PoolOptimizer, (self.kind, *self.settings()))

    def __repr__(self) -> str:
        return f"PoolOptimizer({self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolOptimizer) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(("PoolOptimizer", self.kind))

    def _embeds_guarded(self, dsk: Any) -> bool:
        """A delayed graph holding pinned tasks of an optimized collection (:func:`.guard.guarded_site`)."""
        from dask.utils import ensure_dict

        if self.kind != "delayed":
            return False
        return any(guarded_site(task) is not None for task in convert_legacy_graph(ensure_dict(dsk)).values())

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        from dask.core import flatten
        from dask.highlevelgraph import HighLevelGraph

        base = pkgutil.resolve_name(_BASE[self.kind])
        if not isinstance(dsk, HighLevelGraph) or not (has_pools(dsk) or self._embeds_guarded(dsk)):
            return base(dsk, keys, **kwargs)
        return optimize_pooled(
            dsk, list(flatten(keys if isinstance(keys, list | set) else [keys])), self.kind, *self.settings()
        )


def optimize_pooled(
    hlg: Any,
    keys: list[Hashable],
    kind: Kind = "array",
    propagate: bool = True,
    guard: bool = True,
    wait: float | None = None,
) -> Any:
    """Optimize a pooled graph: dask's usual passes, but never across sites.

    Returns a ``HighLevelGraph`` whose layers carry each task's site as
    ``resources={"pool-<site>": 0}`` and ``pool=<site>`` annotations, with
    ``pool_origin`` saying which sites were propagated rather than pinned.
    """
    with _collection_paused():
        return _optimize_pooled(hlg, keys, kind, propagate, guard, wait)


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the graph is rebuilt.

    Nearly everything the optimizer allocates (a few objects per task) lives
    on in the new graph, so the collector's passes, triggered by allocation
    counts, find little to free yet rescan the ever larger graph: on 100k
    tasks they took about as long as the optimization itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _optimize_pooled(
    hlg: Any, keys: list[Hashable], kind: Kind, propagate: bool, guard: bool, wait: float | None
) -> Any:
    from dask.highlevelgraph import HighLevelGraph

    # Spreading copies layers with their collection metadata, so one pass
    # reads both the pins and the chunk sizes.
    chosen = choose_replicas(hlg)
    hlg = spread_layer_pins(chosen)
    # Pins spread by the optimizer (rule 7 may move them), replica choices aside.
    spread = {
        name
        for name, layer in hlg.layers.items()
        if layer is not chosen.layers[name] and REPLICAS not in layer.annotations
    }
    before = hlg.dependencies
    info = LayerInfo(hlg.layers)
    if kind == "array":
        from dask.blockwise import fuse_roots, optimize_blockwise

        # Layers annotated with ``pool`` only fuse with identically annotated
        # layers (``dask.blockwise._can_fuse_annotations``), so no task mixes sites.
        unfused = hlg.layers
        hlg = optimize_blockwise(hlg, keys=keys)
        hlg = fuse_roots(hlg, keys=keys)
        info.add({n: layer for n, layer in hlg.layers.items() if unfused.get(n) is not layer})
    movable = spread_layers(before, hlg.layers, spread) if spread else set()
    kept = hlg.layers
    if not needs_every_task(hlg, keys):  # else culling would keep every task (:mod:`.cull`)
        hlg = hlg.cull(set(keys))
    movable_keys: set[Hashable] = set()
    if movable:
        old = culled_names(kept, hlg.layers)
        # By key: one layer may hold keys of several names (rechunk's split and merge).
        for name, layer in hlg.layers.items():
            if old.get(name) in movable:
                movable_keys.update(layer)
    graph, pins, groups = materialize(hlg, info)
    plan = Plan(graph, info, pins, groups)
    plan.movable_keys = movable_keys
    plan.place(propagate)
    if propagate:
        plan.add_relays(set(keys))
    layers = plan.layers(plan.fuse(kind, set(keys), guard), wait)
    logger.debug("pooled graph: %d layers", len(layers))
    return HighLevelGraph(layers, {name: set() for name in layers})


def optimizers() -> dict[str, PoolOptimizer]:
    """The config entries that install the pooled optimizers."""
    return {"array_optimize": PoolOptimizer("array"), "delayed_optimize": PoolOptimizer("delayed")}
