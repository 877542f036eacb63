"""Graph optimizers that keep site pins through fusion and propagate them.

Dask 2026 runs low-level optimization on the scheduler (``HLGExpr._optimized_dsk``)
and linear fusion returns a plain dict, so layer annotations -- and with them every
``resources`` restriction -- are lost. These optimizers are installed as the
``array_optimize`` / ``delayed_optimize`` config callables: the client resolves
them, they are pickled with the graph and run wherever the graph is
materialized. For a graph with no pooled layer they defer to dask's own
optimizer unchanged.
"""

from __future__ import annotations

import logging
import pkgutil
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import dask
from dask.base import tokenize

from .._compat.dask_internals import (
    DataNode,
    Task,
    TaskRef,
    convert_legacy_graph,
    fuse_linear_task_spec,
    fused_output_key,
    optimize_slices,
)
from .guard import guard_task, guarded_site
from .layers import LayerInfo, has_pools, spread_layer_pins
from .placement import assign_sites, dependents_of, plan_relays, topological_order, undecided_keys
from .sites import ANNOTATION, NBYTES, OPTED_OUT, ORIGIN, PROPAGATED, RELAY, WAIT, site_resources

logger = logging.getLogger(__name__)

Kind = Literal["array", "delayed"]
_BASE = {"array": "dask.array.optimization:optimize", "delayed": "dask.delayed:optimize"}

#: ``active``: pools are in use in this process (see :func:`activate`).
_state = {"active": False}


def activate() -> None:
    """Mark pools as in use in this process.

    Until then the optimizers pickle as dask's own, so importing the package
    never requires it on a scheduler that runs no pooled work.
    """
    _state["active"] = True


def _final_annotations(
    base: Mapping[str, Any],
    site: str | None,
    origin: str | None,
    wait: float | None,
    nbytes: Callable[[Hashable], float | None] | None,
) -> dict[str, Any]:
    """A task's annotations as the scheduler reads them (see :mod:`.sites`)."""
    out = {k: v for k, v in base.items() if k not in (ANNOTATION, ORIGIN, WAIT, RELAY, NBYTES, "resources")}
    resources = site_resources(site, base.get("resources"))
    if site is not None:
        out[ANNOTATION] = site
        if wait is not None:
            out[WAIT] = wait
    if origin is not None:
        out[ORIGIN] = PROPAGATED if origin == RELAY else origin
    if origin == RELAY:
        out[RELAY] = True
    if nbytes is not None and origin != OPTED_OUT:
        # Per key, only when the scheduler must place tasks after data already
        # on the cluster; ``__dask_annotations__`` calls it on the scheduler.
        out[NBYTES] = nbytes
    if resources:
        out["resources"] = resources
    return out


class PoolOptimizer:
    """Dask optimizer that keeps and propagates site pins.

    Parameters
    ----------
    kind
        ``"array"`` (dask.array and xarray) or ``"delayed"``.
    propagate, guard, wait
        Settings; ``None`` reads dask config (``catalog_pools.propagate``,
        ``catalog_pools.guard``, ``catalog_pools.no-worker-timeout``) when the
        optimizer is pickled on the client, so the scheduler applies the
        client's settings.
    """

    def __init__(
        self,
        kind: Kind,
        propagate: bool | None = None,
        guard: bool | None = None,
        wait: float | None = None,
    ) -> None:
        self.kind = kind
        self.propagate = propagate
        self.guard = guard
        self.wait = wait

    def settings(self) -> tuple[bool, bool, float | None]:
        propagate = self.propagate
        if propagate is None:
            propagate = bool(dask.config.get("catalog_pools.propagate", True))
        guard = self.guard
        if guard is None:
            guard = bool(dask.config.get("catalog_pools.guard", True))
        wait = self.wait
        if wait is None:
            raw = dask.config.get("catalog_pools.no-worker-timeout", "10s")
            wait = None if raw is None else dask.utils.parse_timedelta(raw, default="s")
        return propagate, guard, wait

    def __reduce__(self) -> tuple[Any, ...]:
        if not _state["active"]:
            return (pkgutil.resolve_name, (_BASE[self.kind],))
        return (PoolOptimizer, (self.kind, *self.settings()))

    def __repr__(self) -> str:
        return f"PoolOptimizer({self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolOptimizer) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(("PoolOptimizer", self.kind))

    def _embeds_guarded(self, dsk: Any) -> bool:
        """A delayed graph holding pinned tasks of an optimized collection (:func:`.guard.guarded_site`)."""
        from dask.utils import ensure_dict

        if self.kind != "delayed":
            return False
        return any(guarded_site(task) is not None for task in convert_legacy_graph(ensure_dict(dsk)).values())

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        from dask.core import flatten
        from dask.highlevelgraph import HighLevelGraph

        base = pkgutil.resolve_name(_BASE[self.kind])
        if not isinstance(dsk, HighLevelGraph) or not (has_pools(dsk) or self._embeds_guarded(dsk)):
            return base(dsk, keys, **kwargs)  # type: ignore[operator]
        return optimize_pooled(
            dsk, list(flatten(keys if isinstance(keys, list | set) else [keys])), self.kind, *self.settings()
        )


