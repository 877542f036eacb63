"""intake (v1) drivers that open xarray datasets pinned to the site hosting them.

Registered in the ``intake.drivers`` entry-point group: ``site_zarr``
(:class:`SiteZarrSource`), ``site_netcdf`` (:class:`SiteNetCDFSource`),
``site_opendap`` (:class:`SiteOpenDapSource`). Each format only says how to
open (a static ``_open``); the shared behaviour (site resolution, ``open_on``,
``to_dask``/``read``/``describe``) lives in :class:`SiteXarraySource`. They
replace intake-xarray 2.0.0's ``zarr``, ``netcdf`` and ``opendap`` drivers in
:func:`catalog_pools.catalog.open_catalog`: those force ``engine="scipy"`` on
netCDF4 files, ignore call-time arguments and have no ``.metadata``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

from intake.source.base import DataSource, Schema

from ..errors import CatalogError
from .opening import open_on_policy
from .parsing import missing_extra, redact
from .replicas import open_copies, source_copies
from .siting import (
    UNSET,
    SiteDecision,
    catalog_file,
    entry_label,
    resolve_site,
)
from .urls import expand_paths, has_protocol, is_multi, local_path, normalized_url

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGIC = b"CDF"


class SiteXarraySource(DataSource):
    """Base of the site-pinned xarray drivers (not registered itself).

    Parameters
    ----------
    urlpath
        Local path, ``file://``/``http(s)://``/``s3://``... URL, a list of them
        or a glob (opened with ``xarray.open_mfdataset``).
    chunks
        Dask chunks; ``None`` or ``{}`` uses the file's own chunking. Datasets are
        always dask-backed, so their loads can be pinned.
    storage_options
        fsspec options for URLs (e.g. ``{"anon": True}``, ``{"endpoint_url": ...}``
        in ``client_kwargs`` for s3).
    xarray_kwargs
        Extra arguments for ``xarray.open_dataset``; other keyword arguments go
        there too.
    open_on
        ``"auto"``, ``"client"`` or ``"site"``: where metadata is read (see
        :mod:`catalog_pools.catalog.opening`); default from dask config
        ``catalog_pools.open-on``.
    site
        Site hosting the data, overriding catalog declarations (for use
        outside catalogs); normally it comes from ``metadata: {site: ...}``.
    metadata
        Entry metadata (from the catalog).
    """

    container = "xarray"
    partition_access = True
    version = "1"
    name = "site_xarray"

    def __init__(
        self,
        urlpath: str | list[str],
        chunks: int | str | dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        xarray_kwargs: dict[str, Any] | None = None,
        open_on: str | None = None,
        site: str | None = UNSET,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.urlpath = urlpath
        self.chunks = chunks
        self.xarray_kwargs = {**(xarray_kwargs or {}), **kwargs}
        self.open_on = open_on
        self._site_arg = site
        self._declared = dict(metadata or {})
        self._decision: tuple[int, SiteDecision] | None = None
        self._ds: Any = None
        self._ready = False
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.storage_options = storage_options
        self._ready = True

    # --- how to open: the only thing a format class provides -------------
    @staticmethod
    def _open(
        urlpath: Any, chunks: Any, storage_options: dict[str, Any], xarray_kwargs: dict[str, Any]
    ) -> Any:
        raise NotImplementedError

    # --- metadata and site -------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """Entry metadata, with ``site`` filled in once it can be resolved."""
        md = self._metadata
        if "site" not in md and self.__dict__.get("_ready"):
            with contextlib.suppress(CatalogError):  # reported by to_dask(); .metadata stays readable
                md["site"] = self.site
        return md

    @metadata.setter
    def metadata(self, value: dict[str, Any] | None) -> None:
        self._metadata = dict(value or {})

    @property
    def label(self) -> str:
        """The entry's dotted name in its catalog, for messages."""
        return entry_label(getattr(self, "name", None), self.cat)

    @property
    def catalog_file(self) -> str | None:
        """The catalog file this source came from, if any."""
        return catalog_file(self.cat)

    def site_decision(self) -> SiteDecision:
        """The resolved site and the declaration it came from."""
        # The catalog is attached after __init__ (intake sets .cat), so a
        # decision is only reused for the catalog it was made with.
        if self._decision is None or self._decision[0] != id(self.cat):
            self._check_args()
            decision = resolve_site(
                name=getattr(self, "name", None),
                metadata=self._declared,
                catalog=self.cat,
                urlpath=self.urlpath,
                site=self._site_arg,
                storage_options=self.storage_options,
            )
            self._decision = (id(self.cat), decision)
        return self._decision[1]

    @property
    def site(self) -> str | None:
        """The site hosting the data (``None``: explicitly unpinned)."""
        return self.site_decision().site

    def _error(self, problem: str) -> CatalogError:
        return CatalogError(str(redact(problem)), self.catalog_file, self.label)

    def _check_args(self) -> None:
        url = self.urlpath
        if not (isinstance(url, str) and url) and not (
            isinstance(url, (list, tuple)) and url and all(isinstance(u, str) for u in url)
        ):
            raise self._error(f"urlpath must be a path or URL (or a list of them), got {url!r}")
        so = self.storage_options
        if so is not None and not isinstance(so, Mapping):
            raise self._error(
                f"storage_options must be a mapping of fsspec options such as {{anon: true}}, got {so!r}"
            )
        first = url if isinstance(url, str) else url[0]
        if so and local_path(first) is not None:
            raise self._error(
                f"storage_options {redact(dict(so))!r} were given for the local path {first}; they "
                "apply to fsspec URLs (s3://, https://...) only: remove them or use a URL"
            )
        try:
            open_on_policy(self.open_on)  # the one check of open_on
        except ValueError as exc:
            raise self._error(str(exc)) from None
        if not isinstance(self.xarray_kwargs, Mapping):
            raise self._error(f"xarray_kwargs must be a mapping, got {self.xarray_kwargs!r}")

    # --- intake API --------------------------------------------------------
    def to_dask(self, **kwargs: Any) -> Any:
        """The lazy ``xarray.Dataset``, its load tasks pinned to the entry's site.

        Keyword arguments (``chunks=``, ``storage_options=``...) reopen the entry
        with them, as ``source(**kwargs).to_dask()`` does.
        """
        if kwargs:
            return self(**kwargs).to_dask()
        if self._ds is None:
            self.site_decision()  # errors first, before anything is opened
            urlpath = (
                [normalized_url(u) for u in self.urlpath]
                if isinstance(self.urlpath, (list, tuple))
                else normalized_url(self.urlpath)
            )
            open_kwargs = {
                "urlpath": urlpath,
                "chunks": {} if self.chunks is None else self.chunks,
                "storage_options": dict(self.storage_options or {}),
                "xarray_kwargs": dict(self.xarray_kwargs),
            }
            try:
                what = str(redact(f"{self.name or 'dataset'} ({urlpath})"))
                self._ds = open_copies(
                    self, type(self)._open, open_kwargs, open_on_policy(self.open_on), what
                )
            except ImportError as exc:
                raise self._error(f"cannot open {redact(urlpath)}: {missing_extra(exc, urlpath)}") from None
            except TypeError as exc:
                if self.storage_options:
                    raise self._error(
                        f"storage_options {redact(dict(self.storage_options))!r} were rejected when "
                        f"opening {redact(urlpath)}: {exc}"
                    ) from exc
                raise
        return self._ds

    read_chunked = to_dask

    def read(self) -> Any:
        """Load the whole dataset into memory (computed on the pinned workers)."""
        return self.to_dask().compute()

    def _get_schema(self) -> Schema:
        ds = self.to_dask()
        return Schema(
            datashape=None,
            dtype=None,
            shape=None,
            npartitions=None,
            extra_metadata={
                "dims": dict(ds.sizes),
                "data_vars": {k: list(v.dims) for k, v in ds.data_vars.items()},
                "coords": list(ds.coords),
            },
        )

    def describe(self) -> dict[str, Any]:
        """The entry's description, with its resolved ``site`` and ``open_on``."""
        try:
            desc = dict(self.entry.describe())
        except AttributeError:
            desc = {
                "name": self.name,
                "container": self.container,
                "driver": type(self).name,
                "args": {"urlpath": self.urlpath},
            }
        try:
            desc["site"] = self.site
        except CatalogError as exc:  # describe() must work on a broken entry too
            desc["site"], desc["site_error"] = None, str(exc)
        desc["metadata"] = dict(desc.get("metadata") or {}, site=desc["site"])
        if "replicas" in self._declared:
            with contextlib.suppress(CatalogError):
                desc["replicas"] = {s: url for s, (url, _) in source_copies(self).items()}
        desc["open_on"] = open_on_policy(self.open_on)
        return dict(redact(desc))

    def _close(self) -> None:
        if self._ds is not None:
            self._ds.close()
        self._ds = None


