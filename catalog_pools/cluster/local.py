"""A real multi-site Dask cluster on one machine: every process separate.

:class:`LocalSitesCluster` starts the scheduler with the ``dask scheduler`` CLI
(``--preload catalog_pools.preload``) and, for every site, workers with
``dask worker ADDR --resources "pool-<site>=1"``, each in its own OS process and
process group, optionally as the site's Unix user (``runuser``) and behind an argv
prefix such as ``ip netns exec <ns>``. It is a
:class:`distributed.deploy.spec.SpecCluster`, so ``Client(cluster)``,
``client.cluster`` and ``cluster.close()`` behave as usual.

Examples
--------
>>> from distributed import Client
>>> with LocalSitesCluster({"ecmwf": 2, "eumetsat": 2}) as cluster, \\
...         Client(cluster) as client:  # doctest: +SKIP
...     print(cluster.sites)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import html
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from dask.utils import format_bytes
from distributed import Security
from distributed.core import rpc
from distributed.deploy.spec import ProcessInterface, SpecCluster

from ..engine.sites import resource_name, sites_of_resources, validate_site
from ..errors import ClusterStartError
from .isolation import open_to_site_users

logger = logging.getLogger(__name__)

__all__ = ["ClusterStartError", "LocalSitesCluster", "SiteScheduler", "SiteWorker"]

_SCHEDULER_MODULE = "distributed.cli.dask_scheduler"
_WORKER_MODULE = "distributed.cli.dask_worker"
_LOG_TAIL_LINES = 40

# Every process group we started and have not reaped yet: killed at interpreter
# exit if a cluster was never closed (e.g. a test run interrupted mid-way).
_LIVE_GROUPS: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux).

    Covers the one case teardown code cannot: the Python process that started the
    cluster being killed with SIGKILL. Note the kernel ties this to the *thread*
    that forked, here the cluster's event-loop thread, which lives until close.
    SIGKILL, not SIGTERM: a worker closing on SIGTERM while its scheduler
    disappears can hang in distributed's close (a cancelled batched-stream close).
    A worker behind ``runuser`` outlives its killed ``runuser`` only until it
    notices the (also killed) scheduler is gone.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    return hook


_PREEXEC = _parent_death_hook()


def _log_tail(path: Path, n: int = _LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def _find_pid(root_pid: int, module: str) -> int:
    """PID of the Python process running ``module`` in the tree rooted at ``root_pid``.

    ``runuser`` forks the real process as a child; ``ip netns exec`` execs it.
    """
    try:
        root = psutil.Process(root_pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if proc.cmdline()[1:3] == ["-m", module]:
                    return proc.pid
    except psutil.Error:
        pass
    return root_pid


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_group(popen: subprocess.Popen[bytes], grace: float) -> None:
    """Stop the process group of ``popen``: SIGTERM, then SIGKILL after ``grace`` s.

    Descendants are collected first and killed one by one as well, in case one of
    them left the process group.
    """
    pgid = popen.pid  # start_new_session=True: the leader's pid is the group id
    children = _descendants(popen.pid)
    if popen.poll() is None and grace > 0:
        try:
            leader = psutil.Process(popen.pid).name()
        except psutil.Error:
            leader = ""
        if leader == "runuser" and children:
            # Signal the Dask processes only, not runuser: it would forward a
            # second SIGTERM and then sleep 2 s before exiting.
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.terminate()
            _, children = psutil.wait_procs(children, timeout=grace)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=grace)
            _, children = psutil.wait_procs(children, timeout=0.5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=10)
    psutil.wait_procs(children, timeout=5)
    with _LIVE_LOCK:
        _LIVE_GROUPS.pop(pgid, None)


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE_GROUPS.values())
    for popen in leftovers:
        logger.warning("killing leftover cluster process group %d", popen.pid)
        _kill_group(popen, grace=0)


class _CLIProcess(ProcessInterface):
    """A Dask CLI process in its own process group, output to a log file."""

    popen: subprocess.Popen[bytes] | None
    pid: int | None

    def __init__(
        self,
        *,
        label: str,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path,
        startup_timeout: float,
        stop_grace: float = 3.0,
    ) -> None:
        self.label = label
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.popen = None
        self.pid = None
        self.failed = False
        super().__init__()

    def _spawn(self, argv: Sequence[str], module: str) -> None:
        logger.debug("starting %s: %s", self.label, " ".join(argv))
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_PREEXEC,
            )
        with _LIVE_LOCK:
            _LIVE_GROUPS[self.popen.pid] = self.popen
        self.pid = self.popen.pid
        self._module = module

    def _resolve_pid(self) -> None:
        if self.popen is not None:
            self.pid = _find_pid(self.popen.pid, self._module)

    def _failure(self, what: str) -> ClusterStartError:
        self.failed = True
        return ClusterStartError(
            f"{self.label} {what}; log {self.log_path}, last lines:\n{_log_tail(self.log_path)}"
        )

    @property
    def alive(self) -> bool:
        """Whether the process (group leader) is still running."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self, grace: float = 0.0) -> None:
        """Kill the whole process group now (SIGKILL unless ``grace`` > 0)."""
        if self.popen is not None:
            _kill_group(self.popen, grace)

    async def close(self) -> None:
        if self.popen is not None:
            await asyncio.get_running_loop().run_in_executor(None, _kill_group, self.popen, self.stop_grace)
        await super().close()


