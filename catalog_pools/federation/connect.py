"""``connect(cat)``: one Dask Gateway cluster per site, as a catalog declares them.

A catalog declares each site's Gateway under ``metadata.sites.<site>.gateway``::

    metadata:
      sites:
        ecmwf:
          roots: [/data/ecmwf]
          gateway:
            address: https://gateway.ecmwf.example          # required
            proxy_address: tls://gateway.ecmwf.example:8786  # optional
            auth: jupyterhub          # or {type: basic, username: ..., password: ...}
            cluster_options: {worker_memory: 4}              # optional
            workers: 2                # or {minimum: 1, maximum: 10} (adaptive)
            cluster: null             # optional: a cluster name to reuse

String values may use ``{{ env("NAME") }}``. A running cluster of the user
whose options include ``cluster_options`` is reused; otherwise a new one is
started (and shut down by :meth:`SiteClients.close`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import dask

from ..engine.sites import validate_site
from ..errors import CatalogError
from .reach import bounded, default_timeout, ensure_workers

__all__ = ["GATEWAY_KEYS", "SiteClients", "connect", "gateway_specs"]

GATEWAY_KEYS = frozenset(
    {"address", "proxy_address", "public_address", "auth", "cluster_options", "workers", "cluster"}
)


class SiteClients(dict[str, Any]):
    """``{site: distributed.Client}`` from :func:`connect`, plus the Gateway clusters behind them.

    Pass it to :func:`catalog_pools.federated`. Use it as a context manager,
    or call :meth:`close`, to close the clients and shut down the clusters
    that :func:`connect` started (reused clusters keep running).
    """

    def __init__(self) -> None:
        super().__init__()
        self.clusters: dict[str, Any] = {}
        self.gateways: dict[str, Any] = {}
        self.created: set[str] = set()

    def close(self) -> None:
        """Close every client; shut down the clusters this object started."""
        for site in list(self):
            self.pop(site).close()
        for site, cluster in list(self.clusters.items()):
            cluster.close(shutdown=site in self.created)
            del self.clusters[site]
        # dask-gateway 2026.3's Gateway.close() fails when called twice and
        # Gateway.__del__ always calls it: let __del__ close each Gateway once.
        self.gateways.clear()
        self.created.clear()

    def __enter__(self) -> SiteClients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _metadata_and_file(cat: Any) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(cat, str | os.PathLike):
        from ..catalog import open_catalog

        cat = open_catalog(cat)
    if isinstance(cat, Mapping):
        return cat, None
    file = getattr(cat, "path", None)
    return getattr(cat, "metadata", None) or {}, file if isinstance(file, str) else None


def gateway_specs(cat: Any) -> dict[str, dict[str, Any]]:
    """``{site: gateway settings}`` declared by a catalog (or its metadata mapping).

    Raises
    ------
    CatalogError
        If a ``gateway`` entry is not a mapping, lacks ``address`` or has unknown keys.
    """
    from intake.catalog.utils import expand_templates

    metadata, file = _metadata_and_file(cat)
    sites = metadata.get("sites") or {}
    out: dict[str, dict[str, Any]] = {}
    for site, declared in sites.items() if isinstance(sites, Mapping) else ():
        spec = declared.get("gateway") if isinstance(declared, Mapping) else None
        if spec is None:
            continue
        where = f"metadata.sites.{site}.gateway"
        if not isinstance(spec, Mapping) or not spec.get("address"):
            raise CatalogError(f"{where} must be a mapping with at least `address:`, got {spec!r}", file)
        unknown = sorted(set(spec) - GATEWAY_KEYS)
        if unknown:
            raise CatalogError(f"{where} has unknown keys {unknown}; known: {sorted(GATEWAY_KEYS)}", file)
        try:
            validate_site(site)
        except ValueError as exc:
            raise CatalogError(f"{exc} (in metadata.sites)", file) from None
        out[site] = expand_templates(dict(spec), {}, getenv=True)
    return out


def _auth(spec: Any) -> Any:
    """A dask-gateway authenticator from a name or ``{type: ..., **kwargs}``."""
    from dask_gateway.auth import get_auth

    if not isinstance(spec, Mapping):
        return get_auth(spec)
    kwargs = dict(spec)
    kind = kwargs.pop("type", None)
    with dask.config.set({"gateway.auth.kwargs": kwargs}):
        return get_auth(kind)


def _cluster(gateway: Any, spec: Mapping[str, Any], taken: set[str]) -> tuple[Any, bool]:
    """Reuse the named or a matching running cluster, else start one; ``(cluster, created)``.

    A cluster named in ``taken`` already serves another site (two sites may
    share one Gateway server) and is not reused for this one.
    """
    if spec.get("cluster"):
        return gateway.connect(spec["cluster"]), False
    options = dict(spec.get("cluster_options") or {})
    for report in gateway.list_clusters(status="running"):
        current = dict(report.options or {})
        if report.name not in taken and all(current.get(k) == v for k, v in options.items()):
            return gateway.connect(report.name), False
    return gateway.new_cluster(shutdown_on_close=True, **options), True


def _open_site(site: str, spec: Mapping[str, Any], timeout: float, out: SiteClients) -> None:
    """Open ``site``'s Gateway, cluster and client into ``out`` (closed by ``out.close()``)."""
    from dask_gateway import Gateway

    out.gateways[site] = gateway = Gateway(
        address=spec["address"],
        proxy_address=spec.get("proxy_address"),
        public_address=spec.get("public_address"),
        auth=_auth(spec.get("auth")),
    )
    cluster, created = _cluster(gateway, spec, {c.name for c in out.clusters.values()})
    out.clusters[site] = cluster
    if created:
        out.created.add(site)
    workers = spec.get("workers", 1)
    if isinstance(workers, Mapping):
        cluster.adapt(**workers)
    else:
        cluster.scale(int(workers))
    out[site] = client = cluster.get_client(set_as_default=False)
    ensure_workers(client, site, timeout)


