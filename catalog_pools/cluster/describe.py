"""What a :class:`~catalog_pools.cluster.LocalSitesCluster` shows about itself."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from ..engine.sites import sites_of_resources
from .processes import SiteScheduler, SiteWorker


class SitesView:
    """Sites, workers, PIDs and reprs, read from the cluster's ``scheduler_info``."""

    scheduler: Any
    workers: dict[str, Any]
    site_counts: dict[str, int]
    users: dict[str, str]
    local_directory: Path

    @property
    def scheduler_pid(self) -> int | None:
        """PID of the scheduler process (``None`` before start)."""
        return self.scheduler.pid if isinstance(self.scheduler, SiteScheduler) else None

    @property
    def worker_pids(self) -> dict[str, int]:
        """Worker name -> PID of its ``dask worker`` process, for running workers.

        This is the process that runs tasks, or its nanny with ``nanny=True``.
        """
        return {
            n: w.pid
            for n, w in sorted(self.workers.items())
            if isinstance(w, SiteWorker) and w.alive and w.pid is not None
        }

    @property
    def log_directory(self) -> Path:
        """Directory of the process log files (``scheduler.log``, ``<name>.log``)."""
        return self.local_directory / "logs"

    @property
    def sites(self) -> dict[str, list[str]]:
        """Site -> sorted addresses of its connected workers, from their resources.

        Configured sites are always present (possibly with an empty list); sites of
        workers that joined from elsewhere are included too.
        """
        out: dict[str, list[str]] = {s: [] for s in self.site_counts}
        info = getattr(self, "scheduler_info", None) or {}
        for addr, w in dict(info.get("workers", {})).items():
            for site in sites_of_resources(w.get("resources")):
                out.setdefault(site, []).append(addr)
        return {s: sorted(a) for s, a in out.items()}

    def site_of(self, addr: str) -> str | None:
        """Site of the worker at ``addr``, ``None`` if unknown or in no site."""
        for site, addrs in self.sites.items():
            if addr in addrs:
                return site
        return None

    def _worker_rows(self) -> list[tuple[str, str, str, str, int | None, int]]:
        """(site, name, address, user, pid, nthreads) for every connected worker."""
        info = getattr(self, "scheduler_info", None) or {}
        rows = []
        for addr, w in dict(info.get("workers", {})).items():
            name = str(w.get("name"))
            site = ",".join(sites_of_resources(w.get("resources"))) or "-"
            proc = self.workers.get(name)
            user = getattr(proc, "user", None) or "-"
            rows.append((site, name, addr, user, getattr(proc, "pid", None), int(w.get("nthreads", 0))))
        return sorted(rows)

    def __repr__(self) -> str:
        addr = getattr(self.scheduler, "address", None)
        parts = []
        for site in self.sites:
            names = [r[1] for r in self._worker_rows() if r[0] == site]
            user = self.users.get(site)
            parts.append(f"{site}=[{', '.join(names)}]" + (f" as {user}" if user else ""))
        info = getattr(self, "scheduler_info", None) or {}
        ws = list(dict(info.get("workers", {})).values())
        mem = sum(int(w.get("memory_limit") or 0) for w in ws)
        return (
            f"{type(self).__name__}({addr!r}, {', '.join(parts)}, "
            f"threads={sum(int(w.get('nthreads', 0)) for w in ws)}, "
            f"memory={format_bytes(mem)})"
        )

    def _repr_html_(self, cluster_status: Any = None) -> str:
        addr = html.escape(str(getattr(self.scheduler, "address", None)))
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in self._worker_rows()
        )
        return (
            f"<div><strong>{html.escape(type(self).__name__)}</strong> "
            f"scheduler <code>{addr}</code> (pid {self.scheduler_pid})"
            "<table><thead><tr><th>site</th><th>worker</th><th>address</th><th>user</th>"
            f"<th>pid</th><th>threads</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<small>logs: {html.escape(str(self.log_directory))}</small></div>"
        )