def _tls_args(tls: Mapping[str, str] | None) -> list[str]:
    if not tls:
        return []
    return [
        "--protocol",
        "tls",
        "--tls-ca-file",
        tls["ca"],
        "--tls-cert",
        tls["cert"],
        "--tls-key",
        tls["key"],
    ]


class SiteScheduler(_CLIProcess):
    """``python -m distributed.cli.dask_scheduler`` in its own process.

    Used as the scheduler spec of :class:`LocalSitesCluster`; not normally created
    directly.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        directory: str,
        env: Mapping[str, str],
        preload: Sequence[str] = ("catalog_pools.preload",),
        dashboard: bool = False,
        prefix: Sequence[str] = (),
        tls: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60,
    ) -> None:
        d = Path(directory)
        super().__init__(
            label="scheduler",
            log_path=d / "logs" / "scheduler.log",
            env=env,
            cwd=d,
            startup_timeout=startup_timeout,
        )
        self.scheduler_file = d / "scheduler.json"
        argv = [
            *prefix,
            sys.executable,
            "-m",
            _SCHEDULER_MODULE,
            "--host",
            host,
            "--port",
            str(port),
            "--scheduler-file",
            str(self.scheduler_file),
        ]
        for mod in preload:
            argv += ["--preload", mod]
        argv += ["--dashboard-address", ":0"] if dashboard else ["--no-dashboard"]
        self.argv = [*argv, *_tls_args(tls), *extra_args]

    async def start(self) -> None:
        import json

        self.scheduler_file.unlink(missing_ok=True)
        self._spawn(self.argv, _SCHEDULER_MODULE)
        assert self.popen is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.popen.poll() is not None:
                raise self._failure(f"exited with code {self.popen.returncode} before listening")
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                break
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"did not start within {self.startup_timeout} s")
            await asyncio.sleep(0.05)
        self._resolve_pid()
        logger.info("scheduler %s (pid %s)", self.address, self.pid)
        await super().start()


class SiteWorker(_CLIProcess):
    """``python -m distributed.cli.dask_worker`` for one site, in its own process.

    ``start`` returns once the scheduler lists a worker of this name.
    """

    def __init__(
        self,
        scheduler: str,
        *,
        name: str,
        site: str,
        directory: str,
        env: Mapping[str, str],
        nthreads: int = 1,
        memory_limit: str | int = "2GiB",
        host: str = "127.0.0.1",
        user: str | None = None,
        prefix: Sequence[str] = (),
        nanny: bool = False,
        tls: Mapping[str, str] | None = None,
        security: Security | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60,
    ) -> None:
        d = Path(directory)
        self.name = name
        self.site = site
        self.user = user
        self.scheduler = scheduler
        self.security = security or Security()
        self.local_directory = d / "workers" / name
        super().__init__(
            label=f"worker {name} (site {site}{', user ' + user if user else ''})",
            log_path=d / "logs" / f"{name}.log",
            env=env,
            cwd=self.local_directory,
            startup_timeout=startup_timeout,
        )
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        runas = [runuser or "runuser", "-u", user, "--"] if user else []
        self.argv = [
            *prefix,
            *runas,
            sys.executable,
            "-m",
            _WORKER_MODULE,
            scheduler,
            "--name",
            name,
            "--resources",
            f"{resource_name(site)}=1",
            "--nthreads",
            str(nthreads),
            "--memory-limit",
            str(memory_limit),
            "--host",
            host,
            "--local-directory",
            str(self.local_directory),
            "--no-dashboard",
            "--nanny" if nanny else "--no-nanny",
            # A worker whose scheduler vanished (test process killed hard) exits.
            "--death-timeout",
            str(max(30, int(startup_timeout))),
            *_tls_args(tls),
            *extra_args,
        ]

    async def start(self) -> None:
        self.local_directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.local_directory, pw.pw_uid, pw.pw_gid)
        self._spawn(self.argv, _WORKER_MODULE)
        assert self.popen is not None
        deadline = time.monotonic() + self.startup_timeout
        comm = rpc(self.scheduler, connection_args=self.security.get_connection_args("client"))
        try:
            while self.address is None:
                if self.popen.poll() is not None:
                    raise self._failure(
                        f"exited with code {self.popen.returncode} before connecting to "
                        f"the scheduler {self.scheduler}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise self._failure(
                        f"did not connect to the scheduler {self.scheduler} within {self.startup_timeout} s"
                    )
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    ident = await asyncio.wait_for(comm.identity(n_workers=-1), 5)
                    for addr, info in ident["workers"].items():
                        if str(info.get("name")) == self.name:
                            self.address = addr
                if self.address is None:
                    await asyncio.sleep(0.1)
        finally:
            await comm.close_rpc()
        self._resolve_pid()
        logger.info("%s at %s (pid %s)", self.label, self.address, self.pid)
        await super().start()


def _is_pem(value: str) -> bool:
    return "-----BEGIN" in value


def _write_tls_files(directory: Path, security: Security | None) -> tuple[Security, dict[str, str]]:
    """Certificate files the CLI processes can read, and the matching ``Security``.

    ``security=None`` makes a temporary self-signed certificate with ``openssl``
    (used as CA, scheduler, worker and client certificate).
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    if security is None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("security=True needs the 'openssl' command to make certificates")
        cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=catalog-pools-local",
            ],
            check=True,
            capture_output=True,
        )
        for p in (cert, key):
            # Site users run the workers; all processes here belong to one test run.
            p.chmod(0o644)
        files = {"ca": str(cert), "cert": str(cert), "key": str(key)}
        sec = Security(
            tls_ca_file=files["ca"],
            tls_client_cert=files["cert"],
            tls_client_key=files["key"],
            require_encryption=True,
        )
        return sec, files

    def as_file(value: str | None, fname: str) -> str | None:
        if value is None or not _is_pem(value):
            return value
        path = directory / fname
        path.write_text(value)
        path.chmod(0o644)
        return str(path)

    ca = as_file(security.tls_ca_file, "ca.pem")
    cert = as_file(
        security.tls_worker_cert or security.tls_scheduler_cert or security.tls_client_cert, "cert.pem"
    )
    key = as_file(security.tls_worker_key or security.tls_scheduler_key or security.tls_client_key, "key.pem")
    if not (ca and cert):
        raise ValueError("security must give at least tls_ca_file and a certificate")
    # The key may be inside the certificate file.
    return security, {"ca": ca, "cert": cert, "key": key or cert}


