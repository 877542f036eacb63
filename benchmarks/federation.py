"""Seed workload: one cluster per site (federated) vs one spanning cluster vs unpooled.

    python benchmarks/federation.py --scale demo --data data

Runs ``predictions.mean("realization").isel(height=10) - observations`` on the
synthetic data (``catalog-pools make-data``) three ways on this machine, each
site with ``--workers`` worker processes:

* ``federated``: one plain ``LocalCluster`` per site (no worker resources),
  ``catalog_pools.federated``; bytes counted by the coordinator.
* ``spanning``: one :class:`~catalog_pools.cluster.LocalSitesCluster` with
  ``pool-<site>`` workers; bytes from the workers' transfer logs (``traffic()``).
* ``unpooled``: the same spanning cluster, datasets opened without ``pool()``.

``--wan`` (root): instead, each site's cluster (``dask scheduler`` + ``dask
worker`` processes) in that site's network namespace and the coordinator in
a ``client`` namespace, behind the router of :mod:`benchmarks.netns`, links
shaped to ``--rate-mbit``; bytes are also counted as IP bytes at the router
per namespace pair (control traffic and graph submission included).

Bytes are dask's ``sizeof`` of the values moved (numpy: ``nbytes``), so the
three figures are comparable. They count values moved between workers (or
through the coordinator), not file reads: here every worker can read every
site's files, so the unpooled run's misplaced reads show only in
``bytes_read_by_site``. No emulated WAN here (see ``benchmarks/wan.py``);
wall times (median of ``--repeat`` runs after one warm-up) are for one
2-core machine. Writes
``benchmarks/results/federation-<scale>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import xarray as xr

SITES = ("ecmwf", "eumetsat")
HEIGHT_INDEX = 10
REPO = Path(__file__).resolve().parent.parent
PORT = 8786


def workload(root: Path, pooled: bool) -> Any:
    from catalog_pools import pool

    with pool("ecmwf" if pooled else None):
        pred = xr.open_zarr(root / "ecmwf" / "predictions.zarr")
    with pool("eumetsat" if pooled else None):
        obs = xr.open_zarr(root / "eumetsat" / "observations.zarr")
    return pred.air_pressure.mean("realization").isel(height=HEIGHT_INDEX) - obs.air_pressure


def run_federated(root: Path, workers: int, repeat: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    import catalog_pools

    kw = {"processes": True, "n_workers": workers, "threads_per_worker": 1, "dashboard_address": ":0"}
    clusters = {site: LocalCluster(**kw) for site in SITES}
    clients = {site: Client(c, set_as_default=False) for site, c in clusters.items()}
    try:
        workload(root, pooled=True).compute(scheduler=catalog_pools.federated(clients))  # warm-up
        walls, last = [], None
        for _ in range(repeat):
            fed = catalog_pools.federated(clients)
            start = time.perf_counter()
            last = workload(root, pooled=True).compute(scheduler=fed)
            walls.append(time.perf_counter() - start)
        t = fed.traffic
        return {
            "wall_s": statistics.median(walls),
            "cross_site_bytes": t.cross_site_bytes,
            "client_bytes": t.client_bytes,
            "by_site_pair": {f"{s}->{d}": n for (s, d), n in sorted(t.by_site_pair.items())},
            "result_nbytes": int(last.values.nbytes) if last is not None else 0,
        }
    finally:
        for site in SITES:
            clients[site].close()
            clusters[site].close()


def run_spanning(root: Path, workers: int, repeat: int, pooled: bool) -> dict[str, Any]:
    from distributed import Client

    from catalog_pools.cluster import LocalSitesCluster
    from catalog_pools.traffic import traffic

    with LocalSitesCluster(dict.fromkeys(SITES, workers)) as cluster, Client(cluster) as client:
        workload(root, pooled=pooled).compute()  # warm-up
        reports = []
        for _ in range(repeat):
            with traffic(client) as t:
                workload(root, pooled=pooled).compute()
            reports.append(t)
        walls = [r.wall_time for r in reports]
        return {
            "wall_s": statistics.median(walls),
            "cross_site_bytes": t.cross_site_bytes,
            "client_bytes": t.client_bytes,
            "by_site_pair": {f"{s}->{d}": n for (s, d), n in sorted(t.by_site_pair.items())},
            "bytes_read_by_site": t.bytes_read_by_site,
        }


def wan_child(spec: dict[str, Any]) -> int:
    """Coordinator inside the ``client`` namespace: one measured run per ``go`` line."""
    import catalog_pools

    root = Path(spec["data"])
    fed = catalog_pools.federated(spec["addresses"], timeout=60, direct=spec["direct"])
    workload(root, pooled=True).compute(scheduler=fed)  # warm-up
    print("ready", flush=True)
    for _ in sys.stdin:
        run = catalog_pools.federated(fed.clients, direct=spec["direct"])
        start = time.perf_counter()
        workload(root, pooled=True).compute(scheduler=run)
        t = run.traffic
        record = {
            "wall_s": time.perf_counter() - start,
            "cross_site_bytes": t.cross_site_bytes,
            "client_bytes": t.client_bytes,
            "by_site_pair": {f"{s}->{d}": n for (s, d), n in sorted(t.by_site_pair.items())},
        }
        print(json.dumps(record), flush=True)
    fed.close()
    return 0


def _start_site(topo: Any, site: str, workers: int, env: dict[str, str], log: Any) -> str:
    ip = topo.node[site].ip
    py = sys.executable
    common = {"env": env, "cwd": str(REPO), "stdout": log, "stderr": subprocess.STDOUT}
    topo.popen(
        site,
        [py, "-m", "distributed.cli.dask_scheduler", "--host", ip, "--port", str(PORT), "--no-dashboard"],
        **common,
    )
    time.sleep(2)
    for i in range(workers):
        argv = [py, "-m", "distributed.cli.dask_worker", f"tcp://{ip}:{PORT}", "--host", ip]
        argv += ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"{site}-{i}"]
        topo.popen(site, argv, **common)
    return f"tcp://{ip}:{PORT}"


def run_wan(
    root: Path, workers: int, repeat: int, rate_mbit: float, log_path: Path, direct: bool
) -> dict[str, Any]:
    """Federated, each site's cluster and the coordinator in their own namespaces."""
    sys.path.insert(0, str(REPO))
    from benchmarks import netns

    reason = netns.unavailable_reason()
    if reason:
        raise SystemExit(f"--wan is unavailable here: {reason}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    topo = netns.Topology([*SITES, "client"])
    with topo, log_path.open("ab") as log:
        topo.shape(rate_mbit)
        addresses = {site: _start_site(topo, site, workers, env, log) for site in SITES}
        spec = json.dumps({"addresses": addresses, "data": str(root.resolve()), "direct": direct})
        child = topo.popen(
            "client",
            [sys.executable, "-m", "benchmarks.federation", "--wan-child", spec],
            env=env,
            cwd=str(REPO),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"coordinator failed to start; see {log_path}")
        runs = []
        for _ in range(repeat):
            topo.reset_counters()
            child.stdin.write("go\n")
            child.stdin.flush()
            record = json.loads(child.stdout.readline())
            router = topo.read_counters()
            record["router_by_pair"] = {f"{s}->{d}": n for (s, d), n in sorted(router.items()) if s != "*"}
            runs.append(record)
        child.stdin.close()
        child.wait(timeout=60)
        best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
        return {
            **best,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "rate_mbit": rate_mbit,
            "root_guard_packets": topo.root_guard_packets(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["small", "demo", "seed"])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--workers", type=int, default=1, help="workers per site")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--wan", action="store_true", help="sites and coordinator in network namespaces")
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--direct", action="store_true", help="with --wan: federated(..., direct=True)")
    parser.add_argument("--wan-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.wan_child:
        return wan_child(json.loads(args.wan_child))

    from catalog_pools.datagen.synthetic import make_data

    make_data(args.data, scale=args.scale, progress=False)
    if args.wan:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"federation-wan{'-direct' if args.direct else ''}-{args.scale}"
        row = run_wan(
            args.data, args.workers, args.repeat, args.rate_mbit, args.out / f"{name}.log", args.direct
        )
        out = args.out / f"{name}.json"
        out.write_text(json.dumps({"scale": args.scale, "workers_per_site": args.workers, **row}, indent=2))
        print(json.dumps(row, indent=2))
        return 0
    rows = {
        "federated": run_federated(args.data, args.workers, args.repeat),
        "spanning": run_spanning(args.data, args.workers, args.repeat, pooled=True),
        "unpooled": run_spanning(args.data, args.workers, args.repeat, pooled=False),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"federation-{args.scale}.json"
    out.write_text(json.dumps({"scale": args.scale, "workers_per_site": args.workers, **rows}, indent=2))
    print(f"| run ({args.scale}, {args.workers} worker/site) | cross-site bytes | to client | wall (s) |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['cross_site_bytes']:,} | {r['client_bytes']:,} | {r['wall_s']:.2f} |")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
