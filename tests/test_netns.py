"""Smoke test of the emulated-WAN namespaces (benchmarks/netns.py).

Needs root, ``ip``/``tc`` (Debian iproute2), ``iptables`` (iptables) and
``sysctl`` (procps) on PATH, and working ``ip netns``/``iptables``; skipped with the
reason otherwise (see ``benchmarks.netns.unavailable_reason``). The NFQUEUE test
also needs ``NetfilterQueue`` (extra ``wan``). Everything runs
inside namespaces this test creates; the root namespace only runs ``ip``,
``iptables`` and ``tc`` and never sends to a site address (checked by the root
guard counter). Takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import netns  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

_REASON = netns.unavailable_reason()
if _REASON:
    pytest.skip(f"network namespaces unavailable: {_REASON}", allow_module_level=True)

FETCH = (
    "import sys,time,urllib.request as u;t=time.monotonic();"
    "n=len(u.urlopen(sys.argv[1],timeout=20).read());print(n,time.monotonic()-t)"
)


def _fetch(topo: netns.Topology, node: str, url: str) -> tuple[int, float]:
    out = topo.exec(node, [sys.executable, "-c", FETCH, url], timeout=30).split()
    return int(out[0]), float(out[1])


def _guard_rules() -> str:
    return netns.run(["iptables", "-S", "OUTPUT"])


def test_setup_route_count_shape_teardown(tmp_path: Path) -> None:
    data = tmp_path / "site-a"
    data.mkdir()
    (data / "blob").write_bytes(b"x" * 1_000_000)
    topo = netns.Topology(["sitea", "siteb", "client"], base="10.251")
    with topo:
        # Namespaces exist: router + one per node.
        assert sorted(topo.namespaces()) == sorted([topo.router_ns] + [n.ns for n in topo.node.values()])
        # No default route anywhere; router has only lo + one veth per node.
        topo.check_isolation()
        fwd = topo.exec("sitea", ["sysctl", "-n", "net.ipv4.ip_forward"]).strip()
        assert fwd == "0"

        a, b = topo.node["sitea"], topo.node["siteb"]
        server = topo.popen(
            "sitea",
            [
                sys.executable,
                "-m",
                "benchmarks.httpserve",
                "--dir",
                str(data),
                "--bind",
                a.ip,
                "--port",
                "8000",
                "--max-seconds",
                "60",
            ],
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        assert server.stdout is not None
        assert server.stdout.readline().decode().startswith("ready")

        # siteb reaches sitea through the router, and the router counts it.
        topo.reset_counters()
        assert all(v == 0 for v in topo.read_counters().values())
        n, _ = _fetch(topo, "siteb", f"http://{a.ip}:8000/blob")
        assert n == 1_000_000
        c = topo.read_counters()
        assert 1_000_000 <= c[("sitea", "siteb")] < 1_100_000
        assert 0 < c[("siteb", "sitea")] < 100_000
        assert c[("sitea", "client")] == 0 and c[("client", "sitea")] == 0
        assert c[("*", "*")] == sum(v for k, v in c.items() if k != ("*", "*"))
        topo.reset_counters()
        assert topo.read_counters()[("sitea", "siteb")] == 0

        # A node cannot reach anything outside the emulated supernet.
        r = topo.exec("siteb", ["ip", "route", "get", "192.0.2.1"], check=False)
        assert "192.0.2.1" not in r or "unreachable" in r

        # tbf: 1 MB at 16 Mbit/s takes >= ~0.4 s (unshaped: milliseconds).
        topo.shape(16)
        n, secs = _fetch(topo, "siteb", f"http://{a.ip}:8000/blob")
        assert n == 1_000_000 and secs > 0.35, secs

        # The root namespace never sent anything to a site address.
        assert topo.root_guard_packets() == 0
        assert topo.tag + "-guard" in _guard_rules()
        names = [topo.router_ns, a.ns, b.ns]

    # Everything gone: processes, namespaces, root guard rule.
    assert server.poll() is not None
    left = netns.list_namespaces()
    assert not any(ns in left for ns in names)
    assert topo.tag + "-guard" not in _guard_rules()


def test_teardown_on_error() -> None:
    topo = netns.Topology(["x1", "x2"], base="10.252")
    with pytest.raises(ZeroDivisionError), topo:
        proc = topo.popen("x1", ["sleep", "30"])
        1 / 0  # noqa: B018
    assert proc.poll() is not None
    assert not topo.namespaces()
    assert topo.tag + "-guard" not in _guard_rules()


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import netfilterqueue"], capture_output=True).returncode,
    reason="NetfilterQueue not installed (pip install 'catalog_pools[wan]')",
)
def test_nfqueue_delay(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"y" * 10)
    with netns.Topology(["d1", "d2"], base="10.253") as topo:
        a = topo.node["d1"]
        srv = topo.popen(
            "d1",
            [
                sys.executable,
                "-m",
                "benchmarks.httpserve",
                "--dir",
                str(tmp_path),
                "--bind",
                a.ip,
                "--port",
                "8000",
                "--max-seconds",
                "60",
            ],
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        assert srv.stdout is not None and srv.stdout.readline().startswith(b"ready")
        url = f"http://{a.ip}:8000/f"
        _, fast = _fetch(topo, "d2", url)
        topo.start_delay(25, max_seconds=30)
        t0 = time.monotonic()
        _, slow = _fetch(topo, "d2", url)
        # Connect + request/response: at least two round trips of 50 ms.
        assert slow >= 0.09, (fast, slow, time.monotonic() - t0)
