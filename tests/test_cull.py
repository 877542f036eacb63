"""Skipping ``HighLevelGraph.cull`` when it would keep every task (engine/cull.py).

``needs_every_task`` must never say True when culling drops a task (else the
optimizer would materialize, and run, work nobody asked for), and must say True
on the everyday graphs it exists for (else it saves nothing). The optimized
graph is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.blockwise import fuse_roots, optimize_blockwise
from dask.core import flatten

import catalog_pools.engine.optimize as optimize_module
from catalog_pools import pool
from catalog_pools.engine.cull import needs_every_task
from catalog_pools.engine.optimize import optimize_pooled


def _x() -> da.Array:
    return da.random.default_rng(0).standard_normal((200, 30), chunks=(10, 30))


def _pooled() -> tuple[xr.DataArray, xr.DataArray]:
    with pool("ecmwf"):
        a = xr.DataArray(da.ones((8, 6, 5), chunks=(1, 6, 5)), dims=("time", "y", "x"))
    with pool("dwd"):
        c = xr.DataArray(da.full((6, 5), 2.0, chunks=(6, 5)), dims=("y", "x"))
    return a, c


#: name -> (collection, whether every task is needed)
CASES: dict[str, tuple[Callable[[], Any], bool]] = {
    "sum": (lambda: _x().sum(), True),
    "elementwise then mean": (lambda: ((_x() - 1) * 2).mean(axis=0), True),
    "matmul": (lambda: _x().T @ _x(), True),
    "every other row": (lambda: _x()[::2].mean(axis=0), True),
    "whole array": (lambda: _x() + 1, True),
    "first row": (lambda: _x()[0], False),
    "first rows": (lambda: _x()[:15], False),
    "fancy index": (lambda: _x()[[1, 150]], False),
    "last of a cumsum": (lambda: _x().cumsum(axis=0)[-1], False),
    "rechunk": (lambda: _x().rechunk((50, 10)).sum(axis=0), None),
    "overlap": (lambda: _x().map_overlap(lambda b: b, depth=1).sum(), None),
    "pooled join": (lambda: (_pooled()[0] - _pooled()[1]).mean("time").data, True),
    "pooled corr": (lambda: xr.corr(*_pooled(), dim=("y", "x")).data, True),
    "pooled step": (lambda: (_pooled()[0].isel(time=3) - _pooled()[1]).data, False),
}


def _optimizable(x: Any) -> tuple[Any, list[Any]]:
    keys = list(flatten(x.__dask_keys__()))
    hlg = optimize_blockwise(x.__dask_graph__(), keys=keys)
    return fuse_roots(hlg, keys=keys), keys


@pytest.mark.parametrize("name", list(CASES))
def test_never_claims_every_task_when_culling_drops_one(name: str) -> None:
    build, expected = CASES[name]
    hlg, keys = _optimizable(build())
    every = needs_every_task(hlg, keys)
    total = sum(len(layer) for layer in hlg.layers.values())
    kept = len(dict(hlg.cull(set(keys))))
    if every:
        assert kept == total
    if expected is not None:
        assert every is expected, (kept, total)


def test_requesting_part_of_a_layer_is_not_every_task() -> None:
    x = _x() + 1
    keys = list(flatten(x.__dask_keys__()))
    assert needs_every_task(x.__dask_graph__(), keys)
    assert not needs_every_task(x.__dask_graph__(), keys[:-1])
    assert not needs_every_task(x.__dask_graph__(), [*keys, ("no-such-layer", 0)])


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("pooled")])
def test_optimized_graph_is_the_same_without_the_cull(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def optimized(skip: bool) -> dict[Any, Any]:
        check = needs_every_task if skip else (lambda h, k: False)
        monkeypatch.setattr(optimize_module, "needs_every_task", check)
        x = CASES[name][0]()
        out = optimize_pooled(x.__dask_graph__(), list(flatten(x.__dask_keys__())))
        return {key: dict(layer.annotations or {}) for layer in out.layers.values() for key in layer}

    assert optimized(True) == optimized(False)


def test_values_unchanged() -> None:
    a, c = _pooled()
    expected = (np.ones((8, 6, 5)) - np.full((6, 5), 2.0)).mean(axis=0)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose((a - c).mean("time").values, expected)