class SiteZarrSource(SiteXarraySource):
    """A zarr store (format v2 or v3), pinned to its site.

    Catalog driver name: ``site_zarr``. Extra arguments (``consolidated``,
    ``group``, ``decode_times``...) go to ``xarray.open_dataset(engine="zarr")``.

    Examples
    --------
    >>> src = SiteZarrSource("/data/ecmwf/predictions.zarr", site="ecmwf")  # doctest: +SKIP
    >>> src.to_dask()  # doctest: +SKIP
    """

    name = "site_zarr"

    @staticmethod
    def _open(
        urlpath: Any, chunks: Any, storage_options: dict[str, Any], xarray_kwargs: dict[str, Any]
    ) -> Any:
        import xarray as xr

        kw: dict[str, Any] = {"engine": "zarr", **xarray_kwargs}
        if storage_options:
            kw["storage_options"] = storage_options
        if is_multi(urlpath):
            return xr.open_mfdataset(expand_paths(urlpath, storage_options), chunks=chunks, **kw)
        return xr.open_dataset(urlpath, chunks=chunks, **kw)


class SiteNetCDFSource(SiteXarraySource):
    """A netCDF file (netCDF4/HDF5 or netCDF3), pinned to its site.

    Catalog driver name: ``site_netcdf``. Local files are opened by xarray's
    default engine for their format; remote HDF5 files with ``h5netcdf`` over
    fsspec (byte ranges). Remote netCDF3 files are read whole when opened
    (``scipy`` cannot read byte ranges): prefer netCDF4 or zarr for remote data.
    Extra arguments (``combine``, ``concat_dim``, ``engine``, ``group``...) go to
    ``xarray.open_dataset``/``open_mfdataset``.
    """

    name = "site_netcdf"

    def __init__(
        self, urlpath: str | list[str], *args: Any, path_as_pattern: Any = True, **kwargs: Any
    ) -> None:
        if isinstance(path_as_pattern, str) or (
            path_as_pattern is True and isinstance(urlpath, str) and "{" in urlpath
        ):
            raise NotImplementedError(
                f"urlpath patterns ({urlpath!r}, path_as_pattern) are not supported by "
                "site_netcdf; list the files or use a glob"
            )
        super().__init__(urlpath, *args, **kwargs)

    @staticmethod
    def _open(
        urlpath: Any, chunks: Any, storage_options: dict[str, Any], xarray_kwargs: dict[str, Any]
    ) -> Any:
        import xarray as xr

        if is_multi(urlpath):
            paths = expand_paths(urlpath, storage_options)
            if not paths:
                raise FileNotFoundError(f"no file matches {urlpath}")
            if has_protocol(paths[0]):
                xarray_kwargs = {"engine": "h5netcdf", **xarray_kwargs, "storage_options": storage_options}
            return xr.open_mfdataset(paths, chunks=chunks, **xarray_kwargs)
        if (path := local_path(urlpath)) is not None:
            return xr.open_dataset(path, chunks=chunks, **xarray_kwargs)
        import fsspec

        with fsspec.open(urlpath, "rb", **storage_options) as f:
            magic = f.read(8)
        if magic.startswith(NETCDF3_MAGIC):
            with fsspec.open(urlpath, "rb", **storage_options) as f:
                data = f.read()
            kw = {"engine": "scipy", **xarray_kwargs}
            return xr.open_dataset(io.BytesIO(data), chunks=chunks, **kw)
        if not magic.startswith(HDF5_MAGIC):
            raise OSError(f"{urlpath} is neither netCDF4/HDF5 nor netCDF3 (starts {magic!r})")
        kw = {"engine": "h5netcdf", **xarray_kwargs}
        return xr.open_dataset(urlpath, chunks=chunks, storage_options=storage_options, **kw)


