"""Pooled vs unpooled on the same data and the same cluster, side by side.

Workload (the 2022 experiment)::

    predictions.mean("realization").isel(height=10) - observations

``predictions`` live at site ``ecmwf``, ``observations`` at site ``eumetsat``;
each site serves its data over HTTP from its own address and the workers of
both sites may read any URL. Two variants run on the same cluster, alternating:

* **pooled**: datasets opened from a generated catalog
  (``catalog_pools.open_catalog``); same URLs;
* **unpooled**: ``xr.open_dataset(url, engine="zarr", chunks={})`` outside any
  pool: what users do without pools.

Reported per variant: wall time (open + compute + result on the client) and
cross-site bytes; their ratios; and the minimum cross-site bytes the workload
needs (the smaller operand of the cross-site join plus the result to the client).
A second section times a single site with no WAN: pooled vs the same compute
with no pools at all (target: pooled at most 10% slower).

Modes:

``--mode plain``
    Everything on loopback in this process's namespace (``LocalSitesCluster``),
    data served by one HTTP server per site on ``127.0.0.1``. Cross-site bytes
    from dask's records (:mod:`catalog_pools.traffic`: worker-to-worker
    transfers between sites plus results to the client) plus HTTP body bytes
    read from a site by a worker of another site or by the client (tallied by
    the servers from the ``X-Reader-Site`` header the workers send).
``--mode wan`` (root)
    Each site, the client and the scheduler in its own network namespace behind
    a router namespace (:mod:`benchmarks.netns`), links shaped with ``tbf`` and
    delayed by :mod:`benchmarks.delay`. Cross-site bytes are IP bytes counted
    at the router between the namespaces of the sites and the client. The
    scheduler has its own namespace so that its control traffic (task
    messages, heartbeats: independent of where data lives) is counted apart
    from data; the client gathers results straight from the workers.

Run from the repository root::

    python -m benchmarks.wan --mode plain
    sudo python -m benchmarks.wan --mode wan            # 100 Mbit/s, 30 ms RTT
    sudo python -m benchmarks.wan --mode wan --rate-mbit 50 --rtt-ms 80

Results go to ``benchmarks/results/wan-<mode>-<scale>.{json,md,png}``. The whole
run is bounded by ``--timeout`` (default 570 s) and tears everything down on
exit, error, timeout or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SITES = ("ecmwf", "eumetsat")
#: Dataset name -> (site, path under the data root).
DATASETS = {
    "predictions": ("ecmwf", "ecmwf/predictions.zarr"),
    "observations": ("eumetsat", "eumetsat/observations.zarr"),
}
HEIGHT_INDEX = 10


@dataclass
class Config:
    """Benchmark settings (also passed to the client-side child as JSON)."""

    mode: str = "plain"
    scale: str = "demo"
    data_root: str = "/tmp/catalog-pools-bench/data"
    workers_per_site: int = 2
    repeats: int = 5
    overhead_repeats: int = 7
    rate_mbit: float = 100.0
    rtt_ms: float = 30.0
    delay: bool = True
    timeout: float = 570.0
    run_timeout: float = 120.0
    port: int = 8000
    out: str = str(RESULTS)
    workloads: list[str] = field(default_factory=lambda: ["join", "reduce"])
    overhead: bool = True
    # Filled in by the orchestrator for the client side.
    urls: dict[str, str] = field(default_factory=dict)
    stats_urls: dict[str, str] = field(default_factory=dict)
    catalog: str = ""
    scheduler_host: str = "127.0.0.1"
    worker_hosts: dict[str, str] = field(default_factory=dict)
    prefixes: dict[str, list[str]] = field(default_factory=dict)
    scheduler_prefix: list[str] = field(default_factory=list)
    router: dict[str, Any] | None = None
    deadline: float = 0.0  # time.time() by which the client side must be done


# ----------------------------------------------------------------------- helpers
def machine_info() -> dict[str, Any]:
    """Cores, memory, kernel and package versions of this machine."""
    import importlib.metadata as md

    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    versions = {}
    for pkg in (
        "catalog_pools",
        "dask",
        "distributed",
        "xarray",
        "zarr",
        "numpy",
        "fsspec",
        "aiohttp",
        "NetfilterQueue",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def minimum_cross_site_bytes(scale: str, kind: str = "join") -> dict[str, int]:
    """Least bytes a workload must move between sites and to the client.

    The cross-site join needs both operands in one place: the smaller one
    crosses once, then the result goes to the client.

    * ``join``: ``mean(predictions)[height=10]`` and ``observations`` are both
      ``nlat x nlon`` float32; the result too.
    * ``reduce``: ``mean(predictions)`` (33 heights) vs ``observations``: the
      observations cross; the result is 33 float32.
    """
    from catalog_pools.datagen.synthetic import HEIGHTS, grid

    g = grid(scale)
    obs = g.observation_nbytes
    if kind == "join":
        operand, result = min(4 * g.nlat * g.nlon, obs), 4 * g.nlat * g.nlon
    elif kind == "reduce":
        operand, result = min(4 * len(HEIGHTS) * g.nlat * g.nlon, obs), 4 * len(HEIGHTS)
    else:
        raise ValueError(f"unknown workload {kind!r}")
    return {"join_operand": operand, "result": result, "total": operand + result}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


@contextlib.contextmanager
def _without_pool_optimizers() -> Iterator[None]:
    """Run with dask's own array/delayed optimizers (catalog_pools' removed)."""
    import dask

    saved = {
        k: dask.config.config.pop(k)
        for k in ("array_optimize", "delayed_optimize")
        if k in dask.config.config
    }
    try:
        yield
    finally:
        dask.config.config.update(saved)


def _http_get_json(url: str, timeout: float = 10.0) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------ the workload
def open_pair(cfg: Config, pooled: bool) -> tuple[Any, Any]:
    """Open predictions and observations lazily, pooled or not, from the same URLs."""
    import xarray as xr

    if pooled:
        from catalog_pools import open_catalog

        cat = open_catalog(cfg.catalog)
        return cat.ecmwf.predictions.to_dask(), cat.eumetsat.observations.to_dask()
    pred = xr.open_dataset(cfg.urls["predictions"], engine="zarr", chunks={})
    obs = xr.open_dataset(cfg.urls["observations"], engine="zarr", chunks={})
    return pred, obs


WORKLOADS = {
    "join": 'predictions.mean("realization").isel(height=10) - observations',
    "reduce": '(predictions.mean("realization") - observations).mean(["latitude", "longitude"])',
}


def workload(pred: Any, obs: Any, kind: str = "join") -> Any:
    """Build workload ``kind`` (see :data:`WORKLOADS`) from the two datasets.

    ``join`` is the benchmark's workload; ``reduce`` (every height, a small
    result) shows how the gap grows when the bulk data is larger than the result.
    """
    if kind == "join":
        return pred.air_pressure.mean("realization").isel(height=HEIGHT_INDEX) - obs.air_pressure
    if kind == "reduce":
        anomaly = pred.air_pressure.mean("realization") - obs.air_pressure.drop_vars("height")
        return anomaly.mean(["latitude", "longitude"])
    raise ValueError(f"unknown workload {kind!r}")


def task_profile(tasks: list[dict[str, Any]], submit: float | None, done: float | None) -> dict[str, Any]:
    """Where a run's compute time went, from dask's task stream.

    ``to_first_task_s``: submit -> first task starts (graph to the scheduler,
    optimization there, dispatch); ``after_last_task_s``: last task ends ->
    result on the client; ``task_s``: summed task run time by task prefix
    (a load task includes its HTTP read and decompression); ``transfer_s``:
    summed worker-to-worker transfer time (dask's own records, overlapping).
    """
    from dask.utils import key_split

    starts, stops = [], []
    by_prefix: dict[str, float] = {}
    transfer = 0.0
    for rec in tasks:
        for ss in rec.get("startstops", ()):
            d = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                prefix = key_split(rec["key"])
                by_prefix[prefix] = by_prefix.get(prefix, 0.0) + d
                starts.append(ss["start"])
                stops.append(ss["stop"])
            elif ss["action"] == "transfer":
                transfer += d
    out: dict[str, Any] = {
        "tasks": len(tasks),
        "task_s": by_prefix,
        "task_s_total": sum(by_prefix.values()),
        "transfer_s": transfer,
    }
    if starts and submit is not None and done is not None:
        out["to_first_task_s"] = min(starts) - submit
        out["tasks_span_s"] = max(stops) - min(starts)
        out["after_last_task_s"] = done - max(stops)
    return out


class Meter:
    """Cross-site bytes of one run: router counters (wan) and dask/HTTP records."""

    def __init__(self, cfg: Config, client: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.router = None
        if cfg.router:
            from benchmarks.netns import RouterCounters

            self.router = RouterCounters(cfg.router["router_ns"], cfg.router["nets"])
        self.data_nodes = set(SITES) | {"client"}

    def reset_http(self) -> None:
        for url in self.cfg.stats_urls.values():
            _http_get_json(url + "?reset=1")

    def http_cross(self) -> dict[str, int]:
        """HTTP body bytes per ``owner>reader`` where reader is not the owner site."""
        out: dict[str, int] = {}
        for site, url in self.cfg.stats_urls.items():
            for reader, n in _http_get_json(url).items():
                if reader != site and n:
                    out[f"{site}>{reader}"] = n
        return out

    @contextlib.contextmanager
    def measure(self, rec: dict[str, Any]) -> Iterator[None]:
        """Fill ``rec`` with bytes moved while the block runs."""
        from catalog_pools.traffic import traffic

        self.reset_http()
        with traffic(self.client, count_reads=False, settle=5.0) as t:
            if self.router:
                self.router.reset()
            yield
            if self.router:
                pairs = self.router.read()
        http = self.http_cross()
        rec["profile"] = task_profile(t.tasks, rec.get("_submit_time"), rec.get("_done_time"))
        dask_pairs = {f"{s}>{d}": n for (s, d), n in t.by_site_pair.items() if s != d}
        rec["dask_by_pair"] = dask_pairs
        rec["http_cross_by_pair"] = http
        rec["dask_view_bytes"] = sum(dask_pairs.values()) + sum(http.values())
        if self.router:
            named = {f"{a}>{b}": n for (a, b), n in pairs.items() if a != "*"}
            rec["router_by_pair"] = named
            rec["cross_site_bytes"] = sum(
                n for (a, b), n in pairs.items() if a in self.data_nodes and b in self.data_nodes
            )
            rec["control_bytes"] = sum(n for (a, b), n in pairs.items() if "sched" in (a, b))
            rec["bytes_source"] = "router (IP bytes)"
        else:
            rec["cross_site_bytes"] = rec["dask_view_bytes"]
            rec["bytes_source"] = "dask records + HTTP tallies"


def run_once(cfg: Config, client: Any, meter: Meter, pooled: bool, kind: str = "join") -> dict[str, Any]:
    """Open, compute and gather once; return timing, bytes and the result."""
    rec: dict[str, Any] = {"variant": "pooled" if pooled else "unpooled", "workload": kind}
    with meter.measure(rec):
        t0 = time.perf_counter()
        pred, obs = open_pair(cfg, pooled)
        expr = workload(pred, obs, kind)
        t1 = time.perf_counter()
        rec["_submit_time"] = time.time()
        fut = client.compute(expr)
        result = fut.result(timeout=cfg.run_timeout)
        rec["_done_time"] = time.time()
        t2 = time.perf_counter()
    del fut
    rec.pop("_submit_time"), rec.pop("_done_time")
    rec["wall_s"] = t2 - t0
    rec["open_s"] = t1 - t0
    rec["compute_s"] = t2 - t1
    rec["_result"] = result.values
    return rec


def _wait_quiet(seconds: float = 0.5) -> None:
    time.sleep(seconds)


def compare(cfg: Config) -> dict[str, Any]:
    """Pooled vs unpooled on one two-site cluster (runs where the client runs)."""
    import numpy as np
    from distributed import Client

    from catalog_pools.cluster import LocalSitesCluster

    # Each worker tags its HTTP requests with its site (benchmarks.readerhdr).
    prefixes = {s: [*cfg.prefixes.get(s, []), "env", f"CP_READER_SITE={s}"] for s in SITES}
    kw: dict[str, Any] = {
        "host": cfg.scheduler_host,
        "prefixes": prefixes,
        "scheduler_prefix": cfg.scheduler_prefix or None,
        "worker_hosts": cfg.worker_hosts or None,
        "worker_extra_args": ["--preload", "benchmarks.readerhdr"],
        "env": {"PYTHONPATH": str(REPO)},
    }
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with (
        LocalSitesCluster(
            {s: cfg.workers_per_site for s in SITES},
            threads_per_worker=1,
            memory_limit="3GiB",
            startup_timeout=90,
            **kw,
        ) as cluster,
        Client(cluster, direct_to_workers=True) as client,
    ):
        startup = time.perf_counter() - t_start
        logger.info("cluster up in %.1f s: %s", startup, cluster)
        meter = Meter(cfg, client)
        for kind in cfg.workloads:
            # Warm-up (not reported): imports, connection pools, plugin install.
            for pooled in (True, False):
                run_once(cfg, client, meter, pooled, kind)
                _wait_quiet()
            for rep in range(cfg.repeats):
                order = (True, False) if rep % 2 == 0 else (False, True)
                for pooled in order:
                    if cfg.deadline and time.time() > cfg.deadline - 90:
                        logger.warning("skipping a %s run: global deadline near", kind)
                        continue
                    rec = run_once(cfg, client, meter, pooled, kind)
                    rec["repeat"] = rep
                    runs.append(rec)
                    logger.info(
                        "%s %s rep %d: %.2f s, cross-site %s (dask view %s)",
                        kind,
                        rec["variant"],
                        rep,
                        rec["wall_s"],
                        _fmt_bytes(rec["cross_site_bytes"]),
                        _fmt_bytes(rec["dask_view_bytes"]),
                    )
                    _wait_quiet()
    same = True
    for kind in cfg.workloads:
        rs = [r for r in runs if r["workload"] == kind]
        ref = next((r["_result"] for r in rs if r["variant"] == "unpooled"), None)
        same = same and all(np.allclose(r["_result"], ref, equal_nan=True) for r in rs)
    for r in runs:
        r.pop("_result")
    how = "catalog_pools.open_catalog on a generated catalog of the same URLs"
    return {
        "cluster_startup_s": startup,
        "runs": runs,
        "results_agree": bool(same),
        "pooled_open": how,
        "unpooled_open": 'xr.open_dataset(url, engine="zarr", chunks={}), no pool',
    }


def overhead(cfg: Config) -> dict[str, Any]:
    """One site, loopback only (no WAN): pooled vs the same compute with no pools.

    Local zarr paths; a fresh one-site cluster. "No pools": no pins and dask's
    own optimizers (catalog_pools' client-side optimizer removed); the scheduler
    plugin stays installed but sees no pinned task.
    """
    import xarray as xr
    from distributed import Client

    from catalog_pools import pool
    from catalog_pools.cluster import LocalSitesCluster

    site = "ecmwf"
    paths = {k: str(Path(cfg.data_root) / rel) for k, (_, rel) in DATASETS.items()}

    def job(kind: str, pooled: bool, client: Any) -> float:
        t0 = time.perf_counter()
        ctx = pool(site) if pooled else contextlib.nullcontext()
        with ctx:
            pred = xr.open_dataset(paths["predictions"], engine="zarr", chunks={})
            obs = xr.open_dataset(paths["observations"], engine="zarr", chunks={})
        if kind == "join":
            expr = workload(pred, obs)
        else:  # "full": every height
            expr = pred.air_pressure.mean("realization") - obs.air_pressure.drop_vars("height")
        if pooled:
            client.compute(expr).result(timeout=cfg.run_timeout)
        else:
            with _without_pool_optimizers():
                client.compute(expr).result(timeout=cfg.run_timeout)
        return time.perf_counter() - t0

    times: dict[str, dict[str, list[float]]] = {k: {"pooled": [], "no_pools": []} for k in ("join", "full")}
    with (
        LocalSitesCluster(
            {site: 2 * cfg.workers_per_site}, threads_per_worker=1, memory_limit="3GiB", host="127.0.0.1"
        ) as cluster,
        Client(cluster) as client,
    ):
        for kind in ("join", "full"):
            job(kind, True, client)
            job(kind, False, client)
            for rep in range(cfg.overhead_repeats):
                if cfg.deadline and time.time() > cfg.deadline - 30:
                    break
                order = (True, False) if rep % 2 == 0 else (False, True)
                for pooled in order:
                    times[kind]["pooled" if pooled else "no_pools"].append(job(kind, pooled, client))
    out: dict[str, Any] = {"workers": 2 * cfg.workers_per_site, "times": times}
    for kind, t in times.items():
        if t["pooled"] and t["no_pools"]:
            p, n = statistics.median(t["pooled"]), statistics.median(t["no_pools"])
            out[kind] = {"pooled_s": p, "no_pools_s": n, "slowdown": p / n - 1}
    return out


def client_side(cfg: Config) -> dict[str, Any]:
    """Everything the client does: comparison, then the no-WAN overhead section."""
    res = {"compare": compare(cfg)}
    if not cfg.overhead:
        res["overhead"] = {"skipped": "--no-overhead"}
    elif cfg.deadline and time.time() > cfg.deadline - 45:
        res["overhead"] = {"skipped": "global deadline near"}
    else:
        res["overhead"] = overhead(cfg)
    return res


# ----------------------------------------------------------------- orchestration
def _start_http(popen: Any, site: str, cfg: Config, bind: str, port: int) -> subprocess.Popen[bytes]:
    """Start the site's HTTP server (via ``popen``) and wait for ``ready``."""
    proc = popen(
        [
            sys.executable,
            "-m",
            "benchmarks.httpserve",
            "--dir",
            str(Path(cfg.data_root) / site),
            "--bind",
            bind,
            "--port",
            str(port),
            "--max-seconds",
            str(int(cfg.timeout) + 30),
        ]
    )
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("ready"):
        raise RuntimeError(f"HTTP server for {site} did not start: {line!r}")
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_plain(cfg: Config) -> dict[str, Any]:
    """Plain mode: HTTP servers on loopback, client side in this process."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for site in SITES:
            port = _free_port()
            procs.append(
                _start_http(
                    lambda argv: subprocess.Popen(
                        argv, stdout=subprocess.PIPE, cwd=str(REPO), start_new_session=True
                    ),
                    site,
                    cfg,
                    "127.0.0.1",
                    port,
                )
            )
            cfg.stats_urls[site] = f"http://127.0.0.1:{port}/__stats__"
            for name, (s, rel) in DATASETS.items():
                if s == site:
                    cfg.urls[name] = f"http://127.0.0.1:{port}/{Path(rel).relative_to(site)}"
        cfg.catalog = write_catalog(cfg)
        return client_side(cfg)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def run_wan(cfg: Config) -> dict[str, Any]:
    """WAN mode: namespaces, shaping, delay, HTTP per site, client side in a child."""
    from benchmarks import netns

    reason = netns.unavailable_reason()
    if reason:
        raise SystemExit(f"--mode wan is unavailable here: {reason}")
    nodes = [*SITES, "client", "sched"]
    topo = netns.Topology(nodes)
    with topo:
        topo.shape(cfg.rate_mbit)
        remaining = cfg.deadline - time.time()
        if cfg.delay and cfg.rtt_ms > 0:
            topo.start_delay(cfg.rtt_ms / 2, max_seconds=remaining + 30)
        for site in SITES:
            ip = topo.node[site].ip
            _start_http(
                lambda argv, s=site: topo.popen(s, argv, stdout=subprocess.PIPE, cwd=str(REPO)),
                site,
                cfg,
                ip,
                cfg.port,
            )
            cfg.stats_urls[site] = f"http://{ip}:{cfg.port}/__stats__"
            for name, (s, rel) in DATASETS.items():
                if s == site:
                    cfg.urls[name] = f"http://{ip}:{cfg.port}/{Path(rel).relative_to(site)}"
        cfg.catalog = write_catalog(cfg)
        place_on_topology(cfg, topo)
        return run_client_side(
            topo,
            cfg.deadline,
            asdict(cfg),
            lambda config, out: ["benchmarks.wan", "--child", str(config), "--child-out", str(out)],
        )


def place_on_topology(cfg: Config, topo: Any) -> None:
    """Point ``cfg``'s scheduler, site workers and byte counters at the namespaces of ``topo``."""
    cfg.scheduler_host = topo.node["sched"].ip
    cfg.scheduler_prefix = topo.node["sched"].prefix
    cfg.prefixes = {s: topo.node[s].prefix for s in SITES}
    cfg.worker_hosts = {s: topo.node[s].ip for s in SITES}
    cfg.router = {"router_ns": topo.counters.router_ns, "nets": dict(topo.counters.nets)}


def run_client_side(
    topo: Any, deadline: float, spec: dict[str, Any], module_args: Callable[[Path, Path], list[str]]
) -> dict[str, Any]:
    """Run ``python -m <module_args(config, out)>`` in the client namespace, bounded by ``deadline``.

    The child reads ``spec`` (JSON) from ``config`` and writes its JSON result to
    ``out``; returned with the root namespace's guard count and the topology.
    """
    with tempfile.TemporaryDirectory(prefix="cp-wan-") as tmp:
        cfg_path, out_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg_path.write_text(json.dumps(spec))
        child = topo.popen("client", [sys.executable, "-m", *module_args(cfg_path, out_path)], cwd=str(REPO))
        try:
            rc = child.wait(timeout=max(10.0, deadline - time.time() + 10))
        except subprocess.TimeoutExpired:
            raise TimeoutError("client side did not finish before the deadline") from None
        if rc != 0:
            raise RuntimeError(f"client side failed with exit code {rc}")
        res: dict[str, Any] = json.loads(out_path.read_text())
    res["root_guard_packets"] = topo.root_guard_packets()
    res["topology"] = topo.describe()
    return res


def write_catalog(cfg: Config) -> str:
    """Write a multicloud-style catalog with the HTTP URLs.

    Same layout as ``catalogs/multicloud.yaml``: a top catalog with one
    ``site_catalog`` entry per site, each site's file pinning its entries with
    ``metadata.site``.
    """
    d = Path(tempfile.mkdtemp(prefix="cp-bench-cat-"))
    top = ["name: bench", "metadata: {version: 1}", "sources:"]
    for site in SITES:
        lines = [f"name: {site}", f"metadata: {{version: 1, site: {site}}}", "sources:"]
        for name, (s, _) in DATASETS.items():
            if s == site:
                lines += [
                    f"  {name}:",
                    "    driver: site_zarr",
                    "    args:",
                    f"      urlpath: '{cfg.urls[name]}'",
                    "      chunks: {}",
                ]
        (d / f"{site}.yaml").write_text("\n".join(lines) + "\n")
        top += [
            f"  {site}:",
            "    driver: site_catalog",
            "    args:",
            f"      path: '{{{{ CATALOG_DIR }}}}/{site}.yaml'",
        ]
    (d / "catalog.yaml").write_text("\n".join(top) + "\n")
    return str(d / "catalog.yaml")


# ----------------------------------------------------------------------- report
PROFILE_KEYS = ("to_first_task_s", "tasks_span_s", "after_last_task_s", "task_s_total", "transfer_s")


def _summarize_runs(rs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rs)}
    for key in ("wall_s", "compute_s", "open_s", "cross_site_bytes", "dask_view_bytes", "control_bytes"):
        vals = [r[key] for r in rs if key in r]
        if vals:
            out[f"{key}_median"] = statistics.median(vals)
            out[f"{key}_min"] = min(vals)
            out[f"{key}_max"] = max(vals)
    for key in PROFILE_KEYS:
        vals = [r["profile"][key] for r in rs if key in r.get("profile", {})]
        if vals:
            out[f"{key}_median"] = statistics.median(vals)
    return out


def summarize(cfg: Config, res: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and target checks per workload (targets on ``join``)."""
    runs = res["compare"]["runs"]
    out: dict[str, Any] = {"workloads": {}}
    for kind in cfg.workloads:
        w: dict[str, Any] = {"expression": WORKLOADS[kind]}
        for v in ("pooled", "unpooled"):
            rs = [r for r in runs if r["variant"] == v and r["workload"] == kind]
            if not rs:
                break
            w[v] = _summarize_runs(rs)
        else:
            p, u = w["pooled"], w["unpooled"]
            w["minimum"] = minimum_cross_site_bytes(cfg.scale, kind)
            w["bytes_ratio"] = u["cross_site_bytes_median"] / max(1, p["cross_site_bytes_median"])
            w["speedup"] = u["wall_s_median"] / p["wall_s_median"]
            w["compute_speedup"] = u["compute_s_median"] / p["compute_s_median"]
            w["pooled_vs_minimum"] = p["cross_site_bytes_median"] / w["minimum"]["total"]
            out["workloads"][kind] = w
    targets: dict[str, bool] = {}
    j = out["workloads"].get("join")
    if j:
        targets["pooled bytes within 1.5x of minimum"] = j["pooled_vs_minimum"] <= 1.5
        targets["unpooled/pooled cross-site bytes >= 20x"] = j["bytes_ratio"] >= 20
        targets["unpooled/pooled wall time >= 5x"] = j["speedup"] >= 5
    ov = res.get("overhead", {})
    for kind in ("join", "full"):
        if kind in ov:
            targets[f"single-site pooled <= 10% slower ({kind})"] = ov[kind]["slowdown"] <= 0.10
    out["targets"] = targets
    return out


def write_report(
    cfg: Config, res: dict[str, Any], summary: dict[str, Any], elapsed: float
) -> dict[str, Path]:
    """Write JSON, markdown table and PNG chart to ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"wan-{cfg.mode}-{cfg.scale}"
    machine = machine_info()
    public_cfg = {
        k: v
        for k, v in asdict(cfg).items()
        if k
        in (
            "mode",
            "scale",
            "workers_per_site",
            "repeats",
            "overhead_repeats",
            "rate_mbit",
            "rtt_ms",
            "delay",
            "timeout",
            "workloads",
        )
    }
    doc = {"config": public_cfg, "machine": machine, "elapsed_s": elapsed, "summary": summary, **res}
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(doc, indent=2, default=str) + "\n")

    lines = [f"# WAN benchmark: mode `{cfg.mode}`, scale `{cfg.scale}`", ""]
    if cfg.mode == "wan":
        delay = f"{cfg.rtt_ms:g} ms RTT (NFQUEUE in the router)" if cfg.delay else "none"
        lines += [
            f"Links: tbf {cfg.rate_mbit:g} Mbit/s on both ends of every link; delay "
            f"{delay}. Cross-site bytes: IP bytes counted at the router between the "
            "namespaces of the sites and the client (scheduler control traffic apart).",
            "",
        ]
    else:
        lines += [
            "Loopback. Cross-site bytes: dask's records (transfers between sites, "
            "results to the client) plus HTTP body bytes read from a site by another "
            "site's worker or by the client.",
            "",
        ]
    lines += [
        f"Pooled: {res['compare']['pooled_open']}. Unpooled: "
        f"`{res['compare']['unpooled_open']}`. Same URLs, same cluster.",
        "",
    ]
    lines += [
        f"{cfg.workers_per_site} single-threaded workers per site. Wall time = open "
        "(metadata) + compute + result on the client; medians (min–max) of "
        f"{cfg.repeats} alternating runs per variant after one warm-up each. "
        f"Total benchmark time {elapsed:.0f} s.",
        "",
    ]
    for kind, w in summary["workloads"].items():
        p, u, m = w["pooled"], w["unpooled"], w["minimum"]
        lines += [
            f"## `{kind}`: `{w['expression']}`",
            "",
            "| variant | wall time (s) | compute only (s) | cross-site bytes | vs minimum |",
            "|---|---|---|---|---|",
        ]
        for name, s in (("pooled", p), ("unpooled", u)):
            lines.append(
                f"| {name} | {s['wall_s_median']:.2f} ({s['wall_s_min']:.2f}–"
                f"{s['wall_s_max']:.2f}) | {s['compute_s_median']:.2f} | "
                f"{_fmt_bytes(s['cross_site_bytes_median'])} ({s['cross_site_bytes_median']:.0f} B)"
                f" | {s['cross_site_bytes_median'] / m['total']:.2f}x |"
            )
        lines += [
            f"| minimum | | | {_fmt_bytes(m['total'])} ({m['total']} B) | 1.00x |",
            "",
            f"Unpooled / pooled: **{w['bytes_ratio']:.1f}x** the cross-site bytes, "
            f"**{w['speedup']:.2f}x** the wall time ({w['compute_speedup']:.2f}x compute only).",
            "",
        ]
        if all("tasks_span_s_median" in x for x in (p, u)):
            lines += [
                "Where the time goes (medians, seconds): open | submit → first task | "
                "first → last task | last task → result on client | summed task time | "
                "summed worker-to-worker transfer time:",
                "",
            ]
            for name, x in (("pooled", p), ("unpooled", u)):
                lines.append(
                    f"- {name}: {x['open_s_median']:.2f} | {x['to_first_task_s_median']:.2f} | "
                    f"{x['tasks_span_s_median']:.2f} | {x['after_last_task_s_median']:.2f} | "
                    f"{x['task_s_total_median']:.2f} | {x['transfer_s_median']:.2f}"
                )
            lines.append("")
        if "control_bytes_median" in p:
            lines += [
                f"Scheduler control traffic (not counted above): pooled "
                f"{_fmt_bytes(p['control_bytes_median'])}, unpooled "
                f"{_fmt_bytes(u['control_bytes_median'])}. Dask/HTTP view of the "
                f"cross-site bytes (payload only): pooled "
                f"{_fmt_bytes(p['dask_view_bytes_median'])}, unpooled "
                f"{_fmt_bytes(u['dask_view_bytes_median'])}.",
                "",
            ]
    ov = res.get("overhead", {})
    if "join" in ov or "full" in ov:
        lines += [
            "## One site, no WAN: pooled vs no pools at all",
            "",
            f"Loopback, local zarr files, one site of {ov['workers']} workers; medians of "
            f"{cfg.overhead_repeats} alternating runs.",
            "",
            "| workload | pooled (s) | no pools (s) | pooled slower by |",
            "|---|---|---|---|",
        ]
        for kind in ("join", "full"):
            if kind in ov:
                o = ov[kind]
                lines.append(
                    f"| {kind} | {o['pooled_s']:.3f} | {o['no_pools_s']:.3f} | {100 * o['slowdown']:+.1f}% |"
                )
        lines += ["", '(`full`: `predictions.mean("realization") - observations`, every height.)', ""]
    lines += ["## Targets", ""]
    if cfg.mode != "wan":
        lines += [
            "The targets are set for the emulated WAN (`--mode wan`); on loopback there "
            "is no WAN to pay for, so the wall-time ratio is shown for reference only.",
            "",
        ]
    lines += [f"- {'met' if ok else 'MISSED'}: {name}" for name, ok in summary["targets"].items()]
    lines += ["", f"Results agree between variants: {res['compare']['results_agree']}."]
    if "root_guard_packets" in res:
        lines += [f"Packets the root namespace tried to send to site addresses: {res['root_guard_packets']}."]
    lines += [
        "",
        "Machine: " + f"{machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_bytes'] / 2**30:.1f} GiB, Linux {machine['kernel']}, "
        f"Python {machine['python']}; " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        "",
    ]
    paths["md"].write_text("\n".join(lines))
    _plot(paths["png"], cfg, res, summary)
    return paths


def _plot(path: Path, cfg: Config, res: dict[str, Any], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ws = summary["workloads"]
    kinds = list(ws)
    ov = res.get("overhead", {})
    okinds = [k for k in ("join", "full") if k in ov]
    ncols = 2 + (1 if okinds else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 4.2))
    colors = {"pooled": "#1b9e77", "unpooled": "#d95f02", "no pools": "#7570b3"}
    x = np.arange(len(kinds))
    ax = axes[0]
    for i, v in enumerate(("pooled", "unpooled")):
        med = [ws[k][v]["wall_s_median"] for k in kinds]
        err = [
            [m - ws[k][v]["wall_s_min"] for m, k in zip(med, kinds, strict=False)],
            [ws[k][v]["wall_s_max"] - m for m, k in zip(med, kinds, strict=False)],
        ]
        ax.bar(x + (i - 0.5) * 0.4, med, 0.4, yerr=err, capsize=3, label=v, color=colors[v])
    ax.set_xticks(x, [f"{k}\n{ws[k]['speedup']:.2f}x" for k in kinds])
    ax.set_ylabel("wall time (s)")
    ax.set_title("wall time (unpooled/pooled below)")
    ax.legend()
    ax = axes[1]
    for i, v in enumerate(("pooled", "unpooled")):
        ax.bar(
            x + (i - 0.5) * 0.4,
            [ws[k][v]["cross_site_bytes_median"] for k in kinds],
            0.4,
            label=v,
            color=colors[v],
        )
    for j, k in enumerate(kinds):
        ax.hlines(
            ws[k]["minimum"]["total"],
            j - 0.4,
            j + 0.4,
            colors="k",
            linestyles="--",
            label="minimum" if j == 0 else None,
        )
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{k}\n{ws[k]['bytes_ratio']:.1f}x" for k in kinds])
    ax.set_ylabel("cross-site bytes (log)")
    ax.set_title("cross-site bytes (unpooled/pooled below)")
    ax.legend()
    if okinds:
        ax = axes[2]
        xo = np.arange(len(okinds))
        ax.bar(xo - 0.2, [ov[k]["pooled_s"] for k in okinds], 0.4, label="pooled", color=colors["pooled"])
        ax.bar(
            xo + 0.2, [ov[k]["no_pools_s"] for k in okinds], 0.4, label="no pools", color=colors["no pools"]
        )
        ax.set_xticks(xo, [f"{k}\n{100 * ov[k]['slowdown']:+.0f}%" for k in okinds])
        ax.set_ylabel("wall time (s)")
        ax.set_title("one site, no WAN")
        ax.legend()
    where = (
        f"emulated WAN {cfg.rate_mbit:g} Mbit/s, {cfg.rtt_ms:g} ms RTT" if cfg.mode == "wan" else "loopback"
    )
    fig.suptitle(f"catalog_pools: pooled vs unpooled, {cfg.scale} scale, {where}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------- main
def _on_alarm(signum: int, frame: object) -> None:
    raise TimeoutError("global benchmark timeout reached")


def _child_main(cfg_path: str, out_path: str) -> int:
    cfg = Config(**json.loads(Path(cfg_path).read_text()))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(5, int(cfg.deadline - time.time())))
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(143)))
    res = client_side(cfg)
    Path(out_path).write_text(json.dumps(res, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description="catalog_pools: pooled vs unpooled benchmark")
    ap.add_argument("--mode", choices=("plain", "wan"), default="plain")
    ap.add_argument("--scale", choices=("small", "demo", "seed"), default="demo")
    ap.add_argument(
        "--data-root", default=None, help="data directory (default /tmp/catalog-pools-bench/data-<scale>)"
    )
    ap.add_argument("--workers-per-site", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--overhead-repeats", type=int, default=7)
    ap.add_argument("--rate-mbit", type=float, default=100.0)
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--no-delay", action="store_true", help="no NFQUEUE delay (tbf only)")
    ap.add_argument("--timeout", type=float, default=570.0, help="global bound, seconds")
    ap.add_argument(
        "--workloads", default="join,reduce", help="comma-separated: join (the benchmark), reduce"
    )
    ap.add_argument("--no-overhead", action="store_true", help="skip the one-site pooled vs no-pools section")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("distributed", "catalog_pools.cluster"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.child:
        return _child_main(args.child, args.child_out)

    start = time.time()
    cfg = Config(
        mode=args.mode,
        scale=args.scale,
        data_root=args.data_root or f"/tmp/catalog-pools-bench/data-{args.scale}",
        workers_per_site=args.workers_per_site,
        repeats=args.repeats,
        overhead_repeats=args.overhead_repeats,
        rate_mbit=args.rate_mbit,
        rtt_ms=args.rtt_ms,
        delay=not args.no_delay,
        timeout=args.timeout,
        out=args.out,
        deadline=start + args.timeout,
        workloads=[w for w in args.workloads.split(",") if w],
        overhead=not args.no_overhead,
    )
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(args.timeout) + 20)  # backstop; the deadline below is the bound
    if cfg.mode == "wan":
        from benchmarks.netns import install_signal_handlers

        install_signal_handlers()
    else:
        signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(143)))
    try:
        from catalog_pools.datagen.synthetic import make_data

        t0 = time.time()
        make_data(cfg.data_root, scale=cfg.scale, progress=False)
        logger.info("data ready in %.0f s under %s", time.time() - t0, cfg.data_root)
        res = run_wan(cfg) if cfg.mode == "wan" else run_plain(cfg)
        summary = summarize(cfg, res)
        paths = write_report(cfg, res, summary, time.time() - start)
    finally:
        signal.alarm(0)
    print(paths["md"].read_text())
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
