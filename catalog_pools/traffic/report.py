"""Who ran what, and which bytes crossed between sites, during a block of work.

>>> from catalog_pools.traffic import traffic
>>> with traffic(client) as t:  # doctest: +SKIP
...     result = ds.compute()
>>> print(t.summary())  # doctest: +SKIP
>>> t.plot("traffic.png")  # doctest: +SKIP

Sources (distributed 2026.8):

- **tasks**: the scheduler's task stream (:class:`distributed.get_task_stream`),
  one record per task run: its key and worker.
- **bytes between workers**: each worker's ``transfer_incoming_log``, one entry
  per dependency fetch, with the sending worker (``who``) and the ``nbytes`` of
  the keys (dask's ``sizeof``: for a numpy array exactly ``arr.nbytes``; not the
  serialized or compressed size, so pickle headers are not counted).
- **bytes to the client**: each worker's ``transfer_outgoing_log`` entries with no
  requesting worker (``who=None``): those are gathers made by the scheduler or
  the client on the client's behalf (``compute``, ``gather``, ``result``).
- **bytes read**: bytes returned by dask.array's chunk getters, which is how
  xarray and ``dask.array.from_array`` / ``from_zarr`` load chunks from files,
  counted by a worker plugin (:class:`.reads.ReadCounter`) registered for the
  block, even when dask fused the load into a bigger task. Reads made otherwise
  (``dask.delayed`` code, a custom loader) are not seen.

Logs are read with ``client.run`` on entry (a marker per worker) and on exit
(only entries newer than the marker count). Not counted: data the client sends
(graph payload, ``scatter``), P2P shuffle/rechunk traffic (it has its own
comms), transfers of workers that left before the block ended.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from ..engine.sites import worker_sites
from .logs import collect, mark
from .reads import ReadCounter

logger = logging.getLogger(__name__)

#: Location name of the client in :attr:`Traffic.by_site_pair`.
CLIENT = "client"
#: Location name of workers that belong to no site (parentheses: never a site name).
NO_SITE = "(no site)"

__all__ = ["CLIENT", "NO_SITE", "Traffic", "Transfer", "traffic"]


@dataclass(frozen=True)
class Transfer:
    """Data moved from one worker (or site) to another during the block."""

    src: str
    dst: str
    nbytes: int
    n_keys: int
    src_worker: str
    dst_worker: str | None
    start: float
    stop: float


@dataclass
class Traffic:
    """Record of one :func:`traffic` block; filled in when the block exits.

    Attributes
    ----------
    by_site_pair
        ``{(source, destination): bytes}`` over all transfers, sites by name, the
        client as ``"client"``, workers without a site as ``"(no site)"``. Pairs
        with source == destination are transfers between workers of one site.
    tasks_by_site
        ``{site: number of task runs}``, every site with a worker included.
    task_sites
        ``{key: site}`` of the worker that (last) ran each task.
    bytes_read_by_site
        ``{site: bytes}`` returned by dask.array chunk getters on the site's
        workers, or ``None`` if it could not be measured.
    wall_time
        Seconds between entering and leaving the block.
    transfers
        Every :class:`Transfer` seen.
    tasks
        Raw task-stream records (dicts with ``key``, ``worker``, ``startstops``...).
    workers_by_site
        ``{site: [worker addresses]}`` of the workers seen.
    complete
        ``False`` if some transfers may be missing: a worker's log overflowed
        during the block (raise ``distributed.admin.low-level-log-length``) or
        the logs could not be read.
    started
        Epoch seconds when the block began.
    """

    by_site_pair: dict[tuple[str, str], int] = field(default_factory=dict)
    tasks_by_site: dict[str, int] = field(default_factory=dict)
    task_sites: dict[Hashable, str] = field(default_factory=dict)
    bytes_read_by_site: dict[str, int] | None = None
    wall_time: float = math.nan
    transfers: list[Transfer] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    workers_by_site: dict[str, list[str]] = field(default_factory=dict)
    complete: bool = True
    started: float = math.nan

    @property
    def cross_site_bytes(self) -> int:
        """Bytes moved between workers of different sites (the client excluded).

        Workers without a site count as a location of their own, ``"(no site)"``.
        """
        return sum(n for (s, d), n in self.by_site_pair.items() if s != d and CLIENT not in (s, d))

    @property
    def client_bytes(self) -> int:
        """Bytes gathered by the client (results)."""
        return sum(n for (s, d), n in self.by_site_pair.items() if d == CLIENT)

    @property
    def within_site_bytes(self) -> int:
        """Bytes moved between workers of the same site."""
        return sum(n for (s, d), n in self.by_site_pair.items() if s == d)

    @property
    def sites(self) -> list[str]:
        """Every site seen (with a worker, a task or a transfer), sorted."""
        found = set(self.workers_by_site) | set(self.tasks_by_site)
        for s, d in self.by_site_pair:
            found |= {s, d}
        found.discard(CLIENT)
        return sorted(found)

    def summary(self) -> str:
        """A small text table: tasks and reads per site, then bytes per site pair."""
        reads = self.bytes_read_by_site
        rows = [("site", "workers", "tasks", "bytes read")]
        for site in self.sites:
            rows.append(
                (
                    site,
                    str(len(self.workers_by_site.get(site, ()))),
                    str(self.tasks_by_site.get(site, 0)),
                    "n/a" if reads is None else format_bytes(reads.get(site, 0)),
                )
            )
        width = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"traffic report: wall time {self.wall_time:.2f} s"]
        for i, r in enumerate(rows):
            lines.append(
                "  "
                + r[0].ljust(width[0])
                + "".join("  " + c.rjust(w) for c, w in zip(r[1:], width[1:], strict=True))
            )
            if i == 0:
                lines.append("  " + "-" * (sum(width) + 6))
        lines.append("  transfers (source -> destination):")
        if not self.by_site_pair:
            lines.append("    none")
        for (s, d), n in sorted(self.by_site_pair.items(), key=lambda kv: -kv[1]):
            kind = "within site" if s == d else ("result" if d == CLIENT else "CROSS-SITE")
            lines.append(f"    {s + ' -> ' + d:32s} {format_bytes(n):>10s}  {kind}")
        lines.append(
            f"  cross-site bytes: {format_bytes(self.cross_site_bytes)} "
            f"({self.cross_site_bytes} B); to client: {format_bytes(self.client_bytes)}"
        )
        if not self.complete:
            lines.append("  WARNING: a worker's transfer log overflowed; totals are lower bounds")
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Save a PNG: sites and the bytes between them, and which worker ran what when.

        Parameters
        ----------
        path
            Where to write the PNG.
        title
            Figure title (default: wall time and cross-site bytes).

        Returns
        -------
        Path
            ``path``.
        """
        from .plot import plot_traffic

        return plot_traffic(self, Path(path), title=title)


