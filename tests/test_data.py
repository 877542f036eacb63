"""Synthetic data: determinism, shapes and CF attributes, idempotence."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from catalog_pools.datagen import synthetic as data
from catalog_pools.datagen.synthetic import (
    HEIGHTS,
    N_REALIZATIONS,
    OBSERVATION_HEIGHT_INDEX,
    make_data,
)

REPO = Path(__file__).resolve().parent.parent


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    make_data(root, scale="small", progress=False)
    return root


def test_same_bytes_every_run(small: Path, tmp_path: Path) -> None:
    # The second run goes through the CLI, so the command is exercised too.
    other = tmp_path / "again"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "make_data.py"),
            "--scale",
            "small",
            "--root",
            str(other),
            "--seed",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(other / "ecmwf" / "predictions.zarr") in proc.stdout
    first, second = checksums(small), checksums(other)
    assert len(first) > 10
    assert first == second


def test_seed_changes_values(small: Path, tmp_path: Path) -> None:
    make_data(tmp_path, scale="small", seed=1, progress=False)
    a = xr.open_zarr(small / "ecmwf" / "predictions.zarr").air_pressure.values
    b = xr.open_zarr(tmp_path / "ecmwf" / "predictions.zarr").air_pressure.values
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("fmt", ["zarr", "nc"])
def test_predictions_shape_attrs_chunks(small: Path, fmt: str) -> None:
    path = small / "ecmwf" / f"predictions.{fmt}"
    ds = xr.open_zarr(path) if fmt == "zarr" else xr.open_dataset(path, chunks={})
    g = data.grid("small")
    var = ds["air_pressure"]
    assert var.dims == ("realization", "height", "latitude", "longitude")
    assert var.shape == (N_REALIZATIONS, len(HEIGHTS), g.nlat, g.nlon) == (18, 33, 18, 36)
    assert var.dtype == np.float32
    assert var.attrs["standard_name"] == "air_pressure"
    assert var.attrs["units"] == "Pa"
    assert ds.latitude.attrs["units"] == "degrees_north"
    assert ds.longitude.attrs["units"] == "degrees_east"
    assert ds.height.attrs["units"] == "m"
    assert ds.realization.attrs["standard_name"] == "realization"
    assert ds.attrs["Conventions"] == "CF-1.8"
    # One chunk holds every realization of one height: the ensemble mean needs
    # no other chunk, isel(height=...) reads one height.
    assert var.chunks[0] == (1,) * 18  # one chunk per member ...
    assert var.chunks[1] == (33,)  # ... holding all its heights
    assert float(ds.height[OBSERVATION_HEIGHT_INDEX]) == 300.0
    values = var.values
    assert np.isfinite(values).all()
    # Pressure falls with height, and is plausible at the surface.
    assert (values[:, 0] > values[:, -1]).all()
    assert 9.0e4 < float(values[:, 0].mean()) < 1.1e5


@pytest.mark.parametrize("fmt", ["zarr", "nc"])
def test_observations_near_ensemble_mean(small: Path, fmt: str) -> None:
    pred_path = small / "ecmwf" / f"predictions.{fmt}"
    obs_path = small / "eumetsat" / f"observations.{fmt}"
    if fmt == "zarr":
        pred, obs = xr.open_zarr(pred_path), xr.open_zarr(obs_path)
    else:
        pred, obs = xr.open_dataset(pred_path), xr.open_dataset(obs_path)
    assert obs.air_pressure.dims == ("latitude", "longitude")
    assert obs.air_pressure.dtype == np.float32
    assert obs.air_pressure.attrs["standard_name"] == "air_pressure"
    for name in ("latitude", "longitude"):
        np.testing.assert_array_equal(obs[name].values, pred[name].values)
        assert obs[name].attrs == pred[name].attrs
    mean = pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX)
    diff = (mean - obs.air_pressure).values
    spread = float(pred.air_pressure.isel(height=OBSERVATION_HEIGHT_INDEX).std("realization").mean())
    assert 0 < np.abs(diff).mean() < 500.0  # near, not equal
    assert spread > 10.0  # the members do differ


def test_zarr_and_netcdf_hold_the_same_values(small: Path) -> None:
    for rel in ("ecmwf/predictions", "eumetsat/observations"):
        z = xr.open_zarr(small / f"{rel}.zarr").load()
        n = xr.open_dataset(small / f"{rel}.nc").load()
        xr.testing.assert_identical(z.air_pressure, n.air_pressure)


def test_manifest_and_idempotence(small: Path) -> None:
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["scale"] == "small" and manifest["seed"] == 0
    before = mtimes(small)
    paths = make_data(small, scale="small", progress=False)
    assert mtimes(small) == before  # nothing rewritten
    assert paths["predictions.zarr"] == small / "ecmwf" / "predictions.zarr"
    assert all(p.exists() for p in paths.values())


def test_regenerates_on_other_scale_or_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(data.SCALES, "tiny", (4, 8))
    monkeypatch.setitem(data.LAT_BLOCKS, "tiny", 1)
    make_data(tmp_path, scale="tiny", progress=False)
    assert xr.open_zarr(tmp_path / "ecmwf" / "predictions.zarr").sizes["latitude"] == 4

    make_data(tmp_path, scale="small", progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["scale"] == "small"
    for name in ("ecmwf/predictions", "eumetsat/observations"):
        assert xr.open_zarr(tmp_path / f"{name}.zarr").sizes["latitude"] == 18
        assert xr.open_dataset(tmp_path / f"{name}.nc").sizes["latitude"] == 18

    (tmp_path / "eumetsat" / "observations.nc").unlink()
    make_data(tmp_path, scale="small", progress=False)
    assert (tmp_path / "eumetsat" / "observations.nc").exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_unknown_scale() -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        data.grid("huge")


def test_sizes_of_scales() -> None:
    gib = 2**30
    assert data.grid("small").prediction_nbytes < 2 * 2**20
    assert 0.1 * gib < data.grid("demo").prediction_nbytes < 0.5 * gib
    assert 2.5 * gib < data.grid("seed").prediction_nbytes < 3.0 * gib
