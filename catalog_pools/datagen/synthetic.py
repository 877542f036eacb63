"""Synthetic, deterministic data for two sites: ECMWF predictions, EUMETSAT observations.

Layout written by :func:`make_data` under a data root::

    <root>/manifest.json                  what was generated (scale, seed, shapes)
    <root>/ecmwf/predictions.zarr         air_pressure(realization, height, latitude, longitude)
    <root>/ecmwf/predictions.nc           the same, netCDF4/HDF5
    <root>/eumetsat/observations.zarr     air_pressure(latitude, longitude) at 300 m
    <root>/eumetsat/observations.nc       the same, netCDF4/HDF5

The predictions are shaped like the original 2022 experiment's data (18
members, 33 height levels from 5 m to 6 km; at ``seed`` scale a 960 x 1280 grid,
2.7 GiB, about the original's size) and look like an ensemble forecast: a smooth
synoptic surface-pressure field plus a smooth per-member perturbation, decaying
with height through a per-member scale height, plus a little noise. The
observations are the ensemble mean at height index 10 (300 m) plus a smooth
"forecast error" pattern and instrument noise, on the same grid, so the
difference ``predictions.mean("realization").isel(height=10) - observations``
is a map with visible structure.

Chunking
--------
Predictions are chunked ``(1, 33, nlat / lat_blocks, nlon)``: one chunk per
ensemble member holding all its heights, as forecast files are written member
by member (the 2022 experiment read one netCDF file per member). Computing
``mean("realization").isel(height=10)`` therefore reads the whole ensemble:
the slice comes after the reduction, so every member chunk is loaded, which is
what makes an unpinned read drag the bulk of the data across sites. Latitude is
split so a chunk stays a few tens of MiB (1 block at ``small``, 2 at ``demo``,
4 at ``seed``); observations use the same latitude blocks, so the subtraction
pairs chunks one to one. At ``demo`` scale a chunk is ~13 MiB, at ``seed``
~40 MiB.

Every value is a pure function of ``(seed, height, realization)``, generated one
member at a time (bounded memory: one ``33 x nlat x nlon`` slab), so files are
byte-identical between runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Bump when the generator changes, so old data is regenerated.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"

#: The 33 height levels (m), 5 m to 6 km.
HEIGHTS: tuple[float, ...] = (
    5,
    10,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    250,
    300,
    400,
    500,
    600,
    700,
    800,
    1000,
    1250,
    1500,
    1750,
    2000,
    2250,
    2500,
    2750,
    3000,
    3250,
    3500,
    3750,
    4000,
    4500,
    5000,
    5500,
    6000,
)
N_REALIZATIONS = 18
#: Height index the observations correspond to (300 m).
OBSERVATION_HEIGHT_INDEX = 10
#: Latitude blocks per scale, so a member chunk stays a few tens of MiB.
LAT_BLOCKS: dict[str, int] = {"small": 1, "demo": 2, "seed": 4}

#: Grid (n_latitude, n_longitude) of each scale, cell centres covering the globe.
SCALES: dict[str, tuple[int, int]] = {
    "small": (18, 36),  # 10 degree cells, 1.5 MiB of predictions: tests
    "demo": (320, 640),  # 0.5625 degree, 464 MiB of predictions: the demo
    "seed": (960, 1280),  # 2.7 GiB of predictions, like the 2022 experiment
}

SITE_FILES: dict[str, str] = {
    "predictions.zarr": "ecmwf/predictions.zarr",
    "predictions.nc": "ecmwf/predictions.nc",
    "observations.zarr": "eumetsat/observations.zarr",
    "observations.nc": "eumetsat/observations.nc",
}


@dataclass(frozen=True)
class Grid:
    """Shape and coordinates of one scale."""

    scale: str
    nlat: int
    nlon: int

    @property
    def latitude(self) -> np.ndarray:
        step = 180.0 / self.nlat
        return (-90.0 + step / 2 + step * np.arange(self.nlat)).astype("float32")

    @property
    def longitude(self) -> np.ndarray:
        step = 360.0 / self.nlon
        return (step / 2 + step * np.arange(self.nlon)).astype("float32")

    @property
    def lat_chunk(self) -> int:
        return math.ceil(self.nlat / LAT_BLOCKS[self.scale])

    @property
    def prediction_shape(self) -> tuple[int, int, int, int]:
        return (N_REALIZATIONS, len(HEIGHTS), self.nlat, self.nlon)

    @property
    def prediction_chunks(self) -> tuple[int, int, int, int]:
        return (1, len(HEIGHTS), self.lat_chunk, self.nlon)

    @property
    def observation_chunks(self) -> tuple[int, int]:
        return (self.lat_chunk, self.nlon)

    @property
    def prediction_nbytes(self) -> int:
        return 4 * math.prod(self.prediction_shape)

    @property
    def observation_nbytes(self) -> int:
        return 4 * self.nlat * self.nlon


def grid(scale: str) -> Grid:
    """The :class:`Grid` of a scale (``"small"``, ``"demo"`` or ``"seed"``)."""
    try:
        nlat, nlon = SCALES[scale]
    except KeyError:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}") from None
    return Grid(scale, nlat, nlon)


# --------------------------------------------------------------------------- values


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _smooth_field(g: Grid, rng: np.random.Generator, n_terms: int, amplitude: float) -> np.ndarray:
    """Sum of low-order waves on the sphere, float64 (nlat, nlon)."""
    lat = np.deg2rad(g.latitude.astype("float64"))
    lon = np.deg2rad(g.longitude.astype("float64"))
    out = np.zeros((g.nlat, g.nlon))
    for _ in range(n_terms):
        a = amplitude * rng.uniform(0.3, 1.0)
        n, m = rng.integers(1, 5), rng.integers(1, 7)
        alpha, beta = rng.uniform(0, 2 * np.pi, size=2)
        # Elementwise outer product rather than a BLAS matmul: same bits everywhere.
        out += np.outer(a * np.cos(lat) * np.cos(n * lat + alpha), np.cos(m * lon + beta))
    return out


def _surface_pressure(g: Grid, seed: int) -> np.ndarray:
    lat = np.deg2rad(g.latitude.astype("float64"))
    zonal = -800.0 * np.cos(2 * lat)  # subtropical highs, subpolar lows, roughly
    return 101325.0 + zonal[:, None] + _smooth_field(g, _rng(seed, 0), 6, 2000.0)


def _member_state(g: Grid, seed: int, base: np.ndarray, r: int) -> tuple[np.ndarray, float]:
    """Member ``r``'s pressure field at the ground and its scale height (m)."""
    member = _rng(seed, 1, r)
    scale_height = 8000.0 + member.uniform(-150.0, 150.0)
    return base + _smooth_field(g, member, 4, 250.0), scale_height


