"""Counting bytes read in worker processes: a ``distributed.WorkerPlugin``.

Reads are the arrays returned by dask.array's chunk getters
(``dask.array.core.getter``, ``getter_nofancy``, ``getter_inline``): how xarray
and ``dask.array.from_array`` / ``from_zarr`` load chunks. No public hook of
dask or distributed sees a load once dask fused it into a larger task, so the
plugin wraps those getters while it is registered on the worker (``setup``)
and restores them when it is removed (``teardown``). Workers that join while a
:func:`~catalog_pools.traffic.traffic` block is open get the plugin too.
"""

from __future__ import annotations

import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ReadCounter", "counting_active"]

_GETTERS = ("getter", "getter_nofancy", "getter_inline")
_lock = threading.Lock()
_state: dict[str, Any] = {"users": 0, "bytes": 0, "originals": {}}
_in_getter = threading.local()


def _counting(name: str, original: Any) -> Any:
    def getter(*args: Any, **kwargs: Any) -> Any:
        # getter() recurses and getter_nofancy() calls getter(): count the outermost only.
        depth = getattr(_in_getter, "depth", 0)
        _in_getter.depth = depth + 1
        try:
            out = original(*args, **kwargs)
        finally:
            _in_getter.depth = depth
        n = getattr(out, "nbytes", 0)
        if depth == 0 and isinstance(n, int | float):
            with _lock:
                _state["bytes"] += int(n)
        return out

    getter.__name__ = getter.__qualname__ = name
    getter.__wrapped__ = original  # type: ignore[attr-defined]
    getter._catalog_pools_counting = True  # type: ignore[attr-defined]
    return getter


def counting_active() -> bool:
    """Whether dask.array's getters are wrapped in this process."""
    from dask.array import core

    return any(getattr(getattr(core, n), "_catalog_pools_counting", False) for n in _GETTERS)


def _acquire() -> int:
    from dask.array import core

    with _lock:
        _state["users"] += 1
        if _state["users"] == 1:
            for name in _GETTERS:
                current = getattr(core, name)
                if not getattr(current, "_catalog_pools_counting", False):
                    _state["originals"][name] = current
                    setattr(core, name, _counting(name, current))
        return int(_state["bytes"])


def _release() -> None:
    from dask.array import core

    with _lock:
        _state["users"] = max(0, _state["users"] - 1)
        if _state["users"] == 0:
            for name, original in _state["originals"].items():
                setattr(core, name, original)
            _state["originals"].clear()


class ReadCounter(WorkerPlugin):
    """Counts bytes returned by dask.array's chunk getters while registered.

    Register one per traffic block (``client.register_plugin(ReadCounter(),
    name=...)``); read :meth:`bytes_read` on each worker with ``client.run``;
    unregister to stop counting. Several may be registered at once.
    """

    def __init__(self) -> None:
        self._start: int | None = None

    def setup(self, worker: Any) -> None:
        self._start = _acquire()

    def teardown(self, worker: Any) -> None:
        if self._start is not None:
            self._start = None
            _release()

    def bytes_read(self) -> int | None:
        """Bytes read in this process since :meth:`setup`, ``None`` before it."""
        if self._start is None:
            return None
        with _lock:
            return int(_state["bytes"]) - self._start
