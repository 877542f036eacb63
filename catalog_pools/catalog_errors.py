"""Errors raised by the catalog layer, each naming the catalog file and entry."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class CatalogError(ValueError):
    """A catalog, or one of its entries, cannot be used as written.

    The message starts with the catalog file and the entry it is about, so a
    user can find the line to fix.

    Parameters
    ----------
    problem
        What is wrong and, where possible, how to fix it.
    file
        The catalog file (path or URL), if known.
    entry
        The entry name (dotted for nested catalogs), if the problem is an entry's.
    """

    def __init__(self, problem: str, file: str | None = None, entry: str | None = None) -> None:
        self.problem, self.file, self.entry = problem, file, entry
        where = []
        if file:
            where.append(f"catalog {file}")
        if entry:
            where.append(f"entry {entry!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problem, self.file, self.entry))


class MissingSiteError(CatalogError):
    """An entry declares no site (and did not opt out with ``site: null``)."""


class SiteConflictError(CatalogError):
    """Two declarations give an entry different sites."""


class UnknownDriverError(CatalogError):
    """An entry names a driver that is not installed."""


class DataNotFoundError(CatalogError):
    """An entry's data (or a nested catalog file) does not exist or cannot be read."""


class UnknownPathError(CatalogError):
    """A path or URL lies under no site root declared in the catalog."""
