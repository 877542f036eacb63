"""Pins the private dask behaviour catalog_pools relies on (catalog_pools._compat.dask_internals)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from dask.blockwise import _can_fuse_annotations

from catalog_pools._compat import dask_internals as dk


def _chain() -> dict:
    return {
        "a": dk.Task("a", np.arange, 4),
        "b": dk.Task("b", np.add, dk.TaskRef("a"), 1),
        "c": dk.Task("c", np.multiply, dk.TaskRef("b"), 2),
    }


def test_linear_fusion_names_its_output_key() -> None:
    fused = dk.fuse_linear_task_spec(_chain(), keys={"c"})
    assert set(fused) == {"a-b-c", "c"} and isinstance(fused["c"], dk.Alias)
    assert dk.fused_output_key("a-b-c", fused["a-b-c"]) == "c"
    assert dk.fused_output_key("c", fused["c"]) == "c"
    assert dk.fused_output_key("x", dk.Task("x", len, [1])) == "x"
    np.testing.assert_array_equal(fused["a-b-c"]({}), (np.arange(4) + 1) * 2)


def test_blocks_of_fused_layers_are_not_chains() -> None:
    """A block of a blockwise-fused layer is a subgraph too, but names its layer, not graph keys."""
    from dask.blockwise import optimize_blockwise

    x = (da.ones(4, chunks=2) + 1) * 2
    hlg = optimize_blockwise(x.__dask_graph__(), keys=list(x.__dask_keys__()))
    graph = dk.convert_legacy_graph(dict(hlg))
    key = x.__dask_keys__()[0]
    assert graph[key].func is dk._execute_subgraph and graph[key].args[1] == key[0]
    assert dk.fused_output_key(key, graph[key]) == key and list(dk.fused_keys(key, graph[key])) == [key]
    fused = dk.fuse_linear_task_spec(_chain(), keys={"c"})
    assert set(dk.fused_keys("a-b-c", fused["a-b-c"])) == {"a", "b", "c"}


def test_legacy_graphs_convert_and_futures_drop_out() -> None:
    graph = dk.convert_legacy_graph({"x": 1, "y": (np.add, "x", 1)})
    assert isinstance(graph["x"], dk.DataNode) and graph["y"].dependencies == {"x"}


def test_layers_already_converted_are_taken_as_they_are() -> None:
    """``convert_layers`` is ``convert_legacy_graph`` of the union; converting a task node is the identity."""
    x = (da.ones((4, 4), chunks=2) + 1).sum(axis=0)
    layers = [dict(layer) for layer in x.__dask_graph__().layers.values()]
    layers.append({"alias": "y", "y": (np.add, "x", 1), "x": 1, "self": "self"})  # legacy: keys, a self-alias
    union: dict = {}
    for layer in layers:
        union.update(layer)
    expected = dk.convert_legacy_graph(union)
    got = dk.convert_layers(layers)
    assert list(got) == list(expected) and "self" not in got
    assert {k: type(t) for k, t in got.items()} == {k: type(t) for k, t in expected.items()}
    assert {k: t.dependencies for k, t in got.items()} == {k: t.dependencies for k, t in expected.items()}
    task = next(t for layer in layers[:-1] for t in layer.values() if isinstance(t, dk.Task))
    assert dk.convert_legacy_graph({task.key: task})[task.key] is task


def test_task_like_keeps_the_data_producer_flag() -> None:
    producer = dk.Task("k", len, [1], _data_producer=True)
    assert dk.task_like(producer, "k2", len, [1, 2]).data_producer
    assert not dk.task_like(dk.Task("k", len, [1]), "k2", len, [1]).data_producer


def test_slice_fusion_still_exists() -> None:
    x = da.ones((8, 8), chunks=4)[1:][:, 2:]
    graph = dk.convert_legacy_graph(dict(x.__dask_graph__()))
    assert len(dk.optimize_slices(dk.fuse_linear_task_spec(graph, keys=set(x.__dask_keys__()[0])))) > 0
    from dask.array import optimization

    assert callable(optimization._optimize_slices)


def test_layers_pinned_differently_never_fuse() -> None:
    """The optimizer relies on blockwise fusion keeping sites apart."""
    assert not _can_fuse_annotations({"pool": "a", "resources": {"pool-a": 0}}, {})
    assert not _can_fuse_annotations({"pool": "a"}, {"pool": "b"})
    assert _can_fuse_annotations({"pool": "a"}, {"pool": "a"})


def test_forwarded_key_sees_aliases_and_delayed_renaming() -> None:
    import dask
    import dask.array as da

    from catalog_pools._compat.dask_internals import Alias, Task, TaskRef, forwarded_key

    assert forwarded_key(Alias("b", "a")) == "a"
    assert forwarded_key(Task("b", len, TaskRef("a"))) is None
    # dask.delayed of a collection renames its keys by wrapping every task.
    # dask.delayed of a collection renames its keys by wrapping every task; the
    # fused array's finalize key was an alias of the fused task.
    graph = dask.delayed(sum)(da.ones(4, chunks=4) + 1).__dask_graph__()
    tasks = {k: t for layer in graph.layers.values() for k, t in layer.items()}
    forwarded = {k: v for k, t in tasks.items() if (v := forwarded_key(t)) is not None}
    assert any(k in tasks and v in tasks and k != v for k, v in forwarded.items()), forwarded
    assert all(v in tasks for v in forwarded.values())


def test_merged_graphs_give_per_key_annotations_with_tombstones() -> None:
    """A delayed call on a pinned and an unpinned value: dask stores per-key annotation functions."""
    import numpy as np
    from dask.base import collections_to_expr

    from catalog_pools import pool
    from catalog_pools._compat.dask_internals import key_annotations

    with pool("ecmwf"):
        a = dask.delayed(np.arange)(10.0)
    b = dask.delayed(np.full)(10, 2.0)
    c = dask.delayed(sum)([b, a])
    (hlg_expr,) = collections_to_expr([c]).optimize().operands
    per_key = {
        name: layer.annotations
        for name, layer in hlg_expr.hlg.layers.items()
        if layer.annotations and any(map(callable, layer.annotations.values()))
    }
    assert per_key, "dask no longer stores per-key annotation functions when merging graphs"
    pinned = next(n for n in per_key if n.startswith("arange"))
    unpinned = next(n for n in per_key if n.startswith("full"))
    assert key_annotations(per_key[pinned], pinned)["pool"] == "ecmwf"
    assert "pool" not in key_annotations(per_key[unpinned], unpinned)  # the tombstone is dropped


def test_cull_renames_layers_and_culled_names_maps_them_back() -> None:
    """``HighLevelGraph.cull`` renames every layer it keeps (``<name>-<token>``)."""
    x = da.ones((4, 4), chunks=2)
    y = (x + 1)[:2]
    hlg = y.__dask_graph__()
    culled = hlg.cull(set(dask.core.flatten(y.__dask_keys__())))
    assert not set(culled.layers) & set(hlg.layers)  # renamed: this is why culled_names exists
    back = dk.culled_names(hlg.layers, culled.layers)
    assert set(back) == set(culled.layers)
    assert set(back.values()) <= set(hlg.layers)
    for new, old in back.items():
        assert new.startswith(old)
