"""Catalog datasets on the real two-site cluster (sites cannot read each other's data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from catalog_data import observations, predictions, write, write_catalog

import catalog_pools
from catalog_pools.catalog import open_catalog
from catalog_pools.errors import CatalogError
from catalog_pools.traffic import traffic

pytestmark = pytest.mark.root

UNPRIVILEGED_USER = "nobody"


@pytest.fixture
def cluster_catalog(isolated_env: Any) -> Iterator[dict[str, Path]]:
    """Site data written into each site's private directory, and a catalog for it."""
    sub = f"catalog-tests-{uuid.uuid4().hex[:8]}"
    ecmwf, eumetsat = isolated_env.data_dirs["ecmwf"] / sub, isolated_env.data_dirs["eumetsat"] / sub
    paths = {
        "predictions": write(predictions(), ecmwf / "predictions.zarr", "zarr3"),
        "predictions_nc": write(predictions(), ecmwf / "predictions.nc", "netcdf4"),
        "observations": write(observations(), eumetsat / "observations.zarr", "zarr2"),
    }
    # Under /tmp and world-readable: an unprivileged client must read the catalog.
    cat_dir = Path(tempfile.mkdtemp(prefix="catalog-pools-cat-", dir="/tmp"))
    cat_dir.chmod(0o755)
    write_catalog(
        cat_dir / "ecmwf.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          predictions: {{driver: site_zarr, args: {{urlpath: "{paths["predictions"]}"}}}}
          predictions_nc: {{driver: site_netcdf, args: {{urlpath: "{paths["predictions_nc"]}"}}}}
        """,
    )
    write_catalog(
        cat_dir / "eumetsat.yaml",
        f"""
        metadata: {{site: eumetsat}}
        sources:
          observations: {{driver: zarr, args: {{urlpath: "{paths["observations"]}"}}}}
        """,
    )
    paths["catalog"] = write_catalog(
        cat_dir / "multicloud.yaml",
        f"""
        metadata:
          sites:
            ecmwf: {{roots: ["{isolated_env.data_dirs["ecmwf"]}"]}}
            eumetsat: {{roots: ["{isolated_env.data_dirs["eumetsat"]}"]}}
        sources:
          ecmwf: {{driver: site_catalog, args: {{path: "{{{{ CATALOG_DIR }}}}/ecmwf.yaml"}}}}
          eumetsat: {{driver: yaml_file_cat, args: {{path: "{{{{ CATALOG_DIR }}}}/eumetsat.yaml"}}}}
          nowhere:
            driver: site_zarr
            metadata: {{site: nowhere}}
            args: {{urlpath: "{cat_dir / "nowhere.zarr"}"}}
        """,
    )
    try:
        yield paths
    finally:
        shutil.rmtree(cat_dir, ignore_errors=True)
        shutil.rmtree(ecmwf, ignore_errors=True)
        shutil.rmtree(eumetsat, ignore_errors=True)


def _expected(paths: dict[str, Path]) -> xr.DataArray:
    """The same computation with plain xarray (no dask, no pools) on the same files."""
    with (
        xr.open_dataset(paths["predictions"], engine="zarr", chunks=None) as p,
        xr.open_dataset(paths["observations"], engine="zarr", chunks=None) as o,
    ):
        return (p.air_pressure.mean("realization").isel(height=1) - o.air_pressure).load()


def test_cross_site_difference_loads_each_dataset_in_its_site(
    isolated_env: Any, client: Any, cluster_catalog: dict[str, Path]
) -> None:
    cat = open_catalog(cluster_catalog["catalog"])
    pred = cat.ecmwf.predictions.to_dask()
    obs = cat.eumetsat.observations.to_dask()
    assert catalog_pools.pool_of(pred) == "ecmwf" and catalog_pools.pool_of(obs) == "eumetsat"
    diff = pred.air_pressure.mean("realization").isel(height=1) - obs.air_pressure

    with traffic(client) as report:
        result = diff.compute()
    xr.testing.assert_allclose(result, _expected(cluster_catalog), rtol=1e-6)

    # Reads recorded on the workers: each site read its own dataset and nothing
    # else (isolation would turn a misplaced read into PermissionError anyway).
    assert set(report.bytes_read_by_site) == {"ecmwf", "eumetsat"}
    assert report.bytes_read_by_site["eumetsat"] == observations().air_pressure.nbytes
    assert 0 < report.bytes_read_by_site["ecmwf"] <= predictions().air_pressure.nbytes
    # only one 2-D field crosses: the smaller side of the join
    assert report.cross_site_bytes == observations().air_pressure.nbytes


def test_read_and_netcdf_on_the_cluster(
    isolated_env: Any, client: Any, cluster_catalog: dict[str, Path]
) -> None:
    cat = open_catalog(cluster_catalog["catalog"])
    xr.testing.assert_equal(cat.eumetsat.observations.read(), observations())
    pred_nc = cat.ecmwf.predictions_nc.to_dask()
    assert catalog_pools.pool_of(pred_nc) == "ecmwf"
    xr.testing.assert_equal(pred_nc.compute(), predictions())


def test_open_on_site(isolated_env: Any, client: Any, cluster_catalog: dict[str, Path]) -> None:
    cat = open_catalog(cluster_catalog["catalog"])
    ds = cat.ecmwf.predictions(open_on="site").to_dask()
    assert catalog_pools.pool_of(ds) == "ecmwf"
    np.testing.assert_allclose(
        float(ds.air_pressure.mean()), float(predictions().air_pressure.mean()), rtol=1e-6
    )
    with pytest.raises(CatalogError, match=r"entry 'nowhere'.*no worker of that site.*pool-nowhere"):
        cat.nowhere(open_on="site").to_dask()


def test_client_without_access_opens_metadata_in_the_site(
    isolated_env: Any, cluster_catalog: dict[str, Path]
) -> None:
    """A client that cannot read a site's files still gets the lazy dataset."""
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        pytest.skip("runuser not found: cannot run the client as an unprivileged user")
    script = textwrap.dedent(f"""
        import json, os
        import xarray as xr
        from distributed import Client
        import catalog_pools
        from catalog_pools.catalog import open_catalog

        out = {{"uid": os.getuid()}}
        try:
            xr.open_dataset({str(cluster_catalog["predictions"])!r}, engine="zarr")
            out["direct"] = "opened"
        except PermissionError:
            out["direct"] = "PermissionError"
        with Client({isolated_env.address!r}) as client:
            cat = open_catalog({str(cluster_catalog["catalog"])!r})
            ds = cat.ecmwf.predictions.to_dask()
            out["site"] = catalog_pools.pool_of(ds)
            out["dims"] = dict(ds.sizes)
            out["mean"] = float(ds.air_pressure.mean().compute())
        print("RESULT " + json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))}
    env.update(HOME="/tmp", DASK_TEMPORARY_DIRECTORY="/tmp")
    proc = subprocess.run(
        [runuser, "-u", UNPRIVILEGED_USER, "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd="/tmp",
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"client subprocess failed:\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["uid"] != 0
    assert out["direct"] == "PermissionError", "premise: this client cannot read the data"
    assert out["site"] == "ecmwf"
    assert out["dims"] == dict(predictions().sizes)
    np.testing.assert_allclose(out["mean"], float(predictions().air_pressure.mean()), rtol=1e-6)
