"""Private dask names used by catalog_pools; see :mod:`catalog_pools._compat`.

Pinned by ``tests/test_compat_dask.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any

# The task-spec classes are how dask 2026 represents a materialized graph; the
# optimizer must build and inspect tasks (wrap a task in the site guard, add a
# relay, inline the array a load reads from), and dask exports no public
# equivalent of these constructors.
from dask._task_spec import (  # noqa: TID251 - this module is the sanctioned home
    Alias,
    DataNode,
    GraphNode,
    Task,
    TaskRef,
    _execute_subgraph,
    convert_legacy_graph,
    fuse_linear_task_spec,
)

__all__ = [
    "Alias",
    "DataNode",
    "Task",
    "TaskRef",
    "convert_layers",
    "convert_legacy_graph",
    "culled_names",
    "forwarded_key",
    "fuse_linear_task_spec",
    "fused_keys",
    "fused_output_key",
    "key_annotations",
    "optimize_slices",
    "task_like",
]


def task_like(task: Any, key: Hashable, func: Any, *args: Any) -> Any:
    """A new ``Task`` that is a data producer if ``task`` was one.

    dask marks tasks that produce data (loads) for its scheduler's ordering;
    the flag is only settable through the private ``_data_producer`` keyword.
    """
    return Task(key, func, *args, _data_producer=task.data_producer)


def convert_layers(layers: Sequence[Mapping[Hashable, Any]]) -> dict[Hashable, Any]:
    """``convert_legacy_graph`` of the union of ``layers``, skipping those already converted.

    dask 2026 materializes blockwise layers (most of an array graph) as task
    nodes, which ``convert_legacy_graph`` only walks and returns unchanged; it
    has no public way to say a mapping needs no conversion. A layer whose
    values are all task nodes (no ``Alias``, which conversion may drop) is
    taken as it is; the others are converted against every key of the graph.
    """
    every: dict[Hashable, Any] = {}
    for layer in layers:
        every.update(layer)
    out: dict[Hashable, Any] = {}
    for layer in layers:
        kinds = set(map(type, layer.values()))
        if all(issubclass(kind, GraphNode) and kind is not Alias for kind in kinds):
            out.update(layer)
        else:
            out.update(convert_legacy_graph(layer, all_keys=every))
    return out


def _linear_chain(key: Hashable, task: Any) -> bool:
    """Whether ``task`` is a chain linear fusion made (its inner keys are graph keys).

    Blockwise fusion makes each block of a fused layer the same kind of
    subgraph, but its inner keys are the layer's placeholders and its output
    is the layer's name, the first item of the block's own key.
    """
    if getattr(task, "func", None) is not _execute_subgraph:
        return False
    return not (isinstance(key, tuple) and key and task.args[1] == key[0])


def fused_keys(key: Hashable, task: Any) -> Collection[Hashable]:
    """Every graph key a (possibly fused) task computes (see :func:`fused_output_key`)."""
    if _linear_chain(key, task):
        return task.args[0].keys()
    return (key,)


def fused_output_key(key: Hashable, task: Any) -> Hashable:
    """The graph key whose annotations a (possibly fused) task inherits.

    ``fuse_linear_task_spec`` wraps a chain in ``_execute_subgraph(graph,
    outkey, ...)``; no public accessor says which inner key is the output.
    """
    if _linear_chain(key, task):
        return task.args[1]
    return key  # a plain task or a block of a fused layer, or the alias fusion leaves under the original key


def optimize_slices(dsk: dict[Hashable, Any]) -> dict[Hashable, Any]:
    """dask.array's slice fusion, run by its own optimizer after linear fusion.

    Private in dask (``_optimize_slices``); the pooled optimizer runs dask's
    passes one site at a time, so it must call it itself. Without it a netCDF
    chunk is read whole before slicing (xarray issue 9926).
    """
    from dask.array import optimization

    fn = getattr(optimization, "_optimize_slices", None)
    return fn(dsk) if fn is not None else dsk


def forwarded_key(task: Any) -> Hashable | None:
    """The key whose value ``task`` hands on unchanged, if it only forwards one.

    An ``Alias``, or the wrapper dask's ``ProhibitReuse`` (``dask.delayed`` of a
    collection) puts around each task it renames: ``_identity`` of an alias or
    a reference. Neither has a public name.
    """
    from dask._expr import ProhibitReuse

    if isinstance(task, Task) and task.func is ProhibitReuse._identity and len(task.args) == 1:
        task = task.args[0]
        if isinstance(task, TaskRef):
            return task.key
    if isinstance(task, Alias):
        target = task.target
        return target.key if isinstance(target, TaskRef) else target
    return None


def key_annotations(annotations: Mapping[str, Any], key: Hashable) -> dict[str, Any]:
    """A layer's annotations as they apply to ``key``.

    Why: when dask merges graphs with different annotations (``dask.compute(a, b)``,
    ``dask.delayed`` of collections) it stores per-key functions, and a key with
    no annotation of a kind gets the private ``dask._expr._AnnotationsTombstone``;
    only dask's own ``__dask_annotations__`` filters it, and that materializes
    every layer of the graph. Values that are tombstones are dropped here.
    """
    from dask._expr import _AnnotationsTombstone

    evaluated = {n: v(key) if callable(v) else v for n, v in annotations.items()}
    return {n: v for n, v in evaluated.items() if not isinstance(v, _AnnotationsTombstone)}


def culled_names(before: Collection[str], after: Collection[str]) -> dict[str, str]:
    """Layer name after ``HighLevelGraph.cull`` -> its name before.

    ``cull`` renames every layer it keeps to ``f"{name}-{token}"`` and keeps
    no record of the old name, which the optimizer needs to carry per-layer
    facts (pins it spread) across the cull.
    """
    known = set(before)
    out = {}
    for name in after:
        old = name if name in known else name.rsplit("-", 1)[0]
        if old in known:
            out[name] = old
    return out
