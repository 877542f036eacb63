"""LocalSitesCluster and site isolation: real processes, real users."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import pytest
from distributed import Client, get_worker

from catalog_pools.cluster import ClusterStartError, LocalSitesCluster
from catalog_pools.cluster.isolation import (
    ensure_site_user,
    isolation_available,
    make_site_dir,
    site_user,
)
from catalog_pools.engine.sites import resource_name


# Task functions are made by these factories: the scheduler and workers cannot
# import this test module, and local functions are pickled by value.
def _worker_name_task() -> Callable[[], str]:
    def worker_name() -> str:
        return str(get_worker().name)

    return worker_name


def _read_task(catch: bool) -> Callable[[str], str]:
    def read(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError as e:
            if not catch:
                raise
            return type(e).__name__

    return read


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: Iterable[int], timeout: float = 15) -> list[int]:
    """Pids still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _running(p)]
        time.sleep(0.05)
    return left


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(text in arg for arg in proc.info["cmdline"] or ()) and _running(proc.pid):
            found.append(proc.pid)
    return found


# ---- the session cluster (non-destructive) ---------------------------------------------


def test_every_process_is_separate(sites_env, client) -> None:
    cluster = sites_env.cluster
    worker_pids = cluster.worker_pids
    assert sorted(worker_pids) == ["ecmwf-0", "ecmwf-1", "eumetsat-0", "eumetsat-1"]
    pids = {os.getpid(), cluster.scheduler_pid, *worker_pids.values()}
    assert len(pids) == 6
    # The pids we report are the processes that actually run the scheduler / tasks.
    assert client.run_on_scheduler(os.getpid) == cluster.scheduler_pid
    by_name = {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    ran_in = client.run(os.getpid)
    assert {name: ran_in[addr] for name, addr in by_name.items()} == worker_pids
    assert "distributed.cli.dask_scheduler" in psutil.Process(cluster.scheduler_pid).cmdline()


def test_worker_resources_are_their_site_pool(sites_env, client) -> None:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    seen: dict[str, list[str]] = {}
    for addr, w in workers.items():
        site = str(w["name"]).rsplit("-", 1)[0]
        assert w["resources"] == {resource_name(site): 1}
        seen.setdefault(site, []).append(addr)
    assert sites_env.cluster.sites == {s: sorted(a) for s, a in seen.items()}
    assert {s: len(a) for s, a in sites_env.cluster.sites.items()} == {"ecmwf": 2, "eumetsat": 2}
    for site, addrs in seen.items():
        assert all(sites_env.cluster.site_of(a) == site for a in addrs)
    assert sites_env.cluster.site_of("tcp://127.0.0.1:1") is None
    text = repr(sites_env.cluster)
    assert "ecmwf=[ecmwf-0, ecmwf-1]" in text and "eumetsat=[eumetsat-0, eumetsat-1]" in text
    assert "<td>eumetsat</td><td>eumetsat-1</td>" in sites_env.cluster._repr_html_()


@pytest.mark.parametrize("site", ["ecmwf", "eumetsat"])
def test_pooled_tasks_run_only_in_their_site(client, site: str) -> None:
    futures = [
        client.submit(_worker_name_task(), resources={resource_name(site): 0}, pure=False) for _ in range(16)
    ]
    names = client.gather(futures)
    assert names and all(n.startswith(f"{site}-") for n in names), names


def test_sites_env_describes_its_isolation(sites_env) -> None:
    assert set(sites_env.data_dirs) == {"ecmwf", "eumetsat"}
    assert all(d.is_dir() for d in sites_env.data_dirs.values())
    assert sites_env.isolated == (sites_env.reason == "")
    if sites_env.isolated:
        assert sites_env.cluster.users == {s: site_user(s) for s in ("ecmwf", "eumetsat")}


def test_foreign_site_cannot_read_data(isolated_env, client) -> None:
    path = isolated_env.data_dirs["ecmwf"] / "test-cluster-secret.txt"
    path.write_text("ecmwf only")
    path.chmod(0o644)
    results = client.run(_read_task(catch=True), str(path))
    uids = client.run(os.getuid)
    for addr, got in results.items():
        site = isolated_env.cluster.site_of(addr)
        assert uids[addr] == pwd.getpwnam(site_user(site)).pw_uid
        assert got == ("ecmwf only" if site == "ecmwf" else "PermissionError"), (addr, got)
    # The same through the scheduler, as a task pinned to eumetsat would see it.
    fut = client.submit(_read_task(catch=False), str(path), resources={"pool-eumetsat": 0}, pure=False)
    with pytest.raises(PermissionError):
        fut.result()


# ---- isolation helpers -------------------------------------------------------------


def test_isolation_available_gives_a_reason() -> None:
    ok, reason = isolation_available("ecmwf")
    assert isinstance(ok, bool)
    assert (reason == "") == ok
    if os.geteuid() != 0:
        assert not ok and "root" in reason


@pytest.mark.skipif(os.geteuid() != 0, reason="creating site users needs root")
def test_make_site_dir_is_private_and_checks_the_path(tmp_path: Path) -> None:
    user = ensure_site_user("ecmwf")
    assert ensure_site_user("ecmwf") == user == "cp-ecmwf"  # idempotent
    # pytest's tmp_path lives under a mode-700 directory: the user could not reach it.
    with pytest.raises(PermissionError, match="not enterable"):
        make_site_dir(tmp_path / "sites", "ecmwf", user)
    root = Path(tempfile.mkdtemp(prefix="catalog-pools-test-dir-"))
    try:
        d = make_site_dir(root, "ecmwf", user)
        st = d.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == pwd.getpwnam(user).pw_uid
        assert stat.S_IMODE(root.stat().st_mode) & stat.S_IXOTH
    finally:
        shutil.rmtree(root)


def test_invalid_arguments_start_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sites"):
        LocalSitesCluster({"ecmwf": 1}, prefixes={"elsewhere": ["true"]})
    with pytest.raises(ValueError, match="invalid site name"):
        LocalSitesCluster({"bad site": 1})
    if os.geteuid() == 0:
        user = ensure_site_user("ecmwf")
        # pytest's tmp directories are mode 700: a site user's worker could not start.
        with pytest.raises(PermissionError, match="cannot enter"):
            LocalSitesCluster({"ecmwf": 1}, users={"ecmwf": user}, local_directory=tmp_path)


# ---- own clusters (destructive) ----------------------------------------------------


def test_worker_failing_to_start_raises_with_its_log() -> None:
    with pytest.raises(ClusterStartError) as info:
        LocalSitesCluster({"ecmwf": 1}, worker_extra_args=["--no-such-option"], startup_timeout=30)
    message = str(info.value)
    assert "worker ecmwf-0" in message and "No such option" in message
    log = Path(message.split("; log ", 1)[1].split(",", 1)[0])
    assert log.is_file() and log.name == "ecmwf-0.log"
    cluster_dir = log.parent.parent
    try:
        # Teardown ran even though start-up failed: nothing of that cluster runs.
        assert _wait_gone(_processes_mentioning(str(cluster_dir))) == []
    finally:
        shutil.rmtree(cluster_dir, ignore_errors=True)


def test_killed_worker_leaves_cluster_usable_and_close_leaves_no_process() -> None:
    with LocalSitesCluster({"ecmwf": 2, "eumetsat": 1}) as cluster, Client(cluster) as client:
        pids = [cluster.scheduler_pid, *cluster.worker_pids.values()]
        directory = cluster.local_directory
        victim = cluster.worker_pids["ecmwf-0"]
        cluster.kill_worker("ecmwf-0")
        assert _wait_gone([victim]) == []
        assert "ecmwf-0" not in cluster.worker_pids
        deadline = time.monotonic() + 15
        while len(client.scheduler_info(n_workers=-1)["workers"]) != 2:
            assert time.monotonic() < deadline, "scheduler did not notice the killed worker"
            time.sleep(0.05)
        names = client.gather(
            [client.submit(_worker_name_task(), resources={"pool-ecmwf": 0}, pure=False) for _ in range(8)]
        )
        assert set(names) == {"ecmwf-1"}
        assert client.submit(_worker_name_task(), resources={"pool-eumetsat": 0}).result() == "eumetsat-0"
        assert len(cluster.sites["ecmwf"]) == 1
        with pytest.raises(KeyError):
            cluster.kill_worker("nobody-0")
    assert _wait_gone(pids) == []
    assert not directory.exists()  # clean close removes its temporary directory


def test_tls_cluster(tmp_path: Path) -> None:
    ok, _ = isolation_available("ecmwf")
    # With site users, the certificate files must be readable by them too.
    users = {s: ensure_site_user(s) for s in ("ecmwf", "eumetsat")} if ok else None
    directory = None if ok else tmp_path  # site users cannot enter pytest's tmp_path
    with LocalSitesCluster(
        {"ecmwf": 1, "eumetsat": 1}, security=True, users=users, local_directory=directory
    ) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        addrs = [a for addrs in cluster.sites.values() for a in addrs]
        assert len(addrs) == 2 and all(a.startswith("tls://") for a in addrs)
        with Client(cluster) as client:
            assert client.submit(_worker_name_task(), resources={"pool-eumetsat": 0}).result() == "eumetsat-0"
            # the pooled compute itself, over tls://
            import dask.array as da
            import numpy as np
            from distributed import get_task_stream

            from catalog_pools import pool, worker_sites

            with pool("ecmwf"):
                big = da.arange(20_000, chunks=2_000) * 1.0
            with pool("eumetsat"):
                small = da.ones(20_000, chunks=20_000)
            with get_task_stream(client) as stream:
                total = (big + small).sum().compute()
            assert total == np.arange(20_000).sum() + 20_000
            sites = worker_sites(client)
            assert {sites[r["worker"]] for r in stream.data if "ones" in str(r["key"])} == {"eumetsat"}
            assert {sites[r["worker"]] for r in stream.data if "arange" in str(r["key"])} == {"ecmwf"}
        # The scheduler refuses plain TCP.
        with pytest.raises(OSError):
            Client(cluster.scheduler_address.replace("tls://", "tcp://"), timeout=5)


def test_tls_cluster_with_a_given_security_object() -> None:
    """One certificate for all (``Security.temporary()``): each site user gets its own copy."""
    from distributed import Security

    ok, reason = isolation_available("ecmwf")
    if not ok:
        pytest.skip(reason)
    users = {s: ensure_site_user(s) for s in ("ecmwf", "eumetsat")}
    sec = Security.temporary()
    directory = Path(tempfile.mkdtemp(prefix="catalog-pools-tls-"))
    directory.chmod(0o755)
    try:
        with (
            LocalSitesCluster(
                {"ecmwf": 1, "eumetsat": 1}, security=sec, users=users, local_directory=directory
            ) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(_worker_name_task(), resources={"pool-ecmwf": 0}).result() == "ecmwf-0"
            for site, user in users.items():
                key = directory / "tls" / f"site-{site}" / "key.pem"
                assert key.stat().st_uid == pwd.getpwnam(user).pw_uid
                assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert stat.S_IMODE((directory / "tls" / "scheduler" / "key.pem").stat().st_mode) == 0o600
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_processes_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = tmp_path / "start.py"
    script.write_text(
        "import time\n"
        "from catalog_pools.cluster import LocalSitesCluster\n"
        f"c = LocalSitesCluster({{'ecmwf': 1, 'eumetsat': 1}}, local_directory={str(tmp_path)!r})\n"
        "print(c.scheduler_pid, *c.worker_pids.values(), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 3 and all(_running(p) for p in pids)
    finally:
        parent.kill()  # SIGKILL: no teardown code runs in the parent
        parent.wait()
    # The parent-death signal kills the scheduler and workers; nothing is left.
    assert _wait_gone(pids, timeout=20) == []
