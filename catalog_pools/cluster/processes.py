"""``dask scheduler`` and ``dask worker`` processes as :class:`ProcessInterface` s.

Each is a CLI process (``python -m distributed.cli.dask_*``) in its own process
group (:mod:`.procgroups`), optionally behind an argv prefix (``ip netns exec``)
and as a site's Unix user (``runuser``), with its output in a log file.
``distributed.deploy.subprocess`` starts ``dask spec`` processes instead, with
no way to put a prefix or another user in front of them, hence these classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from distributed import Security
from distributed.core import rpc
from distributed.deploy.spec import ProcessInterface

from ..engine.sites import resource_name
from ..errors import ClusterStartError
from .certs import CertFiles
from .procgroups import LIVE_GROUPS, LIVE_LOCK, PREEXEC, find_pid, kill_group, log_tail

logger = logging.getLogger(__name__)

__all__ = ["SiteScheduler", "SiteWorker"]

_SCHEDULER_MODULE = "distributed.cli.dask_scheduler"
_WORKER_MODULE = "distributed.cli.dask_worker"


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
                preexec_fn=PREEXEC,  # noqa: PLW1509 (only prctl, before exec)
            )
        with LIVE_LOCK:
            LIVE_GROUPS[self.popen.pid] = self.popen
        self.pid = self.popen.pid
        self._module = module

    def _resolve_pid(self) -> None:
        if self.popen is not None:
            self.pid = find_pid(self.popen.pid, self._module)

    def _failure(self, what: str) -> ClusterStartError:
        self.failed = True
        return ClusterStartError(
            f"{self.label} {what}; log {self.log_path}, last lines:\n{log_tail(self.log_path)}"
        )

    @property
    def alive(self) -> bool:
        """Whether the process (group leader) is still running."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self, grace: float = 0.0) -> None:
        """Kill the whole process group now (SIGKILL unless ``grace`` > 0)."""
        if self.popen is not None:
            kill_group(self.popen, grace)

    async def close(self) -> None:
        if self.popen is not None:
            await asyncio.get_running_loop().run_in_executor(None, kill_group, self.popen, self.stop_grace)
        await super().close()


def _tls_args(tls: CertFiles | None) -> list[str]:
    return ["--protocol", "tls", *tls.cli_args()] if tls else []


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
        tls: CertFiles | None = None,
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
        tls: CertFiles | None = None,
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
