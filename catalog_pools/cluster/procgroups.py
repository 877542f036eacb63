"""Process groups of a local cluster: start, find, and stop them for sure.

Every process is started in its own session (process group), gets SIGKILL if
the thread that started it dies (Linux ``PR_SET_PDEATHSIG``), and is killed at
interpreter exit if nobody stopped it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_LOG_TAIL_LINES = 40

# Every process group we started and have not reaped yet: killed at interpreter
# exit if a cluster was never closed (e.g. a test run interrupted mid-way).
LIVE_GROUPS: dict[int, subprocess.Popen[bytes]] = {}
LIVE_LOCK = threading.Lock()


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


PREEXEC = _parent_death_hook()


def log_tail(path: Path, n: int = _LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def find_pid(root_pid: int, module: str) -> int:
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


def kill_group(popen: subprocess.Popen[bytes], grace: float) -> None:
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
    with LIVE_LOCK:
        LIVE_GROUPS.pop(pgid, None)


@atexit.register
def _kill_leftovers() -> None:
    with LIVE_LOCK:
        leftovers = list(LIVE_GROUPS.values())
    for popen in leftovers:
        logger.warning("killing leftover cluster process group %d", popen.pid)
        kill_group(popen, grace=0)
