"""Site identity on real processes: one certificate per site, impostors refused.

The attacks: a worker holding a valid certificate of site eumetsat claims
``pool-ecmwf``; a process holding a certificate of no site (the client's) claims
it; an admitted eumetsat worker adds ``pool-ecmwf`` to its resources later; a
task pinned to ecmwf lands on a worker whose certificate is eumetsat's.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, get_worker

from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.cluster.isolation import ensure_site_user, isolation_available
from catalog_pools.engine.guard import check_site
from catalog_pools.engine.identity import EVENT_TOPIC, certificate_sites
from catalog_pools.errors import ForeignSiteError

SITES = {"ecmwf": 1, "eumetsat": 1}


@pytest.fixture(scope="module")
def secure() -> Iterator[tuple[LocalSitesCluster, dict[str, str]]]:
    isolated, _ = isolation_available("ecmwf")
    users = {s: ensure_site_user(s) for s in SITES} if isolated else {}
    root = Path(tempfile.mkdtemp(prefix="catalog-pools-security-"))
    root.chmod(0o755)
    try:
        with LocalSitesCluster(SITES, security=True, users=users or None, local_directory=root) as cluster:
            yield cluster, users
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def client(secure: tuple[LocalSitesCluster, dict[str, str]]) -> Iterator[Client]:
    with Client(secure[0]) as c:
        yield c


def _whoami() -> Any:
    # A closure: the workers cannot import this module, so it travels by value.
    def whoami(delay: float = 0.0) -> str:
        time.sleep(delay)
        return str(get_worker().name)

    return whoami


whoami = _whoami()


def start_impostor(
    cluster: LocalSitesCluster, cert: str, user: str | None, name: str
) -> subprocess.Popen[str]:
    tls = cluster.local_directory / "tls"
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cluster.local_directory / "workers"))
    runas: list[str] = []
    if user:
        shutil.chown(workdir, user, user)
        runas = ["runuser", "-u", user, "--"]
    argv = [
        *runas,
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        cluster.scheduler_address,
        "--name",
        name,
        "--resources",
        "pool-ecmwf=1",
        "--no-nanny",
        "--no-dashboard",
        "--local-directory",
        str(workdir),
        "--tls-ca-file",
        str(tls / "ca.pem"),
        "--tls-cert",
        str(tls / cert / "cert.pem"),
        "--tls-key",
        str(tls / cert / "key.pem"),
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate a worker process we started, kill it if it lingers; its output."""
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=30)[0]


