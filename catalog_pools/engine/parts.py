"""Splitting a placed graph into parts of one site and origin, layer by layer.

Each part is fused on its own (:meth:`.plan.Plan.fuse`), so no fused task
mixes sites, or user pins with propagated sites. A layer whose keys all have
the same site and origin goes to its part whole; only mixed layers and the
keys relays rewired are read one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence, Set
from itertools import repeat
from typing import Any

from .sites import OPTED_OUT, PROPAGATED

Key = Hashable
#: A part: the site of its tasks and where that site came from (see :mod:`.sites`).
Here = tuple[str | None, str | None]

_FREE = object()


def split_parts(
    graph: Mapping[Key, Any],
    dependencies: Mapping[Key, Set[Key]],
    where: Callable[[Key], Here],
    *,
    layers: Sequence[Sequence[Key]] | None,
    pins: Mapping[Key, str | None],
    sites: Mapping[Key, str],
    moved: Set[Key] = frozenset(),
    added: Set[Key] = frozenset(),
) -> dict[Here, dict[Key, Any]]:
    """The graph's tasks grouped by :func:`where` they run.

    Parameters
    ----------
    graph, dependencies
        The tasks and their dependencies.
    where
        Key -> its part; the answer for every key, used one key at a time.
    layers
        The keys of the graph layer by layer, as placement read them (keys no
        longer in the graph are skipped); ``None`` reads every key one by one.
    pins, sites
        User pins and the placement: a layer all pinned alike, or all
        unpinned and placed alike, is one part whole.
    moved
        Keys whose task or place changed after placement (relays): their
        layers are read one by one.
    added
        Keys that are in no layer (new relays, renamed sources).
    """
    if layers is None:
        return _by_key(graph, graph, where)
    parts: dict[Here, dict[Key, Any]] = defaultdict(dict)
    for keys in layers:
        here = None if not moved.isdisjoint(keys) else _whole(keys, pins, sites)
        if here is None:
            for part_here, tasks in _by_key(graph, keys, where).items():
                parts[part_here].update(tasks)
        else:
            parts[here].update(zip(keys, map(graph.__getitem__, keys), strict=True))
    for key in added:
        if key in graph:
            parts[where(key)][key] = graph[key]
    if sum(map(len, parts.values())) != len(graph):  # layers that did not cover the graph
        return _by_key(graph, graph, where)
    return dict(parts)


def _whole(keys: Sequence[Key], pins: Mapping[Key, str | None], sites: Mapping[Key, str]) -> Here | None:
    """The one part of all ``keys``, if they share one."""
    pinned = set(map(pins.get, keys, repeat(_FREE)))
    if len(pinned) != 1:
        return None
    pin = pinned.pop()
    if pin is None:
        return None, OPTED_OUT
    placed = set(map(sites.get, keys))  # a pin spread by the optimizer may have moved
    if len(placed) != 1:
        return None
    return placed.pop(), PROPAGATED if pin is _FREE else None


def _by_key(graph: Mapping[Key, Any], keys: Any, where: Callable[[Key], Here]) -> dict[Here, dict[Key, Any]]:
    parts: dict[Here, dict[Key, Any]] = defaultdict(dict)
    for key in keys:
        if key in graph:
            parts[where(key)][key] = graph[key]
    return parts
