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
