"""Single-site cost of pools: pooled vs the same compute with no pools, one site, no WAN.

Splits the cost in three so it can be traced to a function:

1. ``optimizer``: time of the graph optimizer itself, in this process, on the
   real graphs (``catalog_pools.engine.optimize.PoolOptimizer`` vs dask's
   ``dask.array.optimization.optimize``). On a cluster it runs on the scheduler
   once per ``compute``.
2. ``guard``: time of one ``catalog_pools.engine.guard.run_in_site`` call around a
   no-op task, measured inside a worker (``client.run``), vs calling the task
   directly.
3. ``end to end``: wall time of ``compute`` on a one-site cluster (loopback,
   local zarr files), pooled (datasets opened inside ``pool("ecmwf")``) vs no
   pools (no pins, dask's own optimizers), alternating, for

   * ``tiny``: ``(da.ones(N, chunks=1) + 1).sum()``, N tiny tasks, where the
     per-task cost of pools shows on its own: (pooled - no pools) / tasks;
   * ``join``: ``predictions.mean("realization").isel(height=10) - observations``;
   * ``full``: ``predictions.mean("realization") - observations`` (every height).

Run from the repository root (data generated if missing, same root as ``wan.py``)::

    python -m benchmarks.overhead                  # ~3.5 min on 2 cores
    python -m benchmarks.overhead --repeats 21 --tiny-tasks 4000

Prints a table and writes ``benchmarks/results/overhead-<scale>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
SITE = "ecmwf"


def _quartiles(v: list[float]) -> tuple[float, float, float]:
    if len(v) < 4:
        return min(v), statistics.median(v), max(v)
    q = statistics.quantiles(v, n=4)
    return q[0], q[1], q[2]


def _build(kind: str, pooled: bool, root: Path, n_tiny: int) -> Any:
    import dask.array as da
    import xarray as xr

    from catalog_pools import pool

    ctx = pool(SITE) if pooled else contextlib.nullcontext()
    if kind == "tiny":
        with ctx:
            x = da.ones(n_tiny, chunks=1)
        return (x + 1).sum()
    with ctx:
        pred = xr.open_dataset(root / "ecmwf/predictions.zarr", engine="zarr", chunks={})
        obs = xr.open_dataset(root / "eumetsat/observations.zarr", engine="zarr", chunks={})
    if kind == "join":
        return pred.air_pressure.mean("realization").isel(height=10) - obs.air_pressure
    return pred.air_pressure.mean("realization") - obs.air_pressure.drop_vars("height")


def time_optimizer(kind: str, root: Path, n_tiny: int, repeats: int) -> dict[str, Any]:
    """Optimizer time on this process: PoolOptimizer (pooled graph) vs dask's (plain graph)."""
    import dask.array.optimization as dao
    from dask.core import flatten

    from catalog_pools.engine.optimize import PoolOptimizer

    out: dict[str, Any] = {}
    for pooled in (True, False):
        expr = _build(kind, pooled, root, n_tiny)
        coll = expr.data if hasattr(expr, "data") else expr  # xarray -> dask array
        hlg = coll.__dask_graph__()
        keys = list(flatten(coll.__dask_keys__()))
        fn = PoolOptimizer("array", True, True, 10.0) if pooled else dao.optimize
        times, ntasks = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            g = fn(hlg, keys)
            times.append(time.perf_counter() - t0)
            ntasks = len(dict(g)) if not hasattr(g, "layers") else sum(len(la) for la in g.layers.values())
        out["pooled" if pooled else "no_pools"] = {"median_s": statistics.median(times), "tasks": ntasks}
    return out


def _guard_probe(n: int) -> dict[str, float]:
    """Runs on a worker: seconds per call, guarded vs direct, of a no-op task."""
    from dask._task_spec import Task

    from catalog_pools.engine.guard import guard_task

    task = Task("k", int, 1)
    guarded = guard_task(task, SITE)
    best = {}
    for name, t in (("direct", task), ("guarded", guarded)):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                t({})
            runs.append((time.perf_counter() - t0) / n)
        best[name] = min(runs)
    return best


