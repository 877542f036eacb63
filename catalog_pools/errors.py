"""Every exception a user of catalog_pools may catch, in one place.

Catalog errors name the catalog file and entry; engine errors name the site and
the fix.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .engine.sites import resource_name, worker_command


class CatalogError(ValueError):
    """A catalog, or one of its entries, cannot be used as written.

    The message starts with the catalog file and the entry it is about, so a
    user can find the line to fix.

    Parameters
    ----------
    problem
        What is wrong and, where possible, how to fix it.
    file
        The catalog file (path or URL), if known.
    entry
        The entry name (dotted for nested catalogs), if the problem is an entry's.
    """

    def __init__(self, problem: str, file: str | None = None, entry: str | None = None) -> None:
        self.problem, self.file, self.entry = problem, file, entry
        where = []
        if file:
            where.append(f"catalog {file}")
        if entry:
            where.append(f"entry {entry!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problem, self.file, self.entry))


class MissingSiteError(CatalogError):
    """An entry declares no site (and did not opt out with ``site: null``)."""


class SiteConflictError(CatalogError):
    """Two declarations give an entry different sites."""


class UnknownDriverError(CatalogError):
    """An entry names a driver that is not installed."""


class DataNotFoundError(CatalogError):
    """An entry's data (or a nested catalog file) does not exist or cannot be read."""


class UnknownPathError(CatalogError):
    """A path or URL lies under no site root declared in the catalog."""


class SiteUnavailableError(RuntimeError):
    """No connected worker belongs to the site a task is pinned to.

    ``failed_at`` (a Unix time) is set when the error is reported again to a
    later computation that needs a key which failed earlier.
    """

    def __init__(
        self,
        site: str,
        key: str,
        waited: float,
        address: str = "SCHEDULER_ADDRESS",
        failed_at: float | None = None,
        replicas: tuple[str, ...] = (),
    ) -> None:
        self.site, self.key, self.waited, self.address = site, key, waited, address
        self.failed_at, self.replicas = failed_at, tuple(replicas)
        fix = f"Add a worker to the site with: {worker_command(site, address)}"
        # a replicated load could have run at any of its replica sites
        also = f" nor of its replica sites {', '.join(map(repr, replicas))}" if replicas else ""
        if failed_at is None:
            message = (
                f"no worker of site {site!r}{also} is connected, so task {key} (pinned to "
                f"{site!r}) cannot run; waited {waited:g} s "
                f"(dask config 'catalog_pools.no-worker-timeout'). {fix}"
            )
        else:
            when = time.strftime("%H:%M:%S UTC", time.gmtime(failed_at))
            message = (
                f"task {key} (pinned to site {site!r}) failed earlier, at {when}, after waiting "
                f"{waited:g} s for a worker of site {site!r}; futures still hold that failure, so "
                "this computation got it back at once, without waiting. Release those futures "
                f"(or call client.retry(futures)) once the site has a worker. {fix}"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.site, self.key, self.waited, self.address, self.failed_at, self.replicas))


class SiteClusterUnavailableError(SiteUnavailableError):
    """A federated site's own cluster cannot be reached, or has no workers.

    Parameters
    ----------
    site
        The site.
    problem
        What went wrong, as a sentence part: ``"has no workers"``.
    address
        The scheduler or Gateway address tried, if any.
    waited
        Seconds waited before giving up (0: failed at once).
    """

    def __init__(self, site: str, problem: str, address: str | None = None, waited: float = 0.0) -> None:
        self.site, self.problem, self.address, self.waited = site, problem, address or "", waited
        self.key, self.failed_at = "", None
        at = f" at {address}" if address else ""
        message = f"federated site {site!r}{at} {problem}"
        if waited:
            message += f" (waited {waited:g} s; dask config 'catalog_pools.no-worker-timeout')"
            message += f". Start {site!r}'s scheduler and workers, or fix the address given for {site!r}"
        RuntimeError.__init__(self, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.site, self.problem, self.address, self.waited))


class ForeignSiteError(RuntimeError):
    """A task pinned to one site started on a worker of another site."""

    def __init__(self, site: str, worker: str, worker_sites: list[str]) -> None:
        self.site = site
        self.worker = worker
        self.worker_sites = worker_sites
        where = ", ".join(worker_sites) if worker_sites else "no site"
        super().__init__(
            f"task pinned to site {site!r} started on worker {worker} ({where}); "
            f"refusing to read {site!r} data from outside the site. The task's "
            f"restriction to resource {resource_name(site)!r} was lost on the way "
            "to the scheduler: check that catalog_pools is installed on the "
            "scheduler and that 'array.query-planning' is off."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.site, self.worker, self.worker_sites))


class QueryPlanningError(RuntimeError):
    """Array query planning is on: construction-time pins would be lost."""


class SchedulerSetupError(RuntimeError):
    """The scheduler cannot run catalog_pools (usually: not installed there)."""


class ClusterStartError(RuntimeError):
    """A scheduler or worker process of a :class:`LocalSitesCluster` failed to start."""


class UnsafeWriteError(FileExistsError):
    """Writing would replace or delete something catalog_pools did not write.

    Parameters
    ----------
    path
        The path at stake (for several, the root they are under).
    problem
        Why writing there is refused.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problem))
