"""Scheduler plugin: site propagation across graphs, and no hanging on a missing site."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Hashable
from typing import Any

import dask
from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import SiteUnavailableError
from .optimize import WAIT_ANNOTATION
from .placement import assign_sites
from .sites import ANNOTATION, resource_name, sites_of_resources

logger = logging.getLogger(__name__)

PLUGIN_NAME = "catalog-pools"


def _task_site(ts: Any) -> str | None:
    site = (ts.annotations or {}).get(ANNOTATION)
    if site is not None:
        return site
    found = sites_of_resources(ts.resource_restrictions)
    return found[0] if found else None


class PoolsSchedulerPlugin(SchedulerPlugin):
    """Runs on the scheduler; installed by :func:`catalog_pools.install`.

    - gives new tasks that depend on pooled data already on the cluster
      (``persist``-ed) the site of that data, as the optimizer does within one
      graph;
    - fails tasks pinned to a site that no connected worker supplies once they
      waited ``catalog_pools.no-worker-timeout`` (the client's value travels in
      each task's annotations), instead of leaving them in ``no-worker`` forever.
    """

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, check_interval: float = 0.25) -> None:
        self.check_interval = check_interval
        self._co_assigned: dict[Hashable, str] = {}
        self.scheduler: Any = None
        self._callback: Any = None

    async def start(self, scheduler: Any) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self._check_unrunnable, self.check_interval * 1000)
        self._callback.start()
        logger.info("catalog_pools scheduler plugin started")

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def update_graph(  # type: ignore[override]
        self, scheduler: Any, *, tasks: list[Hashable], **kwargs: Any
    ) -> None:
        # Only ``tasks`` is needed; the other keywords of the hook are accepted via kwargs.
        self._propagate_from_cluster(scheduler, tasks)
        if dask.config.get("catalog_pools.co-assign", True):
            self._co_assign_roots(scheduler, tasks)

    def _co_assign_roots(self, scheduler: Any, keys: list[Hashable]) -> None:
        """Give each worker of a site a contiguous block of the site's loads.

        Distributed queues and co-assigns root tasks (neighbours in priority go
        to the same worker, so a tree reduction combines mostly local pieces)
        only for *unrestricted* tasks; pinned loads would be dealt round-robin
        and their partial results shipped between the site's workers. This
        restores the co-assignment within the site. The worker restriction is
        dropped again if that worker leaves (:meth:`remove_worker`).
        """
        roots: dict[str, list[Any]] = defaultdict(list)
        for key in keys:
            ts = scheduler.tasks.get(key)
            if ts is None or ts.dependencies or ts.worker_restrictions or ts.host_restrictions:
                continue
            site = _task_site(ts)
            if site is not None and ts.resource_restrictions:
                roots[site].append(ts)
        for site, tasks in roots.items():
            resource = resource_name(site)
            workers = sorted(
                (ws for ws in scheduler.running if resource in ws.resources),
                key=lambda ws: ws.address,
            )
            if len(workers) < 2 or len(tasks) <= len(workers):
                continue
            tasks.sort(key=lambda ts: ts.priority or ())
            threads = sum(ws.nthreads for ws in workers)
            start = 0
            for i, ws in enumerate(workers):
                stop = (
                    len(tasks) if i == len(workers) - 1 else start + round(len(tasks) * ws.nthreads / threads)
                )
                for ts in tasks[start:stop]:
                    ts.worker_restrictions = {ws.address}
                    self._co_assigned[ts.key] = ws.address
                start = stop

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        freed = [k for k, addr in self._co_assigned.items() if addr == worker]
        recommendations: dict[Hashable, str] = {}
        for key in freed:
            del self._co_assigned[key]
            ts = scheduler.tasks.get(key)
            if ts is None:
                continue
            ts.worker_restrictions = set()
            if ts.state == "no-worker":
                recommendations[key] = "processing"
        if recommendations:
            logger.info(
                "%d loads co-assigned to %s go to other workers of their site", len(recommendations), worker
            )
            scheduler.transitions(recommendations, stimulus_id=f"catalog-pools-freed-{time.time()}")

    def transition(self, key: Hashable, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if key not in self._co_assigned or finish not in ("memory", "forgotten", "erred"):
            return
        del self._co_assigned[key]
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        if ts is not None:
            # placed: if its result is lost later, any worker of the site may redo it
            ts.worker_restrictions = set()

    def _propagate_from_cluster(self, scheduler: Any, keys: list[Hashable]) -> None:
        new = {k: scheduler.tasks[k] for k in keys if k in scheduler.tasks}
        if not new or not dask.config.get("catalog_pools.propagate", True):
            return
        dependencies: dict[Hashable, set[Hashable]] = {}
        pins: dict[Hashable, str | None] = {}
        nbytes: dict[Hashable, float] = {}
        outside_pins = False
        for key, ts in new.items():
            dependencies[key] = {d.key for d in ts.dependencies}
            annotations = ts.annotations or {}
            if ANNOTATION in annotations or sites_of_resources(ts.resource_restrictions):
                pins[key] = _task_site(ts)
            for dep in ts.dependencies:
                if dep.key in new:
                    continue
                site = _task_site(dep)
                if site is not None:
                    pins[dep.key] = site
                    outside_pins = True
                    if dep.nbytes and dep.nbytes > 0:
                        nbytes[dep.key] = float(dep.nbytes)
        if not outside_pins:
            return  # the optimizer already handled everything in this graph
        assigned = assign_sites(dependencies, pins, nbytes)
        for key, site in assigned.items():
            ts = new.get(key)
            if ts is None or key in pins:
                continue
            restrictions = {
                r: q for r, q in (ts.resource_restrictions or {}).items() if not r.startswith("pool-")
            }
            restrictions[resource_name(site)] = 0
            ts.resource_restrictions = restrictions
            ts.annotations = {**(ts.annotations or {}), ANNOTATION: site}
            logger.debug("task %s follows its inputs to site %s", key, site)

    def _check_unrunnable(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or not scheduler.unrunnable:
            return
        now = time.monotonic()
        default = dask.utils.parse_timedelta(
            dask.config.get("catalog_pools.no-worker-timeout", "10s"), default="s"
        )
        recommendations: dict[Hashable, str] = {}
        stimulus_id = f"catalog-pools-no-worker-{time.time()}"
        from distributed.protocol import pickle

        for ts, since in list(scheduler.unrunnable.items()):
            site = _task_site(ts)
            if site is None or ts.state != "no-worker":
                continue
            wait = (ts.annotations or {}).get(WAIT_ANNOTATION, default)
            if wait is None or now - since < wait:
                continue
            if scheduler.resources.get(resource_name(site)):
                continue  # a worker of the site is there; other restrictions hold it
            error = SiteUnavailableError(site, str(ts.key), float(wait), scheduler.address)
            logger.error("%s", error)
            recommendations.update(
                scheduler.transition(
                    ts.key,
                    "erred",
                    exception=pickle.dumps(error),
                    cause=ts.key,
                    stimulus_id=stimulus_id,
                )
            )
        if recommendations:
            scheduler.transitions(recommendations, stimulus_id=stimulus_id)
