"""``load_from_catalog(path)``: open a dataset by path or URL, pinned to its site.

The site comes from a catalog: an entry whose urlpath is the same location,
else the site roots declared in catalog metadata::

    metadata:
      sites:
        ecmwf:
          roots: ["/data/ecmwf", "s3://ecmwf-bucket/"]

Paths and URLs are compared after normalisation (absolute, ``..`` resolved,
scheme aliases and default ports unified), component by component.
"""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any
from urllib.parse import urlsplit

import dask

from ..errors import CatalogError, UnknownPathError
from .replicas import replica_urls
from .siting import catalog_file, site_of_location, site_roots
from .sources import SiteNetCDFSource, SiteXarraySource, SiteZarrSource
from .urls import has_protocol, local_path, normalize
from .yaml_catalog import SiteCatalog, all_catalogs, open_catalog, walk_entries

logger = logging.getLogger(__name__)

CONFIG_KEY = "catalog_pools.default-catalog"
ENV_VAR = "DASK_CATALOG_POOLS__DEFAULT_CATALOG"

_NETCDF_SUFFIXES = {".nc", ".nc3", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5", ".he5"}
_FORMATS: dict[str, type[SiteXarraySource]] = {
    "zarr": SiteZarrSource,
    "site_zarr": SiteZarrSource,
    "netcdf": SiteNetCDFSource,
    "site_netcdf": SiteNetCDFSource,
}


def _catalog(catalog: Any) -> Any:
    if catalog is None:
        catalog = dask.config.get(CONFIG_KEY, None)
        if not catalog:
            raise CatalogError(
                "no catalog given and no default catalog configured: pass catalog=..., "
                f"or set the dask config {CONFIG_KEY!r} (environment variable {ENV_VAR})"
            )
    if isinstance(catalog, (str, os.PathLike)):
        return open_catalog(catalog)
    return catalog


def _format_of(path: str, storage_options: dict[str, Any] | None) -> type[SiteXarraySource]:
    """zarr or netCDF, from the name, else by looking (when reachable from here)."""
    name_path = urlsplit(path).path if has_protocol(path) else path
    suffix = posixpath.splitext(name_path.rstrip("/"))[1].lower()
    if suffix == ".zarr":
        return SiteZarrSource
    if suffix in _NETCDF_SUFFIXES:
        return SiteNetCDFSource
    local = local_path(path)
    try:
        if local is not None:
            return SiteZarrSource if os.path.isdir(local) else SiteNetCDFSource
        import fsspec

        fs, stripped = fsspec.core.url_to_fs(path, **(storage_options or {}))
        return SiteZarrSource if fs.isdir(stripped) else SiteNetCDFSource
    except Exception as exc:  # unreachable from here: a file is the common case
        logger.debug("cannot inspect %s (%s); assuming netCDF", path, exc)
        return SiteNetCDFSource


def _describe_roots(roots: dict[str, list[tuple[str, Any]]]) -> str:
    if not roots:
        return "none are declared (add metadata: {sites: {<site>: {roots: [...]}}})"
    return "; ".join(
        f"{site}: {', '.join(str(loc) for _, loc in items)}" for site, items in sorted(roots.items())
    )


def load_from_catalog(
    path: str | os.PathLike[str],
    catalog: str | os.PathLike[str] | SiteCatalog | Any | None = None,
    *,
    driver: str | None = None,
    **kwargs: Any,
) -> Any:
    """Open the dataset at ``path`` lazily, pinned to the site hosting it.

    Parameters
    ----------
    path
        Local path or fsspec URL of a zarr store or netCDF file.
    catalog
        Catalog (path, URL or opened catalog) telling which site hosts what;
        default: dask config ``catalog_pools.default-catalog`` (environment
        variable ``DASK_CATALOG_POOLS__DEFAULT_CATALOG``).
    driver
        ``"zarr"`` or ``"netcdf"`` to override the format guessed from the name
        (used only when no entry has this urlpath).
    **kwargs
        Passed to the source: ``chunks``, ``storage_options``, ``open_on``, and
        extra ``xarray.open_dataset`` arguments.

    Returns
    -------
    xarray.Dataset
        Lazy, dask-backed; its load tasks are pinned to the site.

    Raises
    ------
    UnknownPathError
        If no entry has this urlpath and it lies under no declared site root;
        the message lists the known roots.
    CatalogError
        If there is no catalog, or it is invalid.

    Examples
    --------
    >>> ds = load_from_catalog("/data/ecmwf/predictions.zarr",
    ...                        catalog="catalogs/multicloud.yaml")  # doctest: +SKIP
    >>> catalog_pools.pool_of(ds)  # doctest: +SKIP
    'ecmwf'
    """
    path = os.fspath(path)
    cat = _catalog(catalog)
    target = normalize(path)
    for info in walk_entries(cat):
        urls = [(info.args or {}).get("urlpath"), *replica_urls(info.entry, info.catalog)]
        if any(isinstance(url, str) and normalize(url) == target for url in urls):
            logger.debug("%s is entry %s of %s", path, info.label, info.file)
            return info.entry(**kwargs).to_dask()

    catalogs = all_catalogs(cat)
    roots = site_roots(catalogs)
    site = site_of_location(target, roots, catalog_file(cat))
    if site is None:
        raise UnknownPathError(
            f"no site hosts {path}: no entry has this urlpath and it lies under none of "
            f"the site roots in metadata.sites ({_describe_roots(roots)})",
            catalog_file(cat),
        )
    if driver is not None and driver not in _FORMATS:
        raise ValueError(f"driver must be one of {sorted(_FORMATS)}, got {driver!r}")
    cls = _FORMATS[driver] if driver else _format_of(path, kwargs.get("storage_options"))
    source = cls(path, site=site, **kwargs)
    source.name = posixpath.basename(target.parts[-1]) if target.parts else path
    return source.to_dask()
