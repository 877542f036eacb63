"""What the optimizer reads from a high-level graph's layers, without materializing them.

Pins (annotations) and chunk sizes are per-layer constants, so they are read
once per layer and looked up per key by the key's name (``key[0]`` of an array
chunk key, the key itself otherwise): a blockwise layer of a million tasks is
never iterated to learn what its annotations already say.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

import numpy as np
from dask.highlevelgraph import HighLevelGraph

from .._compat.dask_internals import key_annotations
from .guard import guarded_site
from .order import topological_order
from .sites import ANNOTATION, NBYTES, ORIGIN, RELAY, REPLICAS, WAIT, other_resources, per_key, pin_of

Key = Hashable
_FIRST: Callable[[Any], Hashable] = itemgetter(0)  # a tuple key's name


def key_name(key: Key) -> Hashable:
    """The layer name a key belongs to (by dask's naming convention)."""
    return key[0] if isinstance(key, tuple) and key else key


class LayerInfo:
    """Per-layer annotations and chunk sizes, looked up per key.

    Parameters
    ----------
    layers
        ``HighLevelGraph.layers``; more can be added with :meth:`add`.
    """

    def __init__(self, layers: Mapping[str, Any]) -> None:
        self._annotations: dict[Hashable, dict[str, Any]] = {}
        self._chunks: dict[Hashable, tuple[Any, int]] = {}
        #: name -> (ndim, bytes of every chunk) for layers whose chunks are all one size
        self._uniform: dict[Hashable, tuple[int, float]] = {}
        self._pins: dict[int, tuple[bool, str | None]] = {}
        #: whether any layer is a replicated load (:meth:`replicated` is then read per key)
        self.any_replicated = False
        #: whether any layer has annotations other than a pin (priority, retries, ...)
        self.extra = False
        self.add(layers)

    def add(self, layers: Mapping[str, Any]) -> None:
        """Read the annotations and chunk metadata of ``layers``."""
        for name, layer in layers.items():
            meta = layer.collection_annotations or {}
            chunks, dtype = meta.get("chunks"), meta.get("dtype")
            if chunks and dtype is not None:
                self._add_chunks(name, chunks, np.dtype(dtype).itemsize)
            if not layer.annotations:
                continue
            self.any_replicated = (
                self.any_replicated or REPLICAS in layer.annotations or per_key(layer.annotations)
            )
            if not self.extra:
                self.extra = not _only_pins(layer.annotations)
            for key_owner in self._names(name, layer):
                self._annotations[key_owner] = layer.annotations

    def _add_chunks(self, name: Hashable, chunks: Any, itemsize: int) -> None:
        self._chunks[name] = (chunks, itemsize)
        try:
            sizes = [set(dim) for dim in chunks]
        except TypeError:
            return
        if all(len(dim) == 1 for dim in sizes):
            n = math.prod(next(iter(dim)) for dim in sizes)
            if not math.isnan(n):
                self._uniform[name] = (len(sizes), float(n * itemsize))

    @staticmethod
    def _names(name: str, layer: Any) -> set[Hashable]:
        from dask.blockwise import Blockwise

        if isinstance(layer, Blockwise):
            return {layer.output}
        # Other layers are already materialized mappings (or small): the key
        # names they hold are usually just their own name.
        return {key_name(k) for k in layer}

    def annotations(self, key: Key) -> dict[str, Any]:
        """The annotations of the layer that made ``key`` (``{}`` if none)."""
        ann = self._annotations.get(key_name(key))
        if not ann:
            return {}
        return key_annotations(ann, key) if per_key(ann) else ann

    def pin(self, key: Key) -> tuple[bool, str | None]:
        """:func:`~catalog_pools.engine.sites.pin_of` the key's annotations, cached per layer."""
        ann = self._annotations.get(key_name(key))
        if not ann:
            return False, None
        if any(callable(v) for v in ann.values()):
            return pin_of(self.annotations(key))
        found = self._pins.get(id(ann))  # the layer's own dict: alive as long as self
        if found is None:
            found = self._pins[id(ann)] = pin_of(ann)
        return found

    def replicated(self, key: Key) -> bool:
        """Whether the key's layer is a replicated load (:data:`~.sites.REPLICAS`), read per layer."""
        if not self.any_replicated:
            return False
        ann = self._annotations.get(key_name(key))
        if not ann:
            return False
        if per_key(ann):
            return bool(self.annotations(key).get(REPLICAS))
        return bool(ann.get(REPLICAS))

    def nbytes_many(self, keys: Sequence[Key]) -> list[float] | None:
        """:meth:`nbytes` of many keys at once, when every key is a block of a layer whose
        chunks are all one size; else ``None`` (then ask key by key)."""
        if set(map(type, keys)) != {tuple}:
            return None
        by_name: dict[Hashable, float] = {}
        for name in set(map(_FIRST, keys)):
            uniform = self._uniform.get(name)
            if uniform is None:
                return None
            by_name[name] = uniform[1]
        ndims = {self._uniform[name][0] for name in by_name}
        if len(ndims) != 1 or set(map(len, cast(Sequence[tuple[Any, ...]], keys))) != {ndims.pop() + 1}:
            return None
        return list(map(by_name.__getitem__, map(_FIRST, keys)))

    def nbytes(self, key: Key) -> float | None:
        """Estimated output bytes of an array chunk key (chunk shape x itemsize)."""
        if not isinstance(key, tuple) or not key:
            return None
        name = key[0]
        uniform = self._uniform.get(name)
        if uniform is not None:
            return uniform[1] if len(key) - 1 == uniform[0] else None
        info = self._chunks.get(name)
        if info is None or not isinstance(key, tuple):
            return None
        chunks, itemsize = info
        if len(key) - 1 != len(chunks):
            return None
        try:
            n = math.prod(chunks[d][i] for d, i in enumerate(key[1:]))
        except (IndexError, TypeError):
            return None
        return None if math.isnan(n) else float(n * itemsize)  # NaN: unknown chunk sizes


def _only_pins(annotations: Mapping[str, Any]) -> bool:
    if per_key(annotations):
        return False
    if set(annotations) - {ANNOTATION, "resources", ORIGIN, RELAY, NBYTES, WAIT}:
        return False
    resources = annotations.get("resources") or {}
    return not other_resources(resources)


def has_pools(hlg: HighLevelGraph) -> bool:
    """Whether any layer of ``hlg`` is pinned or opted out.

    A layer whose pin is given per key (callable annotations, as dask leaves
    them after merging annotated graphs) counts as pinned: it is read key by key.
    """
    for layer in hlg.layers.values():
        annotations = layer.annotations or {}
        if per_key(annotations):
            return any(callable(annotations.get(name)) for name in (ANNOTATION, "resources"))
        if pin_of(annotations)[0]:
            return True
    return False


def spread_layer_pins(hlg: HighLevelGraph) -> HighLevelGraph:
    """Pin each unannotated layer whose input layers are all pinned alike.

    Done on the high-level graph before blockwise fusion, so a load and the
    operations applied to it fuse exactly as they would without pools (layers
    with different annotations never fuse). Joins of several sites are left
    to the per-task rules. Returns a new graph; the input is not modified.
    """
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
    """Annotations that say only "pinned to one site" (and, for replicated data, its replica sites)."""
    if (
        per_key(annotations)
        or set(annotations) - {REPLICAS} != {ANNOTATION, "resources"}
        or annotations[ANNOTATION] is None
    ):
        return False
    pinned, site = pin_of(annotations)
    return pinned and site is not None and len(annotations["resources"]) == 1


def materialize(
    hlg: HighLevelGraph, info: LayerInfo
) -> tuple[dict[Key, Any], dict[Key, str | None], list[list[Key]]]:
    """The tasks of ``hlg``, their pins and their keys layer by layer.

    The graph is ``convert_legacy_graph(ensure_dict(hlg))``, as dask's own
    optimizer makes it; pins are read once per layer (per key only where the
    annotations are functions of the key, and for guarded tasks embedded in
    unannotated materialized layers).
    """
    from dask.blockwise import Blockwise

    from .._compat.dask_internals import convert_layers

    layers = list({id(layer): layer for layer in hlg.layers.values()}.values())
    tasks = [dict(cast(Mapping[Key, Any], layer)) for layer in layers]
    graph = convert_layers(tasks)
    complete = len(graph) == sum(map(len, tasks))  # else self-aliases were dropped
    pins: dict[Key, str | None] = {}
    groups: list[list[Key]] = []
    for layer in layers:
        keys: list[Key] = list(layer) if complete else [k for k in layer if k in graph]
        groups.append(keys)
        annotations = layer.annotations or {}
        if per_key(annotations):
            pins.update((k, p[1]) for k in keys if (p := info.pin(k))[0])
            continue
        pinned, site = pin_of(annotations) if annotations else (False, None)
        if pinned:
            pins.update(dict.fromkeys(keys, site))
        elif not isinstance(layer, Blockwise):
            pins.update((k, g) for k in keys if (g := guarded_site(graph[k])) is not None)
    return graph, pins, groups
