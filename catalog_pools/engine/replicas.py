"""Replicated loads: which copy a computation reads, and moving loads off a site that went down.

A dataset held at several sites (catalog ``metadata.replicas``) is opened with
load layers annotated :data:`~.sites.REPLICAS` (every site holding a copy,
primary first). Each load reads the copy of the site it runs in
(:class:`catalog_pools.catalog.replicas.ReplicaStore`), so any replica site
may run it:

- :func:`choose_replicas` (optimizer) pins each replicated dataset, per
  computation, to the replica site that already holds most of the
  computation's other pinned input bytes, so the least crosses; ties go to
  the primary;
- :func:`fail_over_site` (scheduler plugin) gives the site a load moves to
  when its site has no connected worker.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Hashable, Mapping
from typing import Any

import numpy as np

from .sites import ANNOTATION, NBYTES, ORIGIN, REPLICAS, per_key, pin_of, site_resources


def layer_nbytes(layer: Any) -> float:
    """Bytes of an array layer's output (shape x itemsize); 0 if unknown."""
    meta = layer.collection_annotations or {}
    chunks, dtype = meta.get("chunks"), meta.get("dtype")
    if not chunks or dtype is None:
        return 0.0
    n = math.prod(sum(c) for c in chunks)
    return 0.0 if math.isnan(n) else float(n * np.dtype(dtype).itemsize)


def pick_replica(replicas: tuple[str, ...], held: Mapping[str, float]) -> str:
    """The replica site holding most of ``held`` bytes; ties go to the first (the primary)."""
    return max(replicas, key=lambda s: (held.get(s, 0.0), -replicas.index(s)))


def choose_replicas(hlg: Any) -> Any:
    """Pin each replicated dataset's layers to the replica site chosen for this graph.

    Datasets are placed largest first; each one chosen adds its bytes to its
    site. Returns a new ``HighLevelGraph`` (the input is not modified); the
    :data:`~.sites.REPLICAS` annotation stays for the scheduler's failover.
    """
    from dask.highlevelgraph import HighLevelGraph

    groups: dict[tuple[str, ...], list[str]] = {}
    held: dict[str, float] = {}
    for name, layer in hlg.layers.items():
        ann = layer.annotations or {}
        if per_key(ann):
            continue  # placed key by key by the optimizer's rules
        if ann.get(REPLICAS):
            groups.setdefault(tuple(ann[REPLICAS]), []).append(name)
        elif (pin := pin_of(ann))[0] and pin[1] is not None:
            held[pin[1]] = held.get(pin[1], 0.0) + layer_nbytes(layer)
    if not groups:
        return hlg
    sizes = {reps: sum(layer_nbytes(hlg.layers[n]) for n in names) for reps, names in groups.items()}
    layers = dict(hlg.layers)
    for reps in sorted(groups, key=lambda r: (-sizes[r], r)):
        site = pick_replica(reps, held)
        held[site] = held.get(site, 0.0) + sizes[reps]
        for name in groups[reps]:
            layer = copy.copy(layers[name])
            ann = dict(layer.annotations)
            ann[ANNOTATION] = site
            ann["resources"] = site_resources(site, ann.get("resources"))
            layer.annotations = ann
            layers[name] = layer
    return HighLevelGraph(layers, hlg.dependencies)


def fail_over_site(annotations: Mapping[str, Any], live: Collection[str]) -> str | None:
    """The replica site a load goes to when its own has no worker: the first live one, else ``None``."""
    return next((s for s in annotations.get(REPLICAS) or () if s in live), None)


def replica_sites(collection: Any) -> dict[Hashable, tuple[str, ...]]:
    """Layer name -> replica sites (primary first) of the replicated layers of ``collection``."""
    graph = collection.__dask_graph__()
    layers = getattr(graph, "layers", {})
    return {
        n: tuple(layer.annotations[REPLICAS])
        for n, layer in layers.items()
        if not per_key(layer.annotations or {}) and (layer.annotations or {}).get(REPLICAS)
    }


def rechoose_replicas(new: Mapping[Hashable, Any], held_site: Any) -> None:
    """Choose replica sites again for new scheduler tasks that use data already on the cluster.

    The optimizer cannot see persisted inputs (their keys are outside the
    graph); here their real sizes and sites are known. ``new`` maps keys to
    scheduler ``TaskState``s; ``held_site(ts)`` is where a key is. Replicated
    tasks are moved together, before propagated tasks are placed after them.
    """
    from .._compat.distributed_internals import set_task_site

    replicated = {k: ts for k, ts in new.items() if (ts.annotations or {}).get(REPLICAS)}
    if not replicated:
        return
    held: dict[str, float] = {}
    outside = False
    for key, ts in new.items():
        for dep in ts.dependencies:
            if dep.key not in new and (site := held_site(dep)) is not None:
                outside = True
                held[site] = held.get(site, 0.0) + float(dep.nbytes if dep.nbytes and dep.nbytes > 0 else 1)
        ann = ts.annotations or {}
        pinned = key not in replicated and ann.get(ORIGIN) is None and not ts.dependencies
        if pinned and (site := pin_of(ann, ts.resource_restrictions)[1]) is not None:
            held[site] = held.get(site, 0.0) + float(ann.get(NBYTES) or 1)
    if not outside:
        return  # everything was in the graph: the optimizer's choice stands
    for reps in {tuple(ts.annotations[REPLICAS]) for ts in replicated.values()}:
        site = pick_replica(reps, held)
        for ts in replicated.values():
            if tuple(ts.annotations[REPLICAS]) == reps and ts.annotations.get(ANNOTATION) != site:
                set_task_site(
                    ts, site_resources(site, ts.resource_restrictions), {**ts.annotations, ANNOTATION: site}
                )
