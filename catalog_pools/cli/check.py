"""``catalog-pools check``: check every entry of a catalog, one line per entry as it goes.

Each entry ends in one status:

``OK``
    the data were found (every element of a list or glob);
``missing``
    an authoritative answer says the data are not there (ENOENT, HTTP 404);
``unreachable``
    no answer from here within ``catalog_pools.check.timeout`` seconds, a
    connection error, or no filesystem for the protocol; a host that failed
    once is not asked again during the run;
``site-private``
    a local path of a site this machine cannot see (under a declared root of
    the entry's site that does not exist here, or a directory we may not read);
``error``
    the entry cannot be used as written (driver, site, arguments, templates).

Only errors make the exit status 1 (``--strict``: missing data too).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import dask

from .app import Runner, register_command

STATUSES = ("OK", "missing", "unreachable", "site-private", "error")
DEADLINE_KEY = "catalog_pools.check.deadline"
#: Loggers of fsspec backends that print retry tracebacks for every dead host.
NOISY_LOGGERS = (
    "botocore",
    "aiobotocore",
    "s3fs",
    "gcsfs",
    "google",
    "fsspec",
    "urllib3",
    "aiohttp",
    "asyncio",
)
_PATTERN_CHARS = "*?[{"


@dataclass
class CheckResult:
    """Outcome of checking one entry."""

    label: str
    file: str | None
    status: str
    site: str | None = None
    driver: str = ""
    urls: list[str] = field(default_factory=list)
    reason: str = ""

    def line(self) -> str:
        """The human-readable line (errors: the full error message)."""
        if self.status == "error":
            return "ERROR: " + " ".join(self.reason.split())
        urls = " ".join(self.urls[:3]) + (f" (+{len(self.urls) - 3})" if len(self.urls) > 3 else "")
        site = self.site if self.site is not None else "unpinned"
        why = f"  [{self.reason}]" if self.reason else ""
        return f"{self.status:<12} {self.label}  ({self.driver})  site={site}  {urls}{why}"


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Keep fsspec backends' retry logs and warnings off stderr."""
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _host_key(protocol: str, url: str, so: dict[str, Any]) -> str:
    from urllib.parse import urlsplit

    if protocol in ("s3", "s3a"):
        endpoint = so.get("endpoint_url") or (so.get("client_kwargs") or {}).get("endpoint_url")
        return f"s3 endpoint {endpoint or 'AWS'}"
    if protocol in ("gs", "gcs"):
        return "Google Cloud Storage"
    return f"{protocol}://{urlsplit(url).netloc}"


class Prober:
    """Looks for data with a per-URL timeout; remembers dead hosts for the run."""

    def __init__(self, timeout: float, deadline: float) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.dead: dict[str, str] = {}

    def remote(self, url: str, so: dict[str, Any]) -> tuple[str, str]:  # noqa: PLR0911 - one per status
        """``(status, reason)`` for one remote URL."""
        from fsspec.core import split_protocol

        from ..catalog.parsing import CatalogUnreachableError, call_with_timeout, missing_extra, redact

        protocol = split_protocol(url)[0] or "file"
        key = _host_key(protocol, url, so)
        if key in self.dead:
            return "unreachable", f"{key} unreachable earlier in this run ({self.dead[key]})"
        left = self.deadline - time.monotonic()
        if left <= 0:
            return "unreachable", "not checked: the whole-catalog deadline passed"
        try:
            call_with_timeout(lambda: _remote_lookup(url, so), min(self.timeout, left), url)
            return "OK", ""
        except FileNotFoundError:
            return "missing", "not found (authoritative answer from the server)"
        except PermissionError as exc:
            return "unreachable", f"access denied from here: {redact(str(exc))[:200]}"
        except TypeError as exc:
            return "error", f"storage_options {redact(so)} rejected for {url}: {exc}"
        except ImportError as exc:
            reason = str(missing_extra(exc, url))
        except CatalogUnreachableError as exc:
            reason = str(exc)
        except Exception as exc:  # connection errors: aiohttp, botocore (not OSError)...
            reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
        self.dead[key] = reason.replace(url, "URL")
        return "unreachable", reason


def _authoritative(exc: FileNotFoundError) -> FileNotFoundError:
    """``exc`` if the server said "not found"; else the connection error it hides.

    fsspec's HTTP filesystem turns every failure of ``info()`` (refused
    connection, DNS, 500, 403) into ``FileNotFoundError``, keeping the cause.
    """
    cause = exc.__cause__
    if cause is None or isinstance(cause, FileNotFoundError) or getattr(cause, "status", None) in (404, 410):
        return exc
    if isinstance(cause, TypeError):
        raise cause  # storage_options the filesystem does not take
    status = getattr(cause, "status", None)
    raise ConnectionError(f"HTTP {status}" if status else f"{type(cause).__name__}: {cause}") from None


