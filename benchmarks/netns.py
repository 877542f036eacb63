"""Emulated sites on one machine: network namespaces behind a router namespace.

Layout::

    node "ecmwf"    10.250.1.2/24  eth0 ─┐
    node "eumetsat" 10.250.2.2/24  eth0 ─┼─ rv1/rv2/rv3 (10.250.N.1) ── router namespace
    node "client"   10.250.3.2/24  eth0 ─┘     ip_forward=1, no uplink, no default route

* One namespace per node (a site, the client, the scheduler) plus a router
  namespace; one veth pair per node, created directly between the router and the
  node namespace (it never exists in the root namespace); a /24 per node.
* Nodes route only the emulated supernet (``10.250.0.0/16``) via the router:
  they have no default route either, so nothing can leave the emulation.
* Forwarding is on in the router only; ``lo`` is up everywhere; IPv6 is off.
* Bytes are counted per ordered node pair by counting rules (no target) in the
  router's ``mangle`` ``FORWARD`` chain, which runs before the ``filter`` table
  where the NFQUEUE delay rule lives. They count IP packet bytes (headers
  included, no Ethernet framing). Reset with ``-Z``, read with
  ``-L FORWARD -v -n -x``.
* Shaping: ``tc qdisc ... tbf`` on both ends of every link. Delay: the NFQUEUE
  program :mod:`benchmarks.delay` in the router (this kernel has no netem).
* Root-namespace guard: while a topology is up, a ``DROP`` rule at the top of
  the root namespace's ``OUTPUT`` chain drops (and counts) anything the root
  namespace would send to the supernet. Its counter must stay at 0.
* Teardown (idempotent; also from ``atexit`` and on SIGTERM/SIGHUP/SIGINT):
  stop the processes started here by PID (their process groups), then any
  process still inside one of our namespaces (by PID), then ``ip netns del``
  each namespace, then remove the root guard rule.

Needs root and ``ip``/``tc`` (iproute2), ``iptables`` and ``sysctl`` (procps); see
:func:`unavailable_reason`. Namespace names carry the creating
PID (``cpn<pid>-<node>``) so leftovers of a killed run are recognised and
removed by :func:`cleanup_stale`.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Prefix of every namespace name and root guard rule comment made here.
NAME_PREFIX = "cpn"
ROUTER = "router"
_CMD_TIMEOUT = 30.0
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


#: Commands run here (in the root namespace or through ``ip netns exec``) and their
#: Debian packages.
TOOLS = {"ip": "iproute2", "tc": "iproute2", "iptables": "iptables", "sysctl": "procps"}


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here (not root, or tools missing)."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or ``None`` if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables, tc)"
    missing = [
        f"'{tool}' (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None
    ]
    if missing:
        pkgs = " ".join(sorted({TOOLS[t.split("'")[1]] for t in missing}))
        return f"{', '.join(missing)} not found on PATH (apt-get install {pkgs})"
    # Read-only probes: the kernel and our privileges must allow what setup does.
    for argv in (
        ["ip", "netns", "list"],
        ["iptables", "-w", "5", "-n", "-L", "OUTPUT"],
        ["iptables", "-w", "5", "-t", "mangle", "-n", "-L", "FORWARD"],
    ):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"'{' '.join(argv)}' failed: {exc}"
        if out.returncode != 0:
            return f"'{' '.join(argv)}' failed: {out.stderr.strip() or out.returncode}"
    return None


def run(argv: Sequence[str], check: bool = True, timeout: float = _CMD_TIMEOUT) -> str:
    """Run a short administrative command; return stdout.

    Raises ``RuntimeError`` with stderr if ``check`` and the command fails.
    """
    logger.debug("$ %s", " ".join(argv))
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.strip()}")
    return proc.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of all network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    """PIDs of processes inside namespace ``ns``."""
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_pids(pids: Iterable[int], grace: float = 3.0) -> None:
    """SIGTERM each PID, wait up to ``grace`` seconds, then SIGKILL survivors."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _guard_rule(supernet: str, tag: str) -> list[str]:
    return ["OUTPUT", "-d", supernet, "-m", "comment", "--comment", tag, "-j", "DROP"]


