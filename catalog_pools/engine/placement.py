"""Choosing a site for every task of a graph from the sites of its inputs.

Pure functions over plain mappings, so the rules can be tested on hand-built
graphs and reused by the optimizer (one graph) and the scheduler plugin
(tasks that depend on data already on the cluster).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence

from .by_layer import place_layers
from .order import unpinned_order
from .regroup import Groups

Key = Hashable
#: Estimated output bytes of a key, ``None`` if unknown.
SizeOf = Callable[[Key], "float | None"]

#: Marker for a task explicitly kept out of every site (``pool(None)``).
UNPOOLED = None


def choose_site(weights: Mapping[str, float]) -> str:
    """The site holding the most input bytes; ties go to the smallest name.

    Sorting by name, not by hash or insertion order, keeps the choice the same
    on every run and every ``PYTHONHASHSEED``.
    """
    best, most = "", -math.inf
    for site, weight in weights.items():
        if weight > most or (weight == most and site < best):
            best, most = site, weight
    return best


def dependents_of(dependencies: Mapping[Key, Iterable[Key]]) -> dict[Key, list[Key]]:
    """Key -> keys that depend on it (dependencies outside the graph included)."""
    out: dict[Key, list[Key]] = defaultdict(list)
    for key, deps in dependencies.items():
        for dep in deps:
            out[dep].append(key)
    return out


def assign_sites(
    dependencies: Mapping[Key, Collection[Key]],
    pins: Mapping[Key, str | None],
    nbytes: Mapping[Key, float] | SizeOf | None = None,
    *,
    relays: Mapping[Key, Key] | None = None,
    undecided: Collection[Key] = (),
    dependents: Mapping[Key, list[Key]] | None = None,
    default_nbytes: float = 1.0,
    layers: Sequence[Sequence[Key]] | None = None,
    movable_pins: Callable[[Key], bool] | None = None,
    closed: bool = False,
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
        Estimated output size per key (a mapping or a function); keys without
        one weigh ``default_nbytes``.
    relays
        Relay key -> the key it copies. A relay is transparent when its
        consumers weigh their inputs, and runs where its consumers run.
    undecided
        Keys whose site depends on data outside the graph: rule 3 leaves them
        alone (the scheduler decides them, knowing where that data is).
    dependents
        The inverse of ``dependencies`` (:func:`dependents_of`), if already known.
    layers
        The graph's keys by layer (every key in one). A layer reading only
        layers wholly in one site is then placed whole by rule 1, with no
        Python work per key.
    movable_pins
        Whether a key of ``pins`` was pinned by propagation, not by the user
        (a layer whose inputs are all in one site, :func:`.regroup.spread_layers`):
        rule 7 may move it.
    closed
        Every dependency is a key of ``dependencies``: which layers a layer
        reads may then be found from key names (see :func:`.by_layer.place_layers`).

    Returns
    -------
    dict
        Key -> site for every pinned or propagated key (opted-out and
        site-less keys are absent). Rules (numbered as in docs/engine.md):

        1. a task whose pooled inputs all come from one site runs there;
        2. a task combining sites runs where most of its input bytes are
           (:func:`choose_site`), so the smaller side crosses; an input used
           by ``n`` tasks counts ``1/n`` of its bytes for each, as it crosses
           once for all of them (see :func:`plan_relays`);
        3. an unpooled task used only by tasks of one site (a constant, a
           ``da.ones``) is created in that site instead of being shipped in;
        7. after rules 1 and 2, which look at a task's inputs only, a group of
           connected propagated tasks of one site next to a join moves as a
           whole to another site when fewer bytes then cross
           (:class:`.regroup.Groups`): xarray's ``corr`` joins two sites' validity
           masks and feeds the join back into both sides, where moving one
           side's whole series once is cheaper than masks going back and forth.
    """
    relays = relays or {}
    sites: dict[Key, str] = {k: s for k, s in pins.items() if s is not UNPOOLED}
    if dependents is None:
        dependents = dependents_of(dependencies)
    size = _size_function(nbytes, default_nbytes)
    joins: list[Key] = []

    def by_rules(order: list[Key]) -> None:
        for key in order:
            if key not in relays and (
                site := _site_from_inputs(dependencies[key], sites, relays, dependents, size, key, joins)
            ):
                sites[key] = site

    layered = None
    if layers is not None and not relays and not undecided:
        layered = place_layers(
            layers,
            dependencies,
            pins,
            sites,
            dependents,
            size,
            by_rules,
            joins,
            movable_pins,
            _getter(nbytes),
            closed,
        )
    if layered is None:
        # Only keys the rules decide need an order; pinned keys are known already.
        order = unpinned_order(dependencies, pins)
        by_rules(order)
    else:
        order = layered
    skip = set(undecided)
    if joins:
        soft = movable_pins or (lambda key: False)

        def fixed(key: Key) -> bool:
            return (key in pins and not soft(key)) or key in skip

        # Moves are greedy: a fixed order of the joins makes the outcome the
        # same whichever way rules 1 and 2 were answered (per key or per layer).
        joins.sort(key=str)
        Groups(dependencies, dependents, fixed, sites, _getter(nbytes), relays).regroup(joins)
    _place_relays(relays, pins, dependents, sites)
    _create_where_used(reversed(order), skip, dependents, sites)
    return sites


