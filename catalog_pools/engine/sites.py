"""Site names and the worker resources that stand for them.

A site ``ecmwf`` is served by workers started with
``dask worker ADDR --resources "pool-ecmwf=1"``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

RESOURCE_PREFIX = "pool-"
#: Annotation name carrying the site of a task (``None`` = explicitly unpooled).
ANNOTATION = "pool"
#: Annotation saying where a task's site came from (absent: the user pinned it).
ORIGIN = "pool_origin"
#: :data:`ORIGIN` value of a site chosen by the propagation rules: the scheduler
#: may choose again when it knows more (inputs already on the cluster).
PROPAGATED = "propagated"
#: :data:`ORIGIN` value of a task opted out with ``pool(None)``. Needed because
#: the scheduler drops annotations whose value is ``None``.
OPTED_OUT = "opted-out"
#: Annotation marking a relay: a copy of one cross-site input made in the consuming site.
RELAY = "pool_relay"
#: Annotation carrying the optimizer's estimate of a task's output bytes.
NBYTES = "pool_nbytes"
#: Annotation carrying the client's ``catalog_pools.no-worker-timeout`` in seconds.
WAIT = "pool_wait"
#: Annotation of a replicated dataset's loads: every site holding a copy, primary first.
REPLICAS = "pool_replicas"

# Resource names travel through ``--resources "a=1,b=2"`` and dask config, so
# commas, '=', whitespace and quotes cannot appear in them.
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def validate_site(site: object) -> str:
    """Return ``site`` if it is a valid site name, else raise ``ValueError``.

    Parameters
    ----------
    site
        A site name such as ``"ecmwf"``, ``"eu-west-1"`` or ``"ewc_bologna"``.

    Raises
    ------
    ValueError
        If the name is empty, has whitespace, or characters that cannot be part
        of a Dask worker resource name (``,``, ``=``, quotes, ...).
    """
    if not isinstance(site, str):
        raise ValueError(f"site must be a string such as 'ecmwf', got {type(site).__name__} {site!r}")
    if not _SITE_RE.fullmatch(site):
        raise ValueError(
            f"invalid site name {site!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (e.g. 'ecmwf', 'eu-west-1', 'ewc_bologna')"
        )
    return site


def resource_name(site: str) -> str:
    """Worker resource that marks membership of ``site`` (``pool-<site>``)."""
    return RESOURCE_PREFIX + validate_site(site)


def site_of_resource(name: str) -> str | None:
    """Inverse of :func:`resource_name`; ``None`` for non-pool resources."""
    if name.startswith(RESOURCE_PREFIX) and len(name) > len(RESOURCE_PREFIX):
        return name[len(RESOURCE_PREFIX) :]
    return None


def sites_of_resources(resources: Mapping[str, Any] | None) -> list[str]:
    """Sorted site names found among a worker's or task's resources."""
    return sorted(s for s in map(site_of_resource, resources or {}) if s is not None)


def per_key(annotations: Mapping[str, Any]) -> bool:
    """Whether a layer's annotations are functions of the key (as dask leaves them
    after merging annotated graphs): such a layer is read key by key, never as a whole."""
    return any(callable(v) for v in annotations.values())


def pin_of(
    annotations: Mapping[str, Any], resources: Mapping[str, Any] | None = None
) -> tuple[bool, str | None]:
    """Whether a task is pinned, and to which site (``None``: opted out).

    The one reading of a pin, for layers, tasks and scheduler task states:
    the ``pool`` annotation, else a ``pool-<site>`` resource (``resources``
    defaults to the annotations' own).

    Raises
    ------
    ValueError
        If the task names two sites (it could never run: no worker is in both).
    """
    if resources is None:
        resources = annotations.get("resources")
    found = set(sites_of_resources(resources))
    if ANNOTATION in annotations:
        site = annotations[ANNOTATION]
        found.discard(site)
        if found:
            _two_sites([site, *found])
        return True, site
    if len(found) > 1:
        _two_sites(sorted(found))
    return (True, found.pop()) if found else (False, None)


def _two_sites(sites: list[Any]) -> None:
    raise ValueError(
        f"a task is pinned to several sites {sorted(map(str, sites))}; no worker belongs to all of "
        "them. Pin each collection with one pool(site) block (an inner pool() replaces the outer one)."
    )


def origin(annotations: Mapping[str, Any]) -> str | None:
    """:data:`PROPAGATED`, :data:`OPTED_OUT`, or ``None`` for a user's own pin."""
    return annotations.get(ORIGIN)


def other_resources(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """``resources`` without any site's ``pool-<site>`` entry."""
    return {r: q for r, q in (resources or {}).items() if site_of_resource(r) is None}


def site_resources(site: str | None, resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``resources`` restricted to ``site`` (and no other site); ``None``: to no site.

    Quantity 0: only workers supplying the resource qualify, but the resource
    never caps how many pooled tasks run at once.
    """
    out = other_resources(resources)
    if site is not None:
        out[resource_name(site)] = 0
    return out


def site_of_worker(resources: Mapping[str, Any] | None) -> str | None:
    """The site of a worker with these resources (the first by name if several)."""
    found = sites_of_resources(resources)
    return found[0] if found else None


def worker_command(site: str, address: str = "SCHEDULER_ADDRESS") -> str:
    """The command that adds a worker to ``site`` (used in error messages)."""
    return f'dask worker {address} --resources "{resource_name(site)}=1"'


def worker_sites(client: Any) -> dict[str, str | None]:
    """Map each connected worker's address to its site (``None`` if it has none).

    Parameters
    ----------
    client
        A ``distributed.Client``.
    """
    info = client.scheduler_info(n_workers=-1)
    out: dict[str, str | None] = {}
    for addr, w in info["workers"].items():
        found = sites_of_resources(w.get("resources"))
        if len(found) > 1:
            logger.warning("worker %s belongs to several sites %s", addr, found)
        out[addr] = found[0] if found else None
    return out
