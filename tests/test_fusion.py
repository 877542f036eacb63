"""The optimizer's linear fusion is dask's, reading dependency maps it already holds.

:func:`catalog_pools.engine.fusion.fuse_linear` against
``dask._task_spec.fuse_linear_task_spec`` on random graphs: whole, and split in
parts, where dask is told which keys another part reads and ours sees it in the
whole graph's dependents.
"""

from __future__ import annotations

import operator
import random
from collections import defaultdict

import pytest

from catalog_pools._compat.dask_internals import DataNode, Task, TaskRef, fuse_linear_task_spec
from catalog_pools.engine.fusion import fuse_linear
from catalog_pools.engine.placement import dependents_of


def random_tasks(seed: int) -> dict:
    """Chains, forks and joins of tasks, some data nodes, some tasks that block fusion."""
    rng = random.Random(seed)
    graph: dict = {}
    keys: list = []
    for i in range(rng.randint(1, 40)):
        key = ("t", i) if rng.random() < 0.5 else f"t-{i}"
        if not keys or rng.random() < 0.15:
            graph[key] = DataNode(key, i)
        else:
            # mostly the last key (chains), sometimes older ones (forks and joins)
            width = rng.choice([1, 1, 1, 2, 3])
            picks = {keys[-1] if rng.random() < 0.6 else rng.choice(keys) for _ in range(width)}
            if len(picks) == 1:
                graph[key] = Task(key, operator.add, 1, *map(TaskRef, picks))
            else:
                graph[key] = Task(key, max, *map(TaskRef, picks))
        keys.append(key)
    order = list(graph)
    rng.shuffle(order)  # fusion walks down as well as up from wherever it starts
    return {k: graph[k] for k in order}


def boundary(parts: dict, dependencies: dict) -> set:
    """Keys read by a task of another part."""
    return {d for part in parts.values() for k in part for d in dependencies[k] if d not in part}


def canonical(graph: dict) -> dict:
    """Tasks compared by what they compute: key, kind, and dependencies."""
    return {k: (type(t).__name__, t.key, frozenset(t.dependencies)) for k, t in graph.items()}


@pytest.mark.parametrize("seed", range(300))
def test_fusion_equals_dask(seed: int) -> None:
    graph = random_tasks(seed)
    rng = random.Random(-seed)
    deps = {k: t.dependencies for k, t in graph.items()}
    dependents = dependents_of(deps)
    requested = set(rng.sample(sorted(graph, key=str), k=rng.randint(1, min(3, len(graph)))))
    assert canonical(fuse_linear(graph, requested, deps, dependents)) == canonical(
        fuse_linear_task_spec(graph, keys=requested)
    )
    # In parts: each part as dask fuses it alone, told to keep the keys other parts read.
    where = {k: rng.randint(0, 2) for k in graph}
    parts: dict = defaultdict(dict)
    for key, task in graph.items():
        parts[where[key]][key] = task
    outputs = requested | boundary(parts, deps)
    for part in parts.values():
        kept = outputs & part.keys()
        ours = fuse_linear(part, requested & part.keys(), deps, dependents)
        assert canonical(ours) == canonical(fuse_linear_task_spec(part, keys=kept))
        assert kept <= ours.keys()


def test_fusion_fuses() -> None:
    """A chain of three becomes one task under dask's name for it, its key an alias."""
    graph = {
        "a": DataNode("a", 1),
        "b": Task("b", operator.add, 1, TaskRef("a")),
        "c": Task("c", operator.add, 1, TaskRef("b")),
    }
    deps = {k: t.dependencies for k, t in graph.items()}
    out = fuse_linear(graph, {"c"}, deps, dependents_of(deps))
    assert set(out) == {"c", "a-b-c"}
    assert out["a-b-c"]() == 3
