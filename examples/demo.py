"""Compare ECMWF predictions with EUMETSAT observations without moving the bulk data.

    python examples/demo.py [--scale demo|small|seed] [--out demo-output/]
                            [--scheduler ADDR] [--data DIR] [--replicas]

1. generates the synthetic data if it is missing (:mod:`catalog_pools.datagen.synthetic`);
2. starts a local two-site cluster, ``LocalSitesCluster({"ecmwf": 2,
   "eumetsat": 2})`` (each worker its own process), unless ``--scheduler`` names
   an existing one whose workers can read ``--data``;
3. opens ``catalogs/multicloud.yaml`` with :func:`catalog_pools.open_catalog`:
   every dataset is pinned to the site its catalog entry names;
4. computes ``predictions.mean("realization").isel(height=10) - observations``
   under :func:`catalog_pools.traffic.traffic`, with a progress bar;
5. prints wall time, bytes that crossed sites, bytes read and tasks per site,
   checks the answer against plain xarray on the same files, and writes
   ``difference.png`` (a map), ``traffic.png``, ``difference.nc`` and
   ``report.json`` to ``--out``.

The data root and ``--out`` may hold your files: the demo writes only paths it
created (a manifest records them), each through a temporary name and an atomic
rename, and otherwise stops before any work, naming the path (docs/security.md).

``--replicas`` mirrors the predictions at EUMETSAT (``<data>/eumetsat-mirror``)
and opens ``catalogs/replicas.yaml``: the join then runs wholly at EUMETSAT and
only the result leaves it (docs/catalog.md, "Replicas").

See docs/demo.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

logger = logging.getLogger("catalog_pools.demo")

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "catalogs" / "multicloud.yaml"
REPLICAS_CATALOG = REPO / "catalogs" / "replicas.yaml"
SITES = {"ecmwf": 2, "eumetsat": 2}
OUTPUTS = ("difference.png", "traffic.png", "difference.nc", "report.json")
#: Records what the demo wrote in ``--out``; files it did not write are never replaced.
OUTPUT_MANIFEST = ".catalog-pools-demo.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        default="demo",
        choices=["small", "demo", "seed"],
        help="data size: small (1.5 MiB of predictions, tests), demo (464 MiB, "
        "default), seed (2.7 GiB, like the 2022 experiment)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data root (default: $CATALOG_POOLS_DATA or <repo>/data)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="output directory (default: ./demo-output)"
    )
    parser.add_argument(
        "--scheduler", default=None, help="use this running scheduler instead of starting a local cluster"
    )
    parser.add_argument(
        "--catalog", type=Path, default=CATALOG, help=f"catalog file (default: {CATALOG.relative_to(REPO)})"
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up on the computation after this many seconds"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--replicas",
        action="store_true",
        help=f"predictions mirrored at EUMETSAT too; opens {REPLICAS_CATALOG.relative_to(REPO)}",
    )
    return parser.parse_args(argv)


def data_root(arg: Path | None) -> Path:
    """``--data``, else ``$CATALOG_POOLS_DATA``, else ``<repo>/data``."""
    if arg is not None:
        return arg.absolute()
    env = os.environ.get("CATALOG_POOLS_DATA")
    return Path(env).absolute() if env else REPO / "data"


def open_datasets(catalog: Path, root: Path) -> tuple[Any, Any, str]:
    """Predictions and observations, each pinned to its site; and how they were opened."""
    from catalog_pools import open_catalog

    # The catalog's paths are templated on this variable (default <repo>/data).
    os.environ["CATALOG_POOLS_DATA"] = str(root)
    cat = open_catalog(str(catalog))
    if catalog == REPLICAS_CATALOG:
        return cat.predictions.to_dask(), cat.observations.to_dask(), f"catalog {catalog} (replicas)"
    predictions = cat.ecmwf.predictions.to_dask()
    observations = cat.eumetsat.observations.to_dask()
    return predictions, observations, f"catalog {catalog}"


def plain_xarray(root: Path) -> Any:
    """The same difference with plain xarray and dask's local scheduler, no cluster."""
    import xarray as xr

    from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX

    pred = xr.open_zarr(root / "ecmwf" / "predictions.zarr")
    obs = xr.open_zarr(root / "eumetsat" / "observations.zarr")
    diff = pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX)
    return (diff - obs.air_pressure).compute(scheduler="synchronous")


