"""Session fixtures: one real two-site cluster for the whole test run.

Fixtures (contracts other test files rely on):

``sites_env`` (session)
    One ``LocalSitesCluster({"ecmwf": 2, "eumetsat": 2})``. Isolated when
    :func:`catalog_pools.cluster.isolation.isolation_available` says so: each site's workers
    run as ``cp-<site>`` and ``data_dirs[site]`` is mode 700 owned by that user.
    Attributes: ``cluster``, ``address``, ``data_dirs`` (site -> Path, writable by
    the test process), ``isolated``, ``reason`` (why not isolated, else ``""``).
    Set ``CATALOG_POOLS_NO_ISOLATION=1`` to run without site users.
``isolated_env`` (session)
    ``sites_env``, or ``pytest.skip(reason)`` when not isolated.
``client`` (function)
    ``distributed.Client(sites_env.address)``, closed after the test.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client

from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.cluster.isolation import ensure_site_user, isolation_available, make_site_dir

logger = logging.getLogger(__name__)

SITES: dict[str, int] = {"ecmwf": 2, "eumetsat": 2}


@dataclass
class SitesEnv:
    """What ``sites_env`` yields."""

    cluster: LocalSitesCluster
    address: str
    data_dirs: dict[str, Path] = field(default_factory=dict)
    isolated: bool = False
    reason: str = ""


@pytest.fixture(scope="session")
def sites_env(request: pytest.FixtureRequest) -> Iterator[SitesEnv]:
    """One two-site cluster for the session, isolated when the machine allows."""
    if os.environ.get("CATALOG_POOLS_NO_ISOLATION"):
        isolated, reason = False, "CATALOG_POOLS_NO_ISOLATION is set"
    else:
        isolated, reason = isolation_available(next(iter(SITES)))
    root = Path(tempfile.mkdtemp(prefix="catalog-pools-tests-"))
    # Site users must be able to enter the root to reach their own directory.
    root.chmod(0o755)
    data_root = root / "data"
    users: dict[str, str] = {}
    data_dirs: dict[str, Path] = {}
    if isolated:
        users = {site: ensure_site_user(site) for site in SITES}
        data_dirs = {site: make_site_dir(data_root, site, users[site]) for site in SITES}
    else:
        for site in SITES:
            data_dirs[site] = data_root / site
            data_dirs[site].mkdir(parents=True)
    try:
        cluster = LocalSitesCluster(SITES, users=users or None, local_directory=root / "cluster")
    except BaseException:
        logger.error("session cluster failed; logs kept in %s", root / "cluster" / "logs")
        raise
    try:
        yield SitesEnv(
            cluster=cluster,
            address=cluster.scheduler_address,
            data_dirs=data_dirs,
            isolated=isolated,
            reason=reason,
        )
    finally:
        cluster.close()
        if request.session.testsfailed:
            logger.warning("tests failed: keeping %s (cluster logs in %s)", root, cluster.log_directory)
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def isolated_env(sites_env: SitesEnv) -> SitesEnv:
    """``sites_env`` when sites cannot read each other's data; skipped otherwise."""
    if not sites_env.isolated:
        pytest.skip(f"sites are not isolated: {sites_env.reason}")
    return sites_env


@pytest.fixture
def client(sites_env: SitesEnv) -> Iterator[Client]:
    """A fresh ``Client`` on the session cluster, closed after the test."""
    n = sum(SITES.values())
    with Client(sites_env.address) as c:
        try:
            c.wait_for_workers(n, timeout=10)
        except TimeoutError as e:
            raise RuntimeError(
                f"the session cluster lost workers ({len(c.scheduler_info()['workers'])} of "
                f"{n} left): a test must not kill them, use its own LocalSitesCluster; "
                f"logs in {sites_env.cluster.log_directory}"
            ) from e
        yield c
