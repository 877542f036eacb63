"""Everyday xarray workflows over three sites: cross-site bytes, pooled vs unpooled.

Three sites, A = ``ecmwf``, B = ``eumetsat``, C = ``dwd``, each with ``--workers``
workers (one thread each) of a real :class:`~catalog_pools.cluster.LocalSitesCluster`
(scheduler and workers in their own processes). The data (seeded
``dask.array.random``, chunked one time step per chunk) are:

- ``a``: ``T = 16`` weekly time steps of a ``Y x X = 90 x 180`` float64 field at A,
  one time step per chunk. One field is ``F = 90 * 180 * 8 = 129,600`` bytes;
- ``b``: the same shape at B;
- ``c``: one field (one chunk, ``F`` bytes) at C;
- ``w``: latitude weights ``cos(lat)`` at C, ``Y * 8 = 720`` bytes.

Smallest possible cross-site bytes of each workflow (the client's result is not
cross-site traffic). "Crossing" means: some bytes must meet bytes of another
site at least once; the cheapest meeting moves the smaller side, once:

``persist_join``  ``ap = a.persist(); ap.mean("time") - c``: the mean (F) or c (F) -> **F**.
``persist_std``   ``ap = a.persist(); (ap - c).std("time")``: c must meet all 16 steps at A; c once -> **F**.
``std``           ``(a - c).std("time")``: same with in-graph a -> **F**.
``groupby``       ``a.groupby("time.month").mean() - c``: 4 monthly means (4F) or c (F) -> **F**.
``where``         ``a.where(c > 0).mean("time")``: the mask ``c > 0`` (bool, F/8) -> **F/8**.
``concat``        ``xr.concat([a, b], "time").mean("time")``: each site reduces its half; one
                  partial crosses. dask's mean partial holds a count and a total per point
                  (int64 + float64) -> **2F**.
``corr``          ``xr.corr(a, b, "time")``: every step of a meets the same step of b; moving
                  one whole series once (16F) lets everything else run in one site -> **16F**.
``corr_field``    ``xr.corr(a, c, ("lat", "lon"))``: each step's pattern correlation with the
                  one field c; c moves once and every step stays at A -> **F**.
``broadcast``     ``(a - c.broadcast_like(a)).mean("time")``: c broadcast to every step (one
                  chunk, then split per step); c once -> **F**.
``apply_ufunc``   ``apply_ufunc((x - y)**2, a, c, dask="parallelized").mean("time")`` -> **F**.
``map_blocks``    ``da.map_blocks(sub, a, c[None]).mean(0)`` -> **F**.
``delayed``       ``dask.delayed(max_abs_diff)(a.mean("time").data, c.data)``: mean (F) or c (F) -> **F**.
``to_delayed``    the same through ``Array.to_delayed()`` -> **F**.
``anomaly``       ``(a.groupby("time.month") - a.groupby("time.month").mean()).std("time") - c`` -> **F**.
``rolling``       ``(a.rolling(time=3).mean() - c).mean("time")`` -> **F**.
``three_sites``   ``a.sum("time") + b.sum("time") + c``: two joins of one field each -> **2F**.
``weighted``      ``a.weighted(w).mean(("lat", "lon"))``: the weights (Y * 8) -> **720 B**.

Sites isolated as Unix users (root, ``runuser``, the interpreter reachable by other
users; not with ``--no-isolation``): each site's workers run as ``cp-<site>``; the
data are zarr stores (same values and chunks) in each site's mode-0700 directory
owned by that user, opened under ``pool(site)``, so a load run on another site
fails with ``PermissionError`` (checked once at start,
:mod:`benchmarks.isolated_sites`). Unpooled runs may load any chunk anywhere: they
read a world-readable copy of the same stores. All of it lives in the run's own
temporary directory, removed at exit. Otherwise every worker runs as the caller
and the data are made in memory by tasks pinned to their site (nothing read from
disk, nothing sent by the client). The results header says which.

Unpooled: the same computations with no ``pool()``: dask places every task
freely, so the "sites" only name the workers the bytes moved between.

Every result is compared with plain xarray on numpy data (the same values,
loaded first). Also: optimizer cost, catalog_pools's pooled optimizer against
``dask.array.optimization.optimize`` on the same pooled graph, at 10k / 100k /
1M tasks.

Usage::

    python -m benchmarks.workloads --workers 2 --out benchmarks/results/workloads-2w
    python -m benchmarks.workloads --workers 8 --skip-optimizer --out benchmarks/results/workloads-8w
    python -m benchmarks.workloads --workers 0 --opt-sizes 10000 100000 1000000 \
        --out benchmarks/results/workloads-optimizer
    python -m benchmarks.workloads --workers 2 --skip-optimizer --federated \
        --out benchmarks/results/workloads-explain

Each pooled run also records ``catalog_pools.explain()``'s estimate, made
before computing; ``--federated`` runs every workflow but the persisted ones
again over one plain cluster per site (:func:`catalog_pools.federated`).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

import catalog_pools
from benchmarks.isolated_sites import SiteStores, check_isolation, prepare_sites
from benchmarks.optimizer_cost import SHAPES, fresh_optimizer_cost
from benchmarks.optimizer_cost import table as cost_table
from catalog_pools import pool

A, B, C = "ecmwf", "eumetsat", "dwd"
T, Y, X = 16, 90, 180
F = Y * X * 8
#: The site of each array.
HOMES = {"a": A, "b": B, "c": C, "w": C}

#: Environment of the cluster processes: the workflows' own functions (``_sub``,
#: ...) travel in graphs by reference, so the scheduler and workers must be able
#: to import this module even when the package is installed without the repository.
CLUSTER_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}

Data = dict[str, xr.DataArray]
#: Makes the data: ``source(pooled)`` (:func:`make_data`, or ``SiteStores.open``).
Source = Callable[[bool], Data]


def make_data(pooled: bool) -> Data:
    """Lazy a, b (T x Y x X), c (Y x X) and w (Y), each made in its site if ``pooled``."""
    coords = {
        "time": pd.date_range("2000-01-01", periods=T, freq="7D"),
        "lat": np.linspace(-89.0, 89.0, Y),
        "lon": np.linspace(0.0, 358.0, X),
    }

    def made(site: str, build: Callable[[], Any]) -> Any:
        if not pooled:
            return build()
        with pool(site):
            return build()

    def series(seed: int) -> da.Array:
        return da.random.default_rng(seed).standard_normal((T, Y, X), chunks=(1, Y, X))

    dims3 = ("time", "lat", "lon")
    a = xr.DataArray(made(A, lambda: series(1)), dims=dims3, coords=coords, name="a")
    b = xr.DataArray(made(B, lambda: series(2)), dims=dims3, coords=coords, name="b")
    field = made(C, lambda: da.random.default_rng(3).standard_normal((Y, X), chunks=(Y, X)))
    c = xr.DataArray(field, dims=("lat", "lon"), coords={k: coords[k] for k in ("lat", "lon")}, name="c")
    weights = made(C, lambda: da.cos(da.deg2rad(da.from_array(coords["lat"], chunks=Y))))
    w = xr.DataArray(weights, dims=("lat",), coords={"lat": coords["lat"]}, name="w")
    return {"a": a, "b": b, "c": c, "w": w}


def _max_abs_diff(m: np.ndarray, f: np.ndarray) -> float:
    return float(np.abs(m - f).max())


def _sub(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x - y


Persist = Callable[[xr.DataArray], xr.DataArray]
#: name -> (minimum cross-site bytes, computation(data, persist))
WORKFLOWS: dict[str, tuple[float, Callable[[Data, Persist], Any]]] = {
    "persist_join": (F, lambda d, p: p(d["a"]).mean("time") - d["c"]),
    "persist_std": (F, lambda d, p: (p(d["a"]) - d["c"]).std("time")),
    "std": (F, lambda d, p: (d["a"] - d["c"]).std("time")),
    "groupby": (F, lambda d, p: d["a"].groupby("time.month").mean() - d["c"]),
    "where": (F / 8, lambda d, p: d["a"].where(d["c"] > 0).mean("time")),
    "concat": (2 * F, lambda d, p: xr.concat([d["a"], d["b"]], "time").mean("time")),
    "corr": (16 * F, lambda d, p: xr.corr(d["a"], d["b"], "time")),
    "corr_field": (F, lambda d, p: xr.corr(d["a"], d["c"], ("lat", "lon"))),
    "broadcast": (F, lambda d, p: (d["a"] - d["c"].broadcast_like(d["a"])).mean("time")),
    "apply_ufunc": (
        F,
        lambda d, p: xr.apply_ufunc(
            lambda x, y: (x - y) ** 2, d["a"], d["c"], dask="parallelized", output_dtypes=[float]
        ).mean("time"),
    ),
    "map_blocks": (F, lambda d, p: _as_array(d["a"]).map_blocks(_sub, _as_array(d["c"])[None]).mean(0)),
    "delayed": (
        F,
        lambda d, p: dask.delayed(_max_abs_diff)(_as_array(d["a"].mean("time")), _as_array(d["c"])),
    ),
    "to_delayed": (
        F,
        lambda d, p: dask.delayed(_max_abs_diff)(
            _as_array(d["a"].mean("time")).to_delayed().item(), _as_array(d["c"]).to_delayed().item()
        ),
    ),
    "anomaly": (
        F,
        lambda d, p: (
            (d["a"].groupby("time.month") - d["a"].groupby("time.month").mean()).std("time") - d["c"]
        ),
    ),
    "rolling": (F, lambda d, p: (d["a"].rolling(time=3).mean() - d["c"]).mean("time")),
    "three_sites": (2 * F, lambda d, p: d["a"].sum("time") + d["b"].sum("time") + d["c"]),
    "weighted": (Y * 8, lambda d, p: d["a"].weighted(d["w"]).mean(("lat", "lon"))),
}


def _as_array(x: xr.DataArray) -> Any:
    """The dask array under ``x`` (a numpy array for the plain reference)."""
    data = x.data
    return data if isinstance(data, da.Array) else da.from_array(data, chunks=data.shape)


def _values(result: Any) -> np.ndarray:
    return np.asarray(result.values if hasattr(result, "values") else result, dtype=float)


@dataclass
class Row:
    """One workflow, measured pooled and unpooled."""

    workflow: str
    minimum: float
    pooled_bytes: int
    unpooled_bytes: int
    pooled_seconds: float
    unpooled_seconds: float
    values_equal: bool
    explain_bytes: int | None = None
    federated_bytes: int | None = None
    federated_equal: bool | None = None

    @property
    def ratio(self) -> float:
        return self.pooled_bytes / self.minimum

    @property
    def explain_ratio(self) -> float | None:
        """``explain()``'s estimate over the measured pooled bytes (1.0 when both are 0)."""
        if self.explain_bytes is None:
            return None
        if not self.pooled_bytes:
            return 1.0 if not self.explain_bytes else float("inf")
        return self.explain_bytes / self.pooled_bytes

    @property
    def federated_ratio(self) -> float | None:
        """Federated cross-site bytes over the one-cluster (pooled) figure."""
        if self.federated_bytes is None:
            return None
        if not self.pooled_bytes:
            return 1.0 if not self.federated_bytes else float("inf")
        return self.federated_bytes / self.pooled_bytes


