"""Refuse to run a pinned task on a worker of another site."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from .._compat.dask_internals import Task, TaskRef, task_like
from ..errors import ForeignSiteError
from .identity import worker_certified_sites
from .sites import resource_name, sites_of_resources


def current_site() -> tuple[str, list[str]] | None:
    """The worker running this code and the sites it serves; ``None`` outside a worker.

    With TLS, only sites the worker's certificate names count (a declared
    resource alone is not proof).
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    declared = sites_of_resources(worker.state.total_resources)
    certified = worker_certified_sites(worker)
    found = [s for s in declared if certified is None or s in certified]
    return f"{worker.name} at {worker.address}", found


def check_site(site: str) -> None:
    """Raise :class:`ForeignSiteError` if running on a worker outside ``site``.

    The worker must supply the resource ``pool-<site>`` and, when it runs with a
    TLS certificate, that certificate must name the site (``site:<site>``, see
    :mod:`catalog_pools.engine.identity`): a declared resource alone is not
    proof. Outside a distributed worker (threaded or synchronous scheduler)
    there are no sites, and the check passes.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    resources = worker.state.total_resources
    certified = worker_certified_sites(worker) or None
    if resource_name(site) not in resources or (certified is not None and site not in certified):
        where = sites_of_resources(resources) if certified is None else sorted(certified)
        raise ForeignSiteError(site, f"{worker.name} at {worker.address}", where)


class _Sealed:
    """Carries a task as plain data, so dask does not execute it as an argument."""

    __slots__ = ("keys", "nbytes", "task")

    def __init__(self, task: Any, keys: tuple[Any, ...], nbytes: float | None = None) -> None:
        self.task = task
        self.keys = keys
        #: estimated output bytes (chunk metadata at optimization), kept for explain()
        self.nbytes = nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Sealed, (self.task, self.keys, self.nbytes))


def run_in_site(site: str, sealed: _Sealed, *values: Any) -> Any:
    """Check the site, then run the sealed task on its dependencies' values."""
    check_site(site)
    return sealed.task(dict(zip(sealed.keys, values, strict=True)))


def guard_task(task: Any, site: str, nbytes: float | None = None) -> Any:
    """Wrap a ``dask._task_spec.Task`` so it checks its site before running.

    Other graph nodes (aliases, literal data) are returned unchanged: they
    read nothing.
    """
    if not isinstance(task, Task) or guarded_site(task) is not None:
        return task
    keys = tuple(task.dependencies)
    return task_like(task, task.key, run_in_site, site, _Sealed(task, keys, nbytes), *map(TaskRef, keys))


def guard_tasks(
    tasks: Mapping[Hashable, Any],
    site: str,
    nbytes: Callable[[Hashable, Any], float | None],
    exempt: Callable[[Hashable, Any], bool] | None = None,
) -> dict[Hashable, Any]:
    """:func:`guard_task` for many tasks of one site (the optimizer's loop, kept tight).

    ``nbytes(key, task)`` estimates a task's output bytes; tasks ``exempt(key,
    task)`` says need no guard are kept as they are.
    """
    out: dict[Hashable, Any] = {}
    for key, task in tasks.items():
        if (
            not isinstance(task, Task)
            or task.func is run_in_site
            or (exempt is not None and exempt(key, task))
            or (len(task.args) == 1 and guarded_site(task) is not None)  # one level in, see guarded_site
        ):
            out[key] = task
            continue
        deps = task.dependencies
        if deps:
            keys = tuple(deps)
            out[key] = task_like(
                task, key, run_in_site, site, _Sealed(task, keys, nbytes(key, task)), *map(TaskRef, keys)
            )
        else:
            out[key] = task_like(task, key, run_in_site, site, _Sealed(task, (), nbytes(key, task)))
    return out


def guarded_site(task: Any) -> str | None:
    """The site a task was guarded for, if it is a guarded task.

    A pinned graph optimized once and embedded in another collection's graph
    (``dask.delayed(f)(array)``, ``array.to_delayed()``) keeps its guarded
    tasks but loses its layer annotations; the guard still says the site.
    Looks one level in, as dask wraps embedded tasks to rename their keys.
    """
    args: tuple[Any, ...] = getattr(task, "args", ())
    if getattr(task, "func", None) is run_in_site and args and isinstance(args[0], str):
        return str(args[0])
    if len(args) == 1 and getattr(args[0], "func", None) is run_in_site:
        return guarded_site(args[0])
    return None


def guarded_nbytes(task: Any) -> float | None:
    """The output bytes estimated when the task was guarded (see :func:`guarded_site`)."""
    args: tuple[Any, ...] = getattr(task, "args", ())
    if getattr(task, "func", None) is run_in_site and len(args) > 1 and isinstance(args[1], _Sealed):
        return args[1].nbytes
    if len(args) == 1 and getattr(args[0], "func", None) is run_in_site:
        return guarded_nbytes(args[0])
    return None