def _remote_lookup(url: str, so: dict[str, Any]) -> None:
    try:
        _remote_lookup_raw(url, so)
    except FileNotFoundError as exc:
        raise _authoritative(exc) from None


def _remote_lookup_raw(url: str, so: dict[str, Any]) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **so)
    if any(c in path for c in _PATTERN_CHARS):
        if not fs.glob(_as_glob(path)):
            raise FileNotFoundError(url)
        return
    try:
        fs.info(path)
    except FileNotFoundError as exc:
        if not url.startswith("http"):
            raise
        _authoritative(exc)
        for marker in (".zmetadata", "zarr.json", ".zgroup"):  # a zarr store over HTTP has no listing
            try:
                fs.info(path.rstrip("/") + "/" + marker)
                return
            except FileNotFoundError:
                continue
        raise


def _as_glob(path: str) -> str:
    """intake path patterns (``little_{color}.tif``) as globs."""
    import re

    return re.sub(r"\{[^{}]*\}", "*", path)


def _local_status(path: str, site: str | None, site_roots: list[str]) -> tuple[str, str]:
    if any(c in path for c in _PATTERN_CHARS):
        return ("OK", "") if glob.glob(_as_glob(path)) else _absent(path, site, site_roots, "no file matches")
    if os.path.exists(path):
        return "OK", ""
    return _absent(path, site, site_roots, f"{path} does not exist")


def _absent(path: str, site: str | None, site_roots: list[str], why: str) -> tuple[str, str]:
    """missing, or site-private when the site's own paths are not visible from here."""
    fixed = path
    for c in _PATTERN_CHARS:
        fixed = fixed.split(c)[0]
    if site is not None:
        for root in site_roots:
            if (fixed + "/").startswith(root.rstrip("/") + "/") and not os.path.isdir(root):
                return "site-private", f"under {root}, a root of site {site!r} not visible here"
        parent = os.path.dirname(fixed.rstrip("/")) or "/"
        while parent != "/" and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent == "/" and not os.path.exists(fixed):
            top = "/" + fixed.strip("/").split("/")[0]
            return "site-private", f"{top} does not exist on this machine (a path of site {site!r})"
        if not os.access(parent, os.R_OK | os.X_OK):
            return "site-private", f"{parent} is not readable from here (site {site!r})"
    return "missing", why


