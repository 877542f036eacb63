"""A "Sites" page on the scheduler's dashboard: tasks, workers and cross-site bytes per site.

Registered on the scheduler by ``dask scheduler --preload catalog_pools.preload``
(:func:`add_sites_page`): ``http://<scheduler>:<dashboard port>/sites`` (HTML,
refreshing itself every second) and ``/sites.json``, linked from the dashboard's
menu when distributed's Bokeh dashboard runs.

Figures:

- **workers per site**: each worker's ``pool-<site>`` resource;
- **tasks per site**: scheduler task states (waiting, no-worker, processing,
  memory, erred) by each task's site pin, and tasks finished on each site's
  workers since the page was registered;
- **bytes per site pair so far**: the workers' transfer logs (the same source
  and counting as :func:`~catalog_pools.traffic.traffic`), read every couple of
  seconds while tasks run and accumulated since the page was registered.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any

from dask.utils import format_bytes
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps
from distributed.protocol.serialize import Serialized, deserialize
from tornado import web

from ..engine.sites import pin_of, sites_of_resources
from .logs import collect
from .report import CLIENT, NO_SITE

logger = logging.getLogger(__name__)

__all__ = ["SitesMonitor", "add_sites_page"]

PLUGIN_NAME = "catalog-pools-sites-page"
STATES = ("waiting", "no-worker", "processing", "memory", "erred")
_POLL_SECONDS = 2.0


def _worker_site(ws: Any) -> str:
    found = sites_of_resources(ws.resources)
    return found[0] if found else NO_SITE


def _task_site(ts: Any) -> str:
    site = pin_of(ts.annotations or {}, ts.resource_restrictions)[1]
    return str(site) if site is not None else NO_SITE


class SitesMonitor(SchedulerPlugin):
    """Scheduler plugin behind the Sites page: counts finished tasks and transfers per site."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.finished: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.complete = True
        self.started = time.time()
        self._marks: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._was_busy = False
        self._callback: Any = None

    async def start(self, scheduler: Any) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self._tick, _POLL_SECONDS * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def transition(self, key: Hashable, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and finish == "memory" and self.scheduler is not None:
            ws = self.scheduler.workers.get(kwargs.get("worker"))
            self.finished[_worker_site(ws) if ws is not None else NO_SITE] += 1

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self._marks.pop(worker, None)  # a new worker's whole log is new

    async def _tick(self) -> None:
        # Poll while tasks run, and once after (results gathered at the end).
        busy = any(ws.processing for ws in self.scheduler.workers.values())
        if busy or self._was_busy:
            try:
                await self.poll()
            except Exception as exc:  # a worker leaving mid-poll, the scheduler closing
                logger.debug("Sites page: cannot read worker logs: %s", exc)
        self._was_busy = busy

    async def poll(self) -> None:
        """Add the transfers logged by workers since the last poll."""
        async with self._lock:  # two polls from one mark would count entries twice
            await self._poll()

    async def _poll(self) -> None:
        scheduler = self.scheduler
        msg = {"op": "run", "function": dumps(collect), "args": dumps((self._marks, None)), "wait": True}
        replies = await scheduler.broadcast(msg=msg, on_error="return")
        for addr, reply in replies.items():
            if not isinstance(reply, dict) or reply.get("status") != "OK":
                continue
            info = reply["result"]
            if isinstance(info, Serialized):  # the worker wraps run()'s result
                info = deserialize(info.header, info.frames)
            here = scheduler.workers.get(addr)
            dst = _worker_site(here) if here is not None else NO_SITE
            for e in info["incoming"]:
                src = scheduler.workers.get(e["who"])
                self.pairs[_worker_site(src) if src is not None else NO_SITE, dst] += e["total"]
            for e in info["to_client"]:
                self.pairs[dst, CLIENT] += e["total"]
            self.complete = self.complete and not info["lost"]
            self._marks[addr] = info["mark"]

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-able data."""
        scheduler = self.scheduler
        workers: dict[str, list[dict[str, Any]]] = {}
        for addr, ws in sorted(scheduler.workers.items()):
            workers.setdefault(_worker_site(ws), []).append(
                {
                    "address": addr,
                    "name": str(ws.name),
                    "nthreads": ws.nthreads,
                    "processing": len(ws.processing),
                }
            )
        states: dict[str, Counter[str]] = {}
        for ts in scheduler.tasks.values():
            if ts.state in STATES:
                states.setdefault(_task_site(ts), Counter())[ts.state] += 1
        sites = sorted(set(workers) | set(states) | set(self.finished))
        cross = sum(n for (s, d), n in self.pairs.items() if s != d and CLIENT not in (s, d))
        return {
            "sites": {
                s: {
                    "workers": workers.get(s, []),
                    "tasks": {st: states.get(s, Counter())[st] for st in STATES},
                    "finished": self.finished[s],
                }
                for s in sites
            },
            "pairs": [{"src": s, "dst": d, "bytes": n} for (s, d), n in sorted(self.pairs.items())],
            "cross_site_bytes": cross,
            "complete": self.complete,
            "since": self.started,
        }


def render(snapshot: dict[str, Any]) -> str:
    """The page's tables (an HTML fragment); every number has an ``id`` for tests."""
    esc = html.escape
    head = "".join(f"<th>{st}</th>" for st in STATES)
    rows = []
    for site, info in snapshot["sites"].items():
        cells = "".join(f'<td id="tasks-{esc(site)}-{st}">{info["tasks"][st]}</td>' for st in STATES)
        names = ", ".join(esc(w["name"]) for w in info["workers"])
        rows.append(
            f'<tr><td>{esc(site)}</td><td id="workers-{esc(site)}">{len(info["workers"])}</td>'
            f'<td>{names}</td>{cells}<td id="finished-{esc(site)}">{info["finished"]}</td></tr>'
        )
    pairs = [
        f'<tr class="{"cross" if p["src"] != p["dst"] and CLIENT not in (p["src"], p["dst"]) else ""}">'
        f"<td>{esc(p['src'])} &rarr; {esc(p['dst'])}</td>"
        f'<td id="bytes-{esc(p["src"])}-{esc(p["dst"])}">{p["bytes"]}</td>'
        f"<td>{format_bytes(p['bytes'])}</td></tr>"
        for p in snapshot["pairs"]
    ]
    total = snapshot["cross_site_bytes"]
    note = "" if snapshot["complete"] else "<p>a worker's transfer log overflowed: lower bounds</p>"
    return (
        "<h2>Cross-site bytes so far: "
        f"<span id='cross-site-bytes'>{total}</span> ({format_bytes(total)})</h2>"
        "<table><tr><th>site</th><th>workers</th><th>names</th>"
        f"{head}<th>finished</th></tr>{''.join(rows)}</table>"
        "<h3>Bytes moved (source &rarr; destination)</h3>"
        "<table><tr><th>pair</th><th>bytes</th><th></th></tr>"
        f"{''.join(pairs) or '<tr><td>none yet</td></tr>'}</table>{note}"
    )


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Dask: Sites</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} tr.cross td {{ color: #d62728; font-weight: bold; }}
nav a {{ margin-right: 1em; }}
</style></head>
<body><nav><a href="status">Status</a><a href="workers">Workers</a><a href="tasks">Tasks</a><b>Sites</b></nav>
<h1>Sites</h1><div id="sites">{body}</div>
<script>
async function refresh() {{
  try {{
    const r = await fetch("sites?fragment=1", {{cache: "no-store"}});
    if (r.ok) document.getElementById("sites").innerHTML = await r.text();
  }} catch (e) {{}}
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


class _Handler(web.RequestHandler):
    def initialize(self, monitor: SitesMonitor) -> None:
        self.monitor = monitor

    async def _snapshot(self) -> dict[str, Any]:
        await self.monitor.poll()
        return self.monitor.snapshot()


class SitesPage(_Handler):
    async def get(self) -> None:
        body = render(await self._snapshot())
        self.write(body if self.get_argument("fragment", None) else _PAGE.format(body=body))


class SitesJSON(_Handler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(await self._snapshot()))


def add_sites_page(scheduler: Any) -> SitesMonitor | None:
    """Serve the Sites page on ``scheduler``'s HTTP server and link it from the menu.

    Returns the monitor, or ``None`` (with a warning) if the scheduler has no
    HTTP server.
    """
    app = getattr(scheduler, "http_application", None)
    if app is None:
        logger.warning("scheduler has no HTTP server: no Sites page")
        return None
    monitor = SitesMonitor()
    scheduler.add_plugin(monitor, name=PLUGIN_NAME, idempotent=True)
    monitor = scheduler.plugins.get(PLUGIN_NAME, monitor)
    app.add_handlers(
        r".*$",
        [(r"/sites", SitesPage, {"monitor": monitor}), (r"/sites\.json", SitesJSON, {"monitor": monitor})],
    )
    _link_from_menu(scheduler)
    return monitor


def _link_from_menu(scheduler: Any) -> None:
    # distributed builds the menu from the memoized ``template_variables(scheduler)``
    # dict its Bokeh pages render with; adding to its "pages" adds a menu entry.
    try:
        from distributed.dashboard.scheduler import template_variables
    except ImportError:  # no Bokeh: no menu to extend
        return
    pages = template_variables(scheduler)["pages"]
    if "sites" not in pages:
        pages.append("sites")
