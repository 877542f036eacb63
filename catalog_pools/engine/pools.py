"""``pool(site)``: pin the Dask tasks created in a block to one site's workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask

from .._compat.dask_internals import key_annotations
from ..errors import QueryPlanningError
from .sites import ANNOTATION, per_key, pin_of, site_resources, validate_site


def check_query_planning() -> None:
    """Raise :class:`QueryPlanningError` if dask.array query planning is active.

    With ``array.query-planning`` on, dask.array collections carry no layer
    annotations, so a pool would be dropped without a warning.
    """
    from dask.array import array_expr_enabled

    if array_expr_enabled():
        raise QueryPlanningError(
            "dask.array query planning ('array.query-planning': True) is active; it "
            "drops the annotations that pin tasks to a site, so catalog_pools cannot "
            "honour pool(...). Set DASK_ARRAY__QUERY_PLANNING=False (or "
            "dask.config.set({'array.query-planning': False}) before importing "
            "dask.array)."
        )


def pool_annotations(site: str | None, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Annotations that pin tasks to ``site`` (``None``: explicitly unpooled).

    Other resources already in ``current`` are kept; any other site's pool
    resource is replaced, so a task never needs two sites.
    """
    current = current if current is not None else dask.get_annotations()
    return {"resources": site_resources(site, current.get("resources")), ANNOTATION: site}


@contextlib.contextmanager
def pool(site: str | None) -> Iterator[None]:
    """Pin Dask tasks created inside the block to the workers of ``site``.

    Parameters
    ----------
    site
        Site name (``"ecmwf"``); workers join it with
        ``--resources "pool-ecmwf=1"``. ``None`` opts a block out of an
        enclosing pool.

    Examples
    --------
    >>> import dask.array as da
    >>> with pool("ecmwf"):
    ...     x = da.ones((4, 4), chunks=2)
    >>> pool_of(x)
    'ecmwf'
    """
    if site is not None:
        validate_site(site)
    check_query_planning()
    from .install import install_on_default_client

    install_on_default_client()
    with dask.annotate(**pool_annotations(site)):
        yield


def current_pool() -> str | None:
    """Site of the innermost active :func:`pool` block, if any."""
    return dask.get_annotations().get(ANNOTATION)


def pools_in(collection: Any) -> set[str]:
    """All sites that tasks of ``collection`` are pinned to at construction."""
    from dask.highlevelgraph import HighLevelGraph

    graph = collection.__dask_graph__()
    found: set[str] = set()
    if isinstance(graph, HighLevelGraph):
        for layer in graph.layers.values():
            annotations = layer.annotations or {}
            if per_key(annotations):  # merged graphs: one pin per key
                sites = (pin_of(key_annotations(annotations, k))[1] for k in layer)
                found.update(s for s in sites if s is not None)
            elif (site := pin_of(annotations)[1]) is not None:
                found.add(site)
    return found


def pool_of(collection: Any) -> str | None:
    """The one site ``collection``'s loads are pinned to, or ``None``.

    Raises
    ------
    ValueError
        If the collection mixes data from several sites (use :func:`pools_in`).
    """
    found = pools_in(collection)
    if len(found) > 1:
        raise ValueError(f"collection combines several sites {sorted(found)}; use pools_in()")
    return next(iter(found), None)


def replicas_of(collection: Any) -> tuple[str, ...]:
    """Every site holding a copy of ``collection``'s replicated data, primary first.

    ``()`` when nothing in it is replicated (catalog ``metadata.replicas``).
    :func:`pool_of` gives the primary; a computation may read any of these.
    """
    from .replicas import replica_sites

    found: list[str] = []
    for sites in replica_sites(collection).values():
        found += [s for s in sites if s not in found]
    return tuple(found)