def relay(value: Any) -> Any:
    """A relay task: the same value, now held by a worker of the consuming site."""
    return value


def optimize_pooled(
    hlg: Any,
    keys: list[Hashable],
    kind: Kind = "array",
    propagate: bool = True,
    guard: bool = True,
    wait: float | None = None,
) -> Any:
    """Optimize a pooled graph: dask's usual passes, but never across sites.

    Returns a ``HighLevelGraph`` whose layers carry each task's site as
    ``resources={"pool-<site>": 0}`` and ``pool=<site>`` annotations, with
    ``pool_origin`` saying which sites were propagated rather than pinned.
    """
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import ensure_dict

    # Spreading copies layers with their collection metadata, so one pass
    # reads both the pins and the chunk sizes.
    hlg = spread_layer_pins(hlg)
    info = LayerInfo(hlg.layers)
    if kind == "array":
        from dask.blockwise import fuse_roots, optimize_blockwise

        # Layers annotated with ``pool`` only fuse with identically annotated
        # layers (``dask.blockwise._can_fuse_annotations``), so no task mixes sites.
        unfused = hlg.layers
        hlg = optimize_blockwise(hlg, keys=keys)
        hlg = fuse_roots(hlg, keys=keys)
        info.add({n: layer for n, layer in hlg.layers.items() if unfused.get(n) is not layer})
    hlg = hlg.cull(set(keys))
    plan = _Plan(convert_legacy_graph(ensure_dict(hlg)), info)
    plan.place(propagate)
    if propagate:
        plan.add_relays(set(keys))
    layers = plan.layers(plan.fuse(kind, set(keys), guard), wait)
    logger.debug("pooled graph: %d layers", len(layers))
    return HighLevelGraph(layers, {name: set() for name in layers})


#: Where a task's site came from: the user (``None``), propagation, a relay.
_Origin = str | None
#: Tasks of one site and origin, after fusion.
_Part = tuple[str | None, _Origin, dict[Hashable, Any]]


