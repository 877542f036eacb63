"""Private distributed names used by catalog_pools; see :mod:`catalog_pools._compat`."""

from __future__ import annotations

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


from distributed.deploy.spec import SpecCluster  # noqa: E402 (this section stands alone)


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
