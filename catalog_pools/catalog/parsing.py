"""Reading catalog text safely: files, YAML, templates, secrets.

A catalog is untrusted input. This module reads it with limits:

- only regular files (a FIFO, ``/dev/zero`` or a directory is refused before
  any read), at most :data:`MAX_BYTES`; remote files within a timeout;
- YAML composed first and inspected (node count after alias expansion,
  duplicate keys blamed on their entry) before any Python object is built;
- Jinja templates rendered in :class:`jinja2.sandbox.SandboxedEnvironment`
  with intake's ``env()`` and ``CATALOG_DIR``; ``shell()`` is never run;
- values of ``env()`` and secret-looking ``storage_options`` keys are
  redacted (``***``) by :func:`redact` wherever we print or raise.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import dask
import yaml

from ..errors import CatalogError, DataNotFoundError

T = TypeVar("T")

#: Largest catalog file read (bytes).
MAX_BYTES = 8 * 2**20
#: Largest number of YAML nodes, counting each alias expansion (alias bombs).
MAX_NODES = 200_000
TIMEOUT_KEY = "catalog_pools.check.timeout"

#: fsspec protocol -> the catalog_pools extra that installs its filesystem.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}

#: storage_options / argument keys whose values are never shown.
SECRET_KEY_RE = re.compile(
    r"(^|_)(key|secret|token|password|passwd|credentials?|auth|session|sas)($|_)", re.IGNORECASE
)
_SECRET_VALUES: set[str] = set()


class CatalogUnreachableError(OSError):
    """A remote location did not answer in time, or its filesystem is missing."""


def url_timeout() -> float:
    """Seconds allowed for one remote access (dask config ``catalog_pools.check.timeout``)."""
    return float(dask.config.get(TIMEOUT_KEY, 3.0))


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` run in a daemon thread; :class:`CatalogUnreachableError` after ``timeout`` s.

    fsspec filesystems (aiohttp, botocore, gcsfs) retry for minutes on a dead
    host and offer no common deadline; a daemon thread left behind does not
    keep the interpreter alive.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="catalog-pools-io", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CatalogUnreachableError(f"{what}: no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def missing_extra(exc: ImportError, url: Any) -> CatalogUnreachableError:
    """The error for a URL whose fsspec filesystem is not installed."""
    from fsspec.core import split_protocol

    first = url[0] if isinstance(url, (list, tuple)) and url else url
    protocol = split_protocol(first.split("::")[-1])[0] if isinstance(first, str) else None
    protocol = protocol or "file"
    extra = EXTRAS.get(protocol)
    hint = f"pip install 'catalog-pools[{extra}]'" if extra else f"install fsspec's {protocol} filesystem"
    return CatalogUnreachableError(f"no filesystem for {protocol}:// here ({exc}); {hint}")


def _read_local(path: str, file: str) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat decides next.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataNotFoundError(f"catalog file not found: {path}", file) from None
    except PermissionError:
        raise DataNotFoundError(f"catalog file not readable: {path}", file) from None
    except OSError as exc:
        raise CatalogError(f"cannot open the catalog file: {exc}", file) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device"
        raise CatalogError(f"not a regular file ({kind}); a catalog is a YAML file", file)
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_BYTES + 1)


def read_catalog_text(path: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The text of the catalog file at ``path`` (local path or fsspec URL), with limits."""
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(path)
    if protocol in (None, "file", "local"):
        local = path.split("://", 1)[1] if protocol else path
        data = _read_local(local, path)
    else:

        def fetch() -> bytes:
            import fsspec

            with fsspec.open(path, "rb", **dict(storage_options or {})) as f:
                return bytes(f.read(MAX_BYTES + 1))

        try:
            data = call_with_timeout(fetch, url_timeout(), f"reading {path}")
        except ImportError as exc:
            raise CatalogError(str(missing_extra(exc, path)), path) from None
        except FileNotFoundError:
            raise DataNotFoundError(f"catalog file not found: {path}", path) from None
        except Exception as exc:  # connection errors are not all OSError (botocore)
            raise CatalogError(
                f"catalog file unreachable from here: {type(exc).__name__}: {redact(str(exc))}", path
            ) from None
    if len(data) > MAX_BYTES:
        raise CatalogError(f"catalog file larger than {MAX_BYTES} bytes; refusing to read it", path)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise CatalogError(f"not a text YAML file: {exc}", path) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"invalid YAML{where}: {problem}" + (f" ({context})" if context else "")


def _walk_nodes(root: yaml.Node) -> Iterator[tuple[yaml.Node, tuple[str, ...]]]:
    """Every node with its key path, aliases expanded, at most :data:`MAX_NODES`."""
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    count = 0
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} YAML nodes once aliases are expanded (an alias bomb?)")
        yield node, path
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, path) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((value, (*path, str(key.value))))


def _duplicates(node: yaml.MappingNode) -> list[str]:
    seen: set[str] = set()
    dups = []
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                dups.append(key.value)
            seen.add(key.value)
    return dups


