"""Private distributed names used by catalog_pools; see :mod:`catalog_pools._compat`.

Pinned by ``tests/test_compat_distributed.py`` (scheduler section) and
``tests/test_compat_cluster.py`` (cluster section).

Scheduler section (the engine's plugin). A ``SchedulerPlugin`` sees the
scheduler's ``TaskState`` objects, but distributed offers public writers only
for worker restrictions (``Scheduler.set_restrictions``, used directly by the
plugin); everything below writes or reads scheduler state that has none.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from distributed.deploy.spec import SpecCluster
from distributed.protocol import pickle

__all__ = [
    "SpecClusterHooks",
    "err_task",
    "replace_exception",
    "set_task_site",
    "unrunnable",
    "worker_stream_comm",
]


def set_task_site(ts: Any, resources: Mapping[str, Any], annotations: Mapping[str, Any]) -> None:
    """Move a task that has not started yet to another site.

    ``TaskState.resource_restrictions`` is set from annotations when a graph
    arrives and read when the task is scheduled; a plugin's ``update_graph``
    runs between the two, and distributed has no public setter for it. The
    annotations are kept in step so our own checks see the same site.
    """
    ts.resource_restrictions = dict(resources)
    ts.annotations = dict(annotations)


def unrunnable(scheduler: Any) -> list[tuple[Any, float]]:
    """Tasks in ``no-worker`` state with the monotonic time they entered it.

    distributed's own ``no-workers-timeout`` (``_check_unrunnable_task_timeouts``)
    is one scheduler-wide value fixed at scheduler start and raises a
    ``NoValidWorkerError`` that names no site; ours is per computation (the
    client's ``catalog_pools.no-worker-timeout`` travels in the annotations)
    and names the site and the command that fixes it. ``Scheduler.unrunnable``
    is the state that check reads.
    """
    return list(scheduler.unrunnable.items())


def err_task(scheduler: Any, key: Hashable, error: BaseException, stimulus_id: str) -> dict[Hashable, str]:
    """Fail a ``no-worker`` task with ``error``; returns the follow-up recommendations.

    ``Scheduler.transition(key, "erred", exception=...)`` is how distributed
    itself fails an unrunnable task; the keyword arguments it takes are not
    documented.
    """
    recommendations: dict[Hashable, str] = scheduler.transition(
        key, "erred", exception=pickle.dumps(error), cause=key, stimulus_id=stimulus_id
    )
    return recommendations


def replace_exception(ts: Any, error: BaseException) -> None:
    """Replace the exception an erred task reports to clients that ask again.

    The scheduler keeps an erred task's exception on its ``TaskState`` and
    sends it, unchanged, to every later computation that needs the key.
    """
    ts.exception = pickle.dumps(error)
    ts.exception_text = str(error)


# ----------------------------------------------------------------------------- cluster
# Used by catalog_pools.engine.identity and catalog_pools.cluster; pinned in
# tests/test_compat_cluster.py.


def worker_stream_comm(scheduler: object, address: str) -> object | None:
    """The open comm of a registered worker's batched stream, or ``None``.

    Why: the site-identity check needs the TLS peer certificate of workers that
    registered before the plugin started (between the scheduler writing its
    scheduler file and running its plugins' ``start``). No public API gives a
    worker's connection; ``Scheduler.stream_comms`` (a ``BatchedSend`` per worker)
    holds it, and ``BatchedSend.comm`` is the comm whose ``extra_info`` carries
    ``peercert``.
    """
    streams = getattr(scheduler, "stream_comms", {})
    comm = getattr(streams.get(address), "comm", None)
    return None if comm is None or comm.closed() else comm


class SpecClusterHooks(SpecCluster):
    """A ``SpecCluster`` with public hooks around two of its private steps.

    Why: ``SpecCluster`` has no hook for "workers were (re)started" nor "the
    cluster is closed". ``LocalSitesCluster`` needs the first to return only when
    its own view of the workers is complete (``sites`` reads it) and to notice
    start failures, and the second to kill stray process groups and remove its
    directory. ``_correct_state_internal`` (runs under the cluster's lock, opens
    ``worker_spec`` entries missing from ``workers``) and ``_close`` are the only
    places where that happens; ``_correct_state`` is how ``scale`` asks for it.
    """

    async def _correct_state_internal(self) -> None:
        try:
            await super()._correct_state_internal()
        except Exception:
            self.on_workers_failed()
            raise
        await self.after_workers_started()

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
            self.after_close()

    def request_correct_state(self) -> object:
        """Start the missing workers of ``worker_spec`` (what ``scale`` does); an awaitable."""
        return self._correct_state()

    def on_workers_failed(self) -> None:
        """Called when starting workers raised."""

    async def after_workers_started(self) -> None:
        """Called after every (re)start of workers."""

    def after_close(self) -> None:
        """Called when the cluster has closed (also after a failed start)."""
