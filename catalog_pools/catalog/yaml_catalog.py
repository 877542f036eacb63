"""Site-aware intake catalogs: ``open_catalog``, the ``site_catalog`` driver, walking.

:func:`open_catalog` reads an intake v1 YAML catalog and pins every entry that
declares a site (see :mod:`catalog_pools.catalog.siting`) to that site,
through nested catalogs. Entries written for intake-xarray (``driver: zarr``,
``netcdf``, ``opendap``) are opened by this package's drivers instead, and
nested ``yaml_file_cat`` catalogs become :class:`SiteCatalog` too, so an
existing catalog becomes pooled by adding ``metadata: {site: ...}``.

The file is read with limits (:mod:`.parsing`), each entry is parsed on its
own (:mod:`.entries`), and :func:`walk_entries` visits nested catalogs once
per file, reporting cycles and excessive depth. Problems raise
:class:`~catalog_pools.errors.CatalogError` naming the file and the entry.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from intake.catalog.local import get_dir

from .._compat.intake_internals import CatalogFileBase, UserParameter, catalog_entries
from ..engine.sites import validate_site
from ..errors import CatalogError, SiteConflictError
from .entries import BrokenEntry, PooledSource, SiteCatalogEntry, parse_entry, trusted_module
from .parsing import load_yaml, read_catalog_text, redact
from .siting import UNSET, catalog_file, entry_label, site_roots
from .urls import local_path, normalized_url

__all__ = ["EntryInfo", "PooledSource", "SiteCatalog", "open_catalog", "walk_entries"]

#: Nested catalogs deeper than this are reported, not opened.
MAX_DEPTH = 16


class SiteCatalog(CatalogFileBase):
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
        self.plugin_problems: list[CatalogError] = []
        nest = kwargs.get("metadata")
        #: The ``metadata:`` of the entry nesting this file (before the file's own merges in).
        self.nest_metadata: dict[str, Any] = dict(nest) if isinstance(nest, dict) else {}
        super().__init__(path, *args, **kwargs)

    def _path_str(self) -> str:
        return self.path if isinstance(self.path, str) else str(self.path)

    def load_file(self) -> None:
        """Read the catalog file (with limits) and parse it."""
        self.parse(read_catalog_text(self._path_str(), self.storage_options))

    def parse(self, text: str) -> None:
        """Validate and load the catalog text; bad entries become :class:`BrokenEntry`."""
        self.text = text
        file = self._path_str()
        data, broken = load_yaml(text, file)
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
            raise CatalogError(
                "a catalog must be a YAML mapping with a `sources:` mapping of entries "
                f"(got {type(data).__name__})",
                file,
            )
        version = data.get("version")
        if version not in (None, 1, "1"):
            raise CatalogError(f"not an intake v1 catalog (version: {version!r})", file)
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise CatalogError(f"`metadata:` must be a mapping, got {redact(metadata)!r}", file)
        self._file_metadata = metadata
        self._check_file_metadata(metadata, file)
        self.plugin_problems = list(_plugin_problems(data.get("plugins"), file))
        directory = get_dir(file) if "://" in file else os.path.dirname(os.path.abspath(file))
        self.set_entries({}, directory)
        entries = {
            str(name): parse_entry(str(name), spec, self, broken.get(str(name)))
            for name, spec in data["sources"].items()
        }
        self.set_entries(entries, directory)
        self.user_parameters.update(_shared_parameters(metadata, file))
        own: dict[str, Any] = getattr(self, "metadata", None) or {}
        self.metadata = {**own, **metadata}
        self.name = self.name or data.get("name") or self.name_from_path
        self.description = getattr(self, "description", None) or data.get("description")

    def _check_file_metadata(self, metadata: Mapping[str, Any], file: str) -> None:
        site = metadata.get("site", UNSET)
        if site is not UNSET and site is not None:
            try:
                validate_site(site)
            except ValueError as exc:
                raise CatalogError(f"{exc} (in the file's metadata.site)", file) from None
        nest_site = self.nest_metadata.get("site", UNSET)
        if site is not UNSET and nest_site is not UNSET and site != nest_site:
            raise SiteConflictError(
                f"the file declares site {site!r} but the entry nesting it declares site "
                f"{nest_site!r}; keep one of them",
                file,
            )
        if "sites" in metadata:
            site_roots([self])  # validates the structure


def _shared_parameters(metadata: Mapping[str, Any], file: str) -> dict[str, Any]:
    shared = metadata.get("parameters") or {}
    if not isinstance(shared, dict):
        raise CatalogError(f"metadata.parameters must be a mapping, got {shared!r}", file)
    out = {}
    for pname, attrs in shared.items():
        if not isinstance(attrs, dict):
            raise CatalogError(f"metadata.parameters.{pname} must be a mapping", file)
        try:
            out[str(pname)] = UserParameter(str(pname), **attrs)
        except (TypeError, ValueError, KeyError) as exc:  # KeyError: unknown type
            raise CatalogError(f"metadata.parameters.{pname} is invalid: {exc!r}", file) from None
    return out


def _plugin_problems(plugins: Any, file: str) -> Iterator[CatalogError]:
    """Problems of a ``plugins: {source: [{module: ...}]}`` block (modules are not imported)."""
    if plugins is None:
        return
    sources = plugins.get("source") if isinstance(plugins, dict) else None
    if not isinstance(sources, list):
        yield CatalogError(
            f"`plugins:` must be {{source: [{{module: name}}]}}, got {plugins!r}", file, "plugins"
        )
        return
    for item in sources:
        module = item.get("module") if isinstance(item, dict) else None
        if not isinstance(module, str) or not module:
            yield CatalogError(f"plugins: each item must be {{module: name}}, got {item!r}", file, "plugins")
            continue
        try:
            found = importlib.util.find_spec(module if trusted_module(module) else module.split(".")[0])
        except (ImportError, ValueError):
            found = None
        if found is None:
            yield CatalogError(
                f"plugins: module {module!r} is not installed; entries using its drivers will fail",
                file,
                "plugins",
            )


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
        If the file is missing, not a regular file, too large, not valid YAML
        or not a catalog. Problems of single entries are raised when the entry
        is used.

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
    """One entry found by :func:`walk_entries`.

    Attributes
    ----------
    label
        Dotted name from the top catalog (``ecmwf.predictions``).
    file
        Catalog file holding the entry.
    entry
        The intake catalog entry.
    driver
        The driver as written in the file.
    args
        The entry's arguments with templates rendered (``None`` on error).
    error
        The problem found while reaching the entry, if any.
    child
        For a nested catalog that opened, the catalog.
    """

    label: str
    file: str | None
    entry: Any
    driver: Any
    args: dict[str, Any] | None = None
    error: Exception | None = None
    catalog: Any = field(default=None, repr=False)
    child: Any = field(default=None, repr=False)


def _file_key(path: Any) -> str:
    """One name per catalog file (symlinks and ``..`` resolved) to detect cycles."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    local = local_path(text) if isinstance(text, str) else None
    return os.path.realpath(local) if local is not None else normalized_url(text)


