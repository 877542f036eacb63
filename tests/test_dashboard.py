"""The "Sites" page on the scheduler dashboard, read over HTTP and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client

from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.traffic import traffic

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N = 100_000  # float64: 800_000 bytes


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(url: str, tmp_path: Path, *args: str) -> str:
    exe = chromium()
    assert exe is not None
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000", *args, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    local = tmp_path_factory.mktemp("dashboard-cluster")
    with (
        LocalSitesCluster({"ecmwf": 1, "eumetsat": 1}, dashboard=True, local_directory=local) as cluster,
        Client(cluster) as client,
    ):
        port = client.scheduler_info()["services"]["dashboard"]
        yield client, f"http://127.0.0.1:{port}"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def snapshot(base: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(get(base + "/sites.json"))
    return data


def cross_transfer(client: Client) -> int:
    """Move one known array from EUMETSAT to ECMWF; returns the bytes measured."""
    with traffic(client, count_reads=False) as t:
        a = client.submit(np.arange, N, dtype="float64", resources={"pool-eumetsat": 0}, pure=False)
        client.submit(np.sum, a, resources={"pool-ecmwf": 0}, pure=False).result()
    assert t.cross_site_bytes == 800_000
    return t.cross_site_bytes


def test_sites_json_counts_what_traffic_measures(dashboard: tuple[Client, str]) -> None:
    client, base = dashboard
    before = snapshot(base)
    moved = cross_transfer(client)
    after = snapshot(base)
    assert after["cross_site_bytes"] - before["cross_site_bytes"] == moved
    pairs = {(p["src"], p["dst"]): p["bytes"] for p in after["pairs"]}
    assert pairs[("eumetsat", "ecmwf")] >= moved
    for site in ("ecmwf", "eumetsat"):
        assert [w["name"] for w in after["sites"][site]["workers"]] == [f"{site}-0"]
        assert after["sites"][site]["finished"] >= before["sites"][site]["finished"] + 1


def test_sites_page_linked_from_the_dashboard_menu(dashboard: tuple[Client, str]) -> None:
    _, base = dashboard
    assert "id='cross-site-bytes'" in get(base + "/sites")
    pytest.importorskip("bokeh", reason="no Bokeh: distributed serves no dashboard menu")
    assert '<a href="sites">Sites</a>' in get(base + "/status")


def _number(dom: str, element_id: str) -> int:
    match = re.search(rf"id=[\"']{re.escape(element_id)}[\"']>(\d+)<", dom)
    assert match, f"no #{element_id} in the page"
    return int(match.group(1))


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian package `chromium`)")
def test_page_in_chromium_during_a_computation(dashboard: tuple[Client, str], tmp_path: Path) -> None:
    client, base = dashboard
    cross_transfer(client)
    expected_cross = snapshot(base)["cross_site_bytes"]
    # Four 2-second tasks at ECMWF: its one worker is busy while Chromium loads the page.
    futures = client.map(time.sleep, [2.0] * 4, resources={"pool-ecmwf": 0}, pure=False)
    deadline = time.monotonic() + 10
    while not snapshot(base)["sites"]["ecmwf"]["tasks"]["processing"] and time.monotonic() < deadline:
        time.sleep(0.05)
    dom = run_chromium(base + "/sites", tmp_path, "--dump-dom")
    running = sum(not f.done() for f in futures)
    assert running > 0, "the computation ended before the page was read"
    assert _number(dom, "workers-ecmwf") == 1 and _number(dom, "workers-eumetsat") == 1
    assert 1 <= _number(dom, "tasks-ecmwf-processing") <= 4
    assert _number(dom, "tasks-eumetsat-processing") == 0
    assert _number(dom, "cross-site-bytes") == expected_cross
    assert _number(dom, "bytes-eumetsat-ecmwf") >= 800_000
    client.gather(futures)
