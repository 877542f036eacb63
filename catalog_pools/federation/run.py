"""``federated(clients)``: one computation over several site clusters.

Each site runs its own Dask cluster (a Gateway cluster, or ``dask scheduler`` +
``dask worker``); the clusters need not reach each other. The coordinating
process (where ``.compute()`` is called) optimizes the graph with the pooled
optimizer, splits it by site (:mod:`.split`), runs each site's part on that
site's cluster, and carries every value one site needs from another: gathered
from the source once, scattered to each destination once. Only those values
and the results pass through the coordinator; bulk data stays where it is.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import CancelledError
from types import TracebackType
from typing import Any, cast

import dask
from dask.core import flatten
from dask.sizeof import sizeof

from ..engine.sites import validate_site
from ..errors import SiteClusterUnavailableError
from ..traffic.report import Traffic, Transfer
from .membership import join_site
from .reach import address_of, default_timeout, ensure_workers, open_client, wait_site
from .split import COORDINATOR, Plan, materialize, plan, read_pins

Key = Hashable

__all__ = ["federated", "federated_get"]

#: ``federated`` blocks entered and not yet left, innermost last.
_active: list[federated] = []


def federated_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """The dask scheduler a ``with federated(...)`` block puts in dask config.

    A module-level function rather than the ``federated`` object itself:
    dask config is copied into new worker processes (a nanny restarting a
    worker pickles it), and the object holds live clients. Outside any block
    (such a copy, in a worker) it runs the graph with dask's threaded scheduler.
    """
    if not _active:
        from dask.threaded import get

        return get(dsk, keys, **kwargs)
    return _active[-1](dsk, keys, **kwargs)


class federated:  # noqa: N801 - used like a function / context manager, as dask's schedulers
    """Run dask computations across one cluster per site.

    Use it as a context manager (every ``.compute()`` / ``dask.compute`` in
    the block is federated) or as a dask scheduler
    (``dask.compute(x, scheduler=federated(clients))``).

    Parameters
    ----------
    clients
        ``{site: distributed.Client or scheduler address}``. Clients given by
        address are opened (and closed on exit) by this object.
    timeout
        Seconds (or a dask time string) to wait for a site's scheduler to
        answer or for a worker to appear; default: dask config
        ``catalog_pools.no-worker-timeout``.
    direct
        Let a destination site's workers pull each crossing value from the
        source site's scheduler (:mod:`.direct`), so it crosses once instead of
        through the coordinator. Needs site clusters that reach each other's
        schedulers (not Gateway proxies). Results still come to the coordinator.

    Attributes
    ----------
    traffic : catalog_pools.traffic.Traffic
        Everything moved through the coordinator since this object was made:
        ``by_site_pair[(source, destination)]`` bytes (``"client"`` stands for
        the coordinator: results, and inputs of tasks run there),
        ``cross_site_bytes``, ``client_bytes``, ``tasks_by_site``.
    runs : list of Traffic
        One report per computation.

    Raises
    ------
    SiteClusterUnavailableError
        A site's cluster does not answer, or has no worker, within ``timeout``;
        or the graph needs a site missing from ``clients``.

    Examples
    --------
    >>> clients = {"ecmwf": Client(addr_a), "eumetsat": Client(addr_b)}  # doctest: +SKIP
    >>> with catalog_pools.federated(clients) as fed:  # doctest: +SKIP
    ...     diff = (pred.mean("realization").isel(height=10) - obs).compute()
    >>> fed.traffic.by_site_pair  # doctest: +SKIP
    {('eumetsat', 'ecmwf'): 20736, ('ecmwf', 'client'): 20736}
    """

    def __init__(
        self, clients: Mapping[str, Any], timeout: float | str | None = None, direct: bool = False
    ) -> None:
        self.timeout = default_timeout(timeout)
        self.direct = direct
        self.clients: dict[str, Any] = {}
        self._owned: list[Any] = []
        try:
            for site, given in clients.items():
                validate_site(site)
                if isinstance(given, str):
                    given = open_client(site, given, self.timeout)  # noqa: PLW2901
                    self._owned.append(given)
                self.clients[site] = given
        except BaseException:
            self.close()
            raise
        self.traffic = Traffic()
        self.runs: list[Traffic] = []
        self._config: Any = None
        self._joined: set[str] = set()

    def __repr__(self) -> str:
        return f"federated({sorted(self.clients)})"

    def __enter__(self) -> federated:
        try:
            self.check(self.clients)
        except BaseException:
            self.close()
            raise
        _active.append(self)
        self._config = dask.config.set(scheduler=federated_get)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._config is not None:
            self._config.__exit__(exc_type, exc, tb)
            self._config = None
        if self in _active:
            _active.remove(self)
        self.close()

    def close(self) -> None:
        """Close the clients this object opened from addresses."""
        while self._owned:
            self._owned.pop().close()

    def check(self, sites: Iterable[str]) -> None:
        """Raise :class:`SiteClusterUnavailableError` for the first listed site that is unusable."""
        for site in sorted(sites):
            if site not in self.clients:
                raise SiteClusterUnavailableError(
                    site,
                    f"is not among the federated clients {sorted(self.clients)}; pass "
                    f"federated({{{site!r}: Client(...), ...}}) or declare "
                    f"metadata.sites.{site}.gateway in the catalog",
                )
            ensure_workers(self.clients[site], site, self.timeout)
            if site not in self._joined:
                join_site(self.clients[site], site)
                self._joined.add(site)

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Dask scheduler entry point: compute ``keys`` of ``dsk`` federated."""
        graph, pins = _graph_and_pins(dsk)
        outputs = list(flatten(keys)) if isinstance(keys, list) else [keys]
        p = plan(graph, pins, outputs)
        self.check(p.sites)
        run = _Run(self, p)
        try:
            values = run.execute()
        finally:
            run.release()
            self._record(run.traffic)
        return _pack(keys, values)

    def _record(self, t: Traffic) -> None:
        self.runs.append(t)
        total = self.traffic
        total.transfers.extend(t.transfers)
        for pair, n in t.by_site_pair.items():
            total.by_site_pair[pair] = total.by_site_pair.get(pair, 0) + n
        for site, n in t.tasks_by_site.items():
            total.tasks_by_site[site] = total.tasks_by_site.get(site, 0) + n
        total.task_sites.update(t.task_sites)
        total.wall_time = (0.0 if total.wall_time != total.wall_time else total.wall_time) + t.wall_time


