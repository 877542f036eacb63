"""Which site hosts a catalog entry: reading the declarations in catalog files.

Declarations, most specific first:

1. ``site=`` passed to a driver, or ``metadata: {site: ...}`` on the entry;
2. ``metadata: {site: ...}`` of the file holding the entry, or of the entry
   that nests that file in a parent catalog (the two must agree);
3. the same for each enclosing catalog, outwards;
4. ``metadata: {sites: {<site>: {roots: [...]}}}`` of the file or an
   enclosing one, when the entry's urlpath lies under a root.

``site: null`` at any level opts out explicitly (the dataset is not pinned).
A declared site that disagrees with the root holding the urlpath is an error,
as are two disagreeing declarations at the same level.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.sites import validate_site
from ..errors import CatalogError, MissingSiteError, SiteConflictError
from .urls import Location, data_locations, has_protocol, normalize

#: Sentinel for "no site given" (``None`` means explicitly unpooled).
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()

HOW_TO_DECLARE = (
    "declare where the data lives with `metadata: {site: <name>}` on the entry, "
    "on the catalog file (default for all its entries), or list the site's "
    "`metadata: {sites: {<name>: {roots: [<path or URL prefix>]}}}`; use "
    "`site: null` to opt out of pinning explicitly"
)


@dataclass(frozen=True)
class SiteDecision:
    """The site an entry resolved to and the declaration it came from."""

    site: str | None
    origin: str


def catalog_chain(catalog: Any) -> list[Any]:
    """``catalog`` and its enclosing catalogs, innermost first."""
    chain: list[Any] = []
    seen: set[int] = set()
    while catalog is not None and id(catalog) not in seen and len(chain) < 64:
        seen.add(id(catalog))
        chain.append(catalog)
        catalog = getattr(catalog, "cat", None)
    return chain


def catalog_file(catalog: Any) -> str | None:
    """The path or URL of a catalog's YAML file, if it has one."""
    path = vars(catalog).get("path") if catalog is not None else None
    return path if isinstance(path, str) else None


def file_metadata(catalog: Any) -> dict[str, Any]:
    """The ``metadata:`` block written in ``catalog``'s own file.

    intake merges the metadata of the entry nesting a file into the nested
    catalog's ``.metadata``; this reads the file's own block so the two can be
    told apart.
    """
    own = vars(catalog).get("_file_metadata")
    if isinstance(own, dict):
        return own
    text = vars(catalog).get("text")
    if isinstance(text, str):
        cached = vars(catalog).get("_catalog_pools_file_md")
        if cached is not None and cached[0] == hash(text):
            return cached[1]
        from .parsing import load_yaml

        try:
            data = load_yaml(text, None)[0]
        except CatalogError:
            data = None
        md = data.get("metadata") if isinstance(data, dict) else None
        md = md if isinstance(md, dict) else {}
        catalog._catalog_pools_file_md = (hash(text), md)
        return md
    md = getattr(catalog, "metadata", None)
    return md if isinstance(md, dict) else {}


def nesting_metadata(catalog: Any) -> dict[str, Any]:
    """``metadata:`` of the parent-catalog entry that nests ``catalog``."""
    md = vars(catalog).get("nest_metadata")
    return md if isinstance(md, dict) else {}


def entry_label(name: str | None, catalog: Any) -> str:
    """Dotted entry name from the top catalog, e.g. ``ecmwf.predictions``."""
    names = [name] if name else []
    for cat in catalog_chain(catalog):
        if getattr(cat, "cat", None) is None:
            break  # the top catalog's own name is not part of the path
        cat_name = vars(cat).get("name")
        if cat_name:
            names.append(cat_name)
    return ".".join(reversed(names)) or (name or "?")


def _checked(site: Any, origin: str, file: str | None, entry: str | None) -> str | None:
    if site is None:
        return None
    try:
        return validate_site(site)
    except ValueError as exc:
        raise CatalogError(f"{exc} (declared in {origin})", file, entry) from None


def declared_sites(catalog: Any) -> Iterator[tuple[Any, str]]:
    """Site declarations of the enclosing catalogs, innermost first.

    Yields ``(site, origin)``; raises :class:`SiteConflictError` when a nested
    file and the entry nesting it disagree.
    """
    for cat in catalog_chain(catalog):
        file = catalog_file(cat)
        own, nest = file_metadata(cat), nesting_metadata(cat)
        if "site" in own and "site" in nest and own["site"] != nest["site"]:
            nest_name = vars(cat).get("name")
            raise SiteConflictError(
                f"the file declares site {own['site']!r} but the entry {nest_name!r} "
                f"nesting it in {catalog_file(getattr(cat, 'cat', None)) or 'its parent'} "
                f"declares site {nest['site']!r}; keep one of them",
                file,
            )
        if "site" in own:
            yield own["site"], f"metadata of {file or 'catalog ' + str(vars(cat).get('name'))}"
        elif "site" in nest:
            yield nest["site"], f"metadata of the entry nesting {file or 'a catalog'}"


def _as_roots(value: Any, site: str, file: str | None) -> list[str]:
    roots = value.get("roots") if isinstance(value, Mapping) else None
    if isinstance(roots, str):
        roots = [roots]
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise CatalogError(
            f"metadata.sites.{site} must be a mapping with `roots:` a list of path or "
            f'URL prefixes, e.g. `{site}: {{roots: ["/data/{site}", '
            f'"s3://{site}-bucket/"]}}`; got {value!r}',
            file,
        )
    return roots


def catalog_dir(catalog: Any) -> str:
    """The directory (or URL prefix) holding a catalog's file."""
    d = getattr(catalog, "catalog_directory", None)
    if isinstance(d, str):
        return d
    md = getattr(catalog, "metadata", None) or {}
    return str(md.get("catalog_dir", "") or os.getcwd())


