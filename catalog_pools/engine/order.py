"""Orders of a task graph's keys (dependencies first)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Hashable, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import TypeVar

Key = Hashable
K = TypeVar("K", bound=Hashable)


def topological_order(dependencies: Mapping[K, Collection[K]]) -> list[K]:
    """Keys of ``dependencies`` ordered so each comes after its dependencies.

    Dependencies missing from the mapping (data already on the cluster) are
    ignored. Raises ``ValueError`` on a cycle.
    """
    sorter: TopologicalSorter[K] = TopologicalSorter()
    for key, deps in dependencies.items():
        sorter.add(key, *(d for d in deps if d in dependencies))
    try:
        return list(sorter.static_order())
    except CycleError as e:
        raise ValueError("task graph has a cycle") from e


def unpinned_order(dependencies: Mapping[Key, Collection[Key]], pins: Mapping[Key, str | None]) -> list[Key]:
    """The unpinned keys, each after its unpinned dependencies (Kahn's algorithm).

    Any such order gives the rules the same answer; this one avoids
    ``graphlib``'s per-node objects, which dominate on a million tasks.
    """
    waiting: dict[Key, int] = {}
    users: dict[Key, list[Key]] = defaultdict(list)
    ready: list[Key] = []
    total = 0
    for key, deps in dependencies.items():
        if key in pins:
            continue
        total += 1
        n = 0
        for dep in deps:
            if dep not in pins and dep in dependencies:
                users[dep].append(key)
                n += 1
        if n:
            waiting[key] = n
        else:
            ready.append(key)
    order: list[Key] = []
    while ready:
        key = ready.pop()
        order.append(key)
        for user in users.get(key, ()):
            waiting[user] -= 1
            if not waiting[user]:
                ready.append(user)
    if len(order) != total:
        raise ValueError("task graph has a cycle")
    return order
