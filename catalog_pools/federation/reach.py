"""Reaching a federated site's cluster, and noticing when it is gone.

Every wait here is bounded by the ``catalog_pools.no-worker-timeout`` (or the
``timeout`` given to :func:`catalog_pools.federated`), and every failure
raises :class:`~catalog_pools.errors.SiteClusterUnavailableError` naming the
site, instead of distributed's retries or a silent hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dask

from ..errors import SiteClusterUnavailableError

T = TypeVar("T")

#: Seconds between checks of a site's workers while waiting for its results.
POLL = 0.5


def default_timeout(timeout: float | str | None = None) -> float:
    """``timeout`` in seconds, else the ``catalog_pools.no-worker-timeout`` setting."""
    if timeout is None:
        timeout = dask.config.get("catalog_pools.no-worker-timeout", "10s") or "10s"
    return float(dask.utils.parse_timedelta(timeout, default="s"))


def address_of(client: Any) -> str | None:
    """The scheduler address of a ``distributed.Client`` (``None`` if unknown)."""
    scheduler = getattr(client, "scheduler", None)
    return getattr(scheduler, "address", None)


def bounded(call: Callable[[], T], timeout: float, site: str, address: str | None, doing: str) -> T:
    """Run a blocking call in a daemon thread; give up after ``timeout`` seconds.

    distributed retries a dead or silent scheduler for its own connect timeout
    (30 s by default) whatever timeout the caller asked for; a daemon thread
    lets the caller stop waiting on time without keeping the process alive.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"catalog-pools-reach-{site}", daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise SiteClusterUnavailableError(site, f"did not answer while {doing}", address, timeout)
    if "error" in box:
        error = box["error"]
        if isinstance(error, SiteClusterUnavailableError):
            raise error
        raise SiteClusterUnavailableError(
            site,
            f"failed while {doing}: {type(error).__name__}: {error}",
            address,
            round(time.monotonic() - start, 1),
        ) from error
    return box["value"]


def open_client(site: str, address: str, timeout: float) -> Any:
    """A ``distributed.Client`` on ``address``, or an error naming ``site``."""
    from distributed import Client

    return bounded(
        lambda: Client(address, timeout=timeout, set_as_default=False),
        timeout + 1.0,
        site,
        address,
        "connecting",
    )


def n_workers(client: Any) -> int:
    """Number of workers connected to ``client``'s scheduler (asks the scheduler)."""
    return len(client.scheduler_info(n_workers=-1)["workers"])


def ensure_workers(client: Any, site: str, timeout: float) -> None:
    """Return once ``site``'s scheduler answers and has a worker; raise after ``timeout``."""
    address = address_of(client)
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(deadline - time.monotonic(), 0.1)
        if bounded(lambda: n_workers(client), remaining, site, address, "asked for its workers"):
            return
        if time.monotonic() >= deadline:
            raise SiteClusterUnavailableError(site, "has no workers", address, timeout)
        time.sleep(min(POLL, remaining))


def wait_site(client: Any, site: str, futures: Sequence[Any], timeout: float) -> None:
    """Wait for ``futures`` of ``site``; raise if the site has had no worker for ``timeout`` s.

    A site that loses some workers recovers as distributed does (its tasks are
    rerun on the others); only a site left without any worker, or whose
    scheduler stops answering, fails.
    """
    address = address_of(client)
    empty_since: float | None = None
    while True:
        checked = time.monotonic()
        while time.monotonic() - checked < POLL:
            if all(f.done() for f in futures):
                return
            time.sleep(0.02)
        if bounded(lambda: n_workers(client), timeout, site, address, "asked for its workers"):
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since > timeout:
            raise SiteClusterUnavailableError(site, "has no workers left", address, timeout)
