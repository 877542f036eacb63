"""Site-aware intake catalogs: ``open_catalog`` and the ``site_catalog`` driver.

:func:`open_catalog` reads an intake v1 YAML catalog and pins every entry that
declares a site (see :mod:`catalog_pools.catalog.siting`) to that site,
through nested catalogs. Entries written for intake-xarray (``driver: zarr``,
``netcdf``, ``opendap``) are opened by this package's drivers instead, and
nested ``yaml_file_cat`` catalogs become :class:`SiteCatalog` too, so an
existing catalog becomes pooled by adding ``metadata: {site: ...}``.

Problems in a catalog raise :class:`~catalog_pools.errors.CatalogError`
naming the file and the entry.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml
from intake.catalog.local import CatalogParser, LocalCatalogEntry, YAMLFileCatalog
from intake.source import get_plugin_class, registry

from ..engine.pools import pool
from ..engine.sites import validate_site
from ..errors import (
    CatalogError,
    DataNotFoundError,
    SiteConflictError,
    UnknownDriverError,
)
from .siting import (
    UNSET,
    catalog_file,
    entry_label,
    resolve_site,
    site_roots,
)
from .sources import DRIVERS, SiteXarraySource
from .urls import normalized_url

logger = logging.getLogger(__name__)

GETSHELL_WARNING = "Shell command not executed due to getshell=False"
# intake 2 warns for every string parameter default, whether or not it holds a
# shell command; the warning carries no information.
warnings.filterwarnings("ignore", message=GETSHELL_WARNING, category=UserWarning)

_CATALOG_CLASS = "catalog_pools.catalog.SiteCatalog"
#: Driver names (and class paths) that open_catalog swaps for this package's classes.
REPLACED_DRIVERS: dict[str, str] = {
    **{
        alias: f"catalog_pools.catalog.sources.{cls.__name__}"
        for cls in DRIVERS.values()
        for alias in (cls.name, *cls.replaces)
    },
    "yaml_file_cat": _CATALOG_CLASS,
    "intake.catalog.local.YAMLFileCatalog": _CATALOG_CLASS,
    "site_catalog": _CATALOG_CLASS,
}


@contextmanager
def quiet_intake() -> Iterator[None]:
    """Silence intake's spurious getshell warning inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=GETSHELL_WARNING, category=UserWarning)
        yield


def _known_drivers() -> list[str]:
    return sorted(set(registry) | {"site_zarr", "site_netcdf", "site_opendap", "site_catalog"})


def unknown_driver_error(driver: Any, file: str | None, entry: str | None) -> UnknownDriverError:
    """The error for an entry whose driver is not installed."""
    return UnknownDriverError(
        f"unknown driver {driver!r}. Site-pinned drivers: site_zarr, site_netcdf, "
        f"site_opendap (or intake-xarray's zarr, netcdf, opendap through "
        f"catalog_pools.open_catalog), catalogs: site_catalog, yaml_file_cat. "
        f"Installed: {', '.join(_known_drivers())}. A driver can also be a class "
        "path (package.module.Class) of an installed package",
        file,
        entry,
    )


