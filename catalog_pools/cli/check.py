"""``catalog-pools check``: check every entry of a catalog."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from .app import Runner, register_command


@dataclass
class CheckResult:
    """Outcome of checking one entry."""

    label: str
    site: str | None
    driver: str
    urlpath: str | None
    problems: list[str]
    note: str = ""


def _reachability(urlpath: str, storage_options: dict | None) -> tuple[bool | None, str]:
    """``(True, "")`` found, ``(False, why)`` missing, ``(None, why)`` unverifiable here."""
    from ..catalog.urls import local_path

    if any(c in urlpath for c in "*?[{"):
        return None, "pattern not checked"
    path = local_path(urlpath)
    if path is not None:
        if os.path.exists(path):
            return True, ""
        parent = os.path.dirname(path)
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
        if parent and not os.access(parent, os.R_OK | os.X_OK):
            return None, f"not readable from here ({parent} is not accessible)"
        return False, f"{path} does not exist"
    try:
        import fsspec

        fs, stripped = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
        return (True, "") if fs.exists(stripped) else (False, f"{urlpath} does not exist")
    except Exception as exc:  # network, credentials: the site may reach it, we can't
        return None, f"not reachable from here ({type(exc).__name__}: {exc})"


def check_catalog(path: str) -> tuple[list[CheckResult], list[str]]:
    """Check every entry of a catalog file.

    Returns
    -------
    (results, problems)
        One result per data entry, and one line per problem found (catalog-level
        problems included), each naming the file and entry.
    """
    from ..catalog.siting import resolve_site
    from ..catalog.sources import SiteXarraySource
    from ..catalog.yaml_catalog import open_catalog, plugin_known, walk_entries
    from ..errors import CatalogError

    problems: list[str] = []
    try:
        cat = open_catalog(path)
    except CatalogError as exc:
        return [], [str(exc)]
    results: list[CheckResult] = []
    for info in walk_entries(cat):
        where = f"catalog {info.file}, entry {info.label!r}"
        result = CheckResult(info.label, None, str(info.driver), None, [])
        results.append(result)
        if info.error is not None:
            msg = str(info.error)
            result.problems.append(msg if isinstance(info.error, CatalogError) else f"{where}: {msg}")
            continue
        if not plugin_known(info.driver):
            from ..catalog.yaml_catalog import unknown_driver_error

            result.problems.append(str(unknown_driver_error(info.driver, info.file, info.label)))
            continue
        args = info.args or {}
        urlpath = args.get("urlpath")
        result.urlpath = urlpath if isinstance(urlpath, str) else None
        try:
            source = info.entry()
            if isinstance(source, SiteXarraySource):
                result.site = source.site
            else:
                result.site = resolve_site(
                    name=info.entry.name,
                    metadata=info.entry._metadata,
                    catalog=info.catalog,
                    urlpath=urlpath,
                ).site
        except (CatalogError, NotImplementedError) as exc:
            result.problems.append(str(exc) if isinstance(exc, CatalogError) else f"{where}: {exc}")
            continue
        if isinstance(urlpath, str):
            so = args.get("storage_options")
            found, why = _reachability(urlpath, so if isinstance(so, dict) else None)
            if found is False:
                result.problems.append(f"{where}: urlpath {why}")
            elif found is None:
                result.note = why
    problems.extend(p for r in results for p in r.problems)
    return results, problems


@register_command("check", help="check a catalog: every entry has a site, a driver and its data")
def _check_setup(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("catalog", help="catalog YAML file (path or URL)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")

    def run(args: argparse.Namespace) -> int:
        results, problems = check_catalog(args.catalog)
        if not args.quiet:
            by_site: dict[str, list[CheckResult]] = {}
            for r in results:
                if not r.problems:
                    by_site.setdefault(r.site or "(unpinned: site null)", []).append(r)
            for site in sorted(by_site):
                print(f"{site}:")
                for r in by_site[site]:
                    note = f"  [{r.note}]" if r.note else ""
                    print(f"  {r.label}  ({r.driver})  {r.urlpath or ''}{note}")
        for p in problems:
            print("ERROR: " + " ".join(p.split()), file=sys.stderr)
        if not args.quiet:
            ok = len(results) - len({r.label for r in results if r.problems})
            print(f"{ok} of {len(results)} entries OK, {len(problems)} problem(s)")
        return 1 if problems else 0

    return run
