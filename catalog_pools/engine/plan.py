"""One pooled graph on its way through placement, relays and fusion (used by :mod:`.optimize`)."""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import dask
from dask.base import tokenize

from .._compat.dask_internals import (
    DataNode,
    Task,
    TaskRef,
    fused_keys,
    fused_output_key,
    optimize_slices,
)
from .fusion import fuse_linear
from .guard import guard_tasks
from .layers import LayerInfo
from .order import topological_order
from .parts import split_parts
from .placement import assign_sites, dependents_of, plan_relays, undecided_keys
from .sites import ANNOTATION, NBYTES, OPTED_OUT, ORIGIN, PROPAGATED, RELAY, WAIT, site_resources

Kind = Literal["array", "delayed"]
_DEPENDENCIES = operator.attrgetter("dependencies")


def relay(value: Any) -> Any:
    """A relay task: the same value, now held by a worker of the consuming site."""
    return value


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


def _nbytes(info: LayerInfo, renamed: Mapping[Hashable, Hashable], key: Hashable) -> float | None:
    return info.nbytes(renamed.get(key, key))


#: Where a task's site came from: the user (``None``), propagation, a relay.
_Origin = str | None
#: Tasks of one site and origin, after fusion.
_Part = tuple[str | None, _Origin, dict[Hashable, Any]]