def expand_root(root: str, catalog: Any) -> str:
    """Render ``{{ CATALOG_DIR }}`` / ``{{ env(...) }}`` in a root; anchor relative paths.

    Relative local roots are taken from the catalog's directory, so a catalog
    means the same thing whatever the current directory.
    """
    from .parsing import render

    cdir = catalog_dir(catalog)
    try:
        rendered = str(render(root, {"CATALOG_DIR": cdir}))
    except CatalogError as exc:
        raise CatalogError(f"metadata.sites root {root!r}: {exc.problem}", catalog_file(catalog)) from None
    if not has_protocol(rendered) and not os.path.isabs(os.path.expanduser(rendered)):
        sep = "" if cdir.endswith("/") else "/"
        rendered = f"{cdir}{sep}{rendered}"
    return rendered


def site_roots(catalogs: list[Any]) -> dict[str, list[tuple[str, Location]]]:
    """``{site: [(root as written, normalised root), ...]}`` declared by ``catalogs``."""
    out: dict[str, list[tuple[str, Location]]] = {}
    for cat in catalogs:
        sites = file_metadata(cat).get("sites")
        if sites is None:
            continue
        file = catalog_file(cat)
        if not isinstance(sites, Mapping):
            raise CatalogError(
                f"metadata.sites must map site names to `{{roots: [...]}}`, got {sites!r}", file
            )
        for site, value in sites.items():
            _checked(site, "metadata.sites", file, None)
            for root in _as_roots(value, site, file):
                expanded = expand_root(root, cat)
                out.setdefault(site, []).append((expanded, normalize(expanded)))
    return out


def site_of_location(
    location: Location,
    roots: dict[str, list[tuple[str, Location]]],
    file: str | None = None,
    entry: str | None = None,
) -> str | None:
    """The site whose root holds ``location`` (longest root wins), or ``None``."""
    best: dict[int, set[str]] = {}
    for site, items in roots.items():
        for _, root in items:
            if location.is_within(root):
                best.setdefault(len(root.parts), set()).add(site)
    if not best:
        return None
    sites = best[max(best)]
    if len(sites) > 1:
        raise SiteConflictError(
            f"{location} lies under roots of several sites {sorted(sites)} declared in "
            "metadata.sites; a root may belong to one site only",
            file,
            entry,
        )
    return next(iter(sites))


def _root_site(urlpath: Any, storage_options: Any, catalog: Any, file: str | None, label: str) -> str | None:
    """The one site whose roots hold every location of the entry's data, or ``None``."""
    locations = data_locations(urlpath, storage_options)
    if not locations:
        return None
    try:
        roots = site_roots(catalog_chain(catalog))
    except CatalogError as exc:
        raise CatalogError(exc.problem, exc.file, label) from None
    if not roots:
        return None
    found = {loc: site_of_location(normalize(loc), roots, file, label) for loc in locations}
    sites = {s for s in found.values() if s is not None}
    if len(sites) > 1:
        where = ", ".join(f"{loc} -> {s or 'no site'}" for loc, s in found.items())
        raise SiteConflictError(
            f"the entry's data span several sites ({where}); split the entry", file, label
        )
    return next(iter(sites), None)


def resolve_site(
    *,
    name: str | None,
    metadata: Mapping[str, Any] | None,
    catalog: Any,
    urlpath: Any,
    site: Any = UNSET,
    storage_options: Any = None,
) -> SiteDecision:
    """Resolve the site of one entry (see the module docstring for the rules).

    Parameters
    ----------
    name
        Entry name, for messages.
    metadata
        The entry's own ``metadata:`` block.
    catalog
        The catalog holding the entry (``None`` for a source made directly).
    urlpath
        The entry's (expanded) urlpath, list or glob, matched against site
        roots (see :func:`~catalog_pools.catalog.urls.data_locations`).
    site
        A site passed as an argument, if any.
    storage_options
        The entry's storage options (``fo`` of ``reference://`` URLs).

    Raises
    ------
    MissingSiteError
        If nothing declares a site and no root holds the urlpath.
    SiteConflictError
        If declarations disagree.
    CatalogError
        If a declared site name is invalid.
    """
    file = catalog_file(catalog)
    label = entry_label(name, catalog)
    md = metadata or {}
    declared: list[tuple[Any, str]] = []
    if site is not UNSET:
        declared.append((site, "the site= argument"))
    if "site" in md:
        declared.append((md["site"], "the entry's metadata"))
    if len(declared) == 2 and declared[0][0] != declared[1][0]:
        raise SiteConflictError(
            f"site={declared[0][0]!r} was passed but the entry's metadata declares site {declared[1][0]!r}",
            file,
            label,
        )
    if not declared:
        try:
            declared = list(declared_sites(catalog))[:1]
        except SiteConflictError as exc:
            raise SiteConflictError(exc.problem, exc.file, label) from None
    chosen = declared[0] if declared else None
    if chosen is not None:
        chosen = (_checked(chosen[0], chosen[1], file, label), chosen[1])
        if chosen[0] is None:
            return SiteDecision(None, chosen[1])

    root_site = _root_site(urlpath, storage_options, catalog, file, label)
    if chosen is not None:
        if root_site is not None and root_site != chosen[0]:
            raise SiteConflictError(
                f"{chosen[1]} declares site {chosen[0]!r} but its data ({urlpath}) lie "
                f"under a root of site {root_site!r} (metadata.sites); fix one of them",
                file,
                label,
            )
        return SiteDecision(chosen[0], chosen[1])
    if root_site is not None:
        return SiteDecision(root_site, "metadata.sites roots")
    raise MissingSiteError(f"no site is declared: {HOW_TO_DECLARE}", file, label)
