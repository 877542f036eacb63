"""Scheduler plugin: sites for tasks after data already on the cluster, and no hanging on a missing site."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Hashable
from typing import Any

import dask
from distributed.diagnostics.plugin import SchedulerPlugin

from .._compat.distributed_internals import err_task, replace_exception, set_task_site, unrunnable
from ..errors import SiteUnavailableError
from .placement import assign_sites
from .replicas import fail_over_site, rechoose_replicas
from .sites import (
    ANNOTATION,
    NBYTES,
    OPTED_OUT,
    ORIGIN,
    PROPAGATED,
    RELAY,
    REPLICAS,
    WAIT,
    origin,
    pin_of,
    resource_name,
    site_of_worker,
    site_resources,
    sites_of_resources,
)

logger = logging.getLogger(__name__)

PLUGIN_NAME = "catalog-pools"


def task_site(ts: Any) -> str | None:
    """The site a scheduler ``TaskState`` is pinned to, if any."""
    return pin_of(ts.annotations or {}, ts.resource_restrictions)[1]


def held_site(ts: Any) -> str | None:
    """Where a key is: the site of a worker holding it, else the site it is pinned to."""
    for ws in sorted(ts.who_has or (), key=lambda ws: ws.address):
        if (site := site_of_worker(ws.resources)) is not None:
            return site
    return task_site(ts)


class PoolsSchedulerPlugin(SchedulerPlugin):
    """Runs on the scheduler; installed by :func:`catalog_pools.install`.

    - places new tasks that depend on data already on the cluster (persisted,
      or futures) from where that data is: the user's pins stay, sites the
      optimizer propagated without knowing it are chosen again;
    - co-assigns a site's loads to its workers in contiguous blocks;
    - fails tasks pinned to a site that no connected worker supplies once they
      waited ``catalog_pools.no-worker-timeout`` (the client's value travels in
      each task's annotations), instead of leaving them in ``no-worker`` forever.
    """

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, check_interval: float = 0.25) -> None:
        self.check_interval = check_interval
        self._co_assigned: dict[Hashable, str] = {}
        #: keys we failed -> (site, seconds waited, when)
        self._failed: dict[Hashable, tuple[str, float, float]] = {}
        #: site with no worker -> the replica site its replicated loads moved to
        self._moved_to: dict[str, str] = {}
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
        self._explain_earlier_failures(scheduler, tasks)
        # Tasks of earlier graphs (running, in memory) keep their place.
        new = {k: ts for k in tasks if (ts := scheduler.tasks.get(k)) is not None and ts.state == "released"}
        if dask.config.get("catalog_pools.propagate", True):
            rechoose_replicas(new, held_site)
            self._place_after_cluster_data(new)
        if dask.config.get("catalog_pools.co-assign", True):
            self._co_assign_roots(scheduler, new)

    def _place_after_cluster_data(self, new: dict[Hashable, Any]) -> None:
        """Sites of new tasks from their inputs, those already on the cluster included."""
        dependencies: dict[Hashable, set[Hashable]] = {}
        pins: dict[Hashable, str | None] = {}
        nbytes: dict[Hashable, float] = {}
        relays: dict[Hashable, Hashable] = {}
        outside = False
        for key, ts in new.items():
            annotations = ts.annotations or {}
            dependencies[key] = {d.key for d in ts.dependencies}
            if origin(annotations) == OPTED_OUT:
                pins[key] = None
            elif origin(annotations) is None and pin_of(annotations, ts.resource_restrictions)[0]:
                pins[key] = task_site(ts)  # the user's own pin: never changed
            if annotations.get(NBYTES):
                nbytes[key] = float(annotations[NBYTES])
            if annotations.get(RELAY) and ts.dependencies:
                relays[key] = next(iter(ts.dependencies)).key
            for dep in ts.dependencies:
                if dep.key in new or (site := held_site(dep)) is None:
                    continue
                pins[dep.key] = site
                outside = True
                size = dep.nbytes if dep.nbytes and dep.nbytes > 0 else (dep.annotations or {}).get(NBYTES)
                if size:
                    nbytes[dep.key] = float(size)
        if not outside:
            return  # the optimizer already placed everything in this graph
        for key, site in assign_sites(dependencies, pins, nbytes, relays=relays).items():
            ts = new.get(key)
            if ts is not None and key not in pins and task_site(ts) != site:
                annotations = {**(ts.annotations or {}), ANNOTATION: site, ORIGIN: PROPAGATED}
                set_task_site(ts, site_resources(site, ts.resource_restrictions), annotations)
                logger.debug("task %s follows its inputs on the cluster to site %s", key, site)

    def _co_assign_roots(self, scheduler: Any, new: dict[Hashable, Any]) -> None:
        """Give each worker of a site a contiguous block of the site's loads.

        Distributed queues and co-assigns root tasks (neighbours in priority go
        to the same worker, so a tree reduction combines mostly local pieces)
        only for *unrestricted* tasks; pinned loads would be dealt round-robin
        and their partial results shipped between the site's workers. This
        restores the co-assignment within the site. The worker restriction is
        dropped when the load has run or if that worker leaves.
        """
        roots: dict[str, list[Any]] = defaultdict(list)
        for ts in new.values():
            if ts.dependencies or ts.worker_restrictions or ts.host_restrictions or not ts.run_spec:
                continue
            site = task_site(ts)
            if site is not None and ts.resource_restrictions:
                roots[site].append(ts)
        for site, tasks in roots.items():
            resource = resource_name(site)
            workers = sorted(
                (ws for ws in scheduler.running if resource in ws.resources), key=lambda ws: ws.address
            )
            if len(workers) < 2 or len(tasks) <= len(workers):
                continue
            tasks.sort(key=lambda ts: ts.priority or ())
            threads = sum(ws.nthreads for ws in workers)
            blocks: dict[Hashable, list[str]] = {}
            start = 0
            for i, ws in enumerate(workers):
                last = i == len(workers) - 1
                stop = len(tasks) if last else start + round(len(tasks) * ws.nthreads / threads)
                for ts in tasks[start:stop]:
                    blocks[ts.key] = [ws.address]
                    self._co_assigned[ts.key] = ws.address
                start = stop
            scheduler.set_restrictions(blocks)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        freed = [k for k, addr in self._co_assigned.items() if addr == worker]
        recommendations: dict[Hashable, str] = {}
        for key in freed:
            del self._co_assigned[key]
            ts = scheduler.tasks.get(key)
            if ts is None:
                continue
            scheduler.set_restrictions({key: None})
            if ts.state == "no-worker":
                recommendations[key] = "processing"
        if recommendations:
            logger.info(
                "%d loads co-assigned to %s go to other workers of their site", len(recommendations), worker
            )
            scheduler.transitions(recommendations, stimulus_id=f"catalog-pools-freed-{time.time()}")

    def transition(self, key: Hashable, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten" or (finish == "released" and start == "erred"):
            self._failed.pop(key, None)
        if key not in self._co_assigned or finish not in ("memory", "forgotten", "erred"):
            return
        del self._co_assigned[key]
        if self.scheduler is not None and key in self.scheduler.tasks:
            # placed: if its result is lost later, any worker of the site may redo it
            self.scheduler.set_restrictions({key: None})

    def _explain_earlier_failures(self, scheduler: Any, keys: list[Hashable]) -> None:
        """A later computation needing a key we failed is told when and why, not "waited"."""
        for key in keys:
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state != "erred":
                continue
            blame = ts.exception_blame
            failed = self._failed.get(blame.key) if blame is not None else None
            if failed is not None:
                site, waited, when = failed
                error = SiteUnavailableError(site, str(blame.key), waited, scheduler.address, failed_at=when)
                replace_exception(blame, error)

    def _fail_over(self, stuck: list[tuple[Any, float]], live: set[str]) -> dict[Hashable, str]:
        """Move waiting tasks of a site with no worker to a live replica site.

        A replicated load goes to its first live replica site (primary order);
        a propagated task (it reads no site data) follows the loads of its
        site to where they went. Returns the recommendations that run them.
        """
        recommendations: dict[Hashable, str] = {}
        # loads first, so the tasks after them know where the loads went
        for ts, _ in sorted(stuck, key=lambda item: not (item[0].annotations or {}).get(REPLICAS)):
            site = task_site(ts)
            if ts.state != "no-worker" or site is None or site in live:
                continue
            annotations = ts.annotations or {}
            target = fail_over_site(annotations, live)
            if target is not None:
                self._moved_to[site] = target
            elif origin(annotations) == PROPAGATED:
                target = self._moved_to.get(site)
            if target is None or target not in live:
                continue
            set_task_site(
                ts, site_resources(target, ts.resource_restrictions), {**annotations, ANNOTATION: target}
            )
            recommendations[ts.key] = "processing"
        if recommendations:
            logger.warning(
                "%d tasks of sites with no worker moved to replica sites %s",
                len(recommendations),
                self._moved_to,
            )
        return recommendations

    def _check_unrunnable(self) -> None:
        scheduler = self.scheduler
        stuck = unrunnable(scheduler) if scheduler is not None else []
        if not stuck:
            return
        now = time.monotonic()
        default = dask.utils.parse_timedelta(
            dask.config.get("catalog_pools.no-worker-timeout", "10s"), default="s"
        )
        stimulus_id = f"catalog-pools-no-worker-{time.time()}"
        live = {s for ws in scheduler.workers.values() for s in sites_of_resources(ws.resources)}
        recommendations = self._fail_over(stuck, live)
        for ts, since in stuck:
            site = task_site(ts)
            if site is None or ts.state != "no-worker" or ts.key in recommendations:
                continue
            wait = (ts.annotations or {}).get(WAIT, default)
            if wait is None or now - since < wait:
                continue
            resource = resource_name(site)
            if any(resource in ws.resources for ws in scheduler.workers.values()):
                continue  # a worker of the site is there; other restrictions hold it
            replicas = tuple(s for s in (ts.annotations or {}).get(REPLICAS) or () if s != site)
            error = SiteUnavailableError(site, str(ts.key), float(wait), scheduler.address, replicas=replicas)
            logger.error("%s", error)
            self._failed[ts.key] = (site, float(wait), time.time())
            recommendations.update(err_task(scheduler, ts.key, error, stimulus_id))
        if recommendations:
            scheduler.transitions(recommendations, stimulus_id=stimulus_id)
