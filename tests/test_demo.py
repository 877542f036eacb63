"""The demo, run as users run it (a subprocess), at the small scale."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from catalog_pools.datagen.synthetic import OBSERVATION_HEIGHT_INDEX, grid

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("demo")
    cmd = [
        sys.executable,
        str(REPO / "examples" / "demo.py"),
        "--scale",
        "small",
        "--data",
        str(tmp / "data"),
        "--out",
        str(tmp / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads((tmp / "out" / "report.json").read_text())
    return {"stdout": proc.stdout, "out": tmp / "out", "data": tmp / "data", "report": report}


def test_outputs_written(demo: dict[str, Any]) -> None:
    out = demo["out"]
    for name in ("difference.png", "traffic.png"):
        assert (out / name).read_bytes()[:8] == PNG
        assert (out / name).stat().st_size > 10_000
        assert str(out / name) in demo["stdout"]
    assert "opened via catalog" in demo["stdout"]


def test_printed_figures_match_the_traffic_report(demo: dict[str, Any]) -> None:
    stdout, report = demo["stdout"], demo["report"]
    crossed = int(re.search(r"^bytes crossing sites\s+(\d+) B", stdout, re.M).group(1))
    to_client = int(re.search(r"^bytes sent to client\s+(\d+) B", stdout, re.M).group(1))
    wall = float(re.search(r"^wall time\s+([\d.]+) s", stdout, re.M).group(1))
    assert crossed == report["cross_site_bytes"]
    assert to_client == report["client_bytes"]
    assert wall == pytest.approx(report["wall_time_s"], abs=0.01)
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s+(\d+)\s+\S+ \S+ \((\d+) B\)$", stdout, re.M)
    }
    assert rows == {
        site: (
            len(report["workers_by_site"][site]),
            report["tasks_by_site"][site],
            report["bytes_read_by_site"][site],
        )
        for site in ("ecmwf", "eumetsat")
    }


def test_little_crosses_and_each_site_reads_its_own(demo: dict[str, Any]) -> None:
    report = demo["report"]
    g = grid("small")
    field = g.nlat * g.nlon * 4
    member_chunk = 33 * g.lat_chunk * g.nlon * 4
    assert report["data_bytes"] == g.prediction_nbytes + g.observation_nbytes
    # Something must cross (the two inputs live in different sites), at least
    # one 2-D field, but no prediction chunk and far less than the data.
    assert field <= report["cross_site_bytes"] < member_chunk < report["data_bytes"]
    # The whole ensemble is read (the slice comes after the mean), at ECMWF only.
    assert report["bytes_read_by_site"] == {"ecmwf": g.prediction_nbytes, "eumetsat": field}
    assert report["tasks_by_site"]["ecmwf"] > 0 and report["tasks_by_site"]["eumetsat"] > 0
    assert report["complete"]


def test_values_equal_plain_xarray_on_the_netcdf_files(demo: dict[str, Any]) -> None:
    data = demo["data"]
    pred = xr.open_dataset(data / "ecmwf" / "predictions.nc", chunks={})
    obs = xr.open_dataset(data / "eumetsat" / "observations.nc", chunks={})
    expected = (
        pred.air_pressure.mean("realization").isel(height=OBSERVATION_HEIGHT_INDEX) - obs.air_pressure
    ).compute(scheduler="synchronous")
    got = xr.open_dataset(demo["out"] / "difference.nc")["air_pressure_difference"]
    assert got.shape == (18, 36)
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.latitude.values, expected.latitude.values)
    assert demo["report"]["max_abs_vs_plain_xarray"] == 0.0