def cleanup_stale(prefix: str = NAME_PREFIX) -> list[str]:
    """Remove namespaces and root guard rules left by dead runs; return their names.

    Only names ``<prefix><pid>-...`` whose creating PID no longer runs are touched.
    """
    removed: list[str] = []
    pat = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    for ns in list_namespaces():
        m = pat.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _kill_pids(namespace_pids(ns))
            run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
    # Root guard rules of dead runs.
    out = run(["iptables", "-S", "OUTPUT"], check=False)
    for line in out.splitlines():
        m = re.search(rf'--comment "?({re.escape(prefix)}(\d+)-guard)"?', line)
        if m and not _pid_alive(int(m.group(2))):
            args = line.split()[1:]  # drop "-A"
            run(["iptables", "-D", *[a.strip('"') for a in args]], check=False)
            removed.append(m.group(1))
    if removed:
        logger.warning("removed leftovers of dead runs: %s", removed)
    return removed


@dataclass
class Node:
    """One emulated host (a site, the client, the scheduler) in its own namespace."""

    name: str
    index: int
    ns: str
    subnet: ipaddress.IPv4Network
    ip: str
    router_ip: str
    router_dev: str
    dev: str = "eth0"

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside this node's namespace."""
        return ["ip", "netns", "exec", self.ns]