class SiteOpenDapSource(SiteXarraySource):
    """An OPeNDAP URL, pinned to the site serving it.

    Catalog driver name: ``site_opendap``. Opened with ``engine="netcdf4"``
    unless ``engine`` is given (``"pydap"`` needs pydap installed).
    """

    name = "site_opendap"

    def __init__(
        self, urlpath: str, *args: Any, engine: str = "netcdf4", auth: Any = None, **kwargs: Any
    ) -> None:
        if auth is not None:
            raise NotImplementedError(
                "OPeNDAP auth is not supported by site_opendap; pass credentials in the URL"
            )
        super().__init__(urlpath, *args, engine=engine, **kwargs)

    @staticmethod
    def _open(
        urlpath: Any, chunks: Any, storage_options: dict[str, Any], xarray_kwargs: dict[str, Any]
    ) -> Any:
        import xarray as xr

        return xr.open_dataset(urlpath, chunks=chunks, **xarray_kwargs)


#: Format classes by registered driver name.
DRIVERS: dict[str, type[SiteXarraySource]] = {
    cls.name: cls for cls in (SiteZarrSource, SiteNetCDFSource, SiteOpenDapSource)
}

#: The one table of driver aliases: a name (or class path) written in a catalog
#: -> the registered driver that :func:`~catalog_pools.catalog.open_catalog` uses.
#: intake-xarray 2's adapters force ``engine="scipy"`` on netCDF4 and ignore
#: call-time arguments; intake's YAML catalogs would not pin their entries.
DRIVER_ALIASES: dict[str, str] = {
    "zarr": "site_zarr",
    "intake_xarray.xzarr.ZarrSource": "site_zarr",
    "intake_xarray.ZarrSource": "site_zarr",
    "netcdf": "site_netcdf",
    "intake_xarray.netcdf.NetCDFSource": "site_netcdf",
    "intake_xarray.NetCDFSource": "site_netcdf",
    "opendap": "site_opendap",
    "intake_xarray.opendap.OpenDapSource": "site_opendap",
    "intake_xarray.OpenDapSource": "site_opendap",
    "yaml_file_cat": "site_catalog",
    "intake.catalog.local.YAMLFileCatalog": "site_catalog",
    "intake.catalog.YAMLFileCatalog": "site_catalog",
}
