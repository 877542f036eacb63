"""Replicas on the emulated WAN: ``python -m benchmarks.replicas --wan`` (root).

Topology, shaping, delay, HTTP servers and router byte counters are those of
:mod:`benchmarks.wan` (``--mode wan``); this module only adds the copy of the
predictions at EUMETSAT, the replicated catalog and the three rows of
:mod:`benchmarks.replicas`:

``single copy``
    the seed workload ``predictions.mean("realization").isel(height=10) -
    observations`` on a catalog with the predictions at ECMWF only;
``replicated``
    the same on a catalog whose predictions are also at EUMETSAT
    (``metadata.replicas.eumetsat.urlpath`` = EUMETSAT's HTTP server);
``replicated, slow mean, no kill`` / ``... ECMWF killed``
    ``predictions.map_blocks(slow).mean("realization")`` (at ECMWF, as ties go
    to the primary); in the second, every ECMWF worker is SIGKILLed
    ``--kill-after`` seconds after the first task ends at ECMWF, and the rest
    runs at EUMETSAT.

Every row's values are checked against plain xarray on the local files.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import wan
from benchmarks.replicas import _slow

PRED_REL = "predictions.zarr"


def write_replicated_catalog(cfg: wan.Config, mirror_url: str) -> str:
    """A flat catalog: predictions at ECMWF replicated at EUMETSAT, observations at EUMETSAT."""
    d = Path(tempfile.mkdtemp(prefix="cp-bench-repl-cat-"))
    text = f"""name: replicas-wan
metadata: {{version: 1}}
sources:
  predictions:
    driver: site_zarr
    args: {{urlpath: '{cfg.urls["predictions"]}', chunks: {{}}}}
    metadata:
      site: ecmwf
      replicas:
        eumetsat: {{urlpath: '{mirror_url}'}}
  observations:
    driver: site_zarr
    args: {{urlpath: '{cfg.urls["observations"]}', chunks: {{}}}}
    metadata: {{site: eumetsat}}
"""
    (d / "catalog.yaml").write_text(text)
    return str(d / "catalog.yaml")


def _open(catalog: str, replicated: bool) -> tuple[Any, Any]:
    from catalog_pools import open_catalog

    cat = open_catalog(catalog)
    if replicated:
        return cat.predictions.to_dask(), cat.observations.to_dask()
    return cat.ecmwf.predictions.to_dask(), cat.eumetsat.observations.to_dask()


def _tasks_by_site(stream: list[dict[str, Any]], sites: dict[str, str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in stream:
        site = sites.get(rec.get("worker", "")) or "?"
        out[site] = out.get(site, 0) + 1
    return out


def _kill_when_ecmwf_ran(client: Any, cluster: Any, after: float, t0: float, done: threading.Event) -> None:
    """Kill every ECMWF worker ``after`` s after the first ECMWF task ended (or give up at ``done``)."""
    from catalog_pools.engine.sites import worker_sites

    ecmwf = {a for a, s in worker_sites(client).items() if s == "ecmwf"}
    while not done.is_set():
        if any(r.get("worker") in ecmwf for r in client.get_task_stream(start=t0)):
            time.sleep(after)
            for name in [n for n in cluster.workers if str(n).startswith("ecmwf-")]:
                cluster.kill_worker(name)
            return
        time.sleep(0.05)


def run_row(
    cfg: wan.Config, client: Any, meter: wan.Meter, make: Any, kill: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Build with ``make()``, compute once under the meter; return (values, record)."""
    from distributed import get_task_stream

    from catalog_pools.engine.sites import worker_sites

    rec: dict[str, Any] = {}
    sites = dict(worker_sites(client))
    done = threading.Event()
    with meter.measure(rec), get_task_stream(client) as ts:
        t0 = time.perf_counter()
        expr = make()
        rec["_submit_time"] = time.time()
        thread = None
        if kill is not None:
            thread = threading.Thread(target=kill, args=(rec["_submit_time"], done), daemon=True)
            thread.start()
        result = client.compute(expr).result(timeout=cfg.run_timeout)
        done.set()
        rec["_done_time"] = time.time()
        rec["wall_s"] = time.perf_counter() - t0
        if thread is not None:
            thread.join(timeout=10)
    rec.pop("_submit_time"), rec.pop("_done_time")
    rec["tasks_by_site"] = _tasks_by_site(ts.data, sites)
    return result.values, rec


