"""Rule 7 (:class:`.regroup.Groups`) answered a layer at a time.

When every layer of a graph is wholly in one site (or wholly unplaced), is
wholly movable or wholly fixed, and every layer that reads another reads all
of its keys, a key of a layer costs what every other key of that layer costs:
the sites using it are the sites of the layers reading that layer. Rule 7 is
then the same computation on the graph of layers, each weighing the bytes of
all its keys, with no Python work per key (``xr.corr`` of two sites' series:
about 0.4 s of Python on 100k tasks, a few milliseconds by layer).

A group is then a connected set of propagated *layers* of one site: the
blocks of a layer move together. Key by key, blocks that do not touch each
other (a mask per time step) form groups of their own, examined one by one;
by layer they move as one when that saves bytes in all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import cast

from .regroup import Groups

Key = Hashable


def regroup_layers(
    layers: Sequence[Sequence[Key]],
    reads: Mapping[int, Collection[int]],
    site_of: Mapping[int, str | None],
    movable: Collection[int],
    joins: Sequence[int],
    known_size: Callable[[Key], float | None],
) -> dict[int, str]:
    """Rule 7 on whole layers; returns ``{layer: new site}`` for the layers that move.

    Parameters
    ----------
    layers
        The keys of each layer.
    reads
        Layer -> the other layers it reads, each read whole (every key of it
        used by some key of the reader).
    site_of
        Layer -> the one site of all its keys (``None``: none of them has one).
    movable
        Layers whose keys rule 7 may move (propagated, or pins the optimizer spread).
    joins
        Layers placed by rule 2 (reading layers of several sites), in a fixed order.
    known_size
        A key's bytes, ``None`` if unknown (then a move changing how often
        its layer crosses is not made).
    """
    present = [i for i, keys in enumerate(layers) if keys]
    dependencies: dict[Key, Collection[Key]] = {i: reads.get(i, ()) for i in present}
    dependents: dict[Key, list[Key]] = {i: [] for i in present}
    for i in present:
        for j in dependencies[i]:
            dependents[j].append(i)
    sites: dict[Key, str] = {i: site for i in present if (site := site_of[i]) is not None}
    sizes: dict[Key, float | None] = {}

    def layer_bytes(i: Key) -> float | None:
        if i not in sizes:
            total: float | None = 0.0
            for key in layers[cast(int, i)]:
                size = known_size(key)
                if size is None:
                    total = None
                    break
                total += size  # type: ignore[operator]
            sizes[i] = total
        return sizes[i]

    before = dict(sites)
    groups = Groups(dependencies, dependents, lambda i: i not in movable, sites, layer_bytes, ())
    # Ranked as key by key: a layer of blocks that do not touch each other saves
    # per block, against a group joined through a one-key layer (a reduction).
    groups.blocks = lambda members: float(min(len(layers[cast(int, i)]) for i in members))
    groups.regroup(joins)
    return {cast(int, i): site for i, site in sites.items() if before[i] != site}