def start_cluster(stack: contextlib.ExitStack, scheduler: str | None) -> tuple[Any, str]:
    from distributed import Client

    if scheduler:
        client = stack.enter_context(Client(scheduler))
        return client, f"existing scheduler {scheduler}"
    from catalog_pools.cluster import LocalSitesCluster

    cluster = stack.enter_context(LocalSitesCluster(SITES))
    client = stack.enter_context(Client(cluster))
    desc = ", ".join(f"{s}: {len(w)} workers" for s, w in cluster.sites.items())
    return client, f"LocalSitesCluster ({desc}) at {cluster.scheduler_address}"


def print_table(t: Any, total_bytes: int, plan: Any) -> None:
    reads = t.bytes_read_by_site or {}
    print()
    print(f"{'site':<12s} {'workers':>7s} {'tasks':>6s}   bytes read")
    for site in t.sites:
        n = reads.get(site)
        read = "n/a" if n is None else f"{format_bytes(n)} ({n} B)"
        print(
            f"{site:<12s} {len(t.workers_by_site.get(site, ())):>7d} "
            f"{t.tasks_by_site.get(site, 0):>6d}   {read}"
        )
    print()
    share = 100.0 * t.cross_site_bytes / total_bytes if total_bytes else 0.0
    print(f"wall time                {t.wall_time:.2f} s")
    print(
        f"bytes crossing sites     {t.cross_site_bytes} B ({format_bytes(t.cross_site_bytes)})"
        f" = {share:.3f}% of the {format_bytes(total_bytes)} of data"
    )
    print(f"bytes sent to client     {t.client_bytes} B ({format_bytes(t.client_bytes)})")
    for (src, dst), n in sorted(t.by_site_pair.items()):
        print(f"  {src} -> {dst}: {n} B")
    print_plan_vs_measured(plan, t)


def print_plan_vs_measured(plan: Any, t: Any) -> None:
    """The bytes explain() planned next to the bytes traffic() measured."""
    print(f"{'':24s} {'planned':>12s} {'measured':>12s}")
    for src, dst in sorted(set(plan.by_site_pair) | {p for p in t.by_site_pair if p[0] != p[1]}):
        planned, measured = plan.by_site_pair.get((src, dst), 0), t.by_site_pair.get((src, dst), 0)
        print(f"  {src + ' -> ' + dst:22s} {planned:>10d} B {measured:>10d} B")
    print(f"  {'cross-site':22s} {plan.cross_site_bytes:>10d} B {t.cross_site_bytes:>10d} B")


def compute_with_progress(client: Any, diff: Any, args: argparse.Namespace) -> Any:
    """The computed ``diff``, or ``None`` after ``args.timeout`` seconds."""
    from distributed import progress

    future = client.compute(diff)
    bar = None
    if not args.no_progress:
        # In a thread: distributed.progress has no timeout, the result does.
        bar = threading.Thread(target=progress, args=(future,), kwargs={"notebook": False}, daemon=True)
        bar.start()
    try:
        return future.result(timeout=args.timeout)
    except TimeoutError:
        return None
    finally:
        if bar is not None:
            bar.join(timeout=5)
            print()