def client_side(cfg: wan.Config, catalogs: dict[str, str], repeat: int, kill_after: float) -> dict[str, Any]:
    """The three rows on one cluster (runs in the client namespace)."""
    import numpy as np
    import xarray as xr
    from distributed import Client

    from catalog_pools.cluster import LocalSitesCluster
    from catalog_pools.engine.sites import worker_sites

    root = Path(cfg.data_root)
    pred = xr.open_zarr(root / "ecmwf" / PRED_REL)
    obs = xr.open_zarr(root / "eumetsat" / "observations.zarr")
    want_join = wan.workload(pred, obs).compute(scheduler="synchronous").values
    want_mean = pred.air_pressure.mean("realization").compute(scheduler="synchronous").values
    prefixes = {s: [*cfg.prefixes[s], "env", f"CP_READER_SITE={s}"] for s in wan.SITES}
    rows: dict[str, Any] = {}
    with (
        LocalSitesCluster(
            {s: cfg.workers_per_site for s in wan.SITES},
            threads_per_worker=1,
            memory_limit="3GiB",
            startup_timeout=90,
            respawn=False,  # a killed worker must stay dead
            host=cfg.scheduler_host,
            prefixes=prefixes,
            scheduler_prefix=cfg.scheduler_prefix,
            worker_hosts=cfg.worker_hosts,
            worker_extra_args=["--preload", "benchmarks.readerhdr"],
            env={"PYTHONPATH": str(wan.REPO)},
        ) as cluster,
        Client(cluster, direct_to_workers=True) as client,
    ):
        meter = wan.Meter(cfg, client)
        variants = {"single copy": False, "replicated": True}
        for name, replicated in variants.items():  # warm-up, not reported
            run_row(cfg, client, meter, lambda r=replicated, n=name: wan.workload(*_open(catalogs[n], r)))
        for rep in range(repeat):
            for name in list(variants)[:: 1 if rep % 2 == 0 else -1]:
                make = lambda r=variants[name], n=name: wan.workload(*_open(catalogs[n], r))  # noqa: E731
                values, rec = run_row(cfg, client, meter, make)
                np.testing.assert_allclose(values, want_join, rtol=1e-6)
                rows.setdefault(name, []).append(rec)

        def slow_mean() -> Any:
            p, _ = _open(catalogs["replicated"], True)
            return p.air_pressure.map_blocks(_slow()).mean("realization")

        def kill(t0: float, done: threading.Event) -> None:
            _kill_when_ecmwf_ran(client, cluster, kill_after, t0, done)

        values, rec = run_row(cfg, client, meter, slow_mean)  # reference for the killed row
        np.testing.assert_allclose(values, want_mean, rtol=1e-6)
        rows["replicated, slow mean, no kill"] = [rec]
        values, rec = run_row(cfg, client, meter, slow_mean, kill=kill)
        np.testing.assert_allclose(values, want_mean, rtol=1e-6)
        rec["kill_after"] = kill_after
        rec["ecmwf_workers_left"] = sum(1 for s in worker_sites(client).values() if s == "ecmwf")
        ran = rec["tasks_by_site"]
        rec["killed_mid_compute"] = bool(
            ran.get("ecmwf") and ran.get("eumetsat") and not rec["ecmwf_workers_left"]
        )
        rows["replicated, slow mean, ECMWF killed"] = [rec]
    return {"rows": rows, "values_equal_plain_xarray": True}


def child_main(cfg_path: str, out_path: str) -> int:
    """Client-namespace entry point (``--wan-child``)."""
    spec = json.loads(Path(cfg_path).read_text())
    cfg = wan.Config(**spec["cfg"])
    signal.signal(signal.SIGALRM, wan._on_alarm)
    signal.alarm(max(5, int(cfg.deadline - time.time())))
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(143)))
    res = client_side(cfg, spec["catalogs"], spec["repeat"], spec["kill_after"])
    Path(out_path).write_text(json.dumps(res, default=str))
    return 0


def _prepare_data(cfg: wan.Config) -> None:
    from catalog_pools.datagen.synthetic import make_data

    root = Path(cfg.data_root)
    make_data(root, scale=cfg.scale, progress=False)
    mirror = root / "eumetsat" / PRED_REL
    if not mirror.exists():  # EUMETSAT's own copy, served by EUMETSAT's server
        shutil.copytree(root / "ecmwf" / PRED_REL, mirror.with_suffix(".tmp"))
        mirror.with_suffix(".tmp").rename(mirror)


def run_topology(cfg: wan.Config, repeat: int, kill_after: float) -> dict[str, Any]:
    """Namespaces, shaping, delay, HTTP per site; the rows in a client-namespace child."""
    from benchmarks import netns

    reason = netns.unavailable_reason()
    if reason:
        raise SystemExit(f"--wan is unavailable here: {reason}")
    topo = netns.Topology([*wan.SITES, "client", "sched"])
    with topo:
        topo.shape(cfg.rate_mbit)
        topo.start_delay(cfg.rtt_ms / 2, max_seconds=cfg.deadline - time.time() + 30)
        base = {}
        for site in wan.SITES:
            ip = topo.node[site].ip
            wan._start_http(
                lambda argv, s=site: topo.popen(s, argv, stdout=subprocess.PIPE, cwd=str(wan.REPO)),
                site,
                cfg,
                ip,
                cfg.port,
            )
            base[site] = f"http://{ip}:{cfg.port}"
            cfg.stats_urls[site] = f"{base[site]}/__stats__"
        cfg.urls = {
            "predictions": f"{base['ecmwf']}/{PRED_REL}",
            "observations": f"{base['eumetsat']}/observations.zarr",
        }
        catalogs = {
            "single copy": wan.write_catalog(cfg),
            "replicated": write_replicated_catalog(cfg, f"{base['eumetsat']}/{PRED_REL}"),
        }
        wan.place_on_topology(cfg, topo)
        spec = {"cfg": asdict(cfg), "catalogs": catalogs, "repeat": repeat, "kill_after": kill_after}
        return wan.run_client_side(
            topo,
            cfg.deadline,
            spec,
            lambda config, out: ["benchmarks.replicas", "--wan-child", str(config), str(out)],
        )


