"""Split one optimized graph into per-site parts and the edges between them.

The pooled optimizer (:mod:`catalog_pools.engine.optimize`) already gives
every pinned or propagated task a site, as layer annotations. This module
reads those annotations, gives the remaining tasks a location by the same
placement rules (:func:`catalog_pools.engine.placement.assign_sites`: where
their inputs are; a constant goes to the one site using it), sends what is
left (no sited input, no single sited user) to the coordinating process, and
cuts the graph into *stages*: a task's stage is the number of location changes
on the longest path leading to it, so every value crossing locations comes
from an earlier stage than the task that needs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from dask.core import get_deps

from ..engine.order import topological_order
from ..engine.placement import assign_sites
from ..engine.sites import ANNOTATION, pin_of
from ..traffic.report import CLIENT

Key = Hashable

#: Location of tasks run by the coordinating process (the traffic report's client).
COORDINATOR = CLIENT

__all__ = ["COORDINATOR", "Plan", "materialize", "plan", "read_pins"]


def materialize(expr: Any) -> tuple[dict[Key, Any], dict[str, dict[Key, Any]]]:
    """Optimize a collection's expression (as dask hands it to a scheduler).

    The pooled optimizer runs here, in the coordinating process. Returns the
    low-level graph and its per-key annotations.
    """
    return dict(expr.__dask_graph__()), expr.__dask_annotations__()


def read_pins(annotations: Mapping[str, Mapping[Key, Any]]) -> dict[Key, str]:
    """``{key: site}`` from per-key annotations (``pool=``, else ``pool-<site>`` resources).

    Keys opted out with ``pool(None)`` are absent: federated, they run where
    their inputs are, like any unpinned task.
    """
    pins: dict[Key, str] = {}
    by_kind = {kind: annotations.get(kind, {}) for kind in (ANNOTATION, "resources")}
    for key in dict.fromkeys(k for values in by_kind.values() for k in values):  # stable order
        site = pin_of({kind: values[key] for kind, values in by_kind.items() if key in values})[1]
        if site is not None:
            pins[key] = site
    return pins


@dataclass
class Plan:
    """Where and when each task of a graph runs in a federated computation.

    Attributes
    ----------
    graph
        The whole low-level graph.
    location
        ``{key: site name or COORDINATOR}``.
    stage
        ``{key: stage}``; cross-location inputs always come from an earlier stage.
    dependencies, dependents
        Within ``graph``.
    outputs
        The requested keys.
    """

    graph: dict[Key, Any]
    location: dict[Key, str]
    stage: dict[Key, int]
    dependencies: dict[Key, set[Key]]
    dependents: dict[Key, set[Key]]
    outputs: list[Key] = field(default_factory=list)

    @property
    def n_stages(self) -> int:
        """Number of stages (0 for an empty graph)."""
        return max(self.stage.values(), default=-1) + 1

    @property
    def sites(self) -> list[str]:
        """Sites that run part of the graph, sorted (the coordinator excluded)."""
        return sorted({loc for loc in self.location.values() if loc != COORDINATOR})

    def batch(self, stage: int) -> dict[str, dict[Key, Any]]:
        """``{location: {key: task}}`` of the tasks of one stage."""
        out: dict[str, dict[Key, Any]] = defaultdict(dict)
        for key, task in self.graph.items():
            if self.stage[key] == stage:
                out[self.location[key]][key] = task
        return dict(out)

    def imports(self, keys: Iterable[Key], location: str) -> set[Key]:
        """Inputs of ``keys`` computed at another location than ``location``."""
        return {d for k in keys for d in self.dependencies[k] if self.location[d] != location}

    def kept(self, keys: Iterable[Key]) -> set[Key]:
        """Keys of one batch that outlive it: outputs, or used by another batch."""
        keys = set(keys)
        requested = set(self.outputs)
        return {k for k in keys if k in requested or any(c not in keys for c in self.dependents[k])}

    def edges(self) -> dict[tuple[str, str], set[Key]]:
        """``{(source, destination): keys}`` of every value crossing locations."""
        out: dict[tuple[str, str], set[Key]] = defaultdict(set)
        for key, children in self.dependents.items():
            for child in children:
                if self.location[child] != self.location[key]:
                    out[self.location[key], self.location[child]].add(key)
        return dict(out)


def plan(graph: Mapping[Key, Any], pins: Mapping[Key, str], outputs: Iterable[Key]) -> Plan:
    """Place every task of ``graph`` and cut it into stages.

    Parameters
    ----------
    graph
        Low-level graph (``key -> task``), as the pooled optimizer returns it.
    pins
        ``{key: site}`` the optimizer decided (see :func:`read_pins`).
    outputs
        Requested keys.
    """
    graph = dict(graph)
    found: tuple[Any, Any] = get_deps(cast(Any, graph))
    dependencies: dict[Key, set[Key]] = found[0]
    dependents: dict[Key, set[Key]] = found[1]
    # The optimizer's sites are fixed; the rules place only what it left unsited.
    located = assign_sites(dependencies, {k: s for k, s in pins.items() if k in graph})
    location = {k: located.get(k, COORDINATOR) for k in graph}
    stage: dict[Key, int] = {}
    for key in topological_order(dependencies):
        stage[key] = max(
            (stage[d] + (location[d] != location[key]) for d in dependencies[key]),
            default=0,
        )
    return Plan(graph, location, stage, dependencies, dependents, list(outputs))
