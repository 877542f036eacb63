"""make-data and the demo never replace or delete what they did not write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalog_pools.datagen import synthetic
from catalog_pools.datagen.safety import Ledger
from catalog_pools.datagen.synthetic import make_data
from catalog_pools.errors import UnsafeWriteError

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from catalog_pools.cli import main; sys.exit(main())"]


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``root``: kind, mode and bytes (or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("link", st.st_mode, os.readlink(p).encode())
        elif p.is_dir():
            out[str(p.relative_to(root))] = ("dir", st.st_mode, b"")
        else:
            out[str(p.relative_to(root))] = ("file", st.st_mode, p.read_bytes())
    return out


def user_root(root: Path, *which: str) -> Path:
    """A data root holding a user's files where make-data would write."""
    files = {
        "inside": ("ecmwf/predictions.zarr/my-notes.txt", b"my notes, not yours\n"),
        "netcdf": ("eumetsat/observations.nc", b"CDF\x01 my real observations"),
        "manifest": ("manifest.json", b'{"owner": "me", "files": ["my stuff"]}\n'),
        "partial": ("ecmwf/predictions.nc.partial", b"half of my download"),
        "zpartial": ("eumetsat/observations.zarr.partial/0", b"my partial chunk"),
    }
    for key in which or files:
        rel, content = files[key]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_make_data_refuses_and_leaves_user_files_byte_identical(tmp_path: Path) -> None:
    root = user_root(tmp_path / "R")
    before = snapshot(root)
    for extra in ([], ["--force"]):
        proc = cli("make-data", "--root", str(root), "--scale", "small", "--quiet", *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{root / 'manifest.json'}: it was not written by catalog_pools" in proc.stderr
        assert snapshot(root) == before


@pytest.mark.parametrize("which", ["inside", "netcdf", "partial", "zpartial"])
def test_each_user_file_is_named_and_kept(tmp_path: Path, which: str) -> None:
    root = user_root(tmp_path, which)
    before = snapshot(root)
    if which in ("partial", "zpartial"):
        # Temporary names are fresh and hidden: an old-style ".partial" of the user's is no obstacle.
        make_data(root, scale="small", progress=False)
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k in before} == before
        return
    with pytest.raises(UnsafeWriteError) as e:
        make_data(root, scale="small", progress=False, force=True)
    rel = {"inside": "ecmwf/predictions.zarr", "netcdf": "eumetsat/observations.nc"}[which]
    assert str(root / rel) in str(e.value)
    assert "nothing was changed" in str(e.value)
    assert snapshot(root) == before


def test_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    proc = cli("make-data", "--root", str(tmp_path / "f"), "--scale", "small", "--quiet")
    assert proc.returncode == 2
    assert f"{tmp_path / 'f'}: it is not a directory" in proc.stderr
    assert (tmp_path / "f").read_text() == "mine"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ecmwf").write_text("a file where a site directory goes")
    with pytest.raises(UnsafeWriteError, match=r"d/ecmwf is not a directory"):
        make_data(tmp_path / "d", scale="small", progress=False)


def test_own_files_are_replaced_only_when_unchanged_or_forced(tmp_path: Path) -> None:
    root = tmp_path
    (root / "ecmwf").mkdir()
    (root / "ecmwf" / "README").write_text("the user's file beside ours")
    (root / "other.txt").write_text("another one")
    mine = {k: v for k, v in snapshot(root).items()}
    make_data(root, scale="small", seed=0, progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    record = manifest["written"]["ecmwf/predictions.zarr"]
    assert record["type"] == "dir" and all(len(h) == 64 for _, h in record["files"].values())

    make_data(root, scale="small", seed=1, progress=False)  # ours, unchanged: replaced
    assert json.loads((root / "manifest.json").read_text())["seed"] == 1

    nc = root / "eumetsat" / "observations.nc"
    nc.write_bytes(nc.read_bytes()[:-1] + b"X")  # someone edited our file
    with pytest.raises(UnsafeWriteError, match="changed since catalog_pools wrote it"):
        make_data(root, scale="small", seed=2, progress=False)
    make_data(root, scale="small", seed=2, progress=False, force=True)
    assert json.loads((root / "manifest.json").read_text())["seed"] == 2

    (root / "ecmwf" / "predictions.zarr" / "added-by-user").write_text("keep me")
    with pytest.raises(UnsafeWriteError, match="holds files catalog_pools did not write"):
        make_data(root, scale="small", seed=3, progress=False, force=True)
    assert (root / "ecmwf" / "predictions.zarr" / "added-by-user").read_text() == "keep me"
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in mine} == mine
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_a_failed_write_leaves_nothing_and_a_racing_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, *args: object) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "write_netcdf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_data(tmp_path, scale="small", progress=False)
    # The zarr written before stays, recorded as ours; no temporary is left.
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert list(json.loads((tmp_path / "manifest.json").read_text())["written"]) == ["ecmwf/predictions.zarr"]
    monkeypatch.undo()
    make_data(tmp_path, scale="small", progress=False)  # the next run completes it
    assert len(json.loads((tmp_path / "manifest.json").read_text())["written"]) == 4

    ledger = Ledger(tmp_path / "race", "manifest.json")

    def racing(path: Path) -> None:
        path.write_text("ours")
        (tmp_path / "race" / "x.txt").write_text("the user's, created meanwhile")

    with pytest.raises(FileExistsError):
        ledger.write("x.txt", racing)
    assert (tmp_path / "race" / "x.txt").read_text() == "the user's, created meanwhile"
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == ["x.txt"]


def run_demo(data: Path, out: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "examples" / "demo.py"), "--scale", "small", "--no-progress"]
    env = {**os.environ, "CATALOG_POOLS_DATA": str(data)}
    return subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=timeout, env=env, cwd=out.parent
    )


def test_demo_refuses_a_data_root_with_user_files(tmp_path: Path) -> None:
    root = user_root(tmp_path / "R")
    before = snapshot(root)
    proc = run_demo(root, tmp_path / "out", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(root / "manifest.json") in proc.stderr
    assert snapshot(root) == before
    assert not (tmp_path / "out").exists()


def test_demo_keeps_user_files_beside_its_own(tmp_path: Path) -> None:
    root, out = tmp_path / "R", tmp_path / "out"
    (root / "ecmwf").mkdir(parents=True)
    (root / "ecmwf" / "predictions-2019.zarr").mkdir()
    (root / "ecmwf" / "predictions-2019.zarr" / "zarr.json").write_text("{}")
    (root / "notes.md").write_text("# my data root")
    out.mkdir()
    (out / "difference.png").write_bytes(b"my own picture")
    before_data, before_out = snapshot(root), snapshot(out)
    proc = run_demo(root, out, timeout=120)
    assert proc.returncode == 2 and f"{out / 'difference.png'} exists" in proc.stderr
    assert snapshot(root) == before_data and snapshot(out) == before_out

    (out / "difference.png").rename(out / "mine.png")
    before_out = snapshot(out)
    proc = run_demo(root, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before_data} == before_data
    assert {k: v for k, v in snapshot(out).items() if k in before_out} == before_out
    assert (out / "difference.png").read_bytes()[:4] == b"\x89PNG"
    proc = run_demo(root, out)  # a second run replaces its own outputs
    assert proc.returncode == 0, proc.stdout + proc.stderr
