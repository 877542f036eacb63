"""Catalog entries: from a YAML ``sources:`` item to a site-pinned source.

An entry is parsed on its own: a bad entry becomes a :class:`BrokenEntry`
that raises its :class:`~catalog_pools.errors.CatalogError` when used, and
never stops the other entries. Drivers are resolved without importing
arbitrary code: a driver is a name registered by an installed package
(intake's ``intake.drivers`` entry points), an alias from
:data:`~catalog_pools.catalog.sources.DRIVER_ALIASES`, or a class path inside
a package that registers intake drivers, an already imported module, or one
listed in dask config ``catalog_pools.catalog.trusted-modules``. intake itself
imports any dotted ``driver:`` when a catalog is opened, so a catalog could run
code at ``open_catalog()``; an allowlist keeps every catalog that uses
installed drivers working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from functools import lru_cache
from typing import Any

import dask
from intake.source import registry
from intake.source.base import DataSourceBase

from .._compat.intake_internals import EntryBase, UserParameter
from ..errors import CatalogError, UnknownDriverError
from .opening import PooledSource
from .parsing import merge_args, redact, secrets_in
from .siting import catalog_file, entry_label, resolve_site
from .sources import DRIVER_ALIASES, DRIVERS, SiteXarraySource

TRUSTED_KEY = "catalog_pools.catalog.trusted-modules"


@lru_cache(maxsize=1)
def _driver_packages() -> frozenset[str]:
    eps = importlib.metadata.entry_points(group="intake.drivers")
    return frozenset(ep.value.split(":")[0].split(".")[0] for ep in eps) | {"intake", "catalog_pools"}


def trusted_module(module: str) -> bool:
    """True if a catalog may make us import ``module``."""
    top = module.split(".", maxsplit=1)[0]
    extra = dask.config.get(TRUSTED_KEY, None) or []
    return module in sys.modules or top in _driver_packages() or top in set(extra)


def import_trusted(path: str, what: str) -> Any:
    """The object at ``package.module.name``, if :func:`trusted_module` allows the import."""
    module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise UnknownDriverError(f"{what} {path!r} is not a package.module.Name path")
    top = module.split(".")[0]
    if not trusted_module(module) and importlib.util.find_spec(top) is None:
        raise UnknownDriverError(f"{what} {path!r}: module {top!r} is not installed")
    if not trusted_module(module):
        raise UnknownDriverError(
            f"{what} {path!r} would import module {module!r}, which is neither an installed "
            "intake driver package nor already imported; a catalog may not import arbitrary "
            f"code. Register it as an intake driver, or add {module.split('.')[0]!r} to dask "
            f"config {TRUSTED_KEY!r}"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UnknownDriverError(f"{what} {path!r}: cannot import {module}: {exc}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise UnknownDriverError(f"{what} {path!r}: module {module} has no {attr!r}") from None


def unknown_driver_error(driver: Any) -> UnknownDriverError:
    """The error for an entry whose driver is not installed (file and entry added by the caller)."""
    known = sorted(set(registry) | set(DRIVERS) | {"site_catalog"})
    return UnknownDriverError(
        f"unknown driver {driver!r}. Site-pinned drivers: site_zarr, site_netcdf, site_opendap "
        "(or intake-xarray's zarr, netcdf, opendap), catalogs: site_catalog, yaml_file_cat. "
        f"Installed: {', '.join(known)}. A driver can also be a class path "
        "(package.module.Class) of an installed intake driver package"
    )


def driver_class(name: Any) -> type:
    """The driver class a catalog names (see the module docstring for what is allowed)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownDriverError(
            f"driver must be a driver name (e.g. site_zarr) or a package.module.Class path, got {name!r}"
        )
    name = DRIVER_ALIASES.get(name, name)
    if name in registry:
        try:
            cls = registry[name]
        except Exception as exc:  # a broken plugin package
            raise UnknownDriverError(f"driver {name!r} is installed but cannot be loaded: {exc}") from None
    elif "." in name:
        cls = import_trusted(name, "driver")
    else:
        raise unknown_driver_error(name)
    if not (isinstance(cls, type) and (issubclass(cls, DataSourceBase) or hasattr(cls, "container"))):
        raise UnknownDriverError(f"driver {name!r} is not an intake driver (a DataSource class)")
    return cls