def connect(cat: Any, sites: Iterable[str] | None = None, timeout: float | str = "120s") -> SiteClients:
    """Open a Dask client on each site's Gateway cluster declared in a catalog.

    Parameters
    ----------
    cat
        A catalog (from :func:`catalog_pools.open_catalog`), its path, or a
        metadata mapping with ``sites.<site>.gateway`` entries.
    sites
        Only these sites (default: every site with a ``gateway``).
    timeout
        Seconds (or a dask time string) for a site's Gateway to start or
        reuse a cluster and give it a worker.

    Returns
    -------
    SiteClients
        ``{site: distributed.Client}``, ready for :func:`catalog_pools.federated`.

    Raises
    ------
    SiteClusterUnavailableError
        A site's Gateway does not answer, or its cluster gets no worker, in time.
    CatalogError
        A requested site has no ``gateway`` entry, or an entry is malformed.

    Examples
    --------
    >>> cat = catalog_pools.open_catalog("catalogs/federated.yaml")  # doctest: +SKIP
    >>> with catalog_pools.connect(cat) as clients, catalog_pools.federated(clients):  # doctest: +SKIP
    ...     diff = (cat.ecmwf.predictions.to_dask().mean("realization") - ...).compute()
    """
    specs = gateway_specs(cat)
    wanted = sorted(specs) if sites is None else sorted(sites)
    missing = [s for s in wanted if s not in specs]
    if missing:
        raise CatalogError(f"no metadata.sites.<site>.gateway for {missing}; declared for {sorted(specs)}")
    seconds = default_timeout(timeout)
    out = SiteClients()
    try:
        for site in wanted:
            spec = specs[site]
            bounded(
                lambda s=site, sp=spec: _open_site(s, sp, seconds, out),  # type: ignore[misc]
                seconds,
                site,
                str(spec["address"]),
                "starting a cluster through its Dask Gateway",
            )
    except BaseException:
        out.close()
        raise
    return out
