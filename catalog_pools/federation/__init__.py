"""Federation: one computation over one Dask cluster per site.

Where no single cluster can span the sites (firewalls, one Dask Gateway per
data centre), :func:`federated` runs each site's part of a graph on that
site's own cluster and carries the few values that cross sites through the
coordinating process; :func:`connect` opens those clusters from a catalog's
``metadata.sites.<site>.gateway``. See ``docs/federation.md``.

Modules: :mod:`.split` (place every task, cut the graph into stages),
:mod:`.run` (``federated``), :mod:`.reach` (bounded waits, errors naming the
site), :mod:`.connect` (Dask Gateway clusters from a catalog).
"""

from __future__ import annotations

from .connect import SiteClients, connect
from .run import federated

__all__ = ["SiteClients", "connect", "federated"]
