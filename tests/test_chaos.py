"""Faults on real processes: restarts, workers killed mid-compute, a site's last worker lost.

Each test starts its own small ``LocalSitesCluster`` (it kills workers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

from catalog_pools import SiteUnavailableError, pool
from catalog_pools.cluster import LocalSitesCluster

# Tasks may land on several workers that are then killed: allow it.
ENV = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "50"}


def _slow() -> Any:
    # A closure, so it travels by value (workers cannot import this module).
    def slow(x: np.ndarray, delay: float = 0.05) -> np.ndarray:
        time.sleep(delay)
        return x * 1.0

    return slow


def _recorder() -> Any:
    class Recorder(SchedulerPlugin):
        """Which resources each task required, and what its worker supplied."""

        name = "chaos-recorder"

        async def start(self, scheduler: Any) -> None:
            self.scheduler = scheduler
            self.rows: list[tuple[str, dict[str, float], dict[str, float], str]] = []

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            if finish == "processing":
                ts = self.scheduler.tasks[key]
                ws = ts.processing_on
                self.rows.append(
                    (str(key), dict(ts.resource_restrictions or {}), dict(ws.resources), ws.name)
                )

    return Recorder()


def recorded(client: Client) -> list[tuple[str, dict[str, float], dict[str, float], str]]:
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["chaos-recorder"].rows)


@pytest.fixture
def cluster() -> Iterator[LocalSitesCluster]:
    with LocalSitesCluster({"ecmwf": 1, "eumetsat": 1}, env=ENV) as c:
        yield c


def pooled_join(n: int, chunk: int, delay: float) -> tuple[Any, float]:
    slow = _slow()
    with pool("ecmwf"):
        a = da.arange(n, chunks=chunk, dtype="f8").map_blocks(slow, delay, dtype="f8")
    with pool("eumetsat"):  # other values: a graph of its own, not ecmwf's
        c = da.arange(n, 2 * n, chunks=chunk, dtype="f8").map_blocks(slow, delay, dtype="f8") * 2
    expected = float((np.arange(n, dtype="f8") - 2 * np.arange(n, 2 * n, dtype="f8")).sum())
    return (a - c).sum(), expected


def test_restart_starts_the_workers_again(cluster: LocalSitesCluster) -> None:
    with Client(cluster) as client:
        before = cluster.worker_pids
        start = time.monotonic()
        client.restart(timeout=60)
        took = time.monotonic() - start
        client.wait_for_workers(2, timeout=30)
        deadline = time.monotonic() + 30
        while len(cluster.worker_pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the cluster's own view follows the scheduler's
        after = cluster.worker_pids
        assert sorted(after) == sorted(before) == ["ecmwf-0", "eumetsat-0"]
        assert all(after[n] != before[n] for n in after)  # new processes
        assert took < 40, took
        x, expected = pooled_join(2_000, 500, 0.0)
        assert x.compute() == expected


def test_last_worker_of_a_site_dying_gives_site_unavailable(cluster: LocalSitesCluster) -> None:
    with Client(cluster) as client:
        x, _ = pooled_join(4_000, 100, 0.2)
        with dask.config.set({"catalog_pools.no-worker-timeout": "3s"}):
            future = client.compute(x)
            time.sleep(1.5)
            cluster.kill_worker("ecmwf-0")  # removed from the spec: not started again
            start = time.monotonic()
            with pytest.raises(SiteUnavailableError, match="'ecmwf'"):
                future.result(timeout=60)
        assert time.monotonic() - start < 3 + 15


def test_site_worker_rejoining_in_time_completes(cluster: LocalSitesCluster) -> None:
    with Client(cluster) as client:
        x, expected = pooled_join(4_000, 100, 0.2)
        with dask.config.set({"catalog_pools.no-worker-timeout": "30s"}):
            future = client.compute(x)
            time.sleep(1.5)
            cluster.kill_worker("ecmwf-0")
            time.sleep(1.0)
            assert cluster.start_worker("ecmwf").startswith("ecmwf-")
            assert future.result(timeout=120) == expected


@pytest.mark.slow
def test_workers_killed_repeatedly_during_a_pooled_join() -> None:
    with (
        LocalSitesCluster({"ecmwf": 2, "eumetsat": 2}, env=ENV) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(_recorder())
        x, expected = pooled_join(12_000, 100, 0.1)  # 240 slow loads, ~12 s on 4 workers
        kills: list[str] = []
        stop = threading.Event()

        def chaos() -> None:
            rng = np.random.default_rng(0)
            while not stop.wait(1.5):
                pids = cluster.worker_pids
                if pids:
                    name = sorted(pids)[rng.integers(len(pids))]
                    os.kill(pids[name], signal.SIGKILL)
                    kills.append(name)

        with dask.config.set({"catalog_pools.no-worker-timeout": "60s"}):
            future = client.compute(x)
            killer = threading.Thread(target=chaos, daemon=True)
            killer.start()
            try:
                result = future.result(timeout=240)
            finally:
                stop.set()
                killer.join()
        assert result == expected
        assert len(kills) >= 4, kills
        print(f"{len(kills)} workers SIGKILLed during the join: {kills}")
        rows = recorded(client)
        outside = [r for r in rows if any(res not in r[2] for res in r[1])]
        assert not outside, outside[:5]
        pinned = [r for r in rows if r[1]]
        assert len(pinned) >= 240 and {r[3].split("-")[0] for r in pinned} == {"ecmwf", "eumetsat"}
        client.wait_for_workers(4, timeout=60)  # every killed worker was started again