def resolve_driver(spec: Any) -> tuple[list[type], dict[str, tuple[type, dict[str, Any]]]]:
    """``([classes], {choice: (class, args)})`` for a ``driver:`` value (name, list or dict)."""
    if spec is None:
        raise UnknownDriverError("`driver: null`: the entry has no driver; name one (e.g. site_zarr)")
    if isinstance(spec, list):
        problems, classes = [], []
        for item in spec:
            try:
                classes.append(driver_class(item))
            except CatalogError as exc:
                problems.append(exc.problem)
        if not classes:
            raise UnknownDriverError(
                "no driver of the list can be used: " + "; ".join(problems or ["empty list"])
            )
        return classes, {}
    if isinstance(spec, dict):
        choices: dict[str, tuple[type, dict[str, Any]]] = {}
        problems = []
        for choice, value in spec.items():
            if not isinstance(value, dict) or "class" not in value:
                raise UnknownDriverError(f"driver choice {choice!r} must be a mapping with `class:`")
            try:
                choices[str(choice)] = (driver_class(value["class"]), dict(value.get("args") or {}))
            except CatalogError as exc:
                problems.append(exc.problem)
        if not choices:
            raise UnknownDriverError("no driver choice can be used: " + "; ".join(problems))
        return [cls for cls, _ in choices.values()], choices
    return [driver_class(spec)], {}


def _mapping(spec: dict[str, Any], key: str) -> dict[str, Any]:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CatalogError(f"`{key}:` must be a mapping, got {redact(value)!r}")
    return value


def _parameters(spec: dict[str, Any]) -> list[Any]:
    out = []
    for pname, attrs in _mapping(spec, "parameters").items():
        if not isinstance(attrs, dict):
            raise CatalogError(f"parameter {pname!r} must be a mapping (type, default...), got {attrs!r}")
        try:
            out.append(UserParameter(str(pname), **attrs))
        except (TypeError, ValueError, KeyError) as exc:  # KeyError: unknown type
            raise CatalogError(f"parameter {pname!r} is invalid: {exc!r}") from None
    return out


def parse_entry(name: str, spec: Any, catalog: Any, problem: str | None = None) -> EntryBase:
    """One ``sources:`` item as a :class:`SiteCatalogEntry`, or a :class:`BrokenEntry`."""
    driver = spec.get("driver") if isinstance(spec, dict) else None
    try:
        if problem:
            raise CatalogError(f"invalid YAML: {problem}")
        if not isinstance(spec, dict):
            raise CatalogError(f"an entry must be a mapping with `driver:` and `args:`, got {redact(spec)!r}")
        if "cls" in spec:
            raise CatalogError("`cls:` entries (serialised objects) are not supported: they import code")
        if "driver" not in spec:
            raise CatalogError("the entry has no `driver:` (e.g. site_zarr, site_netcdf, site_catalog)")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise CatalogError(f"`description:` must be text, got {description!r}")
        cache = spec.get("cache") or []
        if not isinstance(cache, list):
            raise CatalogError(f"`cache:` must be a list, got {cache!r}")
        secrets_in(spec.get("args"))
        classes, choices = resolve_driver(driver)
        if len({getattr(c, "container", None) for c in classes}) > 1:
            raise CatalogError("the drivers of the entry give different containers; keep one")
        return SiteCatalogEntry(
            name=name,
            description=description,
            driver=[],  # intake would import class paths; ours are resolved: see .classes
            classes=classes,
            args=_mapping(spec, "args"),
            cache=cache,
            parameters=_parameters(spec),
            metadata=_mapping(spec, "metadata"),
            catalog_dir=getattr(catalog, "catalog_directory", None) or "",
            getenv=getattr(catalog, "getenv", True),
            getshell=False,
            catalog=catalog,
            original_driver=driver,
            choices=choices,
        )
    except CatalogError as exc:
        error = type(exc)(exc.problem, catalog_file(catalog), entry_label(name, catalog))
    except (TypeError, ValueError) as exc:  # intake's own checks (mixed containers...)
        error = CatalogError(f"invalid entry: {exc}", catalog_file(catalog), entry_label(name, catalog))
    return BrokenEntry(
        name=name, description="", driver=[], catalog=catalog, original_driver=driver, error=error
    )


