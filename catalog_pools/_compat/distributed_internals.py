"""Private distributed names used by catalog_pools; see :mod:`catalog_pools._compat`.

Pinned by ``tests/test_compat_distributed.py``.

Scheduler section (the engine's plugin). A ``SchedulerPlugin`` sees the
scheduler's ``TaskState`` objects, but distributed offers public writers only
for worker restrictions (``Scheduler.set_restrictions``, used directly by the
plugin); everything below writes or reads scheduler state that has none.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from distributed.protocol import pickle

__all__ = ["err_task", "replace_exception", "set_task_site", "unrunnable"]


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