class Plan:
    """One pooled graph on its way through placement, relays and fusion."""

    def __init__(
        self,
        graph: dict[Hashable, Any],
        info: LayerInfo,
        pins: dict[Hashable, str | None],
        groups: list[list[Hashable]] | None = None,
    ) -> None:
        self.graph = graph
        self.info = info
        self.pins = pins
        #: keys by layer (:func:`.layers.materialize`), for placement layer by layer
        self.groups = groups
        self.dependencies: dict[Hashable, Any] = dict(
            zip(graph, map(_DEPENDENCIES, graph.values()), strict=True)
        )
        self.dependents = dependents_of(self.dependencies)
        self.sites: dict[Hashable, str] = {}
        self.undecided: set[Hashable] = set()
        self.relays: set[Hashable] = set()
        #: new key -> original key, for sources renamed so a relay can take their key
        self.renamed: dict[Hashable, Hashable] = {}
        self.outside = not self.dependents.keys() <= graph.keys()
        #: keys of layers pinned by propagation, not by the user (:func:`.regroup.spread_layers`)
        self.movable_keys: set[Hashable] = set()

    def nbytes(self, key: Hashable) -> float | None:
        return _nbytes(self.info, self.renamed, key)

    def output_nbytes(self, key: Hashable) -> float | None:
        """A key's bytes; dask.array's ``finalize`` (the array gathered) sums its chunks'."""
        size = self.nbytes(key)
        if size is not None:
            return size
        from dask.array.core import finalize

        task = self.graph.get(key)
        if task is not None and getattr(task, "func", None) is finalize:
            sizes = [self.output_nbytes(d) for d in task.dependencies]
            size = None if not sizes or None in sizes else float(sum(sizes))  # type: ignore[arg-type]
        return size

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
            layers=self.groups,
            movable_pins=self.movable_keys.__contains__ if self.movable_keys else None,
            closed=not self.outside,
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
                taken = groups.pop(largest)
                if not groups and len(taken) == len(self.dependents[key]):
                    # Every consumer in one site: they read the relay, which reads the source.
                    self.dependents[source] = [key]
                    continue
                kept = set(taken)
                subs.update((u, source) for u in self.dependents[key] if u not in kept)
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
        for dep in self.dependencies[source]:  # its inputs now feed the renamed source
            users = self.dependents.get(dep)
            if users is not None:
                self.dependents[dep] = [source if u == key else u for u in users]
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
        self.graph[name] = Task(name, relay, TaskRef(source))  # type: ignore[arg-type]
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
        partitions = split_parts(
            self.graph,
            self.dependencies,
            lambda key: (self.sites.get(key), self.origin(key)),
            layers=self.groups,
            pins=self.pins,
            sites=self.sites,
            moved=self.relays | set(self.renamed.values()),
            added=set(self.renamed) | (self.relays - set(self.renamed.values())),
        )
        out: list[_Part] = []
        for (site, origin), tasks in partitions.items():
            part = tasks
            shared = _data_read_elsewhere(part, self.dependents) if site is not None else set()
            if fuse:
                # A key read by another part is never fused away: fusion sees its
                # outside dependents (:func:`.fusion.fuse_linear`).
                part = fuse_linear(part, requested & part.keys(), self.dependencies, self.dependents)
                if kind == "array":
                    part = optimize_slices(part)
            if site is not None:
                part = _inline_data(part, requested, shared)
            # Only the user's own pins read site data; propagated tasks may move.
            if guard and site is not None and origin is None:
                part = self._guarded(part, site, requested)
            out.append((site, origin, part))
        return out

    def _guarded(self, part: dict[Hashable, Any], site: str, requested: set[Hashable]) -> dict[Hashable, Any]:
        """Each task checks its site before running (:func:`.guard.guard_tasks`).

        A replicated load may run in any replica site: its store refuses the
        others, not a guard. Nor is one needed where a pin the optimizer
        spread holds no load and only its own site reads it: it reads no
        site data, and a guard's other use, saying the site and bytes of a
        result another site or graph reads (:func:`.guard.guarded_site`),
        does not arise.
        """
        info, renamed = self.info, self.renamed
        movable, dependents, sites = self.movable_keys, self.dependents, self.sites

        def internal(key: Hashable, task: Any) -> bool:
            if not movable.issuperset(fused_keys(key, task)):
                return False
            source = fused_output_key(key, task)
            readers = dependents.get(source, ())
            return source not in requested and bool(readers) and all(sites.get(u) == site for u in readers)

        def size(key: Hashable, task: Any) -> float | None:
            source = fused_output_key(key, task)
            found = info.nbytes(renamed.get(source, source) if renamed else source)
            return found if found is not None else self.output_nbytes(source)

        def replicated(key: Hashable, task: Any) -> bool:
            source = fused_output_key(key, task)
            return info.replicated(renamed.get(source, source))

        exempt = internal if movable else None
        if info.any_replicated:
            exempt = (
                replicated
                if not movable
                else (lambda key, task: internal(key, task) or replicated(key, task))
            )
        return guard_tasks(part, site, size, exempt)

    def layers(self, parts: list[_Part], wait: float | None) -> dict[str, Any]:
        """One layer per distinct annotation set (per-layer constants, not per-key dicts)."""
        from dask.highlevelgraph import MaterializedLayer

        # A small callable (not the plan and its graph), should the graph be pickled.
        nbytes = functools.partial(_nbytes, self.info, self.renamed) if self.outside else None
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


def _data_read_elsewhere(
    part: Mapping[Hashable, Any], dependents: Mapping[Hashable, list[Hashable]]
) -> set[Hashable]:
    """Keys of literal data in ``part`` that a task of another part reads."""
    return {
        key
        for key, task in part.items()
        if isinstance(task, DataNode) and not all(map(part.__contains__, dependents.get(key, ())))
    }


def _inline_data(
    part: dict[Hashable, Any], requested: set[Hashable], shared: set[Hashable]
) -> dict[Hashable, Any]:
    """Inline literal data (the array a load reads from) into the tasks using it.

    A pinned task never takes part in root-task queuing, so a dependency held
    by one worker (xarray's ``original`` array, ``inline_array=False``) would
    draw every load of the site onto that worker. Inlined, loads have no
    dependency and spread over the site's workers, as ``inline_array=True``
    would do. Data also read in another part (``shared``) stays a task for it.
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
        if key not in shared:
            del out[key]
    return out