class PooledSource:
    """Any intake source whose dask collections are created under ``pool(site)``.

    Used by :class:`SiteCatalog` for entries with a site whose driver is not one
    of this package's (``ndzarr``, ``csv``...). Attributes are the wrapped
    source's.
    """

    def __init__(self, source: Any, site: str | None) -> None:
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "site", site)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._source, name, value)

    def __repr__(self) -> str:
        return f"<PooledSource site={self.site!r} {self._source!r}>"

    def to_dask(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped source's ``to_dask()``, its tasks pinned to the site."""
        with pool(self.site):
            return self._source.to_dask(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped source's ``read()`` (dask work inside is pinned)."""
        with pool(self.site):
            return self._source.read(*args, **kwargs)

    def describe(self) -> dict[str, Any]:
        """The wrapped entry's description plus ``site``."""
        return {**self._source.describe(), "site": self.site}


class SiteCatalogEntry(LocalCatalogEntry):
    """A catalog entry that opens its data pinned to the entry's site."""

    def __init__(self, *args: Any, original_driver: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._original_driver = original_driver if original_driver is not None else self._driver

    @property
    def label(self) -> str:
        """Dotted name of the entry from the top catalog."""
        return entry_label(self._name, self._catalog)

    @property
    def file(self) -> str | None:
        """The catalog file holding this entry."""
        return catalog_file(self._catalog)

    def get(self, **user_parameters: Any) -> Any:
        """Instantiate the entry's source; see ``LocalCatalogEntry.get``."""
        if not self._plugin:
            raise unknown_driver_error(self._original_driver, self.file, self.label)
        try:
            with quiet_intake():
                source = super().get(**user_parameters)
        except CatalogError as exc:
            if exc.entry is None:  # e.g. a nested catalog file that is missing
                raise type(exc)(f"{exc}", self.file, self.label) from exc
            raise
        except (TypeError, ValueError) as exc:
            raise CatalogError(
                f"driver {self._original_driver!r} rejected the entry's arguments: {exc}",
                self.file,
                self.label,
            ) from exc
        if isinstance(source, SiteXarraySource) or self._container == "catalog":
            return source
        args = self._open_args if isinstance(self._open_args, Mapping) else {}
        decision = resolve_site(
            name=self._name,
            metadata=self._metadata,
            catalog=self._catalog,
            urlpath=args.get("urlpath"),
        )
        return PooledSource(source, decision.site)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"invalid YAML{where}: {problem}" + (f" ({context})" if context else "")


class SiteCatalog(YAMLFileCatalog):
    """A YAML catalog file whose entries open pinned to their sites.

    Registered as the intake driver ``site_catalog``; use it to nest per-site
    files (``driver: site_catalog``, ``args: {path: "{{ CATALOG_DIR }}/x.yaml"}``)
    or open a file with :func:`open_catalog`.

    Parameters
    ----------
    path
        Path or fsspec URL of the YAML file.
    **kwargs
        As for ``intake.catalog.local.YAMLFileCatalog`` (``storage_options``,
        ``ttl``, ``getenv``...).
    """

    name = "site_catalog"

    def __init__(self, path: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(path, (str, os.PathLike)):
            path = normalized_url(os.fspath(path))  # "{{ CATALOG_DIR }}/x.yaml" gives "dir//x.yaml"
        super().__init__(path, *args, **kwargs)

    def _load(self, reload: bool = False) -> None:
        try:
            super()._load(reload=reload)
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"catalog file not found: {exc}", self._path_str()) from None
        except PermissionError as exc:
            raise DataNotFoundError(f"catalog file not readable: {exc}", self._path_str()) from None
        except UnicodeDecodeError as exc:
            raise CatalogError(f"not a text YAML file: {exc}", self._path_str()) from None

    def _path_str(self) -> str:
        return self.path if isinstance(self.path, str) else str(self.path)

    def parse(self, text: str) -> None:
        """Validate and load the catalog text, mapping drivers to site-aware ones."""
        self.text = text
        file = self._path_str()
        try:
            from intake.utils import yaml_load

            data = yaml_load(text)
        except yaml.YAMLError as exc:
            raise CatalogError(_yaml_error(exc), file) from None
        except ValueError as exc:  # duplicate keys
            raise CatalogError(f"invalid YAML: {exc}", file) from None
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
            raise CatalogError(
                "a catalog must be a YAML mapping with a `sources:` mapping of entries "
                f"(got {type(data).__name__})",
                file,
            )
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise CatalogError(f"`metadata:` must be a mapping, got {metadata!r}", file)
        self._file_metadata = metadata
        self._check_file_metadata(metadata, file)

        sources: dict[str, Any] = {}
        originals: dict[str, Any] = {}
        for name, spec in data["sources"].items():
            if not isinstance(spec, dict):
                raise CatalogError(
                    f"an entry must be a mapping with `driver:` and `args:`, got {spec!r}",
                    file,
                    str(name),
                )
            if "driver" not in spec:
                raise CatalogError(
                    "the entry has no `driver:` (e.g. site_zarr, site_netcdf, site_catalog)",
                    file,
                    str(name),
                )
            for key in ("args", "metadata"):
                if spec.get(key) is not None and not isinstance(spec[key], dict):
                    raise CatalogError(f"`{key}:` must be a mapping, got {spec[key]!r}", file, str(name))
            spec = dict(spec)
            originals[name] = spec["driver"]
            if isinstance(spec["driver"], str):
                spec["driver"] = REPLACED_DRIVERS.get(spec["driver"], spec["driver"])
            sources[name] = spec
        data = {**data, "sources": sources}

        with quiet_intake():
            result = CatalogParser(
                data, context={"root": self._dir}, getenv=self.getenv, getshell=self.getshell
            )
        if result.errors:
            raise CatalogError("invalid catalog: " + "; ".join(result.errors), file)

        self._entries = {}
        for entry in result.data["data_sources"]:
            kwargs = dict(entry._captured_init_kwargs)
            site_entry = SiteCatalogEntry(original_driver=originals.get(entry.name), **kwargs)
            site_entry._catalog = self
            site_entry._filesystem = self.filesystem
            self._entries[entry.name] = site_entry
        from intake.catalog.local import UserParameter

        shared = metadata.get("parameters", {}) or {}
        self.user_parameters.update({name: UserParameter(name, **attrs) for name, attrs in shared.items()})
        self.metadata = {**(self.metadata or {}), **metadata}
        self.name = self.name or data.get("name") or self.name_from_path
        self.description = self.description or data.get("description")

    def _check_file_metadata(self, metadata: Mapping[str, Any], file: str) -> None:
        site = metadata.get("site", UNSET)
        if site is not UNSET and site is not None:
            try:
                validate_site(site)
            except ValueError as exc:
                raise CatalogError(f"{exc} (in the file's metadata.site)", file) from None
        nest_site = (vars(self).get("_captured_init_kwargs") or {}).get("metadata", {})
        nest_site = nest_site.get("site", UNSET) if isinstance(nest_site, dict) else UNSET
        if site is not UNSET and nest_site is not UNSET and site != nest_site:
            raise SiteConflictError(
                f"the file declares site {site!r} but the entry nesting it declares site "
                f"{nest_site!r}; keep one of them",
                file,
            )
        if "sites" in metadata:
            site_roots([self])  # validates the structure


def open_catalog(path_or_url: str | os.PathLike[str], **kwargs: Any) -> SiteCatalog:
    """Open a YAML catalog whose entries open pinned to their sites.

    Every entry with a site (declared on the entry, its file, an enclosing
    catalog, or by ``metadata.sites`` roots) gives datasets whose load tasks
    run only on that site's workers, through nested catalogs and for
    intake-xarray's ``zarr``/``netcdf``/``opendap`` drivers too.

    Parameters
    ----------
    path_or_url
        Local path or fsspec URL of the catalog YAML file.
    **kwargs
        Passed to :class:`SiteCatalog` (e.g. ``storage_options``, ``ttl``).

    Returns
    -------
    SiteCatalog

    Raises
    ------
    CatalogError
        If the file is missing, not valid YAML or not a catalog.

    Examples
    --------
    >>> cat = open_catalog("catalogs/multicloud.yaml")  # doctest: +SKIP
    >>> ds = cat.ecmwf.predictions.to_dask()  # doctest: +SKIP
    >>> catalog_pools.pool_of(ds)  # doctest: +SKIP
    'ecmwf'
    """
    return SiteCatalog(os.fspath(path_or_url), **kwargs)


@dataclass
class EntryInfo:
    """One data entry found by :func:`walk_entries`.

    Attributes
    ----------
    label
        Dotted name from the top catalog (``ecmwf.predictions``).
    file
        Catalog file holding the entry.
    entry
        The intake catalog entry (``None`` if a nested catalog failed to open).
    driver
        The driver as written in the file.
    args
        The entry's arguments with templates expanded (``None`` on error).
    error
        The problem found while reaching the entry, if any.
    """

    label: str
    file: str | None
    entry: Any
    driver: Any
    args: dict[str, Any] | None = None
    error: Exception | None = None
    catalog: Any = field(default=None, repr=False)


def walk_entries(catalog: Any, max_depth: int = 16) -> Iterator[EntryInfo]:
    """All data entries of ``catalog`` and its nested catalogs.

    Problems (a nested catalog that cannot be opened, templates that cannot
    be expanded) are reported in :attr:`EntryInfo.error` rather than raised.
    """
    seen: set[int] = set()

    def visit(cat: Any, depth: int) -> Iterator[EntryInfo]:
        if id(cat) in seen or depth > max_depth:
            return
        seen.add(id(cat))
        for name, entry in list(cat._get_entries().items()):
            label = entry_label(name, cat)
            driver = getattr(entry, "_original_driver", getattr(entry, "_driver", None))
            if getattr(entry, "_container", None) == "catalog":
                try:
                    child = cat[name]
                except Exception as exc:  # reported, the walk goes on
                    yield EntryInfo(label, catalog_file(cat), entry, driver, error=exc, catalog=cat)
                    continue
                yield from visit(child, depth + 1)
                continue
            info = EntryInfo(label, catalog_file(cat), entry, driver, catalog=cat)
            if not getattr(entry, "_plugin", True):
                info.error = unknown_driver_error(driver, info.file, label)
                yield info
                continue
            try:
                with quiet_intake():
                    info.args = entry._create_open_args({})[1]
            except Exception as exc:
                info.error = exc
            yield info

    yield from visit(catalog, 0)


def all_catalogs(catalog: Any, max_depth: int = 16) -> list[Any]:
    """``catalog`` and every nested catalog that can be opened."""
    out: list[Any] = []

    def visit(cat: Any, depth: int) -> None:
        if any(c is cat for c in out) or depth > max_depth:
            return
        out.append(cat)
        for name, entry in list(cat._get_entries().items()):
            if getattr(entry, "_container", None) == "catalog":
                try:
                    visit(cat[name], depth + 1)
                except Exception as exc:
                    logger.debug("skipping nested catalog %s: %s", name, exc)

    visit(catalog, 0)
    return out


def plugin_known(driver: Any) -> bool:
    """True if intake can load ``driver`` (a registered name or class path)."""
    if isinstance(driver, str):
        driver = REPLACED_DRIVERS.get(driver, driver)
        return get_plugin_class(driver) is not None
    return True
