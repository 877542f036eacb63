"""The pooled optimizer's cost against ``dask.array.optimization.optimize`` on the same graph.

Two pooled graphs of about ``n`` tasks (before fusion), built afresh for every run
(layers cache what they materialize):

- ``join``: loads at site A, ``(a - c) * 2`` with one field ``c`` of site C, then a
  mean: every load's layer is placed whole, the join key by key;
- ``two_big``: ``(a * b).mean(0)`` with ``a`` at A and ``b`` at B, same chunks: every
  task of the product joins two sites (rule 2 for every one of them);
- ``corr``: ``xr.corr(a, b, "time")`` of two sites' series, one step per chunk:
  validity masks, demeaning and products across two sites, the graph that
  placement rule 7 (whole groups move) exists for.

Each pair of runs alternates dask's optimizer and the pooled one, twice: as they
run (the pooled optimizer pauses Python's cyclic garbage collector while it
rebuilds the graph, dask's does not), and with the collector paused around both
(the work itself). The best of ``repeats`` counts; ratios are pooled / dask.
:func:`fresh_optimizer_cost` measures each graph in a new process, so a
million-task graph measured before does not leave its heap to the next.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import dask.array as da

from catalog_pools import pool

SHAPES = ("join", "two_big", "corr")


def pooled_graph(shape: str, n_tasks: int) -> tuple[Any, list[Any]]:
    """A fresh pooled graph of about ``n_tasks`` tasks and its output keys."""
    from dask.core import flatten

    k = max(n_tasks // 5, 4)  # about five tasks per chunk before fusion
    if shape == "join":
        with pool("ecmwf"):
            a = da.random.default_rng(0).standard_normal((k, 10), chunks=(1, 10))
        with pool("dwd"):
            c = da.ones((1, 10), chunks=(1, 10))
        x = ((a - c) * 2).mean(axis=1)
    elif shape == "corr":
        import xarray as xr

        steps = max(n_tasks // 20, 4)  # about twenty tasks per time step before fusion
        arrays = []
        for seed, site in enumerate(("ecmwf", "eumetsat")):
            with pool(site):
                data = da.random.default_rng(seed).standard_normal((steps, 10), chunks=(1, 10))
            arrays.append(xr.DataArray(data, dims=("time", "x")))
        x = xr.corr(*arrays, dim="time").data
    else:
        m = max(n_tasks // 4, 4)  # two loads, a product and a reduction per chunk
        with pool("ecmwf"):
            a = da.random.default_rng(0).standard_normal((m, 10), chunks=(1, 10))
        with pool("eumetsat"):
            b = da.random.default_rng(1).standard_normal((m, 10), chunks=(1, 10))
        x = (a * b).mean(axis=0)
    return x.__dask_graph__(), list(flatten(x.__dask_keys__()))


def _seconds(fn: Callable[..., Any], shape: str, n_tasks: int, paused: bool) -> tuple[float, int]:
    hlg, keys = pooled_graph(shape, n_tasks)
    tasks = len(hlg)
    gc.collect()
    if paused:
        gc.disable()
    try:
        start = time.perf_counter()
        fn(hlg, keys)
        return time.perf_counter() - start, tasks
    finally:
        gc.enable()


def optimizer_cost(n_tasks: int, shape: str = "join", repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of both optimizers, as run and with the collector paused."""
    from dask.array.optimization import optimize as dask_optimize

    from catalog_pools.engine.optimize import optimize_pooled

    times: dict[str, list[float]] = {k: [] for k in ("dask", "pooled", "dask_paused", "pooled_paused")}
    tasks = 0
    for _ in range(repeats):
        for paused in (False, True):
            for label, fn in (("dask", dask_optimize), ("pooled", optimize_pooled)):
                seconds, tasks = _seconds(fn, shape, n_tasks, paused)
                times[label + ("_paused" if paused else "")].append(seconds)
    out: dict[str, Any] = {
        "shape": shape,
        "tasks": tasks,
        "repeats": repeats,
        **{k: min(v) for k, v in times.items()},
    }
    out["ratio"] = out["pooled"] / out["dask"]
    out["ratio_paused"] = out["pooled_paused"] / out["dask_paused"]
    print(
        f"optimizer, {shape}, {tasks:,d} tasks, best of {repeats}: as run dask {out['dask']:.3f}s "
        f"pooled {out['pooled']:.3f}s "
        f"({out['ratio']:.2f}x); collector paused {out['dask_paused']:.3f}s / {out['pooled_paused']:.3f}s "
        f"({out['ratio_paused']:.2f}x)",
        flush=True,
    )
    return out


def fresh_optimizer_cost(n_tasks: int, shape: str, repeats: int) -> dict[str, Any]:
    """:func:`optimizer_cost` in a new Python process (its report printed, its result returned)."""
    code = (
        "import json; from benchmarks.optimizer_cost import optimizer_cost; "
        f"print(json.dumps(optimizer_cost({n_tasks}, {shape!r}, {repeats})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600
    )
    *report, result = done.stdout.strip().splitlines()
    print(*report, sep="\n", flush=True)
    out: dict[str, Any] = json.loads(result)
    return out


def table(costs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of :func:`optimizer_cost` results."""
    lines = [
        "| graph | tasks | runs | dask s | pooled s | pooled / dask | dask s, GC paused "
        "| pooled s, GC paused | pooled / dask, GC paused |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['shape']} | {c['tasks']:,d} | {c.get('repeats', 3)} | {c['dask']:.3f} | {c['pooled']:.3f} "
        f"| {c['ratio']:.2f} "
        f"| {c['dask_paused']:.3f} | {c['pooled_paused']:.3f} | {c['ratio_paused']:.2f} |"
        for c in costs
    ]
    return lines
