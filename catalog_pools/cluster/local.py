"""A real multi-site Dask cluster on one machine: every process separate.

:class:`LocalSitesCluster` starts the scheduler with the ``dask scheduler`` CLI
(``--preload catalog_pools.preload``) and, for every site, workers with
``dask worker ADDR --resources "pool-<site>=1"``, each in its own OS process and
process group (:mod:`.processes`), optionally as the site's Unix user
(``runuser``) and behind an argv prefix such as ``ip netns exec <ns>``. With
``security=True`` every site gets its own certificate (:mod:`.certs`) and the
scheduler refuses workers claiming a site their certificate does not name
(:mod:`catalog_pools.engine.identity`). It is a
:class:`distributed.deploy.spec.SpecCluster`, so ``Client(cluster)``,
``client.cluster`` and ``cluster.close()`` behave as usual (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distributed import Security
from distributed.core import Status

from .._compat.distributed_internals import SpecClusterHooks
from ..engine.sites import validate_site
from ..errors import ClusterStartError
from .certs import CertFiles, security_files, write_site_certificates
from .describe import SitesView
from .isolation import open_to_site_users
from .processes import SiteScheduler, SiteWorker, _CLIProcess

logger = logging.getLogger(__name__)

__all__ = ["ClusterStartError", "LocalSitesCluster", "SiteScheduler", "SiteWorker"]

#: Scheduler preload that enforces site identity (with ``security=True``).
IDENTITY_PRELOAD = "catalog_pools.engine.identity"
_RESPAWN_INTERVAL = 0.3


class LocalSitesCluster(SitesView, SpecClusterHooks):
    """A Dask cluster of several sites on this machine, every process separate.

    The scheduler runs ``dask scheduler --preload catalog_pools.preload``; each
    site gets ``n`` workers started as
    ``dask worker ADDR --resources "pool-<site>=1" --name <site>-<i>``. Construction
    returns once every worker is connected. A worker whose process exits (a
    crash, ``client.restart()``) is started again under the same name, unless
    it was removed with :meth:`kill_worker`.

    Parameters
    ----------
    sites
        Number of workers per site, e.g. ``{"ecmwf": 2, "eumetsat": 2}``.
    threads_per_worker
        ``--nthreads`` of each worker.
    memory_limit
        ``--memory-limit`` of each worker (``"2GiB"``, bytes, ``"auto"``).
    users
        Unix user per site: that site's workers run as ``runuser -u USER --``
        (see :mod:`catalog_pools.cluster.isolation`). Sites not listed run as the caller.
    prefixes
        argv prefix per site, e.g. ``["ip", "netns", "exec", "site-ecmwf"]``.
    scheduler_prefix
        argv prefix for the scheduler.
    host
        Address the scheduler listens on; also the default worker ``--host``.
    worker_hosts
        ``--host`` per site (e.g. the site's address inside its namespace).
    scheduler_port
        Scheduler port; 0 picks a free one.
    dashboard
        Serve the scheduler dashboard on a random port.
    env
        Extra environment variables for every process.
    local_directory
        Root for logs (``logs/<name>.log``), worker directories
        (``workers/<name>``, owned by the worker's user) and certificates
        (``tls/``). A temporary directory by default, removed on a clean close
        and kept when something failed. It must be enterable by the site users.
    security
        ``True``: a CA and one certificate per site, the scheduler and the
        client (:func:`catalog_pools.cluster.certs.write_site_certificates`; keys
        0600, owned by the site's user), ``tls://`` everywhere. A
        :class:`distributed.Security` with ``tls_ca_file`` and certificates:
        those files for every process. ``None``/``False``: plain TCP.
    identity
        Enforce site identity on the scheduler (``--preload
        catalog_pools.engine.identity``). Default: on with ``security=True``.
    nanny
        Start workers under a nanny (two processes per worker). Off by default:
        faster start-up; restarts are done by starting the process again.
    respawn
        Start a worker again when its process exits (default on).
    preload
        Scheduler ``--preload`` modules.
    worker_extra_args, scheduler_extra_args
        Extra CLI arguments.
    startup_timeout
        Seconds to wait for each process to come up.
    asynchronous, loop, name
        As for :class:`distributed.deploy.spec.SpecCluster`.

    Raises
    ------
    ClusterStartError
        If a process exits or times out during start-up; the message names its
        log file and shows the last lines. All processes are stopped first.

    Examples
    --------
    >>> with LocalSitesCluster({"ecmwf": 2, "eumetsat": 2}) as cluster:  # doctest: +SKIP
    ...     cluster.sites
    {'ecmwf': ['tcp://127.0.0.1:41235', ...], 'eumetsat': [...]}
    """

    def __init__(
        self,
        sites: Mapping[str, int],
        *,
        threads_per_worker: int = 1,
        memory_limit: str | int = "2GiB",
        users: Mapping[str, str] | None = None,
        prefixes: Mapping[str, Sequence[str]] | None = None,
        scheduler_prefix: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        worker_hosts: Mapping[str, str] | None = None,
        scheduler_port: int = 0,
        dashboard: bool = False,
        env: Mapping[str, str] | None = None,
        local_directory: str | os.PathLike[str] | None = None,
        security: Security | bool | None = None,
        identity: bool | None = None,
        nanny: bool = False,
        respawn: bool = True,
        preload: Sequence[str] = ("catalog_pools.preload",),
        worker_extra_args: Sequence[str] = (),
        scheduler_extra_args: Sequence[str] = (),
        startup_timeout: float = 60,
        asynchronous: bool = False,
        loop: Any = None,
        name: str | None = None,
    ) -> None:
        self._check_arguments(sites, users, prefixes, worker_hosts)
        self._make_directory(local_directory)
        sec, tls = self._security(security)
        if identity is None:
            identity = security is True
        if identity and not tls:
            raise ValueError("identity=True needs certificates: give security=True")
        preload = [*preload, IDENTITY_PRELOAD] if identity and IDENTITY_PRELOAD not in preload else preload
        self.respawn = respawn
        self._respawner: asyncio.Task[None] | None = None
        proc_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        common = {"directory": str(self.local_directory), "env": proc_env, "startup_timeout": startup_timeout}
        scheduler = {
            "cls": SiteScheduler,
            "options": {
                **common,
                "host": host,
                "port": scheduler_port,
                "preload": list(preload),
                "dashboard": dashboard,
                "prefix": list(scheduler_prefix or ()),
                "tls": tls.get("scheduler"),
                "extra_args": list(scheduler_extra_args),
            },
        }
        self._worker_options = {
            site: {
                **common,
                "site": site,
                "nthreads": threads_per_worker,
                "memory_limit": memory_limit,
                "host": self.worker_hosts.get(site, host),
                "user": self.users.get(site),
                "prefix": self.prefixes.get(site, []),
                "nanny": nanny,
                "tls": tls.get(f"site:{site}"),
                "security": sec,
                "extra_args": list(worker_extra_args),
            }
            for site in self.site_counts
        }
        workers = {
            f"{site}-{i}": self._worker_spec(site, f"{site}-{i}")
            for site, n in self.site_counts.items()
            for i in range(n)
        }
        try:
            super().__init__(
                workers=workers,
                scheduler=scheduler,
                worker=None,
                security=sec,
                asynchronous=asynchronous,
                loop=loop,
                name=name or "LocalSitesCluster",
                silence_logs=False,
            )
        except Exception as e:
            self._keep_directory = True
            self._hard_kill()
            if isinstance(e, RuntimeError) and isinstance(e.__cause__, ClusterStartError):
                raise e.__cause__ from None
            raise

    # ---- set-up ------------------------------------------------------------------

    def _check_arguments(
        self,
        sites: Mapping[str, int],
        users: Mapping[str, str] | None,
        prefixes: Mapping[str, Sequence[str]] | None,
        worker_hosts: Mapping[str, str] | None,
    ) -> None:
        if not sites:
            raise ValueError("give at least one site, e.g. {'ecmwf': 2}")
        self.site_counts = {validate_site(s): int(n) for s, n in sites.items()}
        self.users = dict(users or {})
        self.prefixes = {s: list(p) for s, p in (prefixes or {}).items()}
        self.worker_hosts = dict(worker_hosts or {})
        for what, mapping in (
            ("users", self.users),
            ("prefixes", self.prefixes),
            ("worker_hosts", self.worker_hosts),
        ):
            unknown = set(mapping) - set(self.site_counts)
            if unknown:
                raise ValueError(
                    f"{what} names unknown sites {sorted(unknown)}; sites are {sorted(self.site_counts)}"
                )
        for user in self.users.values():
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise ValueError(
                    f"no such user {user!r} (see catalog_pools.cluster.isolation.ensure_site_user)"
                ) from None
        if self.users and os.geteuid() != 0:
            raise PermissionError("users= needs root (workers start with runuser)")

    def _make_directory(self, local_directory: str | os.PathLike[str] | None) -> None:
        self._owns_directory = local_directory is None
        if local_directory is None:
            self.local_directory = Path(tempfile.mkdtemp(prefix="catalog-pools-cluster-"))
        else:
            self.local_directory = Path(local_directory)
            self.local_directory.mkdir(parents=True, exist_ok=True)
        self._keep_directory = False
        d = self.local_directory
        (d / "logs").mkdir(exist_ok=True)
        (d / "workers").mkdir(exist_ok=True)
        if self.users:
            open_to_site_users(d, f"use {d} as their workers' local_directory")
            open_to_site_users(d / "workers", f"use {d / 'workers'}")

    def _security(self, security: Security | bool | None) -> tuple[Security, dict[str, CertFiles]]:
        """The client's ``Security`` and the TLS files of each process."""
        tls_dir = self.local_directory / "tls"
        if security is True:
            files = write_site_certificates(tls_dir, self.site_counts, self.users)
            client = files["client"]
            sec = Security(
                tls_ca_file=client.ca,
                tls_client_cert=client.cert,
                tls_client_key=client.key,
                require_encryption=True,
            )
            return sec, files
        if isinstance(security, Security) and (
            security.require_encryption or getattr(security, "tls_ca_file", None)
        ):
            files = {"scheduler": security_files(tls_dir / "scheduler", security)}
            for site in self.site_counts:  # a copy each site's user can read
                files[f"site:{site}"] = security_files(
                    tls_dir / f"site-{site}", security, self.users.get(site)
                )
            return security, files
        return (security if isinstance(security, Security) else Security()), {}

    def _worker_spec(self, site: str, name: str) -> dict[str, Any]:
        return {"cls": SiteWorker, "options": {**self._worker_options[site], "name": name}}

    # ---- start / stop / respawn --------------------------------------------------

    def on_workers_failed(self) -> None:
        self._keep_directory = True

    async def after_workers_started(self) -> None:
        # Return only once our own view (scheduler_info, fed by the scheduler's
        # worker-status stream) lists every running worker: `sites` reads it.
        wanted = {
            n
            for n, w in self.workers.items()
            if isinstance(w, SiteWorker) and w.alive and n in self.worker_spec
        }
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = {str(w.get("name")) for w in self.scheduler_info["workers"].values()}
            if wanted <= seen:
                break
            await asyncio.sleep(0.02)
        if self.respawn and self._respawner is None:
            self._respawner = asyncio.ensure_future(self._respawn_exited())

    async def _respawn_exited(self) -> None:
        """Start again every worker of ``worker_spec`` whose process has exited."""
        while self.status in (Status.created, Status.starting, Status.running):
            await asyncio.sleep(_RESPAWN_INTERVAL)
            # Exited, or closed by SpecCluster after it saw the worker lost for a while.
            exited = [
                n
                for n in list(self.worker_spec)
                if not isinstance(w := self.workers.get(n), SiteWorker)
                or (w.popen is not None and not w.alive)
            ]
            if not exited or self.status != Status.running:
                continue
            for n in exited:
                w = self.workers.pop(n, None)
                if isinstance(w, SiteWorker):
                    logger.warning("worker %s exited; starting it again", n)
                    await w.close()  # reaps it; SpecCluster asserts every process it made is closed
            try:
                await self.request_correct_state()  # type: ignore[misc]
            except Exception as e:  # keep watching: the next round retries
                self._keep_directory = True
                logger.error("could not start %s again: %s", ", ".join(exited), e)

    def after_close(self) -> None:
        if self._respawner is not None:
            self._respawner.cancel()
        self._hard_kill()
        if any(p.failed for p in self._processes()):
            self._keep_directory = True
        if self._owns_directory and not self._keep_directory:
            shutil.rmtree(self.local_directory, ignore_errors=True)
        elif self._keep_directory:
            logger.warning("keeping logs of %s in %s", self._name, self.local_directory)

    def _processes(self) -> list[_CLIProcess]:
        procs: list[_CLIProcess] = [w for w in self._created if isinstance(w, _CLIProcess)]
        procs += [w for w in self.workers.values() if isinstance(w, _CLIProcess)]
        if isinstance(self.scheduler, _CLIProcess):
            procs.append(self.scheduler)
        return procs

    def _hard_kill(self) -> None:
        """SIGKILL every process group this cluster started (idempotent)."""
        for proc in self._processes():
            with contextlib.suppress(Exception):
                proc.kill()

    def start_worker(self, site: str) -> Any:
        """Add one worker to ``site`` and return its name once it is connected.

        With ``asynchronous=True``, returns an awaitable.
        """
        if site not in self.site_counts:
            raise KeyError(f"no site {site!r}; sites are {sorted(self.site_counts)}")
        used = set(self.worker_spec) | set(self.workers)
        name = next(f"{site}-{i}" for i in range(len(used) + 1) if f"{site}-{i}" not in used)
        self.worker_spec[name] = self._worker_spec(site, name)

        async def start() -> str:
            await self.request_correct_state()  # type: ignore[misc]
            return name

        return self.sync(start)

    def kill_worker(self, name: str) -> None:
        """SIGKILL worker ``name`` (its whole process group), for failure tests.

        The worker is removed from the cluster's spec so it is not restarted; the
        scheduler notices the loss on its own.

        Raises
        ------
        KeyError
            If there is no worker of that name.
        """
        w = self.workers.get(name)
        if not isinstance(w, SiteWorker):
            raise KeyError(f"no worker named {name!r}; workers are {sorted(self.workers)}")
        logger.info("killing worker %s (pid %s)", name, w.pid)
        w.kill(grace=0)
        self.worker_spec.pop(name, None)