def test_each_site_has_its_own_certificate(secure: tuple[LocalSitesCluster, dict[str, str]]) -> None:
    cluster, users = secure
    tls = cluster.local_directory / "tls"
    for site in SITES:
        d = tls / f"site-{site}"
        assert certificate_sites(str(d / "cert.pem")) == {site}
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
        if users:
            uid = int(subprocess.check_output(["id", "-u", users[site]]))
            assert d.stat().st_uid == uid and (d / "key.pem").stat().st_uid == uid
    assert certificate_sites(str(tls / "scheduler" / "cert.pem")) == frozenset()
    assert certificate_sites(str(tls / "client" / "cert.pem")) == frozenset()
    keys = [p for p in tls.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    # No CA key on disk: nobody can mint a certificate for a site.
    assert sorted(p.parent.name for p in keys) == ["client", "scheduler", "site-ecmwf", "site-eumetsat"]


def test_site_users_cannot_read_each_others_keys(secure: tuple[LocalSitesCluster, dict[str, str]]) -> None:
    cluster, users = secure
    if not users:
        pytest.skip("needs root and site users (isolation not available)")
    key = str(cluster.local_directory / "tls" / "site-ecmwf" / "key.pem")
    for user in (users["eumetsat"], "nobody"):
        proc = subprocess.run(["runuser", "-u", user, "--", "cat", key], capture_output=True, text=True)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
    own = subprocess.run(["runuser", "-u", users["ecmwf"], "--", "cat", key], capture_output=True, text=True)
    assert own.returncode == 0 and "PRIVATE KEY" in own.stdout


@pytest.mark.parametrize("cert", ["site-eumetsat", "client"])
def test_impostor_is_refused_and_runs_nothing(
    secure: tuple[LocalSitesCluster, dict[str, str]], client: Client, cert: str
) -> None:
    cluster, users = secure
    name = f"impostor-{cert}"
    # Work waiting for ecmwf workers: an admitted impostor would get some of it.
    futures = [client.submit(whoami, 0.05, resources={"pool-ecmwf": 0}, pure=False) for _ in range(60)]
    user = users.get("eumetsat") if cert == "site-eumetsat" else None
    proc = start_impostor(cluster, cert, user, name)
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    assert "refused by catalog_pools" in out
    assert set(client.gather(futures)) == {"ecmwf-0"}
    events = [e for _, e in client.get_events(EVENT_TOPIC) if e["name"] == name]
    assert events and list(events[0]["claimed"]) == ["ecmwf"]
    assert list(events[0]["certified"]) == (["eumetsat"] if cert == "site-eumetsat" else [])
    assert name not in {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    log = (cluster.log_directory / "scheduler.log").read_text()
    assert "refused worker" in log and f"(name {name})" in log


def test_admitted_worker_cannot_add_another_sites_resource(
    secure: tuple[LocalSitesCluster, dict[str, str]], client: Client
) -> None:
    cluster, _ = secure
    eum = cluster.sites["eumetsat"][0]

    async def grab(dask_worker: Any) -> None:
        await dask_worker.set_resources(**{"pool-ecmwf": 1})

    with pytest.raises(Exception, match="refused by catalog_pools"):
        client.run(grab, workers=[eum])
    info = client.scheduler_info(n_workers=-1)["workers"][eum]
    assert "pool-ecmwf" not in info["resources"]
    # Its own state now claims pool-ecmwf, yet the guard checks the certificate.
    with pytest.raises(ForeignSiteError, match="eumetsat"):
        client.submit(check_site, "ecmwf", workers=[eum], pure=False).result(timeout=30)
    assert client.submit(check_site, "eumetsat", workers=[eum], pure=False).result(timeout=30) is None
    futures = [client.submit(whoami, resources={"pool-ecmwf": 0}, pure=False) for _ in range(20)]
    assert set(client.gather(futures)) == {"ecmwf-0"}


def test_honest_worker_joins_and_works(
    secure: tuple[LocalSitesCluster, dict[str, str]], client: Client
) -> None:
    cluster, users = secure
    proc = start_impostor(cluster, "site-ecmwf", users.get("ecmwf"), "honest-ecmwf")
    try:
        client.wait_for_workers(3, timeout=60)
        addr = next(
            a
            for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            if w["name"] == "honest-ecmwf"
        )
        assert (
            client.submit(whoami, workers=[addr], resources={"pool-ecmwf": 0}, pure=False).result(60)
            == "honest-ecmwf"
        )
        assert client.submit(check_site, "ecmwf", workers=[addr], pure=False).result(60) is None
    finally:
        stop(proc)
    assert not [e for _, e in client.get_events(EVENT_TOPIC) if e["name"] == "honest-ecmwf"]
    assert os.path.exists(cluster.local_directory / "tls" / "site-ecmwf" / "cert.pem")


def test_control_without_the_identity_check_the_impostor_gets_in() -> None:
    """The control: the attack works when the plugin is off, so the tests above can fail."""
    root = Path(tempfile.mkdtemp(prefix="catalog-pools-security-control-"))
    root.chmod(0o755)
    try:
        with (
            LocalSitesCluster({"ecmwf": 1}, security=True, identity=False, local_directory=root) as cluster,
            Client(cluster) as client,
        ):
            proc = start_impostor(cluster, "client", None, "impostor")
            try:
                client.wait_for_workers(2, timeout=120)
                workers = client.scheduler_info(n_workers=-1)["workers"]
                addr = next(a for a, w in workers.items() if w["name"] == "impostor")
                got = client.submit(whoami, workers=[addr], resources={"pool-ecmwf": 0}, pure=False).result(
                    30
                )
                assert got == "impostor"
            finally:
                stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_plugin_started_late_removes_workers_that_claim_too_much() -> None:
    """Workers that registered before the plugin started are checked when it starts."""
    import asyncio

    from distributed import Scheduler, Security, Worker

    from catalog_pools.engine.identity import SiteIdentityPlugin

    async def run() -> tuple[list[str], list[dict[str, Any]]]:
        sec = Security.temporary()  # one certificate naming no site
        async with (
            Scheduler(security=sec, protocol="tls", dashboard_address=":0") as s,
            Worker(s.address, security=sec, resources={"pool-ecmwf": 1}, name="claims"),
            Worker(s.address, security=sec, name="plain"),
        ):
            plugin = SiteIdentityPlugin()
            s.add_plugin(plugin, name="identity")
            await plugin.start(s)
            return sorted(str(ws.name) for ws in s.workers.values()), plugin.refused

    names, refused = asyncio.run(run())
    assert names == ["plain"]
    assert [r["name"] for r in refused] == ["claims"]


def test_certificate_from_another_ca_is_refused_by_tls(
    secure: tuple[LocalSitesCluster, dict[str, str]], client: Client
) -> None:
    """A forged certificate naming site:ecmwf, signed by the attacker's own CA."""
    from cryptography.hazmat.primitives import serialization

    from catalog_pools.cluster.certs import issue_certificate, make_ca

    cluster, _ = secure
    forged_dir = cluster.local_directory / "tls" / "forged"
    forged_dir.mkdir()
    key, cert = issue_certificate(make_ca("attacker CA"), "site:ecmwf", ["site:ecmwf"])
    (forged_dir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (forged_dir / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    futures = [client.submit(whoami, 0.05, resources={"pool-ecmwf": 0}, pure=False) for _ in range(60)]
    proc = start_impostor(cluster, "forged", None, "forger")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)  # it keeps failing its TLS handshake
        names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        assert "forger" not in names
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    assert set(client.gather(futures)) == {"ecmwf-0"}
    assert "Register worker" not in out
    log = (cluster.log_directory / "scheduler.log").read_text()
    assert "TLS handshake failed" in log and "CERTIFICATE_VERIFY_FAILED" in log


def test_restart_keeps_site_identity(
    secure: tuple[LocalSitesCluster, dict[str, str]], client: Client
) -> None:
    """Workers started again after ``client.restart()`` present their own site's certificate."""
    before = len(client.get_events(EVENT_TOPIC))
    client.restart(timeout=120)
    client.wait_for_workers(2, timeout=60)
    futures = [client.submit(whoami, resources={"pool-ecmwf": 0}, pure=False) for _ in range(10)]
    assert set(client.gather(futures)) == {"ecmwf-0"}
    assert len(client.get_events(EVENT_TOPIC)) == before  # nobody refused
