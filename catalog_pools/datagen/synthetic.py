"""Synthetic, deterministic data for two sites: ECMWF predictions, EUMETSAT observations.

Layout written by :func:`make_data` under a data root::

    <root>/manifest.json                  what was generated (scale, seed, shapes) and the
                                          size and SHA-256 of every file written
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

Safety
------
The data root is usually the user's (``$CATALOG_POOLS_DATA``): :func:`make_data`
writes only paths that do not exist or that its manifest proves it wrote and
that are unchanged since, each through a temporary name and an atomic rename
(:mod:`catalog_pools.datagen.safety`). Anything else makes it refuse, before
writing anything, with :class:`catalog_pools.errors.UnsafeWriteError` naming the
path; ``force=True`` also replaces our own files that were changed since, never
a file we did not write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnsafeWriteError
from .fields import (
    FORMAT_VERSION,
    HEIGHTS,
    LAT_BLOCKS,
    N_REALIZATIONS,
    OBSERVATION_HEIGHT_INDEX,
    SCALES,
    SITE_FILES,
    Grid,
    grid,
    observation_field,
    prediction_member,
    prediction_slab,
)
from .formats import Slabs, write_netcdf, write_zarr
from .safety import GENERATOR, Ledger

__all__ = [
    "FORMAT_VERSION",
    "HEIGHTS",
    "LAT_BLOCKS",
    "MANIFEST",
    "N_REALIZATIONS",
    "OBSERVATION_HEIGHT_INDEX",
    "SCALES",
    "SITE_FILES",
    "Grid",
    "UnsafeWriteError",
    "grid",
    "make_data",
    "observation_field",
    "prediction_member",
    "prediction_slab",
    "read_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _manifest(g: Grid, seed: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
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
    import json

    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _tag(wanted: dict[str, Any]) -> str:
    """What a file was made from, kept in its record."""
    return f"format {wanted['format']}, scale {wanted['scale']}, seed {wanted['seed']}"


def _to_write(ledger: Ledger, wanted: dict[str, Any]) -> list[str]:
    """The files of :data:`SITE_FILES` that are missing or not as the manifest says."""
    if ledger.manifest is not None and "written" not in ledger.manifest:
        # A manifest of an older catalog_pools lists no sizes: trust files that exist.
        if {k: v for k, v in ledger.manifest.items() if k != "written"} != wanted:
            return list(SITE_FILES)
        return [n for n, rel in SITE_FILES.items() if not os.path.lexists(ledger.root / rel)]
    return [n for n, rel in SITE_FILES.items() if not ledger.up_to_date(rel, _tag(wanted))]


def _writers(g: Grid, seed: int, update: Callable[[int], Any]) -> dict[str, Callable[[Path], None]]:
    def prediction_slabs() -> Slabs:
        for r in range(N_REALIZATIONS):
            member = prediction_member(g, seed, r)
            yield r, member
            update(member.nbytes)

    def observation_slabs() -> Iterator[tuple[Any, np.ndarray]]:
        field = observation_field(g, seed)
        yield slice(None), field
        update(field.nbytes)

    def writer(fmt: Callable[..., None], kind: str, slabs: Callable[[], Slabs]) -> Callable[[Path], None]:
        return lambda path: fmt(path, kind, g, seed, slabs())

    return {
        "predictions.zarr": writer(write_zarr, "predictions", prediction_slabs),
        "predictions.nc": writer(write_netcdf, "predictions", prediction_slabs),
        "observations.zarr": writer(write_zarr, "observations", observation_slabs),
        "observations.nc": writer(write_netcdf, "observations", observation_slabs),
    }


def make_data(
    root: str | os.PathLike[str],
    scale: str = "demo",
    seed: int = 0,
    progress: bool = True,
    *,
    force: bool = False,
) -> dict[str, Path]:
    """Generate the synthetic predictions and observations under ``root``.

    Skips the work when ``root/manifest.json`` says the files were already made
    with this ``scale``, ``seed`` and generator version and they are as written.
    Each file is written under a temporary name and renamed when complete, and
    the manifest is written last, so an interrupted run is redone next time.
    Nothing that catalog_pools did not write is ever replaced or deleted.

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
    force
        Also replace files this function wrote earlier that were changed since.

    Returns
    -------
    dict
        ``{"predictions.zarr": Path, "predictions.nc": Path, "observations.zarr":
        Path, "observations.nc": Path}``, absolute paths.

    Raises
    ------
    UnsafeWriteError
        Before writing anything, if ``root`` is not a directory, its
        ``manifest.json`` was not written by catalog_pools, or a path to write
        exists and is not ours (or was changed, without ``force``). The message
        names every such path.

    Examples
    --------
    >>> paths = make_data("data", scale="small", progress=False)  # doctest: +SKIP
    >>> paths["predictions.zarr"]  # doctest: +SKIP
    PosixPath('/.../data/ecmwf/predictions.zarr')
    """
    g = grid(scale)
    ledger = Ledger(root, MANIFEST, force=force)
    paths = {name: ledger.root / rel for name, rel in SITE_FILES.items()}
    wanted = _manifest(g, seed)
    names = _to_write(ledger, wanted)
    if not names:
        logger.info("data under %s is up to date (scale %s, seed %d)", ledger.root, scale, seed)
        return paths
    ledger.check([SITE_FILES[n] for n in names])
    logger.info("generating %s data (seed %d) under %s", scale, seed, ledger.root)
    from tqdm.auto import tqdm

    sizes = {"predictions": g.prediction_nbytes, "observations": g.observation_nbytes}
    total = sum(sizes[n.split(".")[0]] for n in names)
    desc = f"make_data {scale}"
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress)
    with bar:
        writers = _writers(g, seed, bar.update)
        for name in names:
            ledger.write(SITE_FILES[name], writers[name], directory=name.endswith(".zarr"), tag=_tag(wanted))
            # Recorded at once: a run interrupted later still knows this file is ours.
            ledger.commit(wanted)
    logger.info("wrote %s", ", ".join(str(paths[n]) for n in names))
    return paths
