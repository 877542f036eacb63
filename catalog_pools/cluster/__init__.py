"""A multi-site Dask cluster on one machine: real processes, a Unix user per site.

:class:`LocalSitesCluster` starts ``dask scheduler`` and ``dask worker``
processes, each worker carrying its site's ``pool-<site>`` resource;
:mod:`.isolation` makes one Unix user and private data directory per site.
"""

from __future__ import annotations

from ..errors import ClusterStartError
from .local import LocalSitesCluster

__all__ = ["ClusterStartError", "LocalSitesCluster"]