def expected_values(name: str) -> np.ndarray:
    """The workflow on numpy-backed xarray: the plain-xarray reference."""
    loaded = {k: v.compute(scheduler="sync") for k, v in make_data(pooled=False).items()}
    result = WORKFLOWS[name][1](loaded, lambda x: x)
    if hasattr(result, "compute"):
        result = result.compute(scheduler="sync")
    return _values(result)


def measure(
    client: Any, name: str, pooled: bool, source: Source = make_data
) -> tuple[int, float, np.ndarray, int]:
    """Cross-site bytes, seconds, values and ``explain()``'s estimate of one run of a workflow."""
    from catalog_pools.traffic import traffic

    data = source(pooled)
    persisted: list[Any] = []

    def persist(x: xr.DataArray) -> xr.DataArray:
        x = x.persist()
        persisted.append(x)
        from distributed import wait

        wait(x.data)
        return x

    computation = WORKFLOWS[name][1](data, persist)
    estimate = catalog_pools.explain(computation, client).cross_site_bytes
    with traffic(client, count_reads=False, settle=2.0) as t:
        start = time.perf_counter()
        result = dask.compute(computation, scheduler=client.get)[0]
        seconds = time.perf_counter() - start
    return t.cross_site_bytes, seconds, _values(result), estimate