def _transfers_since(since: float, dask_worker: Any = None) -> dict[str, list[int]]:
    """``{task prefix: [keys, bytes]}`` this worker fetched from other workers since ``since``."""
    from dask.utils import key_split

    out: dict[str, list[int]] = {}
    for e in list(dask_worker.transfer_incoming_log):
        if e["start"] >= since:
            for key, nbytes in e["keys"].items():
                c = out.setdefault(key_split(key), [0, 0])
                c[0] += 1
                c[1] += int(nbytes)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="demo", choices=("small", "demo", "seed"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--workers", type=int, default=4, help="workers of the one site")
    ap.add_argument("--repeats", type=int, default=11, help="alternating runs per variant")
    ap.add_argument("--tiny-tasks", type=int, default=2000)
    ap.add_argument("--kinds", default="tiny,join,full")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)

    from distributed import Client

    from benchmarks.wan import _without_pool_optimizers, machine_info
    from catalog_pools.cluster import LocalSitesCluster
    from catalog_pools.datagen.synthetic import make_data

    root = Path(args.data_root or f"/tmp/catalog-pools-bench/data-{args.scale}")
    make_data(root, scale=args.scale, progress=False)
    kinds = [k for k in args.kinds.split(",") if k]
    res: dict[str, Any] = {
        "machine": machine_info(),
        "workers": args.workers,
        "repeats": args.repeats,
        "tiny_tasks": args.tiny_tasks,
        "optimizer": {},
        "end_to_end": {},
    }
    for kind in kinds:
        res["optimizer"][kind] = time_optimizer(kind, root, args.tiny_tasks, 5)

    transfers: dict[str, dict[str, list[int]]] = {}

    def job(kind: str, pooled: bool, client: Any) -> float:
        expr = _build(kind, pooled, root, args.tiny_tasks)
        since = time.time()
        t0 = time.perf_counter()
        if pooled:
            client.compute(expr).result(timeout=300)
        else:
            with _without_pool_optimizers():
                client.compute(expr).result(timeout=300)
        dt = time.perf_counter() - t0
        by_prefix: dict[str, list[int]] = {}
        for got in client.run(_transfers_since, since).values():
            for prefix, (k, nb) in got.items():
                c = by_prefix.setdefault(prefix, [0, 0])
                c[0] += k
                c[1] += nb
        n = sum(c[0] for c in by_prefix.values())
        b = sum(c[1] for c in by_prefix.values())
        t = transfers.setdefault(kind, {"pooled": [], "no_pools": []})
        t["pooled" if pooled else "no_pools"].append((n, b, by_prefix))
        return dt

    with (
        LocalSitesCluster(
            {SITE: args.workers}, threads_per_worker=1, memory_limit="3GiB", host="127.0.0.1"
        ) as cluster,
        Client(cluster) as client,
    ):
        guard = client.run(_guard_probe, 20000)
        res["guard"] = {
            "direct_us": 1e6 * statistics.median(g["direct"] for g in guard.values()),
            "guarded_us": 1e6 * statistics.median(g["guarded"] for g in guard.values()),
        }
        for kind in kinds:
            job(kind, True, client)
            job(kind, False, client)  # warm-up
            times: dict[str, list[float]] = {"pooled": [], "no_pools": []}
            for rep in range(args.repeats):
                for pooled in (True, False) if rep % 2 == 0 else (False, True):
                    times["pooled" if pooled else "no_pools"].append(job(kind, pooled, client))
            for v in ("pooled", "no_pools"):
                transfers[kind][v] = transfers[kind][v][1:]  # drop the warm-up
            p, n = statistics.median(times["pooled"]), statistics.median(times["no_pools"])
            ntasks = res["optimizer"][kind]["pooled"]["tasks"]
            res["end_to_end"][kind] = {
                "times": times,
                "pooled_s": p,
                "no_pools_s": n,
                "slowdown": p / n - 1,
                "pooled_iqr": _quartiles(times["pooled"]),
                "no_pools_iqr": _quartiles(times["no_pools"]),
                "tasks": ntasks,
                "ms_per_task": 1000 * (p - n) / ntasks,
                "transfers": {
                    v: {
                        "keys_median": statistics.median(x[0] for x in transfers[kind][v]),
                        "bytes_median": statistics.median(x[1] for x in transfers[kind][v]),
                        "runs": transfers[kind][v],
                    }
                    for v in ("pooled", "no_pools")
                },
            }
            logger.info("%s: pooled %.3f s, no pools %.3f s (%+.1f%%)", kind, p, n, 100 * (p / n - 1))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"overhead-{args.scale}.json"
    path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    g = res["guard"]
    lines: list[str] = []
    lines.append(
        f"\nOne site, {args.workers} single-threaded workers, loopback, local zarr "
        f"({args.scale}); medians of {args.repeats} alternating runs, [quartiles].\n"
    )
    lines.append(
        "| workload | tasks | pooled (s) | no pools (s) | pooled slower by | "
        "(pooled - no pools) / tasks | optimizer pooled / dask (ms) | "
        "worker-to-worker transfers pooled / no pools |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for kind, e in res["end_to_end"].items():
        o = res["optimizer"][kind]
        pq, nq = e["pooled_iqr"], e["no_pools_iqr"]
        lines.append(
            f"| {kind} | {e['tasks']} | {e['pooled_s']:.3f} [{pq[0]:.3f}–{pq[2]:.3f}] | "
            f"{e['no_pools_s']:.3f} [{nq[0]:.3f}–{nq[2]:.3f}] | {100 * e['slowdown']:+.1f}% | "
            f"{e['ms_per_task']:+.2f} ms | {1000 * o['pooled']['median_s']:.1f} / "
            f"{1000 * o['no_pools']['median_s']:.1f} | "
            f"{e['transfers']['pooled']['keys_median']:g} keys, "
            f"{e['transfers']['pooled']['bytes_median'] / 1e6:.0f} MB / "
            f"{e['transfers']['no_pools']['keys_median']:g} keys, "
            f"{e['transfers']['no_pools']['bytes_median'] / 1e6:.0f} MB |"
        )
    for kind, e in res["end_to_end"].items():
        per = (
            {
                v: statistics.median(r[2].get("mean_chunk", [0])[0] for r in e["transfers"][v]["runs"])
                for v in ("pooled", "no_pools")
            }
            if e["transfers"]["pooled"]["runs"]
            else {}
        )
        if per and (per["pooled"] or per["no_pools"]):
            lines.append(
                f"\n`{kind}`: ensemble-mean partials (`mean_chunk` outputs) moved between "
                f"workers, median per run: pooled {per['pooled']:g}, no pools "
                f"{per['no_pools']:g}."
            )
    lines.append(
        f"\nGuard (catalog_pools.engine.guard.run_in_site) on a worker: {g['guarded_us']:.1f} µs per "
        f"task vs {g['direct_us']:.1f} µs unguarded."
    )
    md = out / f"overhead-{args.scale}.md"
    md.write_text(
        "# One site, no WAN: pooled vs no pools\n\n"
        + "\n".join(lines)
        + "\n\nMachine: "
        + json.dumps(res["machine"])
        + "\n"
    )
    print("\n".join(lines))
    print(f"Wrote {path} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
