"""Worker-side reading of distributed's transfer logs, run through ``client.run``.

These run in the worker processes, so they are module-level functions
(catalog_pools must be importable where the workers run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["collect", "mark", "since"]


def _signature(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    return (entry.get("start"), entry.get("stop"), entry.get("who"), entry.get("total"))


def mark(dask_worker: Any) -> dict[str, Any]:
    """The newest entry of each transfer log: later entries belong to the block."""
    inc, out = dask_worker.transfer_incoming_log, dask_worker.transfer_outgoing_log
    return {"in": _signature(inc[-1]) if inc else None, "out": _signature(out[-1]) if out else None}


def since(log: Any, marker: tuple[Any, ...] | None) -> tuple[list[dict[str, Any]], bool]:
    """Entries newer than ``marker``, and whether some may have been dropped."""
    new: list[dict[str, Any]] = []
    for entry in reversed(log):
        if marker is not None and _signature(entry) == marker:
            return new[::-1], False
        new.append(entry)
    # Marker gone: the bounded deque rotated past it, so all entries are new and
    # older new ones may be lost if it is full.
    return new[::-1], marker is not None and log.maxlen is not None and len(log) >= log.maxlen


def _slim(e: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "who": e.get("who"),
        "total": int(e.get("total") or 0),
        "n_keys": len(e.get("keys") or ()),
        "start": e.get("start"),
        "stop": e.get("stop"),
    }


def collect(marks: Mapping[str, dict[str, Any]], plugin: str | None, dask_worker: Any) -> dict[str, Any]:
    """Transfers since the worker's mark, and bytes read if the read plugin ``plugin`` runs here."""
    marker = marks.get(dask_worker.address, {"in": None, "out": None})
    incoming, lost_in = since(dask_worker.transfer_incoming_log, marker["in"])
    outgoing, lost_out = since(dask_worker.transfer_outgoing_log, marker["out"])
    counter = dask_worker.plugins.get(plugin) if plugin is not None else None
    # A worker that joined during the block has no mark: its reads count from its setup.
    return {
        "incoming": [_slim(e) for e in incoming],
        # who=None: a gather by the scheduler or the client, not by a worker.
        "to_client": [_slim(e) for e in outgoing if e.get("who") is None],
        "in_flight": int(dask_worker.transfer_outgoing_count),
        "lost": lost_in or lost_out,
        "reads": counter.bytes_read() if counter is not None else None,
        "mark": mark(dask_worker),
    }
