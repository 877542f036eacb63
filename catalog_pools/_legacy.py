"""Old module paths (before the sub-package layout) keep importing.

``import catalog_pools.data`` or a catalog naming
``driver: catalog_pools.drivers.SiteZarrSource`` resolve to the module's new
home; the module object is the same, so ``isinstance`` and pickles agree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: old module name -> new module name
MOVED: dict[str, str] = {
    "catalog_pools.sites": "catalog_pools.engine.sites",
    "catalog_pools.pools": "catalog_pools.engine.pools",
    "catalog_pools.propagate": "catalog_pools.engine.placement",
    "catalog_pools.optimize": "catalog_pools.engine.optimize",
    "catalog_pools.guard": "catalog_pools.engine.guard",
    "catalog_pools.plugin": "catalog_pools.engine.plugin",
    "catalog_pools.install": "catalog_pools.engine.install",
    "catalog_pools.propagation": "catalog_pools.engine.install",
    "catalog_pools.drivers": "catalog_pools.catalog.sources",
    "catalog_pools.opening": "catalog_pools.catalog.opening",
    "catalog_pools.lookup": "catalog_pools.catalog.lookup",
    "catalog_pools.site_resolution": "catalog_pools.catalog.siting",
    "catalog_pools.urls": "catalog_pools.catalog.urls",
    "catalog_pools.catalog_errors": "catalog_pools.errors",
    "catalog_pools.isolation": "catalog_pools.cluster.isolation",
    "catalog_pools.plot": "catalog_pools.traffic.plot",
    "catalog_pools.data": "catalog_pools.datagen.synthetic",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install_aliases() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