# ----------------------------------------------------------------------- client side


def _label(site: str | None) -> str:
    return NO_SITE if site is None else site


def _fill(
    t: Traffic,
    sites: Mapping[str, str | None],
    stream: list[dict[str, Any]],
    collected: Mapping[str, dict[str, Any]],
) -> None:
    def where(addr: str | None) -> str:
        return _label(sites.get(addr)) if addr is not None else NO_SITE

    workers_by_site: dict[str, list[str]] = defaultdict(list)
    for addr, site in sorted(sites.items()):
        workers_by_site[_label(site)].append(addr)
    t.workers_by_site = dict(workers_by_site)

    tasks_by_site: Counter[str] = Counter({s: 0 for s in workers_by_site})
    for rec in stream:
        site = where(rec.get("worker"))
        tasks_by_site[site] += 1
        t.task_sites[rec["key"]] = site
    t.tasks_by_site = dict(tasks_by_site)
    t.tasks = stream

    pairs: Counter[tuple[str, str]] = Counter()
    reads: dict[str, int] = {s: 0 for s in workers_by_site}
    measured = False
    for addr, info in collected.items():
        here = where(addr)
        for e in info["incoming"]:
            tr = Transfer(
                where(e["who"]), here, e["total"], e["n_keys"], e["who"], addr, e["start"], e["stop"]
            )
            t.transfers.append(tr)
            pairs[tr.src, tr.dst] += tr.nbytes
        for e in info["to_client"]:
            tr = Transfer(here, CLIENT, e["total"], e["n_keys"], addr, None, e["start"], e["stop"])
            t.transfers.append(tr)
            pairs[tr.src, tr.dst] += tr.nbytes
        if info["lost"]:
            t.complete = False
        if info["reads"] is not None:  # None: the worker joined during the block
            measured = True
            reads[here] = reads.get(here, 0) + info["reads"]
    t.by_site_pair = dict(pairs)
    t.bytes_read_by_site = reads if measured else None
    t.transfers.sort(key=lambda tr: tr.start or 0.0)
    if not t.complete:
        logger.warning(
            "a worker's transfer log overflowed during the traffic block; totals are "
            "lower bounds (raise distributed.admin.low-level-log-length)"
        )