class _Plan:
    """One pooled graph on its way through placement, relays and fusion."""

    def __init__(self, graph: dict[Hashable, Any], info: LayerInfo) -> None:
        self.graph = graph
        self.info = info
        self.pins: dict[Hashable, str | None] = {}
        self.dependencies: dict[Hashable, Any] = {}
        for key, task in graph.items():
            pinned, site = info.pin(key)
            if pinned:
                self.pins[key] = site
            elif (guarded := guarded_site(task)) is not None:
                self.pins[key] = guarded
            self.dependencies[key] = task.dependencies
        self.dependents = dependents_of(self.dependencies)
        self.sites: dict[Hashable, str] = {}
        self.undecided: set[Hashable] = set()
        self.relays: set[Hashable] = set()
        #: new key -> original key, for sources renamed so a relay can take their key
        self.renamed: dict[Hashable, Hashable] = {}
        self.outside = any(d not in graph for d in self.dependents)

    def nbytes(self, key: Hashable) -> float | None:
        return self.info.nbytes(self.renamed.get(key, key))

    def place(self, propagate: bool) -> None:
        """Give tasks their sites (user pins as they are; the rest by the rules)."""
        if not propagate:
            self.sites = {k: s for k, s in self.pins.items() if s is not None}
            return
        if self.outside:
            order = topological_order(self.dependencies)
            self.undecided = undecided_keys(self.dependencies, self.pins, order)
        self.sites = assign_sites(
            self.dependencies,
            self.pins,
            self.info.nbytes,
            undecided=self.undecided,
            dependents=self.dependents,
        )
        for key in self.undecided:
            # provisional: the scheduler plugin decides, knowing where the data is
            self.sites.pop(key, None)

    def add_relays(self, requested: set[Hashable]) -> None:
        """One crossing per key and destination site: consumers read an in-site copy.

        The largest group of consumers keeps reading the key's name, now held
        by its relay (the source task is renamed), so only the other
        consumers are rewritten.
        """
        plan = plan_relays(self.dependencies, self.dependents, self.sites, self.undecided)
        for key, groups in plan.items():
            subs: dict[Hashable, Hashable] = {}
            largest = max(groups, key=lambda site: len(groups[site]))
            source: Hashable = key
            if key in self.graph and key not in requested:
                source = self._rename_source(key)
                self._add_relay(key, source, largest)
                taken = set(groups.pop(largest))
                subs.update((u, source) for u in self.dependents[key] if u not in taken)
            for site, consumers in groups.items():
                name = f"catalog-pools-relay-{tokenize(key, site)}"
                self._add_relay(name, source, site)
                subs.update((u, name) for u in consumers)
            for user, new in subs.items():
                self.graph[user] = self.graph[user].substitute({key: new})
                self.dependencies[user] = self.graph[user].dependencies
            self._update_dependents(key, source, subs)

    def _update_dependents(self, key: Hashable, source: Hashable, subs: Mapping[Hashable, Hashable]) -> None:
        """Dependents of ``key``, its (renamed) source and its relays after rewiring."""
        users: dict[Hashable, list[Hashable]] = defaultdict(list)
        for user in self.dependents.pop(key, []):
            users[subs.get(user, key)].append(user)
        for relay_key, deps in ((r, self.dependencies[r]) for r in {*subs.values(), key} if r in self.relays):
            if source in deps:
                users[source].append(relay_key)
        self.dependents.update(users)

    def _rename_source(self, key: Hashable) -> Hashable:
        source = (f"relayed-{key[0]}", *key[1:]) if isinstance(key, tuple) else f"relayed-{key}"
        self.graph[source] = self.graph.pop(key).substitute({}, key=source)
        self.dependencies[source] = self.dependencies.pop(key)
        self.renamed[source] = key
        if key in self.pins:
            self.pins[source] = self.pins.pop(key)
        if key in self.sites:
            self.sites[source] = self.sites.pop(key)
        if key in self.undecided:
            self.undecided.discard(key)
            self.undecided.add(source)
        return source

    def _add_relay(self, name: Hashable, source: Hashable, site: str | None) -> None:
        self.graph[name] = Task(name, relay, TaskRef(source))
        self.dependencies[name] = {source}
        self.relays.add(name)
        self.pins.pop(name, None)
        if site is None:
            self.undecided.add(name)
            self.sites.pop(name, None)
        else:
            self.sites[name] = site

    def origin(self, key: Hashable) -> _Origin:
        if key in self.relays:
            return RELAY
        if key in self.pins:
            return None if self.pins[key] is not None else OPTED_OUT
        return PROPAGATED

    def fuse(self, kind: Kind, requested: set[Hashable], guard: bool) -> list[_Part]:
        """dask's linear fusion (and slice fusion) within each site, never across."""
        if kind == "array":
            fuse = dask.config.get("optimization.fuse.active") is not False
        else:
            fuse = bool(dask.config.get("optimization.fuse.delayed"))
        where: dict[Hashable, tuple[str | None, _Origin]] = {}
        partitions: dict[tuple[str | None, _Origin], dict[Hashable, Any]] = defaultdict(dict)
        for key, task in self.graph.items():
            here = where[key] = (self.sites.get(key), self.origin(key))
            partitions[here][key] = task
        out: list[_Part] = []
        for (site, origin), tasks in partitions.items():
            part = tasks
            if fuse:
                here = (site, origin)
                boundary = {
                    k
                    for k in part
                    if k in requested or any(where[c] != here for c in self.dependents.get(k, ()))
                }
                part = fuse_linear_task_spec(part, keys=boundary)
                if kind == "array":
                    part = optimize_slices(part)
            if site is not None:
                part = _inline_data(part, requested)
            # Only the user's own pins read site data; propagated tasks may move.
            if guard and site is not None and origin is None:
                part = {key: guard_task(task, site) for key, task in part.items()}
            out.append((site, origin, part))
        return out

    def layers(self, parts: list[_Part], wait: float | None) -> dict[str, Any]:
        """One layer per distinct annotation set (per-layer constants, not per-key dicts)."""
        from dask.highlevelgraph import MaterializedLayer

        nbytes = self.nbytes if self.outside else None
        groups: dict[tuple[int, str | None, _Origin], tuple[dict[str, Any], dict[Hashable, Any]]] = {}
        for site, origin, part in parts:
            if not self.info.extra:  # only pins: one layer per site and origin
                groups[0, site, origin] = (_final_annotations({}, site, origin, wait, nbytes), part)
                continue
            for key, task in part.items():
                source = fused_output_key(key, task)
                base = self.info.annotations(self.renamed.get(source, source))
                group = groups.get((id(base), site, origin))
                if group is None:
                    ann = _final_annotations(base, site, origin, wait, nbytes)
                    group = groups[id(base), site, origin] = (ann, {})
                group[1][key] = task
        return {
            f"catalog-pools-{i}": MaterializedLayer(mapping, annotations=ann or None)
            for i, (ann, mapping) in enumerate(groups.values())
        }


def _inline_data(part: dict[Hashable, Any], requested: set[Hashable]) -> dict[Hashable, Any]:
    """Inline literal data (the array a load reads from) into the tasks using it.

    A pinned task never takes part in root-task queuing, so a dependency held
    by one worker (xarray's ``original`` array, ``inline_array=False``) would
    draw every load of the site onto that worker. Inlined, loads have no
    dependency and spread over the site's workers, as ``inline_array=True``
    would do.
    """
    data = {k: t for k, t in part.items() if isinstance(t, DataNode) and k not in requested}
    if not data:
        return part
    users: dict[Hashable, list[Hashable]] = defaultdict(list)
    for key, task in part.items():
        for dep in task.dependencies:
            if dep in data:
                users[dep].append(key)
    out = dict(part)
    for key, node in data.items():
        if not users.get(key):
            continue  # used outside this site: keep it as a task
        for user in users[key]:
            out[user] = out[user].substitute({key: node})
        del out[key]
    return out


def optimizers() -> dict[str, PoolOptimizer]:
    """The config entries that install the pooled optimizers."""
    return {"array_optimize": PoolOptimizer("array"), "delayed_optimize": PoolOptimizer("delayed")}