def _summary(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, recs in rows.items():
        last = recs[-1]
        out[name] = {
            "n": len(recs),
            "wall_s_median": statistics.median(r["wall_s"] for r in recs),
            "cross_site_bytes_median": statistics.median(r["cross_site_bytes"] for r in recs),
            "router_by_pair": last.get("router_by_pair", {}),
            "tasks_by_site": last["tasks_by_site"],
        }
    return out


def write_results(cfg: wan.Config, res: dict[str, Any], repeat: int, elapsed: float) -> Path:
    """``benchmarks/results/replicas-wan-<scale>.{json,md}``; returns the markdown path."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = _summary(res["rows"])
    machine = wan.machine_info()
    keys = ("scale", "workers_per_site", "rate_mbit", "rtt_ms")
    doc: dict[str, Any] = {"config": {k: getattr(cfg, k) for k in keys}}
    doc.update(repeat=repeat, elapsed_s=elapsed, machine=machine, summary=summary, **res)
    (out / f"replicas-wan-{cfg.scale}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    lines = [
        f"# Replicas on the emulated WAN, scale `{cfg.scale}`",
        "",
        f"`python -m benchmarks.replicas --wan --scale {cfg.scale} --repeat {repeat}` (root). "
        f"Links tbf {cfg.rate_mbit:g} Mbit/s, {cfg.rtt_ms:g} ms RTT; {cfg.workers_per_site} "
        "single-threaded workers per site, each site in its own namespace serving its data "
        "over HTTP from its own address (EUMETSAT's server also holds a copy of the "
        "predictions). Cross-site bytes: IP bytes at the router between the sites and the "
        f"client (scheduler control traffic apart). Time: open + compute + result, median of "
        f"{repeat} alternating runs after a warm-up (slow mean rows: 1 run each). Total {elapsed:.0f} s.",
        "",
        "| case | cross-site bytes | wall time (s) | tasks by site | router bytes by pair |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        pairs = ", ".join(f"{k} {v}" for k, v in s["router_by_pair"].items() if v and "sched" not in k)
        lines.append(
            f"| {name} | {wan._fmt_bytes(s['cross_site_bytes_median'])} "
            f"({s['cross_site_bytes_median']:.0f} B) | {s['wall_s_median']:.2f} | "
            f"{s['tasks_by_site']} | {pairs} |"
        )
    killed = res["rows"]["replicated, slow mean, ECMWF killed"][0]
    lines += [
        "",
        'Single copy / replicated workload: `predictions.mean("realization").isel(height=10) - '
        'observations`. Slow mean: `predictions.map_blocks(sleep 0.2 s).mean("realization")` '
        "(no kill: runs at ECMWF, ties go to the primary; killed: every ECMWF worker SIGKILLed "
        f"{killed.get('kill_after', '')} s after the first ECMWF task ended) "
        f"(ECMWF workers left at the end: {killed['ecmwf_workers_left']}; kill landed "
        f"mid-compute: {killed['killed_mid_compute']}).",
        f"Values equal to plain xarray in every row: {res['values_equal_plain_xarray']}. "
        f"Packets the root namespace tried to send to site addresses: {res['root_guard_packets']}.",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), Linux {machine['kernel']}.",
        "",
    ]
    md = out / f"replicas-wan-{cfg.scale}.md"
    md.write_text("\n".join(lines))
    return md


def wan_main(scale: str, repeat: int, kill_after: float, timeout: float) -> int:
    """Orchestrator (root namespace): bounded by ``timeout``, torn down on any exit."""
    from benchmarks.netns import install_signal_handlers

    start = time.time()
    cfg = wan.Config(
        mode="wan",
        scale=scale,
        data_root=f"/tmp/catalog-pools-bench/replicas-{scale}",
        workers_per_site=2,
        timeout=timeout,
        deadline=start + timeout,
    )
    install_signal_handlers()
    signal.signal(signal.SIGALRM, wan._on_alarm)
    signal.alarm(int(timeout) + 20)  # backstop; the deadline is the bound
    try:
        _prepare_data(cfg)
        res = run_topology(cfg, repeat, kill_after)
        md = write_results(cfg, res, repeat, time.time() - start)
    finally:
        signal.alarm(0)
    print(md.read_text())
    return 0