def load_yaml(text: str, file: str | None) -> tuple[Any, dict[str, str]]:
    """Parse catalog text; return ``(data, {entry: problem})`` for entries with duplicate keys.

    Raises
    ------
    CatalogError
        Invalid YAML, too many nodes (alias bomb), too deep, or duplicate
        keys outside an entry.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise CatalogError(_yaml_problem(exc), file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        broken: dict[str, str] = {}
        for sub, path in _walk_nodes(node):
            if not isinstance(sub, yaml.MappingNode):
                continue
            for dup in _duplicates(sub):
                line = sub.start_mark.line + 1
                if len(path) >= 2 and path[0] == "sources":
                    broken.setdefault(path[1], f"duplicate key {dup!r} (line {line})")
                elif path == ("sources",):
                    broken.setdefault(dup, f"the entry name {dup!r} is used twice (line {line})")
                else:
                    raise CatalogError(f"invalid YAML: duplicate key {dup!r} at line {line}", file)
        return loader.construct_document(node), broken
    except yaml.YAMLError as exc:
        raise CatalogError(_yaml_problem(exc), file) from None
    except ValueError as exc:
        raise CatalogError(f"invalid YAML: {exc}", file) from None
    except RecursionError:
        raise CatalogError("invalid YAML: nested too deeply", file) from None
    finally:
        loader.dispose()


# --- templates ---------------------------------------------------------------


def _env_global(name: Any, default: Any = "") -> str:
    value = os.environ.get(str(name), str(default))
    remember_secret(value)
    return value


def _passthrough(funcname: str) -> Callable[[Any], str]:
    return lambda x: "{{" + f"{funcname}({x})" + "}}"


_ENVS: dict[bool, Any] = {}


def _jinja(getenv: bool) -> Any:
    if getenv not in _ENVS:
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment()
        env.globals["env"] = _env_global if getenv else _passthrough("env")
        for name in ("shell", "client_env", "client_shell"):
            env.globals[name] = _passthrough(name)
        _ENVS[getenv] = env
    return _ENVS[getenv]


def render(value: Any, context: Mapping[str, Any], getenv: bool = True, used: set[str] | None = None) -> Any:
    """``value`` with every string rendered as a sandboxed Jinja template.

    Raises
    ------
    CatalogError
        Without file or entry (the caller adds them): the sandbox refused an
        expression, or the template is invalid.
    """
    if isinstance(value, Mapping):
        return {k: render(v, context, getenv, used) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(render(v, context, getenv, used) for v in value)
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return value
    from jinja2 import TemplateError, meta
    from jinja2.sandbox import SecurityError

    env = _jinja(getenv)
    try:
        if used is not None:
            used.update(meta.find_undeclared_variables(env.parse(value)))
        return env.from_string(value).render(dict(context))
    except SecurityError as exc:
        raise CatalogError(f"template refused by the Jinja sandbox: {exc}") from None
    except TemplateError as exc:
        raise CatalogError(f"invalid template {redact(value)!r}: {exc}") from None
    except Exception as exc:  # anything a template expression raises
        raise CatalogError(f"template {redact(value)!r} failed: {type(exc).__name__}: {exc}") from None


_ENV_DEFAULT = re.compile(r"^env\(([^,()]*)(?:,([^()]*))?\)$")


def expand_default(default: Any, getenv: bool = True) -> Any:
    """A parameter default, with intake's ``env(NAME)`` read (``shell()`` is never run)."""
    if isinstance(default, str) and getenv and (m := _ENV_DEFAULT.match(default.strip())):
        return _env_global(m.group(1).strip(), (m.group(2) or "").strip())
    return default


def merge_args(
    args: Mapping[str, Any],
    user_inputs: Mapping[str, Any],
    parameters: list[Any],
    context: Mapping[str, Any],
    getenv: bool = True,
) -> dict[str, Any]:
    """An entry's open arguments: parameters validated, templates rendered.

    ``parameters`` are intake ``UserParameter`` objects (the entry's, then the
    catalog's ``metadata.parameters``); user inputs that are not parameters
    pass through as keyword arguments, as in intake.
    """
    ctx = dict(context)
    names = set()
    for par in parameters:
        names.add(par.name)
        value = user_inputs.get(par.name, par.default)
        if value is None:
            continue
        try:
            ctx[par.name] = par.validate(expand_default(value, getenv))
        except (ValueError, TypeError) as exc:
            raise CatalogError(f"parameter {par.name!r}: {redact(str(exc))}") from None
    out = render(dict(args), ctx, getenv)
    out.update({k: v for k, v in user_inputs.items() if k not in names})
    return out


# --- secrets -------------------------------------------------------------------


def remember_secret(value: Any) -> None:
    """Redact ``value`` from every later message (values read by ``env()``)."""
    if isinstance(value, str) and len(value) >= 4:
        _SECRET_VALUES.add(value)


def redact(obj: Any) -> Any:
    """``obj`` with secret-looking keys and remembered secret values replaced by ``***``."""
    if isinstance(obj, Mapping):
        return {
            k: "***" if isinstance(k, str) and SECRET_KEY_RE.search(k) and v else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        for secret in sorted(_SECRET_VALUES, key=len, reverse=True):
            obj = obj.replace(secret, "***")
    return obj


def secrets_in(args: Any) -> None:
    """Remember the values of secret-looking keys found in ``args``."""
    if isinstance(args, Mapping):
        for k, v in args.items():
            if isinstance(k, str) and SECRET_KEY_RE.search(k) and isinstance(v, str):
                remember_secret(v)
            else:
                secrets_in(v)
    elif isinstance(args, (list, tuple)):
        for v in args:
            secrets_in(v)