@contextmanager
def three_sites(workers: int, directory: Path, stores: SiteStores | None = None) -> Iterator[Any]:
    """A client of ``workers`` workers per site; each site's as its own user with ``stores``."""
    from distributed import Client

    from catalog_pools.cluster import LocalSitesCluster

    env = {"PYTHONPATH": stores.pythonpath} if stores else CLUSTER_ENV
    with (
        LocalSitesCluster(
            {A: workers, B: workers, C: workers},
            threads_per_worker=1,
            memory_limit="1GiB",
            local_directory=directory / "cluster",
            env=env,
            users=stores.users if stores else None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(3 * workers, timeout=120)
        if stores:
            check_isolation(client, cluster, stores)
        yield client


def run_workflows(
    workers: int, names: list[str], directory: Path, stores: SiteStores | None = None
) -> list[Row]:
    source = stores.open if stores else make_data
    rows = []
    with three_sites(workers, directory, stores) as client:
        for name in names:
            expected = expected_values(name)
            pooled_bytes, pooled_s, pooled_v, estimate = measure(client, name, True, source)
            unpooled_bytes, unpooled_s, unpooled_v, _ = measure(client, name, False, source)
            ok = all(np.allclose(v, expected, equal_nan=True) for v in (pooled_v, unpooled_v))
            row = Row(name, WORKFLOWS[name][0], pooled_bytes, unpooled_bytes, pooled_s, unpooled_s, ok)
            row.explain_bytes = estimate
            print(
                f"{name:13s} min {row.minimum:>9,.0f}  pooled {pooled_bytes:>10,d} ({row.ratio:5.2f}x)  "
                f"explain {estimate:>10,d} ({row.explain_ratio:5.2f}x)  "
                f"unpooled {unpooled_bytes:>10,d}  {pooled_s:5.2f}s / {unpooled_s:5.2f}s  equal={ok}",
                flush=True,
            )
            rows.append(row)
    return rows


#: Workflows that persist an input first: federated runs cannot (docs/federation.md).
NOT_FEDERATED = {"persist_join", "persist_std"}


def start_site_clusters(workers: int, directory: Path) -> dict[str, Any]:
    """One plain cluster per site (own scheduler and worker processes, no resources)."""
    from distributed import LocalCluster

    clusters: dict[str, Any] = {}
    try:
        for site in (A, B, C):
            clusters[site] = LocalCluster(
                processes=True,
                n_workers=workers,
                threads_per_worker=1,
                memory_limit="1GiB",
                dashboard_address=":0",
                worker_dashboard_address=":0",
                local_directory=str(directory / site),
            )
    except BaseException:
        for cluster in clusters.values():
            cluster.close()
        raise
    return clusters


def measure_federated(
    clients: dict[str, Any], name: str, source: Source = make_data
) -> tuple[int, np.ndarray]:
    """Cross-site bytes (through the coordinator) and values of one federated run."""
    computation = WORKFLOWS[name][1](source(True), lambda x: x)
    with catalog_pools.federated(clients) as fed:
        result = dask.compute(computation, scheduler=fed)[0]
    return fed.runs[-1].cross_site_bytes, _values(result)


def run_federated(workers: int, rows: list[Row], directory: Path, source: Source = make_data) -> None:
    """Fill each row's federated columns: one cluster per site (as the caller), the coordinator here."""
    from distributed import Client

    clusters = start_site_clusters(workers, directory)
    clients = {site: Client(c, set_as_default=False) for site, c in clusters.items()}
    try:
        for row in rows:
            if row.workflow in NOT_FEDERATED:
                continue
            expected = expected_values(row.workflow)
            row.federated_bytes, values = measure_federated(clients, row.workflow, source)
            row.federated_equal = bool(np.allclose(values, expected, equal_nan=True))
            print(
                f"{row.workflow:13s} federated {row.federated_bytes:>10,d} "
                f"({row.federated_ratio:5.2f}x one cluster)  equal={row.federated_equal}",
                flush=True,
            )
    finally:
        for site, site_client in clients.items():
            site_client.close()
            clusters[site].close()


def write(out: Path, workers: int, rows: list[Row], costs: list[dict[str, Any]], isolation: str) -> None:
    info = {
        "workers_per_site": workers,
        "sites_isolated": isolation.startswith("yes"),
        "isolation": isolation,
        "field_bytes": F,
        "machine": f"{platform.node()} {platform.machine()}, python {platform.python_version()}",
        "dask": dask.__version__,
        "catalog_pools": getattr(catalog_pools, "__version__", "dev"),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    payload = {
        **info,
        "workflows": [
            {
                **asdict(r),
                "ratio": r.ratio,
                "explain_ratio": r.explain_ratio,
                "federated_ratio": r.federated_ratio,
            }
            for r in rows
        ],
        "optimizer": costs,
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    title = f"# Workflows over three sites, {workers} workers per site"
    lines = [
        title,
        "",
        f"{info['when']}, dask {info['dask']}",
        "",
        f"Sites isolated as Unix users: {isolation}",
        "",
    ]
    if rows:
        lines += [
            "| workflow | minimum bytes | pooled bytes | pooled / minimum | unpooled bytes "
            "| pooled s | unpooled s | values = xarray |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {r.workflow} | {r.minimum:,.0f} | {r.pooled_bytes:,d} | {r.ratio:.2f} "
            f"| {r.unpooled_bytes:,d} | {r.pooled_seconds:.2f} | {r.unpooled_seconds:.2f} "
            f"| {'yes' if r.values_equal else 'NO'} |"
            for r in rows
        ]
    if any(r.explain_bytes is not None for r in rows):
        lines += ["", *_explain_table(rows)]
    if costs:
        lines += ["", "Optimizer cost (benchmarks/optimizer_cost.py):", "", *cost_table(costs)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _explain_table(rows: list[Row]) -> list[str]:
    """Measured pooled bytes, explain()'s estimate, and the federated run (where run)."""

    def ratio(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    def equal(ok: bool | None) -> str:
        return "not run" if ok is None else ("yes" if ok else "NO")

    lines = [
        "| workflow | measured pooled B | explain() B | explain / measured "
        "| federated B | federated / one cluster | federated = xarray |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        fed = "" if r.federated_bytes is None else f"{r.federated_bytes:,d}"
        explained = "" if r.explain_bytes is None else f"{r.explain_bytes:,d}"
        lines.append(
            f"| {r.workflow} | {r.pooled_bytes:,d} | {explained} | {ratio(r.explain_ratio)} "
            f"| {fed} | {ratio(r.federated_ratio)} | {equal(r.federated_equal)} |"
        )
    return lines


def default_repeats(n_tasks: int) -> int:
    """Runs per optimizer: a small graph's run is short and noisy, and more runs are cheap."""
    return 9 if n_tasks < 50_000 else 5 if n_tasks < 500_000 else 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers per site (0: no cluster)")
    parser.add_argument("--only", nargs="*", default=None, help="workflow names")
    parser.add_argument("--opt-sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--opt-shapes", nargs="*", choices=SHAPES, default=list(SHAPES))
    parser.add_argument(
        "--opt-repeats",
        type=int,
        default=None,
        help="runs of each optimizer per graph (default: 9 below 50k tasks, 5 below 500k, else 3)",
    )
    parser.add_argument("--skip-optimizer", action="store_true")
    parser.add_argument("--federated", action="store_true", help="also run federated: one cluster per site")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/workloads"))
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="data in memory, every worker as the caller (not per-site users)",
    )
    args = parser.parse_args(argv)
    names = args.only or list(WORKFLOWS)
    rows: list[Row] = []
    isolation = "not run (no cluster)"
    if args.workers:
        with tempfile.TemporaryDirectory(prefix="workloads-") as tmp:
            directory = Path(tmp)
            stores, isolation = prepare_sites(directory, make_data(pooled=False), HOMES, args.no_isolation)
            rows = run_workflows(args.workers, names, directory, stores)
            if args.federated:
                run_federated(args.workers, rows, directory, stores.open if stores else make_data)
    costs = []
    if not args.skip_optimizer:
        costs = [
            fresh_optimizer_cost(n, shape, args.opt_repeats or default_repeats(n))
            for shape in args.opt_shapes
            for n in args.opt_sizes
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, args.workers, rows, costs, isolation)


if __name__ == "__main__":
    main()