def _graph_and_pins(dsk: Any) -> tuple[dict[Key, Any], dict[Key, str]]:
    """The low-level graph and its pins, from what dask passes to a scheduler."""
    from dask.highlevelgraph import HighLevelGraph

    if hasattr(dsk, "__dask_graph__") and hasattr(dsk, "__dask_annotations__"):
        graph, annotations = materialize(dsk)
        return graph, read_pins(annotations)
    if isinstance(dsk, HighLevelGraph):
        by_type: dict[str, dict[Key, Any]] = defaultdict(dict)
        for layer in dsk.layers.values():
            for name, value in (layer.annotations or {}).items():
                by_type[name].update({k: value(k) if callable(value) else value for k in layer})
        return cast(dict[Key, Any], dict(dsk)), read_pins(by_type)
    return dict(dsk), {}


def _pack(keys: Any, values: Mapping[Key, Any]) -> Any:
    if isinstance(keys, list):
        return [_pack(k, values) for k in keys]
    return values[keys]


class _Run:
    """One federated computation: stage by stage, sites in parallel within a stage."""

    def __init__(self, fed: federated, p: Plan) -> None:
        self.fed, self.plan = fed, p
        self.held: dict[str, dict[Key, Any]] = defaultdict(dict)  # site -> key -> Future
        self.values: dict[Key, Any] = {}  # values in the coordinator
        self.delivered: set[tuple[Key, str]] = set()
        self.traffic = Traffic(started=time.time())
        self.traffic.tasks_by_site = dict(Counter(p.location.values()))
        self.traffic.task_sites = dict(p.location)
        self.traffic.workers_by_site = {
            s: sorted(self.fed.clients[s].scheduler_info(n_workers=-1)["workers"]) for s in p.sites
        }
        self._start = time.perf_counter()

    def execute(self) -> dict[Key, Any]:
        p = self.plan
        for stage in range(p.n_stages):
            batch = p.batch(stage)
            # A site starts as soon as its own inputs have arrived; the
            # coordinator's part runs last, while the sites compute.
            for location, tasks in sorted(batch.items()):
                if location != COORDINATOR:
                    self.deliver(p.imports(tasks, location), location)
                    self.submit(location, tasks)
            if COORDINATOR in batch:
                tasks = batch[COORDINATOR]
                self.deliver(p.imports(tasks, COORDINATOR), COORDINATOR)
                self.run_here(tasks)
        self.deliver(set(p.outputs), COORDINATOR)
        return {k: self.values[k] for k in p.outputs}

    def submit(self, site: str, tasks: dict[Key, Any]) -> None:
        keep = sorted(self.plan.kept(tasks), key=str)
        # The tasks carry no annotations (those stay in the coordinator), so
        # they need no pool-<site> resource on the site's workers.
        futures = self.fed.clients[site].get(tasks, keep, sync=False)
        self.held[site].update(zip(keep, futures, strict=True))

    def run_here(self, tasks: dict[Key, Any]) -> None:
        from dask.threaded import get

        keep = sorted(self.plan.kept(tasks), key=str)
        inputs = {k: self.values[k] for k in self.plan.imports(tasks, COORDINATOR)}
        self.values.update(zip(keep, get(tasks, cast(Any, keep), cache=inputs), strict=True))

    def fetch(self, site: str, keys: list[Key]) -> None:
        """Gather ``keys`` from ``site`` into the coordinator (each key once per run)."""
        keys = [k for k in keys if k not in self.values]
        if not keys:
            return
        client = self.fed.clients[site]
        futures = [self.held[site][k] for k in keys]
        wait_site(client, site, futures, self.fed.timeout)
        try:
            got = client.gather(futures)
        except CancelledError as exc:
            raise SiteClusterUnavailableError(
                site, f"lost its results ({exc})", address_of(client), self.fed.timeout
            ) from exc
        self.values.update(zip(keys, got, strict=True))

    def deliver(self, keys: set[Key], dest: str) -> None:
        """Make ``keys`` available at ``dest``, moving each through the coordinator."""
        by_source: dict[str, list[Key]] = defaultdict(list)
        for key in sorted(keys, key=str):
            source = self.plan.location[key]
            if (key, dest) not in self.delivered:
                by_source[source].append(key)
        for source, group in sorted(by_source.items()):
            start = time.time()
            if self.fed.direct and COORDINATOR not in (source, dest):
                nbytes = self.pull(source, dest, group)
            else:
                if source != COORDINATOR:
                    self.fetch(source, group)
                if dest != COORDINATOR:
                    data = {k: self.values[k] for k in group}
                    futures = self.fed.clients[dest].scatter(data, hash=False)
                    self.held[dest].update(futures)
                nbytes = sum(int(sizeof(self.values[k])) for k in group)
            self.delivered.update((k, dest) for k in group)
            if source != dest:
                self._count(source, dest, group, nbytes, start)

    def pull(self, source: str, dest: str, keys: list[Key]) -> int:
        """Have ``dest``'s workers pull ``keys`` from ``source``'s scheduler; return their bytes."""
        from .direct import pick, pull

        src, dst, timeout = self.fed.clients[source], self.fed.clients[dest], self.fed.timeout
        futures = [self.held[source][k] for k in keys]
        wait_site(src, source, futures, timeout)
        failed = [f for f in futures if f.status == "error"]
        if failed:
            src.gather(failed)  # raises the task's own exception
        nbytes = sum(src.nbytes(keys=keys, summary=False).values())
        dataset = f"catalog-pools-federated-{uuid.uuid4().hex}"
        src.publish_dataset(**{dataset: futures})
        try:
            pulled = dst.submit(pull, address_of(src), dataset, timeout, pure=False)
            wait_site(dst, dest, [pulled], timeout)
        finally:
            src.unpublish_dataset(dataset)
        if pulled.status == "error":
            raise SiteClusterUnavailableError(
                dest, f"could not pull values from site {source!r}: {pulled.exception()!r}", address_of(dst)
            )
        for i, key in enumerate(keys):
            self.held[dest][key] = dst.submit(pick, pulled, i, key=key, pure=False)
        self.held[dest][pulled.key] = pulled
        return int(nbytes)

    def _count(self, source: str, dest: str, keys: list[Key], nbytes: int, start: float) -> None:
        t = self.traffic
        t.by_site_pair[source, dest] = t.by_site_pair.get((source, dest), 0) + nbytes
        src = address_of(self.fed.clients.get(source)) or source
        dst = None if dest == COORDINATOR else address_of(self.fed.clients[dest])
        t.transfers.append(Transfer(source, dest, nbytes, len(keys), src, dst, start, time.time()))

    def release(self) -> None:
        """Drop this run's futures on every site (also after a failure); stop the clock."""
        self.traffic.wall_time = time.perf_counter() - self._start
        for futures in self.held.values():
            for future in futures.values():
                future.release()
        self.held.clear()
