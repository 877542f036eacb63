"""Writing the synthetic fields as CF-annotated zarr and netCDF4."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .fields import FORMAT_VERSION, HEIGHTS, N_REALIZATIONS, OBSERVATION_HEIGHT_INDEX, Grid

Slabs = Iterator[tuple[Any, np.ndarray]]


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


def write_zarr(path: Path, kind: str, g: Grid, seed: int, slabs: Slabs) -> None:
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


def write_netcdf(path: Path, kind: str, g: Grid, seed: int, slabs: Slabs) -> None:
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
