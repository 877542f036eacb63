"""The package's shape: private library names only in _compat, small modules, old paths import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "catalog_pools"
LIBRARIES = {"dask", "distributed", "intake", "intake_xarray"}
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_compat" not in p.parts)


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in LIBRARIES and (
                any(p.startswith("_") for p in parts) or any(a.name.startswith("_") for a in node.names)
            ):
                found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIBRARIES and any(p.startswith("_") for p in parts):
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
    return found


def test_scan_finds_a_private_import(tmp_path: Path) -> None:
    """The scanner itself: it must flag what it is meant to flag."""
    bad = tmp_path / "bad.py"
    bad.write_text("from dask._task_spec import Task\nimport distributed._concurrent_futures_thread\n")
    assert len(_private_imports(bad)) == 2


def test_no_private_library_imports_outside_compat() -> None:
    offenders = [hit for path in _modules() for hit in _private_imports(path)]
    assert offenders == [], "use catalog_pools._compat for: " + "; ".join(offenders)


def test_no_module_over_400_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("catalog_pools.data", "catalog_pools.datagen.synthetic"),
        ("catalog_pools.drivers", "catalog_pools.catalog.sources"),
        ("catalog_pools.catalog_errors", "catalog_pools.errors"),
        ("catalog_pools.lookup", "catalog_pools.catalog.lookup"),
        ("catalog_pools.sites", "catalog_pools.engine.sites"),
        ("catalog_pools.pools", "catalog_pools.engine.pools"),
        ("catalog_pools.isolation", "catalog_pools.cluster.isolation"),
    ],
)
def test_old_import_paths_are_the_new_modules(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_public_api_paths() -> None:
    import catalog_pools
    from catalog_pools.catalog import SiteCatalog, open_catalog
    from catalog_pools.cluster import LocalSitesCluster
    from catalog_pools.traffic import traffic

    assert catalog_pools.open_catalog is open_catalog
    assert callable(traffic) and isinstance(LocalSitesCluster, type) and isinstance(SiteCatalog, type)
    for name in ("pool", "pool_of", "pools_in", "propagate_pools", "load_from_catalog"):
        assert callable(getattr(catalog_pools, name))
