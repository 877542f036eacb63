"""Opening a dataset lazily, pinned to its site, on the client or on a site worker.

The client may have no access to a site's files. Opening only reads metadata
(names, shapes, coordinates), so it can run on a worker of the site instead:
the lazy dataset comes back to the client and its load tasks stay pinned.

``open_on`` (dask config ``catalog_pools.open-on``):

``"auto"``
    open on the client; on ``OSError`` (``PermissionError``,
    ``FileNotFoundError``, connection errors...) open on a worker of the site
    if a distributed Client is connected.
``"client"``
    always open on the client.
``"site"``
    always open on a worker of the site (needs a distributed Client).

Connection errors that are not ``OSError`` (botocore's
``EndpointConnectionError``, aiohttp's) count as "not readable here" too.
:class:`PooledSource` pins the sources of third-party drivers the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dask
import yaml

from ..engine.install import install_on_default_client
from ..engine.pools import pool
from ..engine.sites import resource_name, worker_command, worker_sites
from ..errors import CatalogError, DataNotFoundError
from .parsing import call_with_timeout, redact

logger = logging.getLogger(__name__)

OPEN_ON_CHOICES = ("auto", "client", "site")
CONFIG_KEY = "catalog_pools.open-on"
OPEN_TIMEOUT_KEY = "catalog_pools.open-timeout"


def open_on_policy(value: str | None = None) -> str:
    """``value``, or the dask config ``catalog_pools.open-on``, validated."""
    policy = value if value is not None else dask.config.get(CONFIG_KEY, "auto")
    if policy not in OPEN_ON_CHOICES:
        raise ValueError(
            f"open_on must be one of {OPEN_ON_CHOICES} (argument or dask config "
            f"{CONFIG_KEY!r}), got {policy!r}"
        )
    return policy


def default_client() -> Any | None:
    """The default ``distributed.Client``, or ``None`` if there is none."""
    try:
        from distributed import default_client as _default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return _default_client()
    except ValueError:
        return None


#: Packages whose exceptions mean "the data cannot be reached from here" (not all are OSError).
_IO_PACKAGES = ("botocore", "aiobotocore", "aiohttp", "gcsfs", "google", "s3fs", "requests", "urllib3")


def _why(exc: BaseException) -> str:
    return str(redact(f"{type(exc).__name__}: {exc}"))


def _open_timeout() -> float:
    """Seconds an open on the client may take (dask config ``catalog_pools.open-timeout``)."""
    return float(dask.config.get(OPEN_TIMEOUT_KEY, 120))


def _unreadable(exc: BaseException) -> bool:
    """True for errors meaning the data cannot be read from this process."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _IO_PACKAGES


def open_in_site(opener: Callable[..., Any], site: str | None, kwargs: Mapping[str, Any]) -> Any:
    """Run ``opener(**kwargs)`` inside ``pool(site)`` (on a client or a worker)."""
    with pool(site):
        return opener(**kwargs)


def _open_on_worker(
    client: Any,
    opener: Callable[..., Any],
    site: str,
    kwargs: Mapping[str, Any],
    what: str,
    file: str | None,
    entry: str | None,
) -> Any:
    if site not in set(worker_sites(client).values()):
        raise CatalogError(
            f"cannot open {what} on site {site!r}: no worker of that site is connected "
            f"to the scheduler {client.scheduler.address}. Start one with: "
            f"{worker_command(site, client.scheduler.address)}",
            file,
            entry,
        )
    key = f"catalog-pools-open-{site}-{uuid.uuid4().hex}"
    logger.debug("opening %s on a worker of site %s (key %s)", what, site, key)
    future = client.submit(
        open_in_site,
        opener,
        site,
        dict(kwargs),
        key=key,
        pure=False,
        resources={resource_name(site): 0},
    )
    try:
        return future.result()
    finally:
        future.release()


