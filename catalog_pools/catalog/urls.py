"""Normalising local paths and fsspec URLs so that they can be compared.

``/data/ecmwf/../ecmwf/x.zarr``, ``file:///data/ecmwf/x.zarr/`` and
``data/ecmwf/x.zarr`` (from ``/``) are the same location; so are
``HTTP://Host:80/a/b`` and ``http://host/a/b``. Comparison is on parsed path
components, never on raw string prefixes (``/data/ecmwf2`` is not under
``/data/ecmwf``).
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

#: fsspec protocol aliases that name the same storage.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "local": "file", "abfss": "abfs"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    """A normalised storage location.

    Attributes
    ----------
    scheme
        ``"file"`` for local paths, else the (de-aliased) fsspec protocol.
    netloc
        Host (lower case, default port dropped) or bucket; ``""`` for files.
    parts
        Path components after normalisation (``..`` resolved, no empty parts).
    """

    scheme: str
    netloc: str
    parts: tuple[str, ...]

    def is_within(self, root: Location) -> bool:
        """True if this location is ``root`` or lies below it."""
        if self.scheme != root.scheme:
            return False
        if not root.netloc and not root.parts:
            return True  # a scheme-only root ("gs://") holds the whole scheme
        return self.netloc == root.netloc and self.parts[: len(root.parts)] == root.parts

    def __str__(self) -> str:
        path = "/" + "/".join(self.parts)
        if self.scheme == "file":
            return path
        return f"{self.scheme}://{self.netloc}{path}"


def has_protocol(urlpath: str) -> bool:
    """True if ``urlpath`` starts with an fsspec protocol (``s3://``, ``file://``...)."""
    from fsspec.core import split_protocol

    # fsspec ignores one-letter "protocols" (Windows drive letters).
    return "://" in urlpath and split_protocol(urlpath)[0] is not None


def local_path(urlpath: str) -> str | None:
    """The absolute local path ``urlpath`` names, or ``None`` for remote URLs."""
    from fsspec.core import split_protocol, strip_protocol
    from fsspec.utils import stringify_path

    urlpath = stringify_path(urlpath)
    protocol = split_protocol(urlpath)[0] if "://" in urlpath else None
    if protocol is None:
        return os.path.abspath(os.path.expanduser(urlpath))
    if _SCHEME_ALIASES.get(protocol.lower(), protocol.lower()) == "file":
        return os.path.abspath(unquote(strip_protocol(urlpath)) or "/")
    return None


def normalize(urlpath: str | os.PathLike[str]) -> Location:
    """Parse a local path or URL into a comparable :class:`Location`.

    Parameters
    ----------
    urlpath
        A local path (relative paths are taken from the current directory),
        ``file://`` URL or any fsspec URL (``s3://bucket/key``,
        ``https://host/path``).

    Examples
    --------
    >>> str(normalize("s3a://Bucket/a/./b/"))
    's3://Bucket/a/b'
    >>> normalize("/data/ecmwf2").is_within(normalize("/data/ecmwf"))
    False
    """
    urlpath = os.fspath(urlpath)
    path = local_path(urlpath)
    if path is not None:
        return Location("file", "", _parts(path))
    split = urlsplit(urlpath)
    scheme = split.scheme.lower()
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    netloc = split.netloc
    if scheme in _DEFAULT_PORTS:
        # Host names are case-insensitive; bucket names (s3, gs) are not.
        host = (split.hostname or "").lower()
        port = split.port
        netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
        if split.username:
            netloc = f"{split.username}@{netloc}"
    return Location(scheme, netloc, _parts(unquote(split.path)))


def _parts(path: str) -> tuple[str, ...]:
    norm = posixpath.normpath("/" + path.replace(os.sep, "/"))
    return tuple(p for p in norm.split("/") if p)


def normalized_url(urlpath: str) -> str:
    """``urlpath`` with ``.``/``..`` resolved and local paths made absolute.

    Used before opening, so that ``{{ CATALOG_DIR }}/../data`` also works on
    object stores, where ``..`` is not resolved by the server.
    """
    if not isinstance(urlpath, str) or any(c in urlpath for c in "*?[{"):
        return urlpath  # globs and patterns are left to the opener
    path = local_path(urlpath)
    if path is not None:
        return path
    split = urlsplit(urlpath)
    norm = posixpath.normpath(split.path) if split.path else ""
    if norm in (".", "/"):
        norm = ""
    if split.path.endswith("/") and norm:
        norm += "/"
    rebuilt = f"{split.scheme}://{split.netloc}{norm}"
    if split.query:
        rebuilt += f"?{split.query}"
    return rebuilt


_WILDCARDS = "*?[{"
_MAX_REFERENCE_BYTES = 16 * 2**20


def _reference_targets(fo: Any) -> list[str]:
    """Directories of the targets a local kerchunk reference file points to (bounded read)."""
    local = local_path(fo) if isinstance(fo, str) else None
    if local is None or not os.path.isfile(local) or os.path.getsize(local) > _MAX_REFERENCE_BYTES:
        return []
    try:
        with open(local, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    refs = doc.get("refs", doc)
    templates: dict[str, Any] = doc["templates"] if isinstance(doc.get("templates"), dict) else {}
    found: set[str] = set()
    for value in refs.values() if isinstance(refs, dict) else []:
        if isinstance(value, list) and value and isinstance(value[0], str):
            target = value[0]
            for name, tpl in templates.items():
                target = target.replace("{{" + str(name) + "}}", str(tpl)).replace(
                    "{{ " + str(name) + " }}", str(tpl)
                )
            found.add(target.rsplit("/", 1)[0] or target)
    return sorted(found)[:1000]


def data_locations(urlpath: Any, storage_options: Any = None) -> list[str]:
    """The storage locations an entry's data come from, for matching against site roots.

    Each element of a list; the innermost URL of a chain (``simplecache::s3://b/x``
    reads ``s3://b/x``); the reference file ``fo`` of a ``reference://`` URL;
    the fixed directory before the first wildcard of a glob; local paths with
    symlinks resolved.
    """
    items = list(urlpath) if isinstance(urlpath, (list, tuple)) else [urlpath]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            continue
        url = item.split("::")[-1]
        if url.startswith("reference://"):
            fo = (storage_options or {}).get("fo") if isinstance(storage_options, dict) else None
            out.extend([*data_locations(fo), *_reference_targets(fo)] if fo else [url])
            continue
        cut = min((url.find(c) for c in _WILDCARDS if c in url), default=-1)
        if cut >= 0:
            url = url[:cut].rsplit("/", 1)[0] or "/"
        local = local_path(url)
        out.append(os.path.realpath(local) if local is not None else url)
    return out


def is_multi(urlpath: Any) -> bool:
    """True for a list of paths or a glob (opened with ``open_mfdataset``)."""
    return isinstance(urlpath, (list, tuple)) or (isinstance(urlpath, str) and "*" in urlpath)


def expand_paths(urlpath: Any, storage_options: Mapping[str, Any]) -> list[str]:
    """A list or glob of paths/URLs as a sorted list of paths/URLs."""
    if isinstance(urlpath, (list, tuple)):
        return [normalized_url(p) for p in urlpath]
    if not has_protocol(urlpath):
        return sorted(glob.glob(urlpath))
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(urlpath, storage_options=dict(storage_options))
    return [fs.unstrip_protocol(p) for p in sorted(paths)]