def _site_from_inputs(
    deps: Iterable[Key],
    sites: Mapping[Key, str],
    relays: Mapping[Key, Key],
    dependents: Mapping[Key, list[Key]],
    size: Callable[[Key], float],
    key: Key = None,
    joins: list[Key] | None = None,
) -> str | None:
    """Rules 1 and 2: the one site of a task's inputs, or the one holding most of their bytes.

    ``key`` is appended to ``joins`` when its inputs come from several sites.
    """
    first: str | None = None
    for dep in deps:  # most tasks read one site: answer without grouping
        site = sites.get(relays.get(dep, dep) if relays else dep)
        if site is None or site == first:
            continue
        if first is not None:
            break
        first = site
    else:
        return first
    # An input used by n tasks crosses once for all of them (relays), so each
    # task carries 1/n of its bytes.
    weights: dict[str, float] = {}
    for dep in deps:
        source = relays.get(dep, dep) if relays else dep
        site = sites.get(source)
        if site is not None:
            weights[site] = weights.get(site, 0.0) + size(source) / (len(dependents.get(dep, ())) or 1)
    if joins is not None:
        joins.append(key)
    return choose_site(weights)


def _create_where_used(
    reverse_order: Iterable[Key], skip: set[Key], dependents: Mapping[Key, list[Key]], sites: dict[Key, str]
) -> None:
    """Rule 3: an unpooled task used only by one site's tasks is created in that site."""
    for key in reverse_order:
        if key in sites or key in skip or not dependents.get(key):
            continue
        users = {sites.get(child) for child in dependents[key]}
        if len(users) == 1 and None not in users:
            sites[key] = users.pop()  # type: ignore[assignment]


def _getter(nbytes: Mapping[Key, float] | SizeOf | None) -> SizeOf:
    """The known size of a key, ``None`` if unknown."""
    if nbytes is None:
        return lambda key: None
    return nbytes.get if isinstance(nbytes, Mapping) else nbytes


class _Size:
    """A key's estimated bytes, ``default`` where unknown or zero; :meth:`many` for a list."""

    __slots__ = ("bulk", "default", "get")

    def __init__(self, nbytes: Mapping[Key, float] | SizeOf | None, default: float) -> None:
        self.get = _getter(nbytes)
        self.default = default
        # LayerInfo answers a list of blocks of evenly chunked layers at once.
        self.bulk: Callable[[Sequence[Key]], list[float] | None] | None = getattr(
            getattr(nbytes, "__self__", None), "nbytes_many", None
        )

    def __call__(self, key: Key) -> float:
        return self.get(key) or self.default

    def many(self, keys: Sequence[Key]) -> list[float]:
        found = self.bulk(keys) if self.bulk is not None else None
        if found is None:
            return list(map(self, keys))
        return [size or self.default for size in found] if 0.0 in found else found


def _size_function(nbytes: Mapping[Key, float] | SizeOf | None, default: float) -> _Size:
    return _Size(nbytes, default)


def _place_relays(
    relays: Mapping[Key, Key],
    pins: Mapping[Key, str | None],
    dependents: Mapping[Key, list[Key]],
    sites: dict[Key, str],
) -> None:
    """Put each relay in the site where most of its consumers run."""
    for relay, source in relays.items():
        if relay in pins:
            continue
        users = Counter(s for child in dependents.get(relay, ()) if (s := sites.get(child)) is not None)
        if users:
            sites[relay] = choose_site(users)
        elif source in sites:
            sites[relay] = sites[source]


def undecided_keys(
    dependencies: Mapping[Key, Collection[Key]], pins: Mapping[Key, str | None], order: Iterable[Key]
) -> set[Key]:
    """Unpinned keys that depend, directly or not, on keys outside the graph.

    Their site depends on where that data is, which only the scheduler knows.
    """
    out: set[Key] = set()
    for key in order:
        if key not in pins and any(d in out or d not in dependencies for d in dependencies[key]):
            out.add(key)
    return out


def plan_relays(
    dependencies: Mapping[Key, Collection[Key]],
    dependents: Mapping[Key, list[Key]],
    sites: Mapping[Key, str],
    undecided: Collection[Key],
) -> dict[Key, dict[str | None, list[Key]]]:
    """Where one copy of a key should cross to a site that uses it several times.

    Returns ``{key: {site: consumers}}`` for each key whose consumers in one
    other site are two or more: a relay in that site fetches the key once and
    the consumers read the relay inside their site. ``site`` is ``None`` for
    consumers whose site the scheduler decides (``undecided``), and keys
    outside the graph (site unknown here) count as another site.
    """
    if not undecided and len(set(sites.values())) < 2:
        return {}
    out: dict[Key, dict[str | None, list[Key]]] = {}
    site_of = sites.get
    for key, users in dependents.items():
        if len(users) < 2:
            continue
        source = site_of(key) if key in dependencies else None
        if not undecided and len(placed := set(map(site_of, users))) == 1 and placed.pop() in (source, None):
            continue  # every consumer in the key's own site, or none placed: nothing crosses
        groups: dict[str | None, list[Key]] = defaultdict(list)
        for user in users:
            if user in undecided:
                groups[None].append(user)
            elif (site := sites.get(user)) is not None and site != source:
                groups[site].append(user)
        relayed = {site: group for site, group in groups.items() if len(group) > 1}
        if relayed:
            out[key] = relayed
    return out
