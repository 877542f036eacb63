"""Replicas: the seed workload with the predictions at one site vs replicated at both.

    python -m benchmarks.replicas [--scale small|demo|seed] [--data DIR] [--repeat N]

Default: loopback (one machine, ``LocalSitesCluster({"ecmwf": 2, "eumetsat": 2})``):
bytes are counted by :func:`catalog_pools.traffic.traffic` between the sites'
workers, not on an emulated WAN. Rows:

``single copy``
    ``catalogs/multicloud.yaml``: predictions at ECMWF, observations at EUMETSAT;
    ``predictions.mean("realization").isel(height=10) - observations``.
``replicated``
    ``catalogs/replicas.yaml``: the predictions mirrored at EUMETSAT too; the
    same computation.
``replicated, ECMWF killed``
    the predictions alone (``mean("realization")``, a short sleep per chunk so
    the kill lands mid-compute), read at ECMWF until every ECMWF worker is killed,
    then at EUMETSAT. A new cluster for this row.

Each row checks its values against plain xarray on the same files.

``--wan`` (root): the same three rows on the emulated WAN of
:mod:`benchmarks.wan` (each site, the client and the scheduler in its own
network namespace behind a shaped router; see :mod:`benchmarks.netns`). Each
site serves its data over HTTP from its own address; EUMETSAT's server also
holds a copy of the predictions (copied under the benchmark's own data root),
and the replicated catalog's ``metadata.replicas.eumetsat.urlpath`` is that
server's URL. Cross-site bytes are IP bytes counted at the router between the
sites and the client. One cluster (``respawn=False``) serves all rows, the kill
row last. Results: ``benchmarks/results/replicas-wan-<scale>.{md,json}``::

    sudo python -m benchmarks.replicas --wan [--scale small|demo] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SITES = {"ecmwf": 2, "eumetsat": 2}


def _slow() -> Any:
    # A closure, so it travels by value to the workers.
    def slow(block: Any) -> Any:
        time.sleep(0.2)
        return block

    return slow


def open_join(catalog: str) -> Any:
    from catalog_pools import open_catalog
    from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX

    cat = open_catalog(catalog)
    replicated = catalog.endswith("replicas.yaml")
    pred = (cat.predictions if replicated else cat.ecmwf.predictions).to_dask()
    obs = (cat.observations if replicated else cat.eumetsat.observations).to_dask()
    return pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - obs.air_pressure


def plain_join(root: Path) -> Any:
    import xarray as xr

    from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX

    pred = xr.open_zarr(root / "ecmwf" / "predictions.zarr")
    obs = xr.open_zarr(root / "eumetsat" / "observations.zarr")
    diff = pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - obs.air_pressure
    return diff.compute(scheduler="synchronous")


def measure(client: Any, make: Any, repeat: int, kill: Any = None) -> tuple[Any, dict[str, Any]]:
    from catalog_pools.traffic import traffic

    rows = []
    result = None
    for _ in range(repeat):
        x = make()
        with traffic(client) as t:
            if kill is not None:
                threading.Timer(kill[1], kill[0]).start()
            result = x.compute()
        rows.append(t)
    last = rows[-1]
    return result, {
        "cross": last.cross_site_bytes,
        "client": last.client_bytes,
        "time": statistics.median(r.wall_time for r in rows),
        "tasks": dict(last.tasks_by_site),
        "pairs": {f"{s}->{d}": n for (s, d), n in last.by_site_pair.items() if s != d},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["small", "demo", "seed"])
    parser.add_argument("--data", type=Path, default=None, help="data root (default: a temporary directory)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median time)")
    parser.add_argument("--kill-after", type=float, default=0.5, help="seconds before ECMWF's workers die")
    parser.add_argument("--wan", action="store_true", help="on the emulated WAN (root; see above)")
    parser.add_argument("--timeout", type=float, default=420.0, help="--wan: global bound, seconds")
    parser.add_argument("--wan-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.wan_child:
        from benchmarks.replicas_wan import child_main

        return child_main(*args.wan_child)
    if args.wan:
        from benchmarks.replicas_wan import wan_main

        return wan_main(args.scale, args.repeat, args.kill_after, args.timeout)

    import numpy as np
    import xarray as xr
    from distributed import Client

    from catalog_pools.cluster import LocalSitesCluster
    from catalog_pools.datagen.synthetic import make_data

    with contextlib.ExitStack() as stack:
        root = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replicas-bench-")))
        make_data(root, scale=args.scale, progress=False)
        make_data(root / "eumetsat-mirror", scale=args.scale, progress=False)
        os.environ["CATALOG_POOLS_DATA"] = str(root)
        expected = plain_join(root)
        rows: list[tuple[str, dict[str, Any]]] = []
        with LocalSitesCluster(SITES) as cluster, Client(cluster) as client:
            for name, catalog in (("single copy", "multicloud.yaml"), ("replicated", "replicas.yaml")):
                path = str(REPO / "catalogs" / catalog)
                result, row = measure(client, lambda p=path: open_join(p), args.repeat)
                xr.testing.assert_allclose(result, expected, rtol=1e-6)
                rows.append((name, row))
        # respawn off: a killed worker must stay dead (a respawned one would take work back)
        with LocalSitesCluster(SITES, respawn=False) as cluster, Client(cluster) as client:
            from catalog_pools import open_catalog

            pred = open_catalog(str(REPO / "catalogs" / "replicas.yaml")).predictions.to_dask()
            slow = pred.air_pressure.map_blocks(_slow()).mean("realization")

            def kill() -> None:
                for name in [n for n in cluster.workers if str(n).startswith("ecmwf-")]:
                    cluster.kill_worker(name)

            result, row = measure(client, lambda: slow, 1, kill=(kill, args.kill_after))
            want = xr.open_zarr(root / "ecmwf" / "predictions.zarr").air_pressure.mean("realization")
            np.testing.assert_allclose(result.values, want.values, rtol=1e-6)
            if not row["tasks"].get("eumetsat"):
                print("warning: the computation ended before the kill; lower --kill-after", file=sys.stderr)
            rows.append(("replicated, ECMWF killed", row))

    print(f"\nscale {args.scale}, loopback, {SITES}; time: median of {args.repeat} runs (killed row: 1)")
    print(f"{'case':<26s} {'cross-site bytes':>17s} {'to client':>10s} {'time s':>7s}  tasks by site")
    for name, row in rows:
        print(f"{name:<26s} {row['cross']:>17d} {row['client']:>10d} {row['time']:>7.2f}  {row['tasks']}")
        print(f"{'':<26s} transfers between locations: {row['pairs']}")
    print("values equal to plain xarray in every row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
