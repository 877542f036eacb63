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

import logging
import math
import pydoc
from collections import defaultdict
from collections.abc import Hashable, Mapping
from typing import Any, Literal

import dask
import numpy as np

from .guard import guard_task
from .placement import assign_sites
from .sites import ANNOTATION, resource_name, site_of_resource

logger = logging.getLogger(__name__)

Kind = Literal["array", "delayed"]
_BASE = {"array": "dask.array.optimization.optimize", "delayed": "dask.delayed.optimize"}
#: Annotation carrying the client's ``catalog_pools.no-worker-timeout`` in seconds.
WAIT_ANNOTATION = "pool_wait"

_active = False


def activate() -> None:
    """Mark pools as in use in this process.

    Until then the optimizers pickle as dask's own, so importing the package
    never requires it on a scheduler that runs no pooled work.
    """
    global _active
    _active = True


def _pin_of(annotations: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether a task's annotations pin it, and to which site (``None``: opted out)."""
    if ANNOTATION in annotations:
        return True, annotations[ANNOTATION]
    found = sorted(s for s in map(site_of_resource, annotations.get("resources") or {}) if s is not None)
    if len(found) > 1:
        logger.warning("task pinned to several sites %s; using %r", found, found[0])
    return (True, found[0]) if found else (False, None)


def _has_pools(hlg: Any) -> bool:
    return any(_pin_of(layer.annotations or {})[0] for layer in hlg.layers.values())


def _chunk_nbytes(key: Any, name: str, chunks: Any, itemsize: int) -> float | None:
    if not (isinstance(key, tuple) and key and key[0] == name and len(key) - 1 == len(chunks)):
        return None
    try:
        n = math.prod(chunks[d][i] for d, i in enumerate(key[1:]))
    except (IndexError, TypeError):
        return None
    return None if n != n else float(n * itemsize)  # NaN: unknown chunk sizes


def _read_layers(
    layers: Mapping[str, Any],
) -> tuple[dict[Hashable, dict[str, Any]], dict[Hashable, float]]:
    """Per-key annotations and per-key output size estimates from HLG layers."""
    annotations: dict[Hashable, dict[str, Any]] = {}
    sizes: dict[Hashable, float] = {}
    for name, layer in layers.items():
        ann = layer.annotations or {}
        meta = layer.collection_annotations or {}
        chunks, dtype = meta.get("chunks"), meta.get("dtype")
        itemsize = np.dtype(dtype).itemsize if dtype is not None else None
        if not ann and not (chunks and itemsize):
            continue
        for key in layer:
            if ann:
                annotations[key] = {n: (v(key) if callable(v) else v) for n, v in ann.items()}
            if chunks and itemsize:
                size = _chunk_nbytes(key, name, chunks, itemsize)
                if size is not None:
                    sizes[key] = size
    return annotations, sizes


def _final_annotations(base: Mapping[str, Any], site: str | None, wait: float | None) -> dict[str, Any]:
    out = dict(base)
    resources = {r: q for r, q in (out.pop("resources", None) or {}).items() if site_of_resource(r) is None}
    out.pop(ANNOTATION, None)
    out.pop(WAIT_ANNOTATION, None)
    if site is not None:
        resources[resource_name(site)] = 0
        out[ANNOTATION] = site
        if wait is not None:
            out[WAIT_ANNOTATION] = wait
    if resources:
        out["resources"] = resources
    return out


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
        if not _active:
            return (pydoc.locate, (_BASE[self.kind],))
        return (PoolOptimizer, (self.kind, *self.settings()))

    def __repr__(self) -> str:
        return f"PoolOptimizer({self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolOptimizer) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(("PoolOptimizer", self.kind))

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        from dask.core import flatten
        from dask.highlevelgraph import HighLevelGraph

        base = pydoc.locate(_BASE[self.kind])
        if not isinstance(dsk, HighLevelGraph) or not _has_pools(dsk):
            return base(dsk, keys, **kwargs)  # type: ignore[operator]
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
    ``resources={"pool-<site>": 0}`` and ``pool=<site>`` annotations.
    """
    from dask._task_spec import convert_legacy_graph, fuse_linear_task_spec
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
    from dask.utils import ensure_dict

    # Spreading copies layers with their collection metadata, so one pass
    # reads both the pins and the chunk sizes.
    hlg = _spread_layer_pins(hlg)
    annotations, sizes = _read_layers(hlg.layers)
    if kind == "array":
        from dask.blockwise import fuse_roots, optimize_blockwise

        # Layers annotated with ``pool`` only fuse with identically annotated
        # layers (``dask.blockwise._can_fuse_annotations``), so no task mixes sites.
        unfused = hlg.layers
        hlg = optimize_blockwise(hlg, keys=keys)
        hlg = fuse_roots(hlg, keys=keys)
        fused = {n: layer for n, layer in hlg.layers.items() if unfused.get(n) is not layer}
        annotations.update(_read_layers(fused)[0])
    hlg = hlg.cull(set(keys))
    graph = convert_legacy_graph(ensure_dict(hlg))

    pins = {}
    for key in graph:
        pinned, site = _pin_of(annotations.get(key, {}))
        if pinned:
            pins[key] = site
    dependencies = {k: task.dependencies for k, task in graph.items()}
    if propagate:
        sites = assign_sites(dependencies, pins, sizes)
    else:
        sites = {k: s for k, s in pins.items() if s is not None}

    if kind == "array":
        fuse = dask.config.get("optimization.fuse.active") is not False
    else:
        fuse = bool(dask.config.get("optimization.fuse.delayed"))
    dependents: dict[Hashable, set[Hashable]] = defaultdict(set)
    for key, deps in dependencies.items():
        for dep in deps:
            dependents[dep].add(key)

    partitions: dict[str | None, dict[Hashable, Any]] = defaultdict(dict)
    for key, task in graph.items():
        partitions[sites.get(key)][key] = task
    requested = set(keys)
    out: dict[Hashable, Any] = {}
    out_site: dict[Hashable, str | None] = {}
    for site, part in partitions.items():
        if fuse:
            boundary = {k for k in part if k in requested or any(sites.get(c) != site for c in dependents[k])}
            part = fuse_linear_task_spec(part, keys=boundary)
            if kind == "array":
                part = _optimize_slices(part)
        if site is not None:
            part = _inline_data(part, requested)
        for key, task in part.items():
            out[key] = guard_task(task, site) if guard and site is not None else task
            out_site[key] = site

    groups: dict[str, tuple[dict[str, Any], dict[Hashable, Any]]] = {}
    for key, task in out.items():
        ann = _final_annotations(annotations.get(_source_key(key, task), {}), out_site[key], wait)
        signature = repr(sorted(ann.items(), key=lambda kv: kv[0]))
        groups.setdefault(signature, (ann, {}))[1][key] = task
    layers = {}
    for i, (ann, mapping) in enumerate(groups.values()):
        layers[f"catalog-pools-{i}"] = MaterializedLayer(mapping, annotations=ann or None)
    logger.debug("pooled graph: %d tasks, %d pinned", len(out), sum(s is not None for s in out_site.values()))
    return HighLevelGraph(layers, {name: set() for name in layers})


def _spread_layer_pins(hlg: Any) -> Any:
    """Pin each unannotated layer whose input layers are all pinned alike.

    Done on the high-level graph before blockwise fusion, so a load and the
    operations applied to it fuse exactly as they would without pools (layers
    with different annotations never fuse). Joins of several sites are left
    to the per-task rules. Returns a new graph; the input is not modified.
    """
    import copy

    from dask.highlevelgraph import HighLevelGraph

    from .placement import topological_order

    layers = dict(hlg.layers)
    changed = False
    for name in topological_order(hlg.dependencies):
        layer = layers[name]
        deps = hlg.dependencies.get(name) or set()
        if layer.annotations or not deps:
            continue
        inputs = [layers[d].annotations or {} for d in deps]
        first = inputs[0]
        if not _is_pure_pin(first) or any(a != first for a in inputs[1:]):
            continue
        layer = copy.copy(layer)
        layer.annotations = dict(first)
        layers[name] = layer
        changed = True
    return HighLevelGraph(layers, hlg.dependencies) if changed else hlg


def _is_pure_pin(annotations: Mapping[str, Any]) -> bool:
    """Annotations that say only "pinned to one site" (nothing else to copy)."""
    if set(annotations) != {ANNOTATION, "resources"} or annotations[ANNOTATION] is None:
        return False
    resources = annotations["resources"]
    return isinstance(resources, Mapping) and all(site_of_resource(r) for r in resources)


def _inline_data(part: dict[Hashable, Any], requested: set[Hashable]) -> dict[Hashable, Any]:
    """Inline literal data (the array a load reads from) into the tasks using it.

    A pinned task never takes part in root-task queuing, so a dependency held
    by one worker (xarray's ``original`` array, ``inline_array=False``) would
    draw every load of the site onto that worker. Inlined, loads have no
    dependency and spread over the site's workers, as ``inline_array=True``
    would do.
    """
    from dask._task_spec import DataNode

    data = {k: t for k, t in part.items() if isinstance(t, DataNode) and k not in requested}
    if not data:
        return part
    users: dict[Hashable, list[Hashable]] = defaultdict(list)
    for key, task in part.items():
        for dep in task.dependencies:
            if dep in data:
                users[dep].append(key)
    out = dict(part)
    for key, node in data.items():
        if not users.get(key):
            continue  # used outside this site: keep it as a task
        for user in users[key]:
            out[user] = out[user].substitute({key: node})
        del out[key]
    return out


def _source_key(key: Hashable, task: Any) -> Hashable:
    """The original key whose annotations a (possibly fused) task inherits."""
    from dask._task_spec import Alias, _execute_subgraph

    if getattr(task, "func", None) is _execute_subgraph:
        return task.args[1]
    if isinstance(task, Alias):
        return task.target.key if hasattr(task.target, "key") else task.target
    return key


def _optimize_slices(dsk: dict[Hashable, Any]) -> dict[Hashable, Any]:
    # dask.array's slice fusion (xarray issue 9926: without it a netCDF chunk is
    # read whole before slicing). Private; tests/test_optimize.py pins it.
    from dask.array import optimization

    fn = getattr(optimization, "_optimize_slices", None)
    return fn(dsk) if fn is not None else dsk


def optimizers() -> dict[str, PoolOptimizer]:
    """The config entries that install the pooled optimizers."""
    return {"array_optimize": PoolOptimizer("array"), "delayed_optimize": PoolOptimizer("delayed")}
