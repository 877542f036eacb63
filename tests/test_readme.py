"""The README's example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from catalog_pools.datagen.synthetic import make_data

REPO = Path(__file__).resolve().parent.parent


def test_readme_ten_lines_run(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Ten lines") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    make_data(tmp_path / "data", scale="small", progress=False)
    env = {**os.environ, "CATALOG_POOLS_DATA": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ecmwf" in out.stdout and "eumetsat" in out.stdout
    crossed = re.search(r"\((\d+) B\)", out.stdout)
    assert crossed and int(crossed.group(1)) == 18 * 36 * 4, out.stdout  # one small-scale field