@contextlib.contextmanager
def traffic(client: Any = None, count_reads: bool = True, settle: float = 5.0) -> Iterator[Traffic]:
    """Record tasks and data movement between sites while the block runs.

    Parameters
    ----------
    client
        A ``distributed.Client`` (default: the current default client).
    count_reads
        Measure :attr:`Traffic.bytes_read_by_site` with a worker plugin
        (:class:`~catalog_pools.traffic.reads.ReadCounter`) registered for the
        duration of the block.
    settle
        At most this many seconds to wait on exit for workers to finish sending
        results (a worker logs a send only once the receiver acknowledged it).

    Yields
    ------
    Traffic
        Empty inside the block; filled in when the block exits (also on error).

    Examples
    --------
    >>> with traffic(client) as t:  # doctest: +SKIP
    ...     diff = (pred.mean("realization") - obs).compute()
    >>> t.cross_site_bytes, t.tasks_by_site  # doctest: +SKIP
    (460800, {'ecmwf': 8, 'eumetsat': 4})
    """
    import distributed

    client = client if client is not None else distributed.get_client()
    t = Traffic()
    sites = dict(worker_sites(client))
    plugin = None
    try:
        marks = client.run(mark)
        if count_reads:
            plugin = f"catalog-pools-reads-{uuid.uuid4().hex}"
            client.register_plugin(ReadCounter(), name=plugin)
    except Exception as e:  # catalog_pools not importable on the workers, say
        logger.warning("cannot read worker logs, traffic will be empty: %s", e)
        marks = None
    t.started = time.time()
    start = time.perf_counter()
    stream = distributed.get_task_stream(client=client)
    stream.__enter__()
    try:
        yield t
    finally:
        t.wall_time = time.perf_counter() - start
        try:
            _finish(t, client, stream, marks, sites, plugin, settle)
        except Exception as e:  # never hide the block's own exception behind ours
            logger.warning("traffic report incomplete: %s", e)
            t.complete = False


def _finish(
    t: Traffic,
    client: Any,
    stream: Any,
    marks: Mapping[str, dict[str, Any]] | None,
    sites: dict[str, str | None],
    plugin: str | None,
    settle: float,
) -> None:
    stream.__exit__(None, None, None)
    collected: dict[str, dict[str, Any]] = {}
    if marks is not None:
        try:
            deadline = time.monotonic() + settle
            while True:
                finish = time.monotonic() >= deadline
                collected = client.run(collect, marks, plugin)
                if finish or not any(c["in_flight"] for c in collected.values()):
                    break
                time.sleep(0.05)
        except Exception as e:
            logger.warning("cannot read worker logs, transfers will be missing: %s", e)
            t.complete = False
        finally:
            if plugin is not None:
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(plugin)
    sites.update(worker_sites(client))
    _fill(t, sites, list(stream.data), collected)
