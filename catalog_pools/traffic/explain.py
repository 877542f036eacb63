"""Estimate, before computing, where a collection's tasks run and what crosses sites.

:func:`explain` runs the collection's own graph optimizer (the pooled optimizer
that :mod:`catalog_pools` installs, the same call dask makes on ``compute``)
and reads each task's site from the annotations of the optimized layers. Task
output sizes come from chunk metadata (chunk shape x itemsize); keys already on
the cluster (``persist``) are sized and located by the scheduler when a client
is given. Nothing is computed and no data is read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from typing import Any

from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.utils import key_split

from .._compat.dask_internals import key_annotations
from ..engine.placement import assign_sites
from ..engine.sites import pin_of, sites_of_resources, worker_sites
from .plan import ANYWHERE, Join, Plan, Price, parse_price, prices_from_metadata
from .report import CLIENT
from .sizes import chunk_bytes, size_guarded, size_relays

__all__ = ["explain"]

Key = Hashable


def explain(
    collection: Any,
    client: Any = None,
    prices: Mapping[str, Any] | Any = None,
) -> Plan:
    """Where each task of ``collection`` will run and what will cross sites.

    Parameters
    ----------
    collection
        A dask collection: ``xarray.Dataset``/``DataArray`` backed by dask,
        ``dask.array.Array``, ``dask.delayed`` object.
    client
        A ``distributed.Client``. Optional: with it, keys already on the
        cluster are located and sized by the scheduler, and the plan lists the
        workers per site. A key used in another site counts once per
        destination site (the engine relays it there once).
    prices
        Egress price per GB leaving each site: ``{site: "0.09 EUR"}``, or an
        opened catalog (or its ``metadata``) with ``sites.<site>.egress_per_gb``.

    Returns
    -------
    Plan
        ``plan.cross_site_bytes``, ``plan.by_site_pair``, ``plan.tasks_by_site``,
        ``plan.joins``, ``plan.summary()``, ``plan.plot(path)``.

    Examples
    --------
    >>> plan = catalog_pools.explain(pred.mean("realization") - obs)  # doctest: +SKIP
    >>> plan.cross_site_bytes  # doctest: +SKIP
    819200
    """
    keys = list(flatten(collection.__dask_keys__()))
    graph = collection.__dask_graph__()
    optimized = _as_hlg(collection.__dask_optimize__(graph, keys))
    dependencies: dict[Key, set[Key]] = {k: set(v) for k, v in optimized.get_all_dependencies().items()}
    sites = _layer_sites(optimized)
    sizes: dict[Key, float] = {}
    for key in dependencies:
        size = chunk_bytes(key, graph)
        if size is not None:
            sizes[key] = size
    size_guarded(optimized, sizes)
    size_relays(optimized, dependencies, sizes)
    _add_persisted_edges(graph, dependencies)
    external = {d for deps in dependencies.values() for d in deps if d not in dependencies}
    if external and client is not None:
        found = client.run_on_scheduler(_held_keys, keys=list(external))
        outside = {k: s for k, (s, _) in found.items() if s is not None}
        sizes.update({k: float(n) for k, (_, n) in found.items() if n is not None and n > 0})
        if outside:
            sites.update(_follow_outside_pins(dependencies, sites, outside, sizes))
    workers = _workers_per_site(client) if client is not None else {}
    plan = _count(dependencies, sites, sizes, keys)
    plan.layers_by_site = _steps_by_site(graph, dependencies, sites)
    plan.workers_by_site = workers
    plan.prices = _prices(prices)
    return plan


def _as_hlg(optimized: Any) -> HighLevelGraph:
    if isinstance(optimized, HighLevelGraph):
        return optimized
    # dask's own optimizer (no pooled layer) returns a plain mapping.
    return HighLevelGraph({"graph": MaterializedLayer(dict(optimized))}, {"graph": set()})


def _site_of(annotations: Mapping[str, Any], key: Key) -> str | None:
    return pin_of(key_annotations(annotations, key))[1]


def _add_persisted_edges(graph: Any, dependencies: dict[Key, set[Key]]) -> None:
    """Make tasks depend on the persisted keys (futures) they use.

    The optimizer inlines futures into the tasks using them, so the optimized
    graph no longer lists them as dependencies; the collection's own graph
    does. Each user is followed downstream to the optimized task it was fused
    into.
    """
    from distributed import Future

    held = {
        key
        for layer in getattr(graph, "layers", {}).values()
        if isinstance(layer, MaterializedLayer)
        for key, value in layer.items()
        if isinstance(value, Future)
    }
    if not held:
        return
    dependents: dict[Key, set[Key]] = defaultdict(set)
    for key, deps in graph.get_all_dependencies().items():
        for dep in deps:
            dependents[dep].add(key)
    for key in held:
        todo, seen = list(dependents.get(key, ())), set()
        while todo:
            user = todo.pop()
            if user in seen:
                continue
            seen.add(user)
            if user in dependencies:
                dependencies[user].add(key)
            else:
                todo.extend(dependents.get(user, ()))


def _layer_sites(hlg: HighLevelGraph) -> dict[Key, str]:
    """Each task's site, read from the optimized layers' annotations."""
    out: dict[Key, str] = {}
    for layer in hlg.layers.values():
        annotations = layer.annotations or {}
        if not annotations:
            continue
        for key in layer:
            site = _site_of(annotations, key)
            if site is not None:
                out[key] = site
    return out


def _steps_by_site(
    graph: Any, dependencies: Mapping[Key, set[Key]], sites: Mapping[Key, str]
) -> dict[str, dict[str, int]]:
    """``{site: {step: chunks}}`` over the user's expression before fusion, inputs first.

    A key fused away runs inside the optimized task it was fused into: the
    first of its dependents (in the collection's graph) that is a task of the
    optimized graph.
    """
    from graphlib import TopologicalSorter

    if not hasattr(graph, "get_all_dependencies"):
        return {}
    # A persisted key (a future) lists itself as its dependency.
    original = {k: set(v) - {k} for k, v in graph.get_all_dependencies().items()}
    dependents: dict[Key, list[Key]] = defaultdict(list)
    for key, deps in original.items():
        for dep in deps:
            dependents[dep].append(key)
    order = list(TopologicalSorter(original).static_order())
    where: dict[Key, str | None] = {}
    for key in reversed(order):
        if key in dependencies:
            where[key] = sites.get(key, ANYWHERE)
        else:
            where[key] = next((where[d] for d in dependents.get(key, ()) if where.get(d)), None)
    steps: dict[str, Counter[str]] = defaultdict(Counter)
    for key in order:  # inputs first: the expression's order
        site = where[key]
        if site is not None:
            steps[site][key_split(key)] += 1
    return {s: dict(c) for s, c in sorted(steps.items())}


def _held_keys(dask_scheduler: Any, keys: list[Key]) -> dict[Key, tuple[str | None, int | None]]:
    """On the scheduler: the site holding each key (its first holder's) and its nbytes."""
    out: dict[Key, tuple[str | None, int | None]] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            continue
        site = None
        for ws in sorted(ts.who_has or (), key=lambda ws: ws.address):
            found = sites_of_resources(ws.resources)
            if found:
                site = found[0]
                break
        if site is None:
            site = pin_of(ts.annotations or {}, ts.resource_restrictions)[1]
        out[key] = (site, ts.nbytes if ts.nbytes is not None and ts.nbytes >= 0 else None)
    return out


def _follow_outside_pins(
    dependencies: Mapping[Key, set[Key]],
    sites: Mapping[Key, str],
    outside: Mapping[Key, str],
    sizes: Mapping[Key, float],
) -> dict[Key, str]:
    """Sites the scheduler plugin gives tasks that use keys already on the cluster.

    The plugin applies the propagation rules again with those keys as pins;
    this does the same with the same rules.
    """
    graph = {k: set(v) for k, v in dependencies.items()}
    pins: dict[Key, str | None] = {**sites, **outside}
    assigned = assign_sites(graph, pins, sizes)
    out = {k: s for k, s in assigned.items() if k in graph and k not in sites}
    out.update(outside)
    return out


def _workers_per_site(client: Any) -> dict[str, int]:
    counts: Counter[str] = Counter(s for s in worker_sites(client).values() if s is not None)
    return dict(sorted(counts.items()))


def _prices(prices: Mapping[str, Any] | Any) -> dict[str, Price]:
    if prices is None:
        return {}
    metadata = getattr(prices, "metadata", None)
    if metadata is not None:
        return prices_from_metadata(metadata)
    if isinstance(prices, Mapping) and "sites" in prices:
        return prices_from_metadata(prices)
    return {site: parse_price(value) for site, value in dict(prices).items()}


def _count(
    dependencies: Mapping[Key, set[Key]],
    sites: Mapping[Key, str],
    sizes: Mapping[Key, float],
    keys: list[Key],
) -> Plan:
    """Tally tasks per site and the bytes of every dependency edge between sites."""
    plan = Plan()

    def where(key: Key) -> str:
        return sites.get(key, ANYWHERE)

    layers: dict[str, Counter[str]] = defaultdict(Counter)
    for key in dependencies:
        layers[where(key)][key_split(key)] += 1
    plan.tasks_by_site = {s: sum(c.values()) for s, c in sorted(layers.items())}

    consumers: dict[Key, dict[str, int]] = defaultdict(Counter)
    for key, deps in dependencies.items():
        for dep in deps:
            consumers[dep][where(key)] += 1
    pairs: Counter[tuple[str, str]] = Counter()
    unsized: Counter[tuple[str, str, str]] = Counter()
    for producer, by_site in consumers.items():
        src = where(producer)
        for dst in by_site:
            if dst == src:
                continue
            size = sizes.get(producer)
            if size is None:
                unsized[key_split(producer), src, dst] += 1
            # Once per destination site: the engine gives a key used by several
            # tasks of another site one relay there, which alone fetches it.
            pairs[src, dst] += int(size or 0)
    for key in keys:
        pairs[where(key), CLIENT] += int(sizes.get(key) or 0)
    plan.by_site_pair = {pair: n for pair, n in pairs.items() if n or CLIENT not in pair}
    plan.unsized_edges = dict(unsized)
    plan.joins = _joins(dependencies, where, sizes)
    return plan


def _joins(dependencies: Mapping[Key, set[Key]], where: Any, sizes: Mapping[Key, float]) -> list[Join]:
    moving: dict[tuple[str, str], Counter[tuple[str, str]]] = defaultdict(Counter)
    unsized: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    staying: dict[tuple[str, str], set[str]] = defaultdict(set)
    seen: set[tuple[Key, tuple[str, str]]] = set()
    for key, deps in dependencies.items():
        site = where(key)
        crossing = [d for d in deps if where(d) != site]
        if not crossing:
            continue
        step = (key_split(key), site)
        for dep in crossing:
            if (dep, step) not in seen:
                seen.add((dep, step))
                moving[step][key_split(dep), where(dep)] += int(sizes.get(dep) or 0)
                if dep not in sizes:
                    unsized[step].add((key_split(dep), where(dep)))
        staying[step].update(key_split(d) for d in deps if where(d) == site)
    return [
        Join(
            layer,
            site,
            dict(moving[layer, site]),
            tuple(sorted(staying[layer, site])),
            tuple(sorted(unsized[layer, site])),
        )
        for layer, site in sorted(moving)
    ]
