"""load_from_catalog: a path or URL to a pinned dataset; URL normalisation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import xarray as xr
from catalog_data import (
    CATALOGS,
    http_server,
    observations,
    predictions,
    write,
    write_catalog,
    write_site_data,
)

import catalog_pools
from catalog_pools.catalog.lookup import load_from_catalog
from catalog_pools.catalog.urls import normalize, normalized_url
from catalog_pools.errors import CatalogError, UnknownPathError


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    write_site_data(root)
    monkeypatch.setenv("CATALOG_POOLS_DATA", str(root))
    return root


def test_path_of_an_entry(example: Path) -> None:
    ds = load_from_catalog(example / "ecmwf" / "predictions.zarr", CATALOGS / "multicloud.yaml")
    assert catalog_pools.pool_of(ds) == "ecmwf"
    xr.testing.assert_equal(ds.compute(), predictions())


def test_unnormalised_file_url_under_a_root(example: Path) -> None:
    write(observations(), example / "eumetsat" / "extra" / "obs2.nc", "netcdf3")
    url = (example / "ecmwf").as_uri() + "/../eumetsat/./extra/obs2.nc"
    ds = load_from_catalog(url, str(CATALOGS / "multicloud.yaml"))
    assert catalog_pools.pool_of(ds) == "eumetsat"
    xr.testing.assert_equal(ds.compute(), observations())


def test_http_url_under_a_root(tmp_path: Path) -> None:
    write(predictions(), tmp_path / "srv" / "ecmwf" / "p.zarr", "zarr2")
    with http_server(tmp_path / "srv") as base:
        cat = write_catalog(
            tmp_path / "cat.yaml",
            f"""
            metadata:
              sites:
                ecmwf: {{roots: ["{base.replace("http://", "HTTP://")}/ecmwf/"]}}
                eumetsat: {{roots: ["{base}/eumetsat"]}}
            sources: {{}}
            """,
        )
        ds = load_from_catalog(f"{base}/eumetsat/../ecmwf//p.zarr", cat)
        assert catalog_pools.pool_of(ds) == "ecmwf"
        xr.testing.assert_equal(ds.compute(), predictions())


def test_unknown_path_lists_roots(example: Path) -> None:
    with pytest.raises(UnknownPathError) as info:
        # A sibling whose name only starts like a root is not under it.
        load_from_catalog(example / "ecmwf2" / "x.zarr", CATALOGS / "multicloud.yaml")
    msg = str(info.value)
    assert "multicloud.yaml" in msg and "ecmwf2" in msg
    assert f"ecmwf: {example / 'ecmwf'}" in msg and f"eumetsat: {example / 'eumetsat'}" in msg


def test_default_catalog_from_dask_config(example: Path) -> None:
    with pytest.raises(CatalogError, match="DASK_CATALOG_POOLS__DEFAULT_CATALOG"):
        load_from_catalog(example / "ecmwf" / "predictions.zarr")
    with dask.config.set({"catalog_pools.default-catalog": str(CATALOGS / "multicloud.yaml")}):
        ds = load_from_catalog(example / "eumetsat" / "observations.zarr")
    assert catalog_pools.pool_of(ds) == "eumetsat"


def test_default_catalog_from_environment(example: Path) -> None:
    code = (
        "import catalog_pools.catalog.lookup as l; "
        "print(__import__('catalog_pools').pool_of("
        f"l.load_from_catalog({str(example / 'ecmwf' / 'predictions.nc')!r})))"
    )
    env = dict(os.environ, DASK_CATALOG_POOLS__DEFAULT_CATALOG=str(CATALOGS / "multicloud.yaml"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ecmwf"


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("/data/ecmwf/../ecmwf/x.zarr", "file:///data/ecmwf/x.zarr/", True),
        ("HTTP://Host:80/a//b/", "http://host/a/b", True),
        ("https://host:443/a", "https://host/a", True),
        ("s3a://bucket/k", "s3://bucket/k", True),
        ("s3://Bucket/k", "s3://bucket/k", False),
        ("http://host:8080/a", "http://host/a", False),
    ],
)
def test_normalize(a: str, b: str, same: bool) -> None:
    assert (normalize(a) == normalize(b)) is same


def test_within_compares_components() -> None:
    root = normalize("/data/ecmwf")
    assert normalize("/data/ecmwf/x").is_within(root)
    assert not normalize("/data/ecmwf2/x").is_within(root)
    assert not normalize("s3://data/ecmwf/x").is_within(root)
    assert normalized_url("s3://b/catalogs/../data/x.zarr") == "s3://b/data/x.zarr"