def _entry_urls(args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    from ..catalog.urls import data_locations

    so = args.get("storage_options")
    so = dict(so) if isinstance(so, dict) else {}
    value = next((args[k] for k in ("urlpath", "path", "esmcol_obj") if args.get(k)), None)
    items = value if isinstance(value, (list, tuple)) else [value]
    urls = [u for u in items if isinstance(u, str) and u]
    if any(u.startswith("reference://") for u in urls):
        return data_locations(urls, so), {}
    return [u.split("::")[-1] for u in urls], so


def check_entry(info: Any, prober: Prober) -> CheckResult | None:
    """The result for one entry found by ``walk_entries`` (``None`` for a nested catalog)."""
    from ..catalog.entries import SiteCatalogEntry
    from ..catalog.parsing import redact
    from ..catalog.replicas import source_copies, structure_mismatch
    from ..catalog.siting import catalog_chain, site_roots
    from ..catalog.sources import SiteXarraySource
    from ..catalog.urls import local_path
    from ..errors import CatalogError

    if info.child is not None:
        return None
    result = CheckResult(info.label, info.file, "error", driver=str(redact(info.driver)))
    where = f"catalog {info.file}, entry {info.label!r}: "
    try:
        if info.error is not None:
            raise info.error
        entry = info.entry
        if not isinstance(entry, SiteCatalogEntry):
            raise CatalogError("not an entry catalog_pools can read", info.file, info.label)
        args = info.args or {}
        result.site = entry.site_of(args)
        if entry.classes and issubclass(entry.classes[0], SiteXarraySource):
            entry.get()._check_args()  # our drivers validate their arguments without I/O
        urls, so = _entry_urls(args)
        # a replicated entry: each copy against its own site's roots
        copies = source_copies(entry.get()) if "replicas" in (entry.describe().get("metadata") or {}) else {}
        targets = [(u, result.site, so) for u in urls] + [(u, s, o) for s, (u, o) in list(copies.items())[1:]]
        result.urls = [str(redact(u)) for u, _, _ in targets]
        all_roots = site_roots(catalog_chain(info.catalog))
        statuses = []
        for url, site, options in targets:
            local = local_path(url)
            roots = [loc for loc, _ in all_roots.get(site or "", []) if local_path(loc) is not None]
            status = _local_status(local, site, roots) if local is not None else prober.remote(url, options)
            statuses.append(
                (status[0], f"copy of {site}: {status[1]}" if copies and status[1] else status[1])
            )
        if copies and all(s == "OK" for s, _ in statuses) and (problem := structure_mismatch(copies)):
            statuses.append(("error", problem))
        worst = max(statuses, key=lambda s: STATUSES.index(s[0]), default=("OK", "no urlpath to check"))
        result.status, result.reason = worst[0], str(redact(worst[1]))
        if result.status == "error":
            result.reason = where + result.reason
    except CatalogError as exc:
        result.reason = str(redact(str(exc)))
    except Exception as exc:  # any driver or template failure ends as this entry's error line
        result.reason = where + str(redact(f"{type(exc).__name__}: {exc}"))
    return result


def check_catalog(
    path: str, on_result: Callable[[CheckResult], None] | None = None, timeout: float | None = None
) -> list[CheckResult]:
    """Check every entry of a catalog file; ``on_result`` sees each result as it is made."""
    from ..catalog.parsing import redact, url_timeout
    from ..catalog.yaml_catalog import open_catalog, walk_entries
    from ..errors import CatalogError

    results: list[CheckResult] = []

    def emit(result: CheckResult | None) -> None:
        if result is not None:
            results.append(result)
            if on_result is not None:
                on_result(result)

    deadline = time.monotonic() + float(dask.config.get(DEADLINE_KEY, 50))
    prober = Prober(url_timeout() if timeout is None else timeout, deadline)
    with quiet_third_party():
        try:
            cat = open_catalog(path)
        except CatalogError as exc:
            emit(CheckResult("(catalog)", path, "error", reason=str(redact(str(exc)))))
            return results
        except Exception as exc:  # never a traceback
            emit(
                CheckResult("(catalog)", path, "error", reason=f"catalog {path}: {type(exc).__name__}: {exc}")
            )
            return results
        for problem in cat.plugin_problems:
            emit(CheckResult("plugins", problem.file, "error", reason=str(problem)))
        for info in walk_entries(cat):
            for problem in getattr(info.child, "plugin_problems", []):
                emit(CheckResult("plugins", problem.file, "error", reason=str(problem)))
            emit(check_entry(info, prober))
    return results


def counts(results: list[CheckResult]) -> dict[str, int]:
    """Number of entries per status."""
    return {s: sum(r.status == s for r in results) for s in STATUSES}


@register_command("check", help="check a catalog: every entry has a site, a driver and its data")
def _check_setup(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("catalog", help="catalog YAML file (path or URL)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print entries that are not OK only")
    parser.add_argument("--json", action="store_true", help="print one JSON document (for CI)")
    parser.add_argument("--timeout", type=float, help="seconds per remote URL (catalog_pools.check.timeout)")
    parser.add_argument("--strict", action="store_true", help="exit 1 for missing data too")

    def run(args: argparse.Namespace) -> int:
        start = time.monotonic()
        progress = sys.stderr.isatty() and not args.json
        seen = [0]

        def show(r: CheckResult) -> None:
            seen[0] += 1
            if progress:
                sys.stderr.write("\r\x1b[K")
            if not (args.json or (args.quiet and r.status == "OK")):
                print(r.line(), file=sys.stderr if r.status == "error" else sys.stdout, flush=True)
            if progress:
                sys.stderr.write(f"[{seen[0]} entries checked, {time.monotonic() - start:.0f} s]")
                sys.stderr.flush()

        results = check_catalog(args.catalog, show, args.timeout)
        if progress:
            sys.stderr.write("\r\x1b[K")
        n = counts(results)
        seconds = time.monotonic() - start
        if args.json:
            doc = {"catalog": args.catalog, "seconds": round(seconds, 2), "counts": n}
            print(json.dumps({**doc, "entries": [asdict(r) for r in results]}, indent=1))
        elif not args.quiet:
            ok = n["OK"]
            detail = ", ".join(f"{k} {v}" for k, v in n.items())
            bad = len(results) - ok
            print(f"{ok} of {len(results)} entries OK, {bad} problem(s) ({detail}) in {seconds:.1f} s")
        return 1 if n["error"] or (args.strict and n["missing"]) else 0

    return run
