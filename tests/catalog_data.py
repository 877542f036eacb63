"""Small datasets, catalogs and local servers for the catalog tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

#: The repository's example catalogs.
CATALOGS = Path(__file__).resolve().parents[1] / "catalogs"
LAT = np.linspace(-60.0, 60.0, 8)
LON = np.linspace(0.0, 300.0, 6)
SHAPE = (3, 4, LAT.size, LON.size)  # realization, height, latitude, longitude


def predictions() -> xr.Dataset:
    """air_pressure(realization, height, latitude, longitude) float32."""
    rng = np.random.default_rng(1)
    data = (100_000 + 500 * rng.standard_normal(SHAPE)).astype("float32")
    return xr.Dataset(
        {"air_pressure": (("realization", "height", "latitude", "longitude"), data)},
        coords={
            "realization": np.arange(SHAPE[0]),
            "height": [10.0, 300.0, 1000.0, 5000.0],
            "latitude": LAT,
            "longitude": LON,
        },
    )


def observations() -> xr.Dataset:
    """air_pressure(latitude, longitude) float32 on the predictions' grid."""
    rng = np.random.default_rng(2)
    data = (99_000 + 300 * rng.standard_normal(SHAPE[2:])).astype("float32")
    return xr.Dataset(
        {"air_pressure": (("latitude", "longitude"), data)},
        coords={"latitude": LAT, "longitude": LON},
    )


def write(ds: xr.Dataset, path: Path, fmt: str) -> Path:
    """Write ``ds`` as ``zarr3``, ``zarr2``, ``netcdf4`` or ``netcdf3``; world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # numpy-backed data and explicit encoding: writing never goes through dask (and
    # so never through a distributed Client that may be the default one).
    chunks = {
        "air_pressure": {
            "chunks": tuple(4 if d == "latitude" else n for d, n in ds.air_pressure.sizes.items())
        }
    }
    if fmt == "zarr3":
        ds.to_zarr(path, mode="w", zarr_format=3, encoding=chunks)
    elif fmt == "zarr2":
        ds.to_zarr(path, mode="w", zarr_format=2, encoding=chunks)
    elif fmt == "netcdf4":
        ds.to_netcdf(path, engine="h5netcdf")
    elif fmt == "netcdf3":
        ds.to_netcdf(path, format="NETCDF3_64BIT", engine="scipy")
    else:
        raise ValueError(fmt)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def write_site_data(root: Path) -> dict[str, Path]:
    """The example layout under ``root`` (as helper C's generator writes it)."""
    return {
        "predictions.zarr": write(predictions(), root / "ecmwf" / "predictions.zarr", "zarr3"),
        "predictions.nc": write(predictions(), root / "ecmwf" / "predictions.nc", "netcdf4"),
        "observations.zarr": write(observations(), root / "eumetsat" / "observations.zarr", "zarr2"),
        "observations.nc": write(observations(), root / "eumetsat" / "observations.nc", "netcdf4"),
    }


def write_catalog(path: Path, text: str) -> Path:
    """Write dedented YAML ``text`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o644)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not start in {timeout} s")


@contextlib.contextmanager
def _server(argv: list[str], port: int, timeout: float = 30) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, timeout)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` at ``http://127.0.0.1:<port>`` for the block."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
    ]
    with _server(argv, port):
        yield f"http://127.0.0.1:{port}"


def moto_python() -> str | None:
    """An interpreter that can run ``moto.server`` (this one, else python3 on PATH)."""
    candidates = [sys.executable, shutil.which("python3")]
    for exe in filter(None, candidates):
        ok = subprocess.run([exe, "-c", "import moto.server, flask"], capture_output=True)
        if ok.returncode == 0:
            return exe
    return None


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A local S3 server (moto) at ``http://127.0.0.1:<port>`` for the block."""
    exe = moto_python()
    if exe is None:
        raise RuntimeError("moto[server] is not installed")
    port = free_port()
    argv = [exe, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _server(argv, port):
        yield f"http://127.0.0.1:{port}"
