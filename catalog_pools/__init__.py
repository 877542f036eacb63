"""catalog_pools: compute across data centres without moving bulk data.

Importing the package registers its dask config defaults, makes dask.array,
xarray and dask.delayed graphs keep site pins through fusion (the
``array_optimize`` / ``delayed_optimize`` config entries) and has new
distributed Clients install the scheduler plugin.

Layout: :mod:`catalog_pools.engine` (pins, placement, optimizer, guard,
scheduler plugin), :mod:`catalog_pools.catalog` (intake catalogs with sites),
:mod:`catalog_pools.errors` (every exception a user catches),
:mod:`catalog_pools.cluster` (a multi-site cluster on one machine),
:mod:`catalog_pools.traffic` (what crossed sites), :mod:`catalog_pools.datagen`
(synthetic data), :mod:`catalog_pools.cli` (the ``catalog-pools`` command).
"""

from __future__ import annotations

import os

import dask
import yaml

with open(os.path.join(os.path.dirname(__file__), "config.yaml")) as _f:
    dask.config.update_defaults(yaml.safe_load(_f))

from ._legacy import install_aliases
from .catalog import load_from_catalog, open_catalog
from .engine.guard import check_site
from .engine.install import (
    add_client_preload,
    install,
    propagate_pools,
    use_pooled_optimizers,
)
from .engine.pools import current_pool, pool, pool_of, pools_in, replicas_of
from .engine.sites import resource_name, validate_site, worker_command, worker_sites
from .errors import (
    CatalogError,
    ForeignSiteError,
    QueryPlanningError,
    SchedulerSetupError,
    SiteClusterUnavailableError,
    SiteUnavailableError,
)
from .federation import connect, federated
from .traffic.explain import explain

install_aliases()
use_pooled_optimizers()
add_client_preload()

__all__ = [
    "CatalogError",
    "ForeignSiteError",
    "QueryPlanningError",
    "SchedulerSetupError",
    "SiteClusterUnavailableError",
    "SiteUnavailableError",
    "check_site",
    "connect",
    "current_pool",
    "explain",
    "federated",
    "install",
    "load_from_catalog",
    "open_catalog",
    "pool",
    "pool_of",
    "pools_in",
    "propagate_pools",
    "replicas_of",
    "resource_name",
    "validate_site",
    "worker_command",
    "worker_sites",
]
__version__ = "0.1.0"
