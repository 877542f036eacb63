"""Replicas: one dataset held at several sites (``metadata.replicas``).

.. code-block:: yaml

    predictions:
      driver: site_zarr
      args: {urlpath: /data/ecmwf/predictions.zarr}
      metadata:
        site: ecmwf                          # the primary copy
        replicas:                            # other sites: args overrides
          eumetsat: {urlpath: "s3://eumetsat-mirror/predictions.zarr", storage_options: {anon: true}}

The dataset is opened once, from the first copy this process can read (or on a
worker of a replica site). Its load tasks carry every replica site (annotation
:data:`~catalog_pools.engine.sites.REPLICAS`); the optimizer picks the site
per computation and the scheduler plugin moves them when that site has no
worker left. A load reads through a :class:`ReplicaStore`, which opens the
copy of the site of the worker running it, and refuses to run elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from ..engine.guard import current_site
from ..engine.sites import REPLICAS, validate_site
from ..errors import CatalogError, ForeignSiteError
from .urls import local_path, normalized_url

#: Arguments a replica may override (the rest is the primary entry's).
REPLICA_ARGS = ("urlpath", "storage_options")

#: site -> (urlpath, storage_options) of each copy, the primary first.
Copies = dict[str, tuple[str, dict[str, Any]]]


def parse_replicas(
    replicas: Any,
    primary: str | None,
    driver: str,
    urlpath: Any,
    storage_options: Mapping[str, Any] | None,
    error: Any,
) -> Copies:
    """Every copy of an entry, primary first, from its ``metadata.replicas``.

    ``error(problem)`` builds the :class:`CatalogError` naming the file and entry.
    """
    if not isinstance(replicas, Mapping) or not replicas:
        raise error(
            "metadata.replicas must map each other site holding a copy to its argument "
            'overrides, e.g. `replicas: {eumetsat: {urlpath: "s3://mirror/data.zarr"}}`; '
            f"got {replicas!r}"
        )
    if primary is None:
        raise error("metadata.replicas needs the primary copy's site (`site: <name>`), not `site: null`")
    if driver != "site_zarr":
        raise error(f"replicas are supported for site_zarr (zarr stores) only, not {driver}")
    if not isinstance(urlpath, str):
        raise error(f"a replicated entry's urlpath must be one store, got {urlpath!r}")
    copies: Copies = {primary: (normalized_url(urlpath), dict(storage_options or {}))}
    for site, override in replicas.items():
        try:
            validate_site(site)
        except ValueError as exc:
            raise error(f"metadata.replicas: {exc}") from None
        if site == primary:
            raise error(f"metadata.replicas names the primary site {site!r}; list only the other sites")
        copies[site] = _replica_copy(site, override, urlpath, storage_options, error)
    return copies


def _replica_copy(
    site: str, override: Any, urlpath: str, storage_options: Mapping[str, Any] | None, error: Any
) -> tuple[str, dict[str, Any]]:
    if not isinstance(override, Mapping) or not isinstance(override.get("urlpath"), str):
        raise error(
            f"metadata.replicas.{site} must be a mapping with the copy's `urlpath:` (and optionally "
            f"`storage_options:`), got {override!r}"
        )
    unknown = sorted(set(override) - set(REPLICA_ARGS))
    if unknown:
        raise error(
            f"metadata.replicas.{site} overrides {unknown}; a replica may only override {list(REPLICA_ARGS)}"
        )
    so = override.get("storage_options", storage_options)
    if so is not None and not isinstance(so, Mapping):
        raise error(f"metadata.replicas.{site}.storage_options must be a mapping, got {so!r}")
    url = override["urlpath"]
    if so and "storage_options" in override and local_path(url) is not None:
        raise error(f"metadata.replicas.{site}: storage_options were given for the local path {url}")
    if url == urlpath and "storage_options" not in override:
        raise error(f"metadata.replicas.{site} has the primary's urlpath {url}; give the copy's own path")
    return normalized_url(url), dict(so or {}) if local_path(url) is None else {}


def make_store(urlpath: str, storage_options: Mapping[str, Any]) -> Any:
    """A read-only zarr store for one copy."""
    path = local_path(urlpath)
    if path is not None:
        return LocalStore(path, read_only=True)
    return FsspecStore.from_url(urlpath, storage_options=dict(storage_options), read_only=True)


class ReplicaStore(WrapperStore[Any]):
    """A zarr store that reads the copy of the site it runs in.

    On a worker, the copy of the worker's site (certified sites only, with
    TLS); a worker of no replica site raises
    :class:`~catalog_pools.errors.ForeignSiteError` before reading anything.
    Outside a worker (the client), the copy ``here``.
    """

    def __init__(self, copies: Copies, here: str) -> None:
        self.copies = {site: (url, dict(so)) for site, (url, so) in copies.items()}
        self.here = here
        self._stores: dict[str, Any] = {}

    def site(self) -> str:
        """The site whose copy this process reads."""
        running = current_site()
        if running is None:
            return self.here
        worker, sites = running
        for site in sites:
            if site in self.copies:
                return site
        raise ForeignSiteError(next(iter(self.copies)), worker, sites)

    @property
    def _store(self) -> Any:
        site = self.site()
        store = self._stores.get(site)
        if store is None:
            store = self._stores[site] = make_store(*self.copies[site])
        return store

    def _with_store(self, store: Any) -> ReplicaStore:
        return ReplicaStore(self.copies, self.here)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReplicaStore, (self.copies, self.here))

    def __dask_tokenize__(self) -> Any:
        return ("ReplicaStore", sorted((s, u, sorted(so.items())) for s, (u, so) in self.copies.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplicaStore) and other.copies == self.copies

    def __hash__(self) -> int:
        return hash(tuple(self.copies))

    def __repr__(self) -> str:
        return f"ReplicaStore({', '.join(f'{s}: {u}' for s, (u, _) in self.copies.items())})"


def open_replicated(copies: Copies, chunks: Any, xarray_kwargs: dict[str, Any]) -> Any:
    """Open a replicated zarr dataset lazily from the first copy readable here.

    On a worker, only the copy of the worker's site is tried. Its load tasks
    are annotated with every replica site (:data:`~catalog_pools.engine.sites.REPLICAS`).
    Raises the last copy's error when no copy can be read here (``OSError``,
    or a connection error of an fsspec backend).
    """
    import xarray as xr

    from .opening import _unreadable

    running = current_site()
    order = list(copies) if running is None else [s for s in running[1] if s in copies][:1]
    error: BaseException | None = None
    for site in order:
        store = ReplicaStore(copies, site)
        try:
            with dask.annotate(**{REPLICAS: tuple(copies)}):
                return xr.open_dataset(store, engine="zarr", chunks=chunks, **xarray_kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            if not _unreadable(exc):  # not "cannot be read from here": a real problem
                raise
            error = exc
    if error is None:
        raise PermissionError(f"this worker serves none of the replica sites {sorted(copies)}")
    raise error


def source_copies(source: Any) -> Copies:
    """The copies of a :class:`~catalog_pools.catalog.sources.SiteXarraySource`; ``{}`` if not replicated.

    Raises :class:`CatalogError` (file and entry named) for a malformed
    ``metadata.replicas``, or a replica whose urlpath lies under another
    site's root (``metadata.sites``).
    """
    declared = getattr(source, "_declared", {}) or {}
    if "replicas" not in declared:
        return {}
    from .siting import _root_site

    copies = parse_replicas(
        rendered(declared["replicas"], source.cat),
        source.site,
        type(source).name,
        source.urlpath,
        source.storage_options,
        source._error,
    )
    for site, (url, so) in list(copies.items())[1:]:
        root = _root_site(url, so, source.cat, source.catalog_file, source.label)
        if root is not None and root != site:
            raise source._error(f"metadata.replicas.{site}: {url} lies under a root of site {root!r}")
    return copies


def open_copies(source: Any, opener: Any, kwargs: Mapping[str, Any], open_on: str, what: str) -> Any:
    """Open an entry with ``opener(**kwargs)`` under ``pool(site)`` (see :func:`.opening.open_pinned`).

    A replicated entry is opened here if any copy is readable, else on a
    worker of a replica site, tried in order (primary first): a site with no
    worker, or whose copy is unreadable, passes to the next.
    """
    from ..errors import DataNotFoundError
    from .opening import open_pinned

    copies = source_copies(source)
    if not copies:
        return open_pinned(
            opener,
            kwargs,
            site=source.site,
            open_on=open_on,
            what=what,
            file=source.catalog_file,
            entry=source.label,
        )
    args = {"copies": copies, "chunks": kwargs["chunks"], "xarray_kwargs": kwargs["xarray_kwargs"]}
    problems: list[str] = []
    for i, site in enumerate(copies):
        policy = open_on if i == 0 else "site"
        if policy == "client" and i > 0:
            break
        try:
            return open_pinned(
                open_replicated,
                args,
                site=site,
                open_on=policy,
                what=what,
                file=source.catalog_file,
                entry=source.label,
            )
        except CatalogError as exc:
            problems.append(f"{site}: {exc.problem}")
    raise DataNotFoundError(
        f"no copy of the replicated dataset can be opened ({'; '.join(problems)})",
        source.catalog_file,
        source.label,
    )


def rendered(replicas: Any, catalog: Any) -> Any:
    """``replicas`` with each urlpath's templates rendered as the entry's args are.

    intake renders ``{{ CATALOG_DIR }}`` and ``{{ env(...) }}`` in ``args`` but
    not in ``metadata``; relative paths are taken from the catalog's directory.
    """
    from .siting import expand_root

    if not isinstance(replicas, Mapping) or catalog is None:
        return replicas
    return {
        site: {**value, "urlpath": expand_root(value["urlpath"], catalog)}
        if isinstance(value, Mapping) and isinstance(value.get("urlpath"), str)
        else value
        for site, value in replicas.items()
    }


def replica_urls(entry: Any, catalog: Any = None) -> list[str]:
    """The urlpaths of an intake catalog entry's replicas (``[]`` if none or malformed)."""
    try:
        replicas = rendered((entry.describe().get("metadata") or {}).get("replicas"), catalog)
    except Exception:  # a broken entry: lookup goes on with the others
        return []
    if not isinstance(replicas, Mapping):
        return []
    return [
        r["urlpath"]
        for r in replicas.values()
        if isinstance(r, Mapping) and isinstance(r.get("urlpath"), str)
    ]


def _structure(urlpath: str, storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """Variables of a zarr store with their dims, shapes, chunks and dtypes (metadata only)."""
    import xarray as xr

    with xr.open_dataset(make_store(urlpath, storage_options), engine="zarr", chunks=None) as ds:
        return {
            name: (v.dims, v.shape, v.encoding.get("chunks"), str(v.dtype))
            for name, v in ds.variables.items()
        }


def structure_mismatch(copies: Copies) -> str | None:
    """How the copies differ in variables, shapes, chunks or dtypes; ``None`` if they match.

    Copies that cannot be read from here are not compared.
    """
    found: dict[str, dict[str, Any]] = {}
    for site, (url, so) in copies.items():
        try:
            found[site] = _structure(url, so)
        except Exception:  # unreadable here (site-private, offline): nothing to compare
            continue
    if len(found) < 2:
        return None
    (first, ref), *others = found.items()
    for site, struct in others:
        if struct == ref:
            continue
        names = sorted(set(ref) ^ set(struct)) or sorted(n for n in ref if ref[n] != struct[n])
        what = ", ".join(names)
        return f"the copies of {first} and {site} differ in {what} (variables, shapes, chunks or dtypes)"
    return None
