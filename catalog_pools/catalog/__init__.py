"""The catalog layer: intake v1 catalogs whose entries declare a ``site``.

:mod:`.yaml_catalog` parses and walks catalogs, :mod:`.sources` holds the
site-aware intake drivers, :mod:`.siting` decides an entry's site from its
declarations and URLs, :mod:`.lookup` finds the entry for a path.
"""

from __future__ import annotations

from .lookup import load_from_catalog
from .yaml_catalog import PooledSource, SiteCatalog, open_catalog

__all__ = ["PooledSource", "SiteCatalog", "load_from_catalog", "open_catalog"]
