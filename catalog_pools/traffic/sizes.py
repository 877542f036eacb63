"""Output bytes of tasks, estimated from metadata for :func:`~catalog_pools.traffic.explain`.

Nothing is computed: an array chunk's bytes come from its layer's chunk
metadata (shape x itemsize); a relay the engine inserts has its source's size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from dask.highlevelgraph import HighLevelGraph
from dask.utils import key_split

from .._compat.dask_internals import forwarded_key
from ..engine.guard import guarded_nbytes
from ..engine.plan import relay

__all__ = ["chunk_bytes", "size_guarded", "size_relays"]

Key = Hashable


def chunk_bytes(key: Key, graph: Any) -> float | None:
    """Output bytes of an array chunk key from its layer's metadata (shape x itemsize)."""
    if not (isinstance(key, tuple) and key and isinstance(key[0], str)):
        return None
    layer = graph.layers.get(key[0]) if hasattr(graph, "layers") else None
    meta = getattr(layer, "collection_annotations", None) or {}
    chunks, dtype = meta.get("chunks"), meta.get("dtype")
    if chunks is None or dtype is None or len(key) - 1 != len(chunks):
        return None
    try:
        n = math.prod(chunks[d][i] for d, i in enumerate(key[1:]))
        itemsize = np.dtype(dtype).itemsize
    except (IndexError, TypeError):
        return None
    if math.isnan(n):  # unknown chunk sizes
        return None
    return float(n * itemsize * _partial_fields(key[0]))


#: dask's mean / var partials (``mean_chunk``, ``moment_combine-partial``, ...).
_PARTIAL = re.compile(r"^(?:nan)?(mean|moment)_(?:chunk|combine)")


def _partial_fields(name: str) -> int:
    """Arrays per chunk of a reduction's partial results, each of the output's chunk shape.

    dask's mean partial is ``{"n", "total"}`` (two float64 arrays) and its
    moment partial (``var``/``std``) adds ``M``: the metadata describes only one.
    """
    match = _PARTIAL.match(key_split(name))
    if match is None:
        return 1
    return 2 if match.group(1) == "mean" else 3


def size_relays(
    optimized: HighLevelGraph, dependencies: Mapping[Key, set[Key]], sizes: dict[Key, float]
) -> None:
    """A relay and its source hold the same value: give both the size known for either.

    The engine renames a relayed task's source (its key is then unknown to the
    collection's metadata) and gives the original key to one relay.
    """
    relays = [
        key
        for layer in optimized.layers.values()
        for key, task in layer.items()
        if getattr(task, "func", None) is relay and len(dependencies.get(key, ())) == 1
    ]
    for key in relays:
        (source,) = dependencies[key]
        known = sizes.get(key, sizes.get(source))
        if known is not None:
            sizes.setdefault(key, known)
            sizes.setdefault(source, known)


def size_guarded(optimized: HighLevelGraph, sizes: dict[Key, float]) -> None:
    """Sizes the engine kept in guarded tasks, and keys that only forward one of them.

    A pinned array optimized once and embedded in a delayed graph
    (``dask.delayed(f)(array)``, ``array.to_delayed()``) has lost its chunk
    metadata; its guarded tasks still carry their estimated output bytes.
    """
    forwards: dict[Key, Key] = {}
    for layer in optimized.layers.values():
        for key, task in layer.items():
            size = guarded_nbytes(task)
            if size is not None:
                sizes.setdefault(key, size)
            elif (target := forwarded_key(task)) is not None:
                forwards[key] = target
    for start, first in forwards.items():
        chain: set[Hashable] = {start}
        node: Hashable = first
        while node in forwards and node not in chain:  # an alias of an alias
            chain.add(node)
            node = forwards[node]
        if node in sizes:
            sizes.setdefault(start, sizes[node])