def write_outputs(outputs: Any, result: Any, t: Any, report: dict[str, Any]) -> list[Path]:
    """Write the map, the traffic picture, the difference and the report, each atomically."""
    import xarray as xr

    from catalog_pools.traffic.plot import plot_map

    title = "ECMWF ensemble mean minus EUMETSAT observation, air pressure at 300 m"
    writers = {
        "difference.png": lambda path: plot_map(result, path, title=title),
        "traffic.png": t.plot,
        "difference.nc": xr.Dataset({result.name: result}).to_netcdf,
        "report.json": lambda path: path.write_text(json.dumps(report, indent=2) + "\n"),
    }
    files = [outputs.write(name, writers[name]) for name in OUTPUTS]
    outputs.commit({"written_by": "examples/demo.py"})
    return files


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # intake warns on every string parameter default; not the user's concern here.
    warnings.filterwarnings("ignore", message="Shell command not executed")
    started = time.perf_counter()

    import numpy as np

    from catalog_pools.datagen.safety import Ledger
    from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX, grid, make_data
    from catalog_pools.errors import UnsafeWriteError
    from catalog_pools.traffic import explain, traffic

    root = data_root(args.data)
    g = grid(args.scale)
    total_bytes = g.prediction_nbytes + g.observation_nbytes
    print(
        f"data       {root} (scale {args.scale}: predictions "
        f"{format_bytes(g.prediction_nbytes)}, observations "
        f"{format_bytes(g.observation_nbytes)})"
    )
    # Both roots may hold the user's files: write only what is ours (see
    # catalog_pools.datagen.safety), and refuse before any work otherwise.
    try:
        outputs = Ledger(args.out, OUTPUT_MANIFEST)
        outputs.check(list(OUTPUTS))
        make_data(root, scale=args.scale, seed=args.seed, progress=not args.no_progress)
        if args.replicas:  # the same seed: an identical copy of the predictions
            make_data(
                root / "eumetsat-mirror", scale=args.scale, seed=args.seed, progress=not args.no_progress
            )
            args.catalog = REPLICAS_CATALOG
    except UnsafeWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        client, cluster_desc = start_cluster(stack, args.scheduler)
        print(f"cluster    {cluster_desc}")
        predictions, observations, how = open_datasets(args.catalog, root)
        print(f"opened via {how}")

        diff = (
            predictions.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX)
            - observations.air_pressure
        ).rename("air_pressure_difference")
        diff.attrs.update(units="Pa", long_name="ensemble mean minus observation at 300 m")

        print((plan := explain(diff, client)).summary())
        with traffic(client) as t:
            result = compute_with_progress(client, diff, args)
        if result is None:
            print(f"error: the computation did not finish in {args.timeout:g} s", file=sys.stderr)
            return 2
        print_table(t, total_bytes, plan)

        expected = plain_xarray(root)
        max_abs = float(np.nanmax(np.abs(result.values - expected.values)))
        print(f"check vs plain xarray    max |difference| {max_abs:g} Pa")
        print(
            f"result                   mean {float(result.mean()):.2f} Pa, "
            f"std {float(result.std()):.2f} Pa over {result.size} points"
        )

    report = {
        "scale": args.scale,
        "data_root": str(root),
        "opened_via": how,
        "cluster": cluster_desc,
        "wall_time_s": t.wall_time,
        "cross_site_bytes": t.cross_site_bytes,
        "planned_cross_site_bytes": plan.cross_site_bytes,
        "client_bytes": t.client_bytes,
        "within_site_bytes": t.within_site_bytes,
        "by_site_pair": [[s, d, n] for (s, d), n in sorted(t.by_site_pair.items())],
        "tasks_by_site": t.tasks_by_site,
        "bytes_read_by_site": t.bytes_read_by_site,
        "workers_by_site": t.workers_by_site,
        "data_bytes": total_bytes,
        "result_nbytes": int(result.nbytes),
        "max_abs_vs_plain_xarray": max_abs,
        "complete": t.complete,
    }
    files = write_outputs(outputs, result, t, report)
    print("files")
    for path in files:
        print(f"  {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0 if max_abs == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
