"""catalog_pools: compute across data centres without moving bulk data.

Importing the package registers its dask config defaults, makes dask.array,
xarray and dask.delayed graphs keep site pins through fusion (the
``array_optimize`` / ``delayed_optimize`` config entries) and has new
distributed Clients install the scheduler plugin.
"""
from __future__ import annotations

import os

import dask
import yaml

with open(os.path.join(os.path.dirname(__file__), "config.yaml")) as _f:
    dask.config.update_defaults(yaml.safe_load(_f))

from .catalog import open_catalog  # noqa: E402
from .guard import ForeignSiteError, check_site  # noqa: E402
from .install import (  # noqa: E402
    SchedulerSetupError,
    add_client_preload,
    install,
    use_pooled_optimizers,
)
from .lookup import load_from_catalog  # noqa: E402
from .plugin import SiteUnavailableError  # noqa: E402
from .pools import QueryPlanningError, current_pool, pool, pool_of, pools_in  # noqa: E402
from .propagation import propagate_pools  # noqa: E402
from .sites import resource_name, validate_site, worker_command, worker_sites  # noqa: E402

use_pooled_optimizers()
add_client_preload()

__all__ = [
    "ForeignSiteError",
    "QueryPlanningError",
    "SchedulerSetupError",
    "SiteUnavailableError",
    "check_site",
    "current_pool",
    "install",
    "load_from_catalog",
    "open_catalog",
    "pool",
    "pool_of",
    "pools_in",
    "propagate_pools",
    "resource_name",
    "validate_site",
    "worker_command",
    "worker_sites",
]
__version__ = "0.1.0"