def _member_value(
    g: Grid, seed: int, state: tuple[np.ndarray, float], r: int, height_index: int
) -> np.ndarray:
    ground, scale_height = state
    noise = _rng(seed, 2, height_index, r).normal(0.0, 5.0, size=(g.nlat, g.nlon))
    return ground * math.exp(-HEIGHTS[height_index] / scale_height) + noise


def prediction_slab(g: Grid, seed: int, height_index: int) -> np.ndarray:
    """All realizations at one height: float32 ``(18, nlat, nlon)``.

    Parameters
    ----------
    g
        The grid (see :func:`grid`).
    seed
        Random seed; the slab is a pure function of ``(g, seed, height_index)``.
    height_index
        Index into :data:`HEIGHTS`.
    """
    base = _surface_pressure(g, seed)
    slab = np.empty((N_REALIZATIONS, g.nlat, g.nlon), dtype="float32")
    for r in range(N_REALIZATIONS):
        slab[r] = _member_value(g, seed, _member_state(g, seed, base, r), r, height_index)
    return slab


def prediction_member(g: Grid, seed: int, realization: int) -> np.ndarray:
    """All heights of one ensemble member: float32 ``(33, nlat, nlon)``.

    The same values as :func:`prediction_slab`, in member order.
    """
    base = _surface_pressure(g, seed)
    member = np.empty((len(HEIGHTS), g.nlat, g.nlon), dtype="float32")
    state = _member_state(g, seed, base, realization)  # once per member, not per height
    for h in range(len(HEIGHTS)):
        member[h] = _member_value(g, seed, state, realization, h)
    return member


