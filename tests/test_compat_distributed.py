"""Pins the private distributed behaviour catalog_pools relies on (scheduler section)."""

from __future__ import annotations

import asyncio

from distributed import Client, Scheduler, SchedulerPlugin, Worker

from catalog_pools._compat import distributed_internals as di


class _MoveTo(SchedulerPlugin):
    """Moves every new task to resource ``to`` in ``update_graph``."""

    def __init__(self, to: str) -> None:
        self.to = to

    def update_graph(self, scheduler, *, tasks, **kwargs) -> None:  # type: ignore[override]
        for key in tasks:
            ts = scheduler.tasks[key]
            di.set_task_site(ts, {self.to: 0}, {"pool": self.to})


def _where() -> str:
    from distributed import get_worker

    return get_worker().name


async def _run() -> None:
    async with (
        Scheduler(dashboard_address=":0") as s,
        Worker(s.address, name="one", resources={"pool-one": 1}),
        Worker(s.address, name="two", resources={"pool-two": 1}),
        Client(s.address, asynchronous=True) as c,
    ):
        # set_task_site in update_graph decides where a task runs
        s.add_plugin(_MoveTo("pool-two"), name="move")
        assert await c.submit(_where, resources={"pool-one": 0}, pure=False) == "two"
        s.remove_plugin("move")

        # unrunnable lists a task no worker can run, with when it became so
        stuck = c.submit(_where, resources={"pool-none": 0}, pure=False)
        while not di.unrunnable(s):
            await asyncio.sleep(0.05)
        [(ts, since)] = di.unrunnable(s)
        assert ts.key == stuck.key and isinstance(since, float)

        # err_task fails it with our exception; replace_exception changes what is reported
        recs = di.err_task(s, ts.key, RuntimeError("first"), "test")
        s.transitions(recs, stimulus_id="test")
        try:
            await stuck
        except RuntimeError as e:
            assert str(e) == "first"
        di.replace_exception(s.tasks[stuck.key], RuntimeError("second"))
        assert "second" in s.tasks[stuck.key].exception_text


def test_scheduler_internals() -> None:
    asyncio.run(_run())