@dataclass(frozen=True)
class RouterCounters:
    """Per node pair byte counters in the router's mangle ``FORWARD`` chain.

    Reading them runs ``ip netns exec <router> iptables`` and sends no packet, so
    it may be done from the root namespace or from a node's namespace.
    """

    router_ns: str
    nets: Mapping[str, str]

    def _iptables(self, args: Sequence[str]) -> str:
        return run(["ip", "netns", "exec", self.router_ns, "iptables", *args])

    def reset(self) -> None:
        """Zero the counters (``iptables -t mangle -Z FORWARD``)."""
        self._iptables(["-t", "mangle", "-Z", "FORWARD"])

    def read(self) -> dict[tuple[str, str], int]:
        """Bytes forwarded per ordered ``(src node, dst node)`` since the last reset.

        Counts IP packets (IP and TCP headers included, no Ethernet framing).
        Also has key ``("*", "*")``: every forwarded byte.
        """
        out = self._iptables(["-t", "mangle", "-L", "FORWARD", "-v", "-n", "-x"])
        by_net = {net: name for name, net in self.nets.items()}
        result: dict[tuple[str, str], int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 8 or not parts[0].isdigit():
                continue
            nbytes = int(parts[1])
            nets = [p for p in parts if "/" in p and p[0].isdigit()]
            if len(nets) == 2 and nets[0] in by_net and nets[1] in by_net:
                result[(by_net[nets[0]], by_net[nets[1]])] = nbytes
            elif "total" in parts:
                result[("*", "*")] = nbytes
        return result


@dataclass
class Topology:
    """Nodes behind one router namespace; see the module docstring.

    Parameters
    ----------
    nodes
        Logical node names (lower-case letters/digits, ``[a-z][a-z0-9]{0,11}``),
        e.g. ``["ecmwf", "eumetsat", "client"]``. Node *i* (1-based) gets
        ``<base>.<i>.0/24``: router ``.1``, node ``.2``.
    base
        First two octets of the private supernet (``"10.250"`` → ``10.250.0.0/16``).
    guard_root
        Install the root-namespace ``OUTPUT`` DROP rule for the supernet.
    """

    nodes: Sequence[str]
    base: str = "10.250"
    guard_root: bool = True
    tag: str = field(default_factory=lambda: f"{NAME_PREFIX}{os.getpid()}")
    node: dict[str, Node] = field(init=False, default_factory=dict)
    router_ns: str = field(init=False, default="")
    procs: list[subprocess.Popen[Any]] = field(init=False, default_factory=list)
    _created: list[str] = field(init=False, default_factory=list)
    _guard: list[str] | None = field(init=False, default=None)
    _up: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        names = list(self.nodes)
        if len(set(names)) != len(names) or ROUTER in names:
            raise ValueError(f"node names must be unique and not {ROUTER!r}: {names}")
        for n in names:
            if not _NAME_RE.match(n):
                raise ValueError(f"invalid node name {n!r} (want [a-z][a-z0-9]{{0,11}})")
        if not 1 <= len(names) <= 200:
            raise ValueError("between 1 and 200 nodes")
        self.supernet = ipaddress.ip_network(f"{self.base}.0.0/16")
        if not self.supernet.is_private:
            raise ValueError(f"{self.supernet} is not a private range")
        self.router_ns = f"{self.tag}-{ROUTER}"
        for i, n in enumerate(names, start=1):
            subnet = ipaddress.ip_network(f"{self.base}.{i}.0/24")
            self.node[n] = Node(
                name=n,
                index=i,
                ns=f"{self.tag}-{n}",
                subnet=subnet,
                ip=str(subnet.network_address + 2),
                router_ip=str(subnet.network_address + 1),
                router_dev=f"rv{i}",
            )

    # ------------------------------------------------------------------ setup
    def __enter__(self) -> Topology:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _check_root_namespace(self) -> None:
        """Refuse to run if the root namespace already uses the supernet."""
        out = run(["ip", "-4", "-o", "addr", "show"]) + run(["ip", "-4", "route", "show"])
        for tok in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", out):
            try:
                net = ipaddress.ip_network(tok, strict=False)
            except ValueError:
                continue
            if net.prefixlen > 0 and net.overlaps(self.supernet):
                raise RuntimeError(
                    f"the root namespace already uses {tok}, which overlaps {self.supernet}; "
                    "pick another base"
                )

    def setup(self) -> Topology:
        """Create namespaces, links, addresses, routes and counting rules."""
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        cleanup_stale()
        self._check_root_namespace()
        install_signal_handlers()
        _ACTIVE.append(self)
        self._up = True
        try:
            if self.guard_root:
                rule = _guard_rule(str(self.supernet), f"{self.tag}-guard")
                run(["iptables", "-I", rule[0], "1", *rule[1:]])
                self._guard = rule
            for ns in [self.router_ns, *(n.ns for n in self.node.values())]:
                run(["ip", "netns", "add", ns])
                self._created.append(ns)
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
                self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
                self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
                self.sysctl(ns, "net.ipv4.ip_forward", "1" if ns == self.router_ns else "0")
            for n in self.node.values():
                plen = n.subnet.prefixlen
                # Created in the router namespace, peer moved straight into the node's.
                run(
                    [
                        "ip",
                        "-n",
                        self.router_ns,
                        "link",
                        "add",
                        n.router_dev,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        n.dev,
                        "netns",
                        n.ns,
                    ]
                )
                run(["ip", "-n", self.router_ns, "addr", "add", f"{n.router_ip}/{plen}", "dev", n.router_dev])
                run(["ip", "-n", n.ns, "addr", "add", f"{n.ip}/{plen}", "dev", n.dev])
                run(["ip", "-n", self.router_ns, "link", "set", n.router_dev, "up"])
                run(["ip", "-n", n.ns, "link", "set", n.dev, "up"])
                # Only the emulated supernet is routed, via the router.
                run(["ip", "-n", n.ns, "route", "add", str(self.supernet), "via", n.router_ip])
            self._add_counting_rules()
            self.check_isolation()
        except BaseException:
            self.teardown()
            raise
        logger.info(
            "topology up: router %s, %s",
            self.router_ns,
            ", ".join(f"{n.name}={n.ip}" for n in self.node.values()),
        )
        return self

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a sysctl inside namespace ``ns``."""
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])

    def check_isolation(self) -> None:
        """Assert the router has no default route and no uplink; nodes none either."""
        for ns in [self.router_ns, *(n.ns for n in self.node.values())]:
            routes = run(["ip", "-n", ns, "-4", "route", "show"])
            if "default" in routes:
                raise RuntimeError(f"namespace {ns} has a default route:\n{routes}")
        links = run(["ip", "-n", self.router_ns, "-o", "link", "show"])
        devs = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
        expected = {"lo", *(n.router_dev for n in self.node.values())}
        if devs != expected:
            raise RuntimeError(f"router has unexpected links {sorted(devs - expected)}")

    # ------------------------------------------------------------- counting
    def _add_counting_rules(self) -> None:
        for a in self.node.values():
            for b in self.node.values():
                if a is b:
                    continue
                self.iptables(
                    [
                        "-t",
                        "mangle",
                        "-A",
                        "FORWARD",
                        "-s",
                        str(a.subnet),
                        "-d",
                        str(b.subnet),
                        "-m",
                        "comment",
                        "--comment",
                        f"{a.name}>{b.name}",
                    ]
                )
        # Catch-all: anything forwarded that no pair rule matched (should stay 0).
        self.iptables(["-t", "mangle", "-A", "FORWARD", "-m", "comment", "--comment", "total"])

    def iptables(self, args: Sequence[str]) -> str:
        """Run ``iptables`` inside the router namespace."""
        return run(["ip", "netns", "exec", self.router_ns, "iptables", *args])

    @property
    def counters(self) -> RouterCounters:
        """The router's byte counters (picklable; usable from any namespace as root)."""
        return RouterCounters(self.router_ns, {n.name: str(n.subnet) for n in self.node.values()})

    def reset_counters(self) -> None:
        """Zero the router's byte counters."""
        self.counters.reset()

    def read_counters(self) -> dict[tuple[str, str], int]:
        """Bytes forwarded per ordered ``(src node, dst node)`` since the last reset."""
        return self.counters.read()

    def root_guard_packets(self) -> int:
        """Packets the root namespace tried to send to the supernet (must be 0)."""
        if self._guard is None:
            return 0
        out = run(["iptables", "-L", "OUTPUT", "-v", "-n", "-x"])
        for line in out.splitlines():
            if f"{self.tag}-guard" in line:
                return int(line.split()[0])
        raise RuntimeError("root guard rule vanished")

    # -------------------------------------------------------------- shaping
    def shape(self, rate_mbit: float, burst: str = "64kb", latency: str = "50ms") -> None:
        """``tbf`` at ``rate_mbit`` on both ends of every link."""
        for n in self.node.values():
            for ns, dev in ((self.router_ns, n.router_dev), (n.ns, n.dev)):
                run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        f"{rate_mbit}mbit",
                        "burst",
                        burst,
                        "latency",
                        latency,
                    ]
                )
        logger.info("tbf %s Mbit/s on both ends of %d links", rate_mbit, len(self.node))

    def start_delay(self, one_way_ms: float, max_seconds: float, queue: int = 0) -> subprocess.Popen[Any]:
        """Hold every forwarded packet ``one_way_ms`` in the router (RTT = 2x).

        Adds ``iptables -A FORWARD -j NFQUEUE --queue-num Q --queue-bypass`` in
        the router and starts :mod:`benchmarks.delay` there (it stops by itself
        after ``max_seconds``). With ``--queue-bypass`` packets pass undelayed if
        the program is not running.
        """
        proc = self.popen_router(
            [
                sys.executable,
                "-m",
                "benchmarks.delay",
                "--queue",
                str(queue),
                "--delay-ms",
                str(one_way_ms),
                "--max-seconds",
                str(max_seconds),
            ],
            stdout=subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"delay program did not start (said {line!r}, rc={proc.poll()})")
        self.iptables(["-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"])
        logger.info("NFQUEUE delay %.1f ms one way (pid %d)", one_way_ms, proc.pid)
        return proc

    # ------------------------------------------------------------ processes
    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside node ``node``'s namespace (tracked for teardown)."""
        return self._popen(self.node[node].prefix, argv, **kw)

    def popen_router(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the router namespace (tracked for teardown)."""
        return self._popen(["ip", "netns", "exec", self.router_ns], argv, **kw)

    def _popen(self, prefix: list[str], argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        if not self._up:
            raise RuntimeError("topology is not up")
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen([*prefix, *argv], **kw)
        self.procs.append(proc)
        logger.debug("started pid %d: %s", proc.pid, " ".join([*prefix, *argv]))
        return proc

    def exec(self, node: str, argv: Sequence[str], timeout: float = _CMD_TIMEOUT, check: bool = True) -> str:
        """Run a short command inside node ``node``'s namespace; return stdout."""
        return run([*self.node[node].prefix, *argv], check=check, timeout=timeout)

    def stop_processes(self, grace: float = 5.0) -> None:
        """Stop the processes started here: SIGTERM their groups, then SIGKILL."""
        live = [p for p in self.procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()

    # ------------------------------------------------------------- teardown
    def teardown(self) -> None:
        """Stop processes, delete namespaces, remove the root guard. Idempotent."""
        if not self._up:
            return
        self._up = False
        errors: list[str] = []
        try:
            self.stop_processes()
        except Exception as exc:  # keep tearing down
            errors.append(f"stop processes: {exc}")
        for ns in reversed(self._created):
            try:
                _kill_pids(namespace_pids(ns))
            except Exception as exc:
                errors.append(f"kill in {ns}: {exc}")
        for ns in reversed(self._created):
            try:
                run(["ip", "netns", "del", ns], check=False)
            except Exception as exc:
                errors.append(f"del {ns}: {exc}")
        self._created.clear()
        if self._guard is not None:
            try:
                run(["iptables", "-D", *self._guard], check=False)
            except Exception as exc:
                errors.append(f"root guard: {exc}")
            self._guard = None
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        left = [ns for ns in list_namespaces() if ns.startswith(f"{self.tag}-")]
        if left:
            errors.append(f"namespaces left: {left}")
        if errors:
            logger.error("teardown problems: %s", "; ".join(errors))
        else:
            logger.info("topology %s torn down", self.tag)

    def namespaces(self) -> list[str]:
        """Names of this topology's namespaces that currently exist."""
        return [ns for ns in list_namespaces() if ns.startswith(f"{self.tag}-")]

    def describe(self) -> Mapping[str, Any]:
        """Plain description (for result files)."""
        return {
            "router": self.router_ns,
            "supernet": str(self.supernet),
            "nodes": {n.name: {"ns": n.ns, "ip": n.ip, "subnet": str(n.subnet)} for n in self.node.values()},
        }


# ------------------------------------------------------------ global safety
_ACTIVE: list[Topology] = []
_HANDLERS_INSTALLED = False


def teardown_all() -> None:
    """Tear down every topology still up in this process."""
    for topo in list(_ACTIVE):
        try:
            topo.teardown()
        except Exception:  # pragma: no cover - best effort at exit
            logger.exception("teardown of %s failed", topo.tag)


def _on_signal(signum: int, frame: object) -> None:
    logger.warning("signal %d: tearing down", signum)
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGHUP raise ``SystemExit`` (so ``finally`` runs) and register atexit.

    SIGINT already raises ``KeyboardInterrupt``. Only installs handlers from the
    main thread and only over the default disposition.
    """
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(teardown_all)
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


def iter_pairs(names: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Ordered pairs of distinct names."""
    for a in names:
        for b in names:
            if a != b:
                yield a, b