def observation_field(g: Grid, seed: int) -> np.ndarray:
    """Observed air pressure at 300 m: float32 ``(nlat, nlon)``.

    The float32 ensemble mean of the predictions at
    :data:`OBSERVATION_HEIGHT_INDEX`, plus a smooth error pattern and noise.
    """
    mean = prediction_slab(g, seed, OBSERVATION_HEIGHT_INDEX).mean(axis=0, dtype="float64")
    error = _smooth_field(g, _rng(seed, 3), 3, 150.0)
    noise = _rng(seed, 4).normal(0.0, 15.0, size=(g.nlat, g.nlon))
    return (mean + error + noise).astype("float32")


# -------------------------------------------------------------------------- metadata


def _coords(g: Grid) -> dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, str]]]:
    return {
        "realization": (
            ("realization",),
            np.arange(N_REALIZATIONS, dtype="int32"),
            {"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
        ),
        "height": (
            ("height",),
            np.asarray(HEIGHTS, dtype="float32"),
            {
                "standard_name": "height",
                "long_name": "height above ground",
                "units": "m",
                "positive": "up",
                "axis": "Z",
            },
        ),
        "latitude": (
            ("latitude",),
            g.latitude,
            {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"},
        ),
        "longitude": (
            ("longitude",),
            g.longitude,
            {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X"},
        ),
    }


_VAR_ATTRS = {"standard_name": "air_pressure", "long_name": "Air pressure", "units": "Pa"}


def _global_attrs(kind: str, g: Grid, seed: int) -> dict[str, str]:
    institution = {"predictions": "ECMWF (synthetic)", "observations": "EUMETSAT (synthetic)"}
    return {
        "Conventions": "CF-1.8",
        "title": f"Synthetic air pressure {kind}",
        "institution": institution[kind],
        "source": f"catalog_pools.data format {FORMAT_VERSION}, scale {g.scale}, seed {seed}",
        "comment": "Synthetic data for catalog_pools tests and demos; not real weather.",
    }


def _template(kind: str, g: Grid, seed: int) -> Any:
    """A lazy xarray.Dataset (zeros) with the final coordinates and attributes."""
    import dask.array as da
    import xarray as xr

    coords = _coords(g)
    if kind == "predictions":
        dims: tuple[str, ...] = ("realization", "height", "latitude", "longitude")
        data = da.zeros(g.prediction_shape, chunks=g.prediction_chunks, dtype="float32")
        use = coords
    else:
        dims = ("latitude", "longitude")
        data = da.zeros((g.nlat, g.nlon), chunks=g.observation_chunks, dtype="float32")
        use = {k: coords[k] for k in dims}
    ds = xr.Dataset(
        {"air_pressure": (dims, data, dict(_VAR_ATTRS))},
        coords={k: (d, v, a) for k, (d, v, a) in use.items()},
        attrs=_global_attrs(kind, g, seed),
    )
    if kind == "observations":
        height = coords["height"]
        ds = ds.assign_coords(height=((), height[1][OBSERVATION_HEIGHT_INDEX], height[2]))
    return ds


# --------------------------------------------------------------------------- writers


def _write_zarr(path: Path, kind: str, g: Grid, seed: int, slabs: Iterator[tuple[Any, np.ndarray]]) -> None:
    import zarr

    ds = _template(kind, g, seed)
    chunks = g.prediction_chunks if kind == "predictions" else g.observation_chunks
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is not in the v3 spec yet;
        # xarray reads it fine and it saves a listing per open.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # compute=False writes metadata and coordinates only; data goes in below.
        ds.to_zarr(
            path, mode="w", compute=False, consolidated=True, encoding={"air_pressure": {"chunks": chunks}}
        )
    array = zarr.open_array(store=str(path), path="air_pressure", mode="r+")
    for index, values in slabs:
        array[index] = values


def _write_netcdf(path: Path, kind: str, g: Grid, seed: int, slabs: Iterator[tuple[Any, np.ndarray]]) -> None:
    import netCDF4

    ds = _template(kind, g, seed)
    chunks = g.prediction_chunks if kind == "predictions" else g.observation_chunks
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(ds.attrs)
        for name, size in ds.sizes.items():
            nc.createDimension(name, size)
        for name, coord in ds.coords.items():
            v = nc.createVariable(name, coord.dtype, coord.dims)
            v.setncatts(coord.attrs)
            v[...] = coord.values
        var = ds["air_pressure"]
        out = nc.createVariable(
            "air_pressure",
            "f4",
            var.dims,
            zlib=True,
            complevel=1,
            shuffle=True,
            chunksizes=chunks,
            fill_value=np.float32(np.nan),
        )
        attrs = dict(var.attrs)
        if kind == "observations":
            attrs["coordinates"] = "height"
        out.setncatts(attrs)
        for index, values in slabs:
            out[index] = values


# ------------------------------------------------------------------------------ main


def _manifest(g: Grid, seed: int) -> dict[str, Any]:
    return {
        "generator": "catalog_pools.data",
        "format": FORMAT_VERSION,
        "scale": g.scale,
        "seed": seed,
        "grid": {"latitude": g.nlat, "longitude": g.nlon},
        "predictions": {
            "shape": list(g.prediction_shape),
            "chunks": list(g.prediction_chunks),
            "nbytes": g.prediction_nbytes,
        },
        "observations": {
            "shape": [g.nlat, g.nlon],
            "chunks": list(g.observation_chunks),
            "nbytes": g.observation_nbytes,
        },
        "files": dict(SITE_FILES),
    }


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a data root, or ``None`` if there is none (or it is unreadable)."""
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _replace(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    elif final.exists() or final.is_symlink():
        final.unlink()
    os.replace(tmp, final)


def make_data(
    root: str | os.PathLike[str],
    scale: str = "demo",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the synthetic predictions and observations under ``root``.

    Skips the work when ``root/manifest.json`` says the files were already made
    with this ``scale``, ``seed`` and generator version and all of them exist.
    Files are written under temporary names and renamed when complete, and the
    manifest is written last, so an interrupted run is redone next time.

    Parameters
    ----------
    root
        Data root; site directories ``ecmwf/`` and ``eumetsat/`` go below it.
    scale
        ``"small"`` (tests), ``"demo"`` or ``"seed"`` (like the original
        experiment): 1.5 MiB, 464 MiB or 2.7 GiB of float32 predictions. Both
        formats are written, compressed (zstd for zarr, zlib level 1 for
        netCDF): ~2.5 MiB, ~600 MiB or ~3.5 GiB on disk in all.
    seed
        Random seed. The same seed gives byte-identical files.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``{"predictions.zarr": Path, "predictions.nc": Path, "observations.zarr":
        Path, "observations.nc": Path}``, absolute paths.

    Examples
    --------
    >>> paths = make_data("data", scale="small", progress=False)  # doctest: +SKIP
    >>> paths["predictions.zarr"]  # doctest: +SKIP
    PosixPath('/.../data/ecmwf/predictions.zarr')
    """
    from tqdm.auto import tqdm

    g = grid(scale)
    root = Path(root).absolute()
    paths = {name: root / rel for name, rel in SITE_FILES.items()}
    wanted = _manifest(g, seed)
    if read_manifest(root) == wanted and all(p.exists() for p in paths.values()):
        logger.info("data under %s is up to date (scale %s, seed %d)", root, scale, seed)
        return paths

    (root / MANIFEST).unlink(missing_ok=True)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating %s data (seed %d) under %s", scale, seed, root)

    total = 2 * (g.prediction_nbytes + g.observation_nbytes)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"make_data {scale}",
        disable=not progress,
    ) as bar:

        def prediction_slabs() -> Iterator[tuple[Any, np.ndarray]]:
            for r in range(N_REALIZATIONS):
                member = prediction_member(g, seed, r)
                yield r, member
                bar.update(member.nbytes)

        def observation_slabs() -> Iterator[tuple[Any, np.ndarray]]:
            field = observation_field(g, seed)
            yield slice(None), field
            bar.update(field.nbytes)

        for name, kind, writer, slabs in (
            ("predictions.zarr", "predictions", _write_zarr, prediction_slabs),
            ("predictions.nc", "predictions", _write_netcdf, prediction_slabs),
            ("observations.zarr", "observations", _write_zarr, observation_slabs),
            ("observations.nc", "observations", _write_netcdf, observation_slabs),
        ):
            final = paths[name]
            tmp = final.with_name(final.name + ".partial")
            if tmp.is_dir():
                shutil.rmtree(tmp)
            tmp.unlink(missing_ok=True)
            writer(tmp, kind, g, seed, slabs())
            _replace(tmp, final)

    tmp_manifest = root / (MANIFEST + ".partial")
    tmp_manifest.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_manifest, root / MANIFEST)
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
