"""Whether culling a high-level graph would keep every task (then it need not run).

``HighLevelGraph.cull`` works out, key by key, which tasks the requested keys
need: for a blockwise layer it derives every output block's input keys, work
that materializing the layer does again. When the requested keys are whole
layers and every layer is read whole by a layer that is itself needed whole,
nothing would be culled. :func:`needs_every_task` proves that a layer at a
time, reading tasks only in the materialized layers (which are already
dicts), and answers ``False`` whenever it cannot prove it; then the optimizer
culls as dask does.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from math import prod
from typing import Any

from .layers import key_name
from .order import topological_order

Key = Hashable


def needs_every_task(hlg: Any, keys: Iterable[Key]) -> bool:
    """True if every task of every layer of ``hlg`` is needed to compute ``keys``.

    ``False`` means "not proven": some layer may be needed in part only.
    """
    layers: Mapping[str, Any] = hlg.layers
    made = _names_made(layers)
    if made is None:
        return False
    requested = _requested(layers, made, keys)
    if requested is None:
        return False
    dependents: dict[str, list[str]] = {name: [] for name in layers}
    for name, deps in hlg.dependencies.items():
        for dep in deps:
            if dep not in dependents:
                return False
            dependents[dep].append(name)
    try:
        order = topological_order({n: set(hlg.dependencies.get(n, ())) for n in layers})
    except ValueError:
        return False
    whole: set[str] = set()
    for name in reversed(order):  # readers before what they read
        layer = layers[name]
        if requested.get(name, 0) != len(layer) and not any(
            d in whole and _reads_whole(layers[d], layer, made[name]) for d in dependents[name]
        ):
            return False
        whole.add(name)
    return True


def _names_made(layers: Mapping[str, Any]) -> dict[str, set[Hashable]] | None:
    """Layer -> the names of the keys it makes; ``None`` if two layers make one name
    or a blockwise layer makes only some of its blocks."""
    from dask.blockwise import Blockwise

    out: dict[str, set[Hashable]] = {}
    producer: dict[Hashable, str] = {}
    for name, layer in layers.items():
        if isinstance(layer, Blockwise):
            if layer.output_blocks is not None:
                return None
            out[name] = {layer.output}
        else:
            out[name] = set(map(key_name, layer.keys()))
        for n in out[name]:
            if producer.setdefault(n, name) != name:
                return None
    return out


def _requested(
    layers: Mapping[str, Any], made: Mapping[str, set[Hashable]], keys: Iterable[Key]
) -> dict[str, int] | None:
    """Layer -> how many of its keys are requested; ``None`` if a key is in no layer."""
    producer = {n: name for name, names in made.items() for n in names}
    by_layer: dict[str, set[Key]] = {}
    for key in keys:
        name = producer.get(key_name(key))
        if name is None:
            return None
        by_layer.setdefault(name, set()).add(key)
    for name, wanted in by_layer.items():
        if not wanted <= set(layers[name].get_output_keys()):
            return None
    return {name: len(wanted) for name, wanted in by_layer.items()}


def _reads_whole(reader: Any, layer: Any, made: Collection[Hashable]) -> bool:
    """Whether ``reader`` (needed whole) reads every task of ``layer`` (making keys named ``made``)."""
    from dask.blockwise import Blockwise

    if isinstance(reader, Blockwise):
        # A blockwise layer iterates all its output blocks; an input index either
        # follows an output index (its block count equal, or 1 when broadcast) or
        # is contracted (every block read): every input block is read, provided
        # the layer making it has exactly that grid of blocks.
        numblocks: Mapping[Any, Sequence[int]] = reader.numblocks
        for arg, index in reader.indices:
            if index is None or arg not in made or arg in reader.io_deps:
                continue
            grid = numblocks.get(arg)
            if grid is None or len(made) != 1 or prod(grid) != len(layer):
                return False
            if all(n == 1 or n == reader.dims[i] for i, n in zip(index, grid, strict=True)):
                return True
        return False
    from dask.core import keys_in_tasks

    wanted = set(layer.get_output_keys())
    return len(set(keys_in_tasks(wanted, reader.values()))) == len(wanted) == len(layer)