def open_pinned(
    opener: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    site: str | None,
    open_on: str | None = None,
    what: str = "dataset",
    file: str | None = None,
    entry: str | None = None,
) -> Any:
    """Open a dataset with ``opener(**kwargs)`` under ``pool(site)``.

    Parameters
    ----------
    opener
        Importable function returning a lazy (dask-backed) dataset; it must be
        importable on the workers too (pickled by reference).
    kwargs
        Its keyword arguments (picklable).
    site
        Site to pin to; ``None`` opens unpinned, on the client.
    open_on
        ``"auto"``, ``"client"`` or ``"site"``; default from the dask config
        ``catalog_pools.open-on``.
    what, file, entry
        Describe the dataset in error messages.

    Raises
    ------
    DataNotFoundError
        If the data cannot be opened where the policy allows.
    CatalogError
        If opening in the site is needed but no Client or site worker exists.
    """
    policy = open_on_policy(open_on)
    # Even when the dataset is opened on a worker, computing it from here must
    # ship the pooled optimizers and find the scheduler plugin in place.
    install_on_default_client()
    client = default_client()
    if policy == "site" and site is not None:
        if client is None:
            raise CatalogError(
                f"open_on='site' needs a distributed Client connected to workers of "
                f"site {site!r} to open {what}",
                file,
                entry,
            )
        try:
            return _open_on_worker(client, opener, site, kwargs, what, file, entry)
        except Exception as exc:
            if not _unreadable(exc):
                raise
            raise DataNotFoundError(
                f"cannot open {what} on a worker of site {site!r}: {_why(exc)}",
                file,
                entry,
            ) from exc
    try:
        return call_with_timeout(lambda: open_in_site(opener, site, kwargs), _open_timeout(), what)
    except Exception as exc:
        if not _unreadable(exc):
            raise
        local_error = exc
    if policy == "client" or site is None:
        raise DataNotFoundError(
            f"cannot open {what} here: {_why(local_error)}",
            file,
            entry,
        ) from local_error
    if client is None:
        raise DataNotFoundError(
            f"cannot open {what} from this process ({_why(local_error)}) and no "
            "distributed Client is connected to open it on a "
            f"worker of site {site!r}",
            file,
            entry,
        ) from local_error
    logger.info("%s not readable here (%s); opening it on a worker of site %s", what, _why(local_error), site)
    try:
        return _open_on_worker(client, opener, site, kwargs, what, file, entry)
    except Exception as exc:
        if not _unreadable(exc):
            raise
        raise DataNotFoundError(
            f"cannot open {what} here ({_why(local_error)}) nor on a worker of site {site!r} ({_why(exc)})",
            file,
            entry,
        ) from exc


#: Containers whose dask collections catalog_pools cannot pin (dask-expr drops annotations).
UNPINNED_CONTAINERS = ("dataframe",)


class PooledSource:
    """Any intake source whose dask collections are created under ``pool(site)``.

    Used for entries with a site whose driver is not one of this package's
    (``rasterio``, ``ndzarr``, ``intake_esm``...). Attributes are the wrapped
    source's; calling it with parameters gives the entry with those
    parameters, as intake does (``cat.basin(basin_id="01013500")``).
    """

    def __init__(self, source: Any, site: str | None, entry: Any = None, params: Any = None) -> None:
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "site", site)
        object.__setattr__(self, "_entry", entry)
        object.__setattr__(self, "_params", dict(params or {}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._source, name, value)

    def __repr__(self) -> str:
        return f"<PooledSource site={self.site!r} {self._source!r}>"

    def __call__(self, **kwargs: Any) -> Any:
        """The entry opened with these parameters (intake's ``source(**kwargs)``)."""
        if self._entry is None:
            return PooledSource(self._source(**kwargs), self.site)
        return self._entry.get(**{**self._params, **kwargs})

    def _check_pinnable(self) -> None:
        container = getattr(self._source, "container", None)
        if self.site is not None and container in UNPINNED_CONTAINERS:
            entry = self._entry
            raise CatalogError(
                f"entry is tabular ({container}): catalog_pools pins xarray datasets only, and "
                f"this entry's tasks would run on any worker, not only on site {self.site!r}. "
                "Declare `site: null` on it to open it unpinned",
                getattr(entry, "file", None),
                getattr(entry, "label", None),
            )

    def to_dask(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped source's ``to_dask()``, its tasks pinned to the site."""
        self._check_pinnable()
        with pool(self.site):
            return self._source.to_dask(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped source's ``read()`` (dask work inside is pinned)."""
        self._check_pinnable()
        with pool(self.site):
            return self._source.read(*args, **kwargs)

    def discover(self) -> Any:
        """The wrapped source's ``discover()``, under ``pool(site)``."""
        with pool(self.site):
            return self._source.discover()

    def describe(self) -> dict[str, Any]:
        """The entry's description plus ``site``, secrets redacted."""
        try:
            desc = dict(self._source.describe())
        except Exception:  # intake-xarray 2 adapters have no describe()
            desc = dict(self._entry.describe()) if self._entry is not None else {}
        return redact({**desc, "site": self.site})

    def yaml(self) -> str:
        """The entry as catalog YAML."""
        try:
            return str(self._source.yaml())
        except Exception:  # adapters without the v1 serialisation
            desc = self.describe()
            spec = {k: desc.get(k) for k in ("description", "driver", "args", "metadata") if k in desc}
            return yaml.safe_dump({"sources": {desc.get("name", "entry"): spec}}, default_flow_style=False)