class LocalSitesCluster(SpecCluster):
    """A Dask cluster of several sites on this machine, every process separate.

    The scheduler runs ``dask scheduler --preload catalog_pools.preload``; each
    site gets ``n`` workers started as
    ``dask worker ADDR --resources "pool-<site>=1" --name <site>-<i>``. Construction
    returns once every worker is connected.

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
        (``workers/<name>``, owned by the worker's user) and certificates. A
        temporary directory by default, removed on a clean close and kept when
        something failed. It must be enterable by the site users.
    security
        ``True``: temporary self-signed certificates (``openssl``) written to files
        the site users can read, and ``tls://`` everywhere. A
        :class:`distributed.Security` with ``tls_ca_file`` and certificates: used
        for the processes and for clients. ``None``/``False``: plain TCP.
    nanny
        Start workers under a nanny (two processes per worker). Off by default:
        faster start-up, and ``kill_worker`` kills the worker itself.
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
        nanny: bool = False,
        preload: Sequence[str] = ("catalog_pools.preload",),
        worker_extra_args: Sequence[str] = (),
        scheduler_extra_args: Sequence[str] = (),
        startup_timeout: float = 60,
        asynchronous: bool = False,
        loop: Any = None,
        name: str | None = None,
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

        tls: dict[str, str] | None = None
        sec: Security
        if security is True:
            sec, tls = _write_tls_files(d / "tls", None)
        elif isinstance(security, Security) and (security.require_encryption or security.tls_ca_file):
            sec, tls = _write_tls_files(d / "tls", security)
        elif isinstance(security, Security):
            sec = security
        else:
            sec = Security()

        proc_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._tls = tls
        scheduler = {
            "cls": SiteScheduler,
            "options": {
                "host": host,
                "port": scheduler_port,
                "directory": str(d),
                "env": proc_env,
                "preload": list(preload),
                "dashboard": dashboard,
                "prefix": list(scheduler_prefix or ()),
                "tls": tls,
                "extra_args": list(scheduler_extra_args),
                "startup_timeout": startup_timeout,
            },
        }
        workers: dict[str, dict[str, Any]] = {}
        for site, n in self.site_counts.items():
            for i in range(n):
                wname = f"{site}-{i}"
                workers[wname] = {
                    "cls": SiteWorker,
                    "options": {
                        "name": wname,
                        "site": site,
                        "directory": str(d),
                        "env": proc_env,
                        "nthreads": threads_per_worker,
                        "memory_limit": memory_limit,
                        "host": self.worker_hosts.get(site, host),
                        "user": self.users.get(site),
                        "prefix": self.prefixes.get(site, []),
                        "nanny": nanny,
                        "tls": tls,
                        "security": sec,
                        "extra_args": list(worker_extra_args),
                        "startup_timeout": startup_timeout,
                    },
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

    # ---- start / stop -------------------------------------------------------------

    async def _correct_state_internal(self) -> None:
        try:
            await super()._correct_state_internal()
        except Exception:
            self._keep_directory = True
            raise
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

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
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

    # ---- introspection ------------------------------------------------------------

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
        for site, addrs in self.sites.items():
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
