"""Placement rules 1 and 2 (:func:`.placement.assign_sites`) answered a layer at a time.

A graph layer (a blockwise operation, a reduction step) holds thousands of
tasks built alike. When the layers it reads are each wholly in one site, rule 1
has one answer for the whole layer, and rule 2 (each task where most of its
input bytes are) is evaluated for all of its tasks at once with numpy. Other
layers are left to the per-key rules. The answers are the same either way
(``tests/test_propagate.py`` compares them on random graphs).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from .order import topological_order, unpinned_order

Key = Hashable
#: Marker for a key absent from the pins.
_FREE = object()
_FIRST: Callable[[Any], Hashable] = itemgetter(0)  # a tuple key's name


def place_layers(
    layers: Sequence[Sequence[Key]],
    dependencies: Mapping[Key, Collection[Key]],
    pins: Mapping[Key, str | None],
    sites: dict[Key, str],
    dependents: Mapping[Key, Collection[Key]],
    size: Callable[[Key], float],
    by_rules: Callable[[list[Key]], None],
    joins: list[Key],
    movable: Callable[[Key], bool] | None = None,
    known_size: Callable[[Key], float | None] | None = None,
    closed: bool = False,
) -> list[Key] | None:
    """Rules 1 and 2 layer by layer; returns the keys decided one by one, in order.

    ``sites`` (the pins' sites on entry) receives every decision;
    ``by_rules`` decides a list of keys one by one; keys whose inputs come
    from several sites are added to ``joins``, for rule 7, unless no group
    can gain by moving; ``movable`` tells pins the optimizer spread (rule 7
    may move them). Given ``known_size`` (a key's bytes, ``None`` if
    unknown), rule 7 is also answered here by layer when every layer qualifies
    (:mod:`.layer_groups`), and ``joins`` is then emptied. Returns ``None``, deciding
    nothing, if the layers depend on each other in a cycle (then only keys
    can be ordered). ``closed``: every dependency is a key of ``dependencies``
    (then the layers a layer reads are found from the names of the keys it
    reads, when each name is in one layer).
    """
    reads, free, mixed, chained, outside, partial = _read_layers(layers, dependencies, pins, closed)
    try:
        ordered = topological_order(reads)
    except ValueError:
        return None
    whole: dict[int, str | None] = {}  # layer -> the one site of all its keys, if any
    uniform: set[int] = set()  # layers whose keys all have one site, or all none
    layer_joins: list[int] = []
    order: list[Key] = []
    for i in ordered:
        keys = layers[i]
        if i not in free:
            _set_whole(i, set(map(pins.get, keys)), whole, uniform)
            continue
        sources = {whole[j] for j in reads[i]}  # None: a layer of several sites
        # keys without inputs are left to rule 3, as they are one by one
        at_once = (
            sources
            and None not in sources
            and all(i not in marked for marked in (mixed, outside, chained))
            and all(map(dependencies.__getitem__, keys))
        )
        if at_once and len(sources) == 1:  # rule 1
            site = sources.pop()
            sites.update(dict.fromkeys(keys, site))  # type: ignore[arg-type]
            whole[i] = site
            uniform.add(i)
            continue
        if len(sources - {None}) > 1:
            layer_joins.append(i)
        if at_once:  # rule 2
            sites.update(
                zip(keys, weigh_layer(keys, dependencies, dependents, sites, size, joins), strict=True)
            )
        else:
            if i in chained:
                part = unpinned_order({k: dependencies[k] for k in keys}, pins)
            else:
                part = [k for k in keys if k not in pins] if i in mixed else list(keys)
            by_rules(part)
            order.extend(part)
        _set_whole(i, set(map(sites.get, keys)), whole, uniform)
    split = {i for i in chained if whole[i] is None}
    if joins and _no_group_gains(layers, reads, free, split, whole, movable or (lambda key: False)):
        joins.clear()
    whole_reads = not (chained or outside or partial or mixed)
    if (
        joins
        and known_size
        and whole_reads
        and _rule_7_by_layer(layers, reads, free, uniform, whole, layer_joins, movable, known_size, sites)
    ):
        joins.clear()
    return order


def _set_whole(i: int, found: set[str | None], whole: dict[int, str | None], uniform: set[int]) -> None:
    """Record layer ``i``'s one site (``None``: none, or several) and whether its keys agree."""
    whole[i] = next(iter(found)) if len(found) == 1 else None
    if len(found) <= 1:
        uniform.add(i)


def _rule_7_by_layer(
    layers: Sequence[Sequence[Key]],
    reads: Mapping[int, set[int]],
    free: set[int],
    uniform: set[int],
    whole: Mapping[int, str | None],
    joins: list[int],
    movable: Callable[[Key], bool] | None,
    known_size: Callable[[Key], float | None],
    sites: dict[Key, str],
) -> bool:
    """Rule 7 by layer (:func:`.layer_groups.regroup_layers`) into ``sites``; ``False``
    (nothing done) if a layer does not qualify."""
    from .layer_groups import regroup_layers

    if len(uniform) != len(layers):
        return False
    can_move: set[int] = set()
    for i, keys in enumerate(layers):
        if i in free:
            can_move.add(i)  # not mixed: every key propagated
        elif movable is not None and keys:
            flags = set(map(movable, keys))
            if len(flags) > 1:
                return False
            if flags.pop():
                can_move.add(i)
    for i, site in regroup_layers(layers, reads, whole, can_move, sorted(joins), known_size).items():
        sites.update(dict.fromkeys(layers[i], site))
    return True


def _read_layers(
    layers: Sequence[Sequence[Key]],
    dependencies: Mapping[Key, Collection[Key]],
    pins: Mapping[Key, str | None],
    closed: bool = False,
) -> tuple[dict[int, set[int]], set[int], set[int], set[int], set[int], set[int]]:
    """The layers each layer reads; the layers with unpinned keys; and which
    layers mix pinned and unpinned keys, read their own keys, read data
    outside, or read only some keys of a layer."""
    named = _layer_of_name(layers) if closed else None
    layer_of: dict[Key, int] = {}
    if named is None:
        for i, keys in enumerate(layers):
            layer_of.update(dict.fromkeys(keys, i))
    reads: dict[int, set[int]] = {}
    free: set[int] = set()
    mixed: set[int] = set()
    chained: set[int] = set()
    outside: set[int] = set()
    partial: set[int] = set()
    for i, keys in enumerate(layers):
        edges = set(chain.from_iterable(map(dependencies.__getitem__, keys)))
        read: set[int | None] = _layers_read(edges, named, layer_of)
        if i in read:
            chained.add(i)
        if None in read:
            outside.add(i)
        reads[i] = {j for j in read if j is not None and j != i}
        # at most len(layers[j]) distinct keys are read from layer j: all of them iff the totals agree
        if len(edges) != sum(len(layers[j]) for j in reads[i]) and not (i in chained or i in outside):
            partial.add(i)
        pinned = set(map(pins.get, keys, repeat(_FREE)))
        if _FREE in pinned:
            free.add(i)
            if len(pinned) > 1:
                mixed.add(i)
    return reads, free, mixed, chained, outside, partial


def _layer_of_name(layers: Sequence[Sequence[Key]]) -> dict[Hashable, int] | None:
    """Key name -> its layer, when every key is a tuple (named by its first item) or
    a string (its own name), and no name is in two layers; else ``None``."""
    out: dict[Hashable, int] = {}
    for i, keys in enumerate(layers):
        kinds = set(map(type, keys))
        if kinds <= {tuple}:
            names: Collection[Hashable] = set(map(_FIRST, keys))
        elif kinds == {str}:
            names = keys
        else:
            return None
        for name in names:
            if out.setdefault(name, i) != i:
                return None
    return out


def _layers_read(
    edges: set[Key], named: Mapping[Hashable, int] | None, layer_of: Mapping[Key, int]
) -> set[int | None]:
    """The layers holding ``edges`` (``None`` for a key in none).

    By name when ``named`` is given: one lookup per name, not per key, which
    on a million-task graph is a second instead of a tenth of one (a tuple
    key's hash is computed anew at each lookup).
    """
    if named is not None:
        kinds = set(map(type, edges))
        if kinds <= {tuple}:
            return set(map(named.get, set(map(_FIRST, edges))))
        if kinds == {str}:
            return set(map(named.get, edges))
        return {named.get(key[0] if isinstance(key, tuple) else key) for key in edges}
    return set(map(layer_of.get, edges))


def _no_group_gains(
    layers: Sequence[Sequence[Key]],
    reads: Mapping[int, set[int]],
    free: set[int],
    split: set[int],
    whole: Mapping[int, str | None],
    movable: Callable[[Key], bool],
) -> bool:
    """Whether no group of propagated tasks can gain by moving (rule 7 may be skipped).

    True when every layer's readers are all in one site and, for a layer
    whose site may move (propagated, or pins the optimizer spread), that site
    is its own: then each task already sits where most of its inputs are, the
    inputs of a group are read only in its site, and nothing it makes is read
    elsewhere, so moving a group never makes fewer bytes cross. ``free``:
    layers with propagated keys; ``split``: layers whose keys read each other
    across sites (never skipped).
    """
    if split:
        return False
    for i in free:
        here = whole[i]
        if len({whole[j] for j in reads[i]}) < 2:
            continue
        # A join reading a propagated input of its own site weighed that input
        # at its own size, not at what making it elsewhere costs: a field
        # broadcast to every step (``broadcast_like``, ``xr.corr`` against a
        # field) weighs a step, while moving its group moves the field once.
        if any(whole[j] == here and (j in free or any(map(movable, layers[j]))) for j in reads[i]):
            return False
    readers: dict[int, set[str | None]] = {}
    for i, inputs in reads.items():
        for j in inputs:
            readers.setdefault(j, set()).add(whole[i])
    for j, read_in in readers.items():
        if len(read_in) != 1 or None in read_in:
            return False
        if read_in != {whole[j]} and (j in free or whole[j] is None or any(map(movable, layers[j]))):
            return False
    return True


def weigh_layer(
    keys: Sequence[Key],
    dependencies: Mapping[Key, Collection[Key]],
    dependents: Mapping[Key, Collection[Key]],
    sites: Mapping[Key, str],
    size: Callable[[Key], float],
    joins: list[Key],
) -> list[str]:
    """Rule 2 for many tasks at once: each where most of its input bytes are.

    Every input of every key must have a site; keys whose inputs come from
    several sites are added to ``joins``. An input used by ``n`` tasks
    counts ``1/n`` of its bytes; ties go to the smallest site name, and a
    site none of a task's inputs is in never wins (as
    :func:`.placement.choose_site` over the sites present).
    """
    deps = list(map(dependencies.__getitem__, keys))
    counts = np.fromiter(map(len, deps), dtype=np.intp, count=len(deps))
    flat = list(chain.from_iterable(deps))
    input_sites = list(map(sites.__getitem__, flat))
    names = sorted(set(input_sites))
    index = {name: n for n, name in enumerate(names)}
    column = np.fromiter(map(index.__getitem__, input_sites), dtype=np.intp, count=len(flat))
    many = getattr(size, "many", None)  # sizes of many keys at once, if the size function can
    nbytes = np.array(many(flat), dtype=float) if many else np.fromiter(map(size, flat), float, len(flat))
    users = np.fromiter(map(len, map(dependents.__getitem__, flat)), dtype=float, count=len(flat))
    cell = np.repeat(np.arange(len(deps), dtype=np.intp), counts) * len(names) + column
    shape = (len(deps), len(names))
    weight = np.bincount(cell, weights=nbytes / np.maximum(users, 1), minlength=shape[0] * shape[1])
    present = np.bincount(cell, minlength=shape[0] * shape[1]) > 0
    joins.extend(keys[n] for n in np.flatnonzero(present.reshape(shape).sum(axis=1) > 1).tolist())
    weight = np.where(present, weight, -np.inf).reshape(shape)
    return [names[n] for n in weight.argmax(axis=1).tolist()]