def _nested(entry: Any) -> bool:
    return isinstance(entry, SiteCatalogEntry) and any(
        isinstance(p, type) and issubclass(p, SiteCatalog) for p in entry.classes
    )


def walk_entries(catalog: Any, max_depth: int = MAX_DEPTH) -> Iterator[EntryInfo]:
    """Every entry of ``catalog`` and of its nested catalogs, each file once.

    Problems (a nested catalog that cannot be opened, a cycle of nested
    files, nesting deeper than ``max_depth``, templates that cannot be
    rendered) are reported in :attr:`EntryInfo.error` rather than raised.
    """
    visited: set[str] = {_file_key(catalog_file(catalog) or id(catalog))}
    yield from _visit(catalog, (catalog_file(catalog) or "?",), visited, max_depth)


def _visit(cat: Any, chain: tuple[str, ...], visited: set[str], max_depth: int) -> Iterator[EntryInfo]:
    for name, entry in catalog_entries(cat).items():
        label = entry_label(name, cat)
        info = EntryInfo(
            label, catalog_file(cat), entry, getattr(entry, "original_driver", None), catalog=cat
        )
        if isinstance(entry, BrokenEntry):
            info.error = entry.error
            yield info
            continue
        try:
            info.args = entry.open_args({})[1] if isinstance(entry, SiteCatalogEntry) else None
        except Exception as exc:  # reported, the walk goes on
            info.error = exc
            yield info
            continue
        if not _nested(entry):
            yield info
            continue
        path = str((info.args or {}).get("path"))
        key = _file_key(path)
        if key in {_file_key(c) for c in chain}:
            cycle = " -> ".join((*chain, path))
            info.error = CatalogError(f"nested catalogs form a cycle: {cycle}", info.file, label)
        elif len(chain) > max_depth:
            info.error = CatalogError(
                f"catalogs nested more than {max_depth} deep ({' -> '.join(chain)}); not opened",
                info.file,
                label,
            )
        elif key in visited:
            continue  # the same file nested twice: walked once
        if info.error is not None:
            yield info
            continue
        visited.add(key)
        try:
            info.child = cat[name]
        except Exception as exc:
            info.error = exc
        yield info
        if info.child is not None:
            yield from _visit(info.child, (*chain, path), visited, max_depth)


def all_catalogs(catalog: Any, max_depth: int = MAX_DEPTH) -> list[Any]:
    """``catalog`` and every nested catalog that can be opened (each file once)."""
    return [catalog] + [info.child for info in walk_entries(catalog, max_depth) if info.child is not None]
