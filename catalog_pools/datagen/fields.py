"""The synthetic fields: grids of each scale and values as pure functions of the seed.

See :mod:`catalog_pools.datagen.synthetic` for what the data look like and how
they are chunked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Bump when the generator changes, so old data is regenerated.
FORMAT_VERSION = 2

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
