"""``catalog-pools check`` and the subcommand registration hook."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
from catalog_data import CATALOGS, predictions, write, write_catalog, write_site_data

from catalog_pools.cli import app as cli


def test_check_example_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_site_data(tmp_path / "data")
    monkeypatch.setenv("CATALOG_POOLS_DATA", str(tmp_path / "data"))
    assert cli.main(["check", str(CATALOGS / "multicloud.yaml")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(line.startswith("OK ") and "site=ecmwf" in line for line in lines) == 2
    assert any(line.startswith("OK ") and "eumetsat.observations " in line for line in lines)
    assert "4 of 4 entries OK, 0 problem(s)" in out


def test_check_reports_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write(predictions(), tmp_path / "p.zarr", "zarr3")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          good: {{driver: zarr, metadata: {{site: ecmwf}}, args: {{urlpath: "{store}"}}}}
          nosite: {{driver: site_zarr, args: {{urlpath: "{store}"}}}}
          typo: {{driver: zar, metadata: {{site: ecmwf}}, args: {{urlpath: "{store}"}}}}
          missing: {{driver: netcdf, metadata: {{site: ecmwf}}, args: {{urlpath: "{tmp_path}/x.nc"}}}}
          badsite: {{driver: zarr, metadata: {{site: "a,b"}}, args: {{urlpath: "{store}"}}}}
          nested: {{driver: site_catalog, args: {{path: "{tmp_path}/none.yaml"}}}}
        """,
    )
    assert cli.main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4, errors
    for name in ("nosite", "typo", "badsite", "nested"):
        assert sum(f"entry '{name}'" in line for line in errors) == 1, (name, errors)
    assert all(line.startswith("ERROR: catalog ") for line in errors)
    # missing data is its own status (not an error): on stdout, one line
    assert sum(line.startswith("missing ") and " missing " in line for line in captured.out.splitlines()) == 1
    assert "good  (zarr)" in captured.out and "1 of 6 entries OK" in captured.out


def test_check_malformed_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_catalog(tmp_path / "bad.yaml", "sources: [\n")
    assert cli.main(["check", str(path), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml: invalid YAML" in err[0]


def test_console_script() -> None:
    exe = shutil.which("catalog-pools", path=str(Path(__import__("sys").executable).parent))
    if exe is None:
        pytest.skip("catalog-pools console script not installed (pip install -e .)")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "check" in out.stdout


def test_register_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    seen: list[str] = []

    @cli.register_command("hello", help="say hello")
    def _setup(parser: argparse.ArgumentParser) -> cli.Runner:
        parser.add_argument("who")

        def run(args: argparse.Namespace) -> int:
            seen.append(args.who)
            return 3

        return run

    assert cli.main(["hello", "world"]) == 3
    assert seen == ["world"]


def test_check_json_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    store = write(predictions(), tmp_path / "p.zarr", "zarr3")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          good: {{driver: zarr, args: {{urlpath: "{store}"}}}}
          gone: {{driver: zarr, args: {{urlpath: "{tmp_path}/gone.zarr"}}}}
        """,
    )
    assert cli.main(["check", str(path), "--json"]) == 0  # missing data is not an error
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"OK": 1, "missing": 1, "unreachable": 0, "site-private": 0, "error": 0}
    assert [e["status"] for e in doc["entries"]] == ["OK", "missing"]
    assert cli.main(["check", str(path), "--strict", "-q"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("missing ") and "gone" in out[0]
