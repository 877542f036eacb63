"""Choosing a site for every task of a graph from the sites of its inputs.

Pure functions over plain mappings, so the rules can be tested on hand-built
graphs and reused by the optimizer (one graph) and the scheduler plugin
(tasks that depend on data already on the cluster).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Hashable, Mapping

logger = logging.getLogger(__name__)

Key = Hashable

#: Marker for a task explicitly kept out of every site (``pool(None)``).
UNPOOLED = None


def topological_order(dependencies: Mapping[Key, Collection[Key]]) -> list[Key]:
    """Keys of ``dependencies`` ordered so each comes after its dependencies.

    Dependencies missing from the mapping (data already on the cluster) are
    ignored. Raises ``ValueError`` on a cycle.
    """
    remaining = {k: sum(1 for d in deps if d in dependencies) for k, deps in dependencies.items()}
    dependents: dict[Key, list[Key]] = defaultdict(list)
    for k, deps in dependencies.items():
        for d in deps:
            if d in dependencies:
                dependents[d].append(k)
    ready = [k for k, n in remaining.items() if n == 0]
    order: list[Key] = []
    while ready:
        k = ready.pop()
        order.append(k)
        for child in dependents.get(k, ()):
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    if len(order) != len(dependencies):
        raise ValueError("task graph has a cycle")
    return order


def choose_site(weights: Mapping[str, float]) -> str:
    """The site holding the most input bytes; ties go to the smallest name.

    Sorting by name, not by hash or insertion order, keeps the choice the same
    on every run and every ``PYTHONHASHSEED``.
    """
    return min(weights.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def assign_sites(
    dependencies: Mapping[Key, Collection[Key]],
    pins: Mapping[Key, str | None],
    nbytes: Mapping[Key, float] | None = None,
    *,
    default_nbytes: float = 1.0,
) -> dict[Key, str]:
    """Give every task that should be pinned a single site.

    Parameters
    ----------
    dependencies
        Task key -> keys it depends on. Dependencies that are not keys of the
        mapping (results already on the cluster) may appear in ``pins``.
    pins
        Sites fixed by the user: a site name, or ``None`` for tasks opted out
        with ``pool(None)``. These are never changed.
    nbytes
        Estimated output size per key; keys without one weigh ``default_nbytes``.

    Returns
    -------
    dict
        Key -> site for every pinned or propagated key (opted-out and
        site-less keys are absent). Rules, in order:

        1. a task whose pooled inputs all come from one site runs there;
        2. a task combining sites runs where most of its input bytes are
           (:func:`choose_site`), so the smaller side crosses;
        3. an unpooled task used only by tasks of one site (a constant, a
           ``da.ones``) is created in that site instead of being shipped in.
    """
    nbytes = nbytes or {}
    order = topological_order(dependencies)
    sites: dict[Key, str] = {k: s for k, s in pins.items() if s is not UNPOOLED}
    for key in order:
        if key in pins:
            continue
        weights: dict[str, float] = defaultdict(float)
        for dep in dependencies[key]:
            site = sites.get(dep)
            if site is not None:
                weights[site] += nbytes.get(dep, default_nbytes) or default_nbytes
        if weights:
            sites[key] = choose_site(weights)

    dependents: dict[Key, list[Key]] = defaultdict(list)
    for key, deps in dependencies.items():
        for dep in deps:
            dependents[dep].append(key)
    for key in reversed(order):
        if key in sites or key in pins or not dependents.get(key):
            continue
        users = {sites.get(child) for child in dependents[key]}
        if len(users) == 1 and None not in users:
            sites[key] = users.pop()  # type: ignore[assignment]
    return sites
