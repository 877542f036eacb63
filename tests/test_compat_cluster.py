"""Pins the distributed internals the cluster and the identity check rely on.

See the "cluster" section of :mod:`catalog_pools._compat.distributed_internals`.
A distributed release that changes one of them fails here, not silently.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from distributed import Scheduler, Security, Worker
from distributed.deploy.spec import SpecCluster

from catalog_pools._compat.distributed_internals import SpecClusterHooks, worker_stream_comm
from catalog_pools.engine.identity import peer_sites


def test_spec_cluster_private_steps_exist() -> None:
    assert inspect.iscoroutinefunction(SpecCluster._correct_state_internal)
    assert inspect.iscoroutinefunction(SpecCluster._close)
    assert callable(SpecCluster._correct_state)


class _Counting(SpecClusterHooks):
    def __init__(self, **kwargs: Any) -> None:
        self.calls: list[str] = []
        super().__init__(**kwargs)

    async def after_workers_started(self) -> None:
        self.calls.append(f"started {sorted(self.workers)}")

    def after_close(self) -> None:
        self.calls.append("closed")


def test_hooks_run_after_workers_start_and_after_close() -> None:
    async def run() -> list[str]:
        worker = {"cls": Worker, "options": {"nthreads": 1}}
        cluster = await _Counting(
            workers={"a": worker},
            scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
            asynchronous=True,
        )
        cluster.worker_spec["b"] = worker
        await cluster.request_correct_state()  # type: ignore[misc]
        assert sorted(cluster.workers) == ["a", "b"]
        await cluster.close()
        return cluster.calls

    calls = asyncio.run(run())
    assert calls[0] == "started ['a']" and "started ['a', 'b']" in calls and calls[-1] == "closed"


def test_worker_stream_comm_carries_the_peer_certificate() -> None:
    async def run() -> tuple[Any, Any]:
        sec = Security.temporary()
        async with (
            Scheduler(security=sec, protocol="tls", dashboard_address=":0") as s,
            Worker(s.address, security=sec) as w,
        ):
            comm = worker_stream_comm(s, w.address)
            assert comm is not None
            return comm.extra_info.get("peercert"), worker_stream_comm(s, "tls://nowhere:1")

    peercert, missing = asyncio.run(run())
    assert peercert and peercert["subject"]
    assert peer_sites(peercert) == frozenset()  # Security.temporary names no site
    assert missing is None


def test_register_worker_handler_receives_the_comm() -> None:
    """The identity check wraps these handlers; the first argument named ``comm`` gets the comm."""
    from distributed.core import _expects_comm

    async def run() -> dict[str, Any]:
        async with Scheduler(dashboard_address=":0") as s:
            return dict(s.handlers)

    handlers = asyncio.run(run())
    for op in ("register-worker", "set_resources", "heartbeat_worker"):
        assert op in handlers

    def wrapper(comm: Any, **msg: Any) -> None: ...

    assert _expects_comm(wrapper) and _expects_comm(handlers["register-worker"])