class SiteCatalogEntry(EntryBase):
    """A catalog entry that renders its arguments in a sandbox and opens pinned to its site."""

    def __init__(
        self,
        *args: Any,
        original_driver: Any = None,
        classes: list[type] | None = None,
        choices: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.original_driver = original_driver
        #: The driver classes, first preferred (intake's ``_plugin``, resolved by us).
        self.classes = list(classes or [])
        self.choices = choices or {}
        if self.classes:
            self.container = getattr(self.classes[0], "container", None)

    @property
    def label(self) -> str:
        """Dotted name of the entry from the top catalog."""
        return entry_label(self.entry_name, self.catalog)

    @property
    def file(self) -> str | None:
        """The catalog file holding this entry."""
        return catalog_file(self.catalog)

    def _error(self, problem: str, cls: type[CatalogError] = CatalogError) -> CatalogError:
        return cls(problem, self.file, self.label)

    def all_parameters(self) -> list[Any]:
        """The entry's parameters, then its catalogs' ``metadata.parameters`` not shadowed."""
        params = self.parameters
        names = {p.name for p in params}
        cat = self.catalog
        for up in (getattr(cat, "user_parameters", None) or {}).values():
            if isinstance(up, UserParameter) and up.name not in names:
                params.append(up)
                names.add(up.name)
        return params

    def open_args(self, user_parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """``(driver class, rendered keyword arguments)`` for ``user_parameters``."""
        choice = user_parameters.pop("plugin", None)
        md = {**self.declared_metadata, "catalog_dir": self.catalog_dir}
        args = {"metadata": md, **self.raw_args}
        try:
            out = merge_args(
                args, user_parameters, self.all_parameters(), {"CATALOG_DIR": self.catalog_dir}, self.getenv
            )
        except CatalogError as exc:
            raise self._error(exc.problem, type(exc)) from None
        if self.choices:
            choice = choice if choice is not None else next(iter(self.choices))
            if choice not in self.choices:
                raise self._error(f"driver choice {choice!r} is not available: {sorted(self.choices)}")
            cls, extra = self.choices[choice]
            out.update(extra)
        elif self.classes:
            cls = self.classes[0]  # intake takes the first driver of a list
        else:
            raise self._error(unknown_driver_error(self.original_driver).problem, UnknownDriverError)
        if isinstance(out.get("transform"), str):  # derived sources import their transform
            try:
                import_trusted(out["transform"], "transform")
            except CatalogError as exc:
                raise self._error(exc.problem, type(exc)) from None
        return cls, out

    def site_of(self, args: dict[str, Any]) -> str | None:
        """The site of this entry given its rendered arguments."""
        return resolve_site(
            name=self.entry_name,
            metadata=self.declared_metadata,
            catalog=self.catalog,
            urlpath=args.get("urlpath"),
            storage_options=args.get("storage_options"),
        ).site

    def get(self, **user_parameters: Any) -> Any:
        """Instantiate the entry's source (pinned to its site); see ``LocalCatalogEntry.get``."""
        driver = self.original_driver
        try:
            source = super().get(**user_parameters)
        except CatalogError as exc:
            if exc.entry is None:  # e.g. a nested catalog file that is missing
                problem = str(exc) if exc.file and exc.file != self.file else exc.problem
                raise type(exc)(problem, self.file, self.label) from None
            raise
        except ImportError as exc:
            raise self._error(f"driver {driver!r} needs a module that is not installed: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise self._error(
                f"driver {driver!r} rejected the entry's arguments: {redact(str(exc))}"
            ) from None
        except Exception as exc:  # third-party drivers may do I/O when created
            raise self._error(f"driver {driver!r} failed: {type(exc).__name__}: {redact(str(exc))}") from None
        if isinstance(source, SiteXarraySource) or self.container == "catalog":
            return source
        site = self.site_of(self.open_args(dict(user_parameters))[1])
        return PooledSource(source, site, self, user_parameters)

    def describe(self) -> dict[str, Any]:
        """intake's description, secrets redacted."""
        names = [getattr(c, "name", None) or c.__name__ for c in self.classes] or self.original_driver
        return redact({**super().describe(), "driver": names, "plugin": names})


class BrokenEntry(SiteCatalogEntry):
    """An entry that cannot be used; raises its error when opened."""

    def __init__(self, *args: Any, error: CatalogError, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error = error

    def open_args(self, user_parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Raises the entry's error."""
        raise self.error

    def get(self, **user_parameters: Any) -> Any:
        """Raises the entry's error."""
        raise self.error
