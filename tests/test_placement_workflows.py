"""Cross-site bytes on real processes: persisted inputs keep their site, one crossing per site."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from distributed import Client, wait

from catalog_pools import SiteUnavailableError, pool, worker_sites
from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.traffic import traffic

T, Y, X = 8, 20, 30
FIELD = Y * X * 8


def series() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(T, Y, X))


def field() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(Y, X))


def arrays() -> tuple[xr.DataArray, xr.DataArray]:
    """``a``: T fields at ecmwf, one per chunk; ``c``: one field at eumetsat."""
    with pool("ecmwf"):
        a = xr.DataArray(da.from_array(series(), chunks=(1, Y, X)), dims=("time", "y", "x"))
    with pool("eumetsat"):
        c = xr.DataArray(da.from_array(field(), chunks=(Y, X)), dims=("y", "x"))
    return a, c


def cross_site(client: Client, compute: Callable[[], object]) -> tuple[int, np.ndarray, dict]:
    with traffic(client, count_reads=False, settle=2.0) as t:
        values = compute()
    return t.cross_site_bytes, np.asarray(values), t.by_site_pair


@pytest.fixture(scope="module")
def wide_client(tmp_path_factory) -> Iterator[Client]:
    """Four workers at ecmwf (the consuming site), one at eumetsat."""
    directory = tmp_path_factory.mktemp("wide")
    with (
        LocalSitesCluster({"ecmwf": 4, "eumetsat": 1}, local_directory=directory) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(5, timeout=60)
        yield client


def test_shared_input_crosses_once_per_site(client) -> None:
    """``c`` is used by every time step at ecmwf: it crosses once, not once per worker."""
    a, c = arrays()
    crossed, values, pairs = cross_site(client, lambda: (a - c).std("time").compute())
    np.testing.assert_allclose(values, (series() - field()).std(axis=0))
    assert crossed == FIELD, pairs


def test_shared_input_crosses_once_with_four_workers(wide_client) -> None:
    a, c = arrays()
    sites = worker_sites(wide_client)
    crossed, values, pairs = cross_site(wide_client, lambda: ((a - c) ** 2).mean("time").compute())
    np.testing.assert_allclose(values, ((series() - field()) ** 2).mean(axis=0))
    assert crossed == FIELD, pairs
    assert sum(s == "ecmwf" for s in sites.values()) == 4


def test_persisted_input_keeps_its_site(client) -> None:
    """Work on persisted data runs where the data is; only one field crosses."""
    a, c = arrays()
    ap = a.persist()
    wait(ap.data)
    # the mean's tasks depend on keys outside the graph: the scheduler plugin places them
    crossed, values, pairs = cross_site(client, (ap.mean("time") - c).compute)
    np.testing.assert_allclose(values, series().mean(axis=0) - field())
    assert crossed == FIELD, pairs  # the mean or c: one field, never the persisted series


@pytest.mark.parametrize("consumers", ["client", "wide_client"])
def test_persisted_input_and_fan_out(consumers, request) -> None:
    client = request.getfixturevalue(consumers)
    a, c = arrays()
    ap = a.persist()
    wait(ap.data)
    crossed, values, pairs = cross_site(client, lambda: (ap - c).std("time").compute())
    np.testing.assert_allclose(values, (series() - field()).std(axis=0))
    assert crossed == FIELD, pairs


def test_user_pin_on_persisted_data_is_kept(client) -> None:
    """A join the user pins is never moved by the plugin, even after persisted data."""
    a, c = arrays()
    ap = a.persist()
    wait(ap.data)
    with pool("eumetsat"):
        joined = ap.mean("time") - c  # pinned by the user: runs at eumetsat
    with traffic(client, count_reads=False, settle=2.0) as t:
        values = joined.compute()
    np.testing.assert_allclose(values, series().mean(axis=0) - field())
    ran = {t.task_sites[k] for k in t.task_sites if "sub" in str(k)}
    assert ran == {"eumetsat"}


def test_corr_of_two_sites_moves_one_series_once(client) -> None:
    """``xr.corr`` joins both sites' validity masks and feeds the join back into both
    sides; the smallest traffic is one whole series crossing once (T fields)."""
    a, _ = arrays()
    other = np.random.default_rng(2).normal(size=(T, Y, X))
    with pool("eumetsat"):
        b = xr.DataArray(da.from_array(other, chunks=(1, Y, X)), dims=("time", "y", "x"))
    crossed, values, pairs = cross_site(client, xr.corr(a, b, "time").compute)
    expected = xr.corr(xr.DataArray(series(), dims=a.dims), xr.DataArray(other, dims=b.dims), "time")
    np.testing.assert_allclose(values, expected.values)
    assert T * FIELD <= crossed <= 1.1 * T * FIELD, pairs


@pytest.mark.parametrize(
    "name",
    ["corr", "cov", "broadcast_like"],
)
def test_series_against_one_field_moves_the_field_once(client, name: str) -> None:
    """A field used by every step of a series (``xr.corr``/``xr.cov`` over space,
    ``broadcast_like``): the field crosses once, never the series. Before placement
    rule 7 moved the largest saving first, each step's mask joined the field's
    side and the whole series crossed (T fields)."""
    a, c = arrays()
    plain_a, plain_c = xr.DataArray(series(), dims=a.dims), xr.DataArray(field(), dims=c.dims)
    build: dict[str, Callable[[xr.DataArray, xr.DataArray], xr.DataArray]] = {
        "corr": lambda s, f: xr.corr(s, f, ("y", "x")),
        "cov": lambda s, f: xr.cov(s, f, ("y", "x")),
        "broadcast_like": lambda s, f: (s - f.broadcast_like(s)).mean("time"),
    }
    crossed, values, pairs = cross_site(client, build[name](a, c).compute)
    np.testing.assert_allclose(values, build[name](plain_a, plain_c).values)
    assert FIELD <= crossed <= 1.1 * FIELD, pairs


def test_recomputing_a_failed_site_says_it_failed_earlier(client) -> None:
    with pool("nowhere"):
        x = da.ones(10, chunks=5) + 1
    with dask.config.set({"catalog_pools.no-worker-timeout": "1s"}):
        held = client.compute(x)
        with pytest.raises(SiteUnavailableError, match="waited 1 s"):
            held.result()
        start = time.monotonic()
        with pytest.raises(SiteUnavailableError) as info:
            x.compute()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "failed earlier" in message and "without waiting" in message and "client.retry" in message
    assert '"pool-nowhere=1"' in message
    del held
