"""explain(): the plan made before computing matches the traffic measured while computing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from distributed import Client, wait

import catalog_pools
from catalog_pools import pool
from catalog_pools.cluster import LocalSitesCluster
from catalog_pools.datagen.synthetic import grid, make_data
from catalog_pools.traffic import Plan, explain, traffic
from catalog_pools.traffic.plan import Price, parse_price, prices_from_metadata

TOLERANCE = 0.10


@pytest.fixture(scope="module")
def site_data(sites_env: Any) -> Path:
    root = sites_env.data_dirs["ecmwf"].parent
    make_data(root, scale="small", progress=False)
    return root


def _open(root: Path) -> tuple[xr.DataArray, xr.DataArray]:
    with pool("ecmwf"):
        pred = xr.open_zarr(root / "ecmwf" / "predictions.zarr").air_pressure
    with pool("eumetsat"):
        obs = xr.open_zarr(root / "eumetsat" / "observations.zarr").air_pressure
    return pred, obs


def _fields() -> tuple[da.Array, da.Array]:
    with pool("ecmwf"):
        members = da.random.random((8, 200, 300), chunks=(1, 100, 300))
    with pool("eumetsat"):
        field = da.random.random((200, 300), chunks=(50, 300)).astype("float32")
    return members, field


WORKFLOWS: dict[str, Callable[[Path], Any]] = {
    # the seed workload, and the engine benchmark's three (benchmarks/wan.py)
    "seed": lambda r: _open(r)[0].mean("realization").isel(height=1) - _open(r)[1],
    "join": lambda r: _open(r)[0].mean("realization").isel(height=10) - _open(r)[1],
    "full": lambda r: _open(r)[0].mean("realization") - _open(r)[1].drop_vars("height"),
    "reduce": lambda r: (_open(r)[0].mean("realization") - _open(r)[1].drop_vars("height")).mean(
        ["latitude", "longitude"]
    ),
    # a reduction joined with another site's field of another chunking and dtype
    "reduction-join": lambda r: _fields()[0].mean(axis=0) - _fields()[1],
}


def _measure(client: Client, collection: Any) -> tuple[Plan, int]:
    plan = explain(collection, client)
    with traffic(client) as t:
        client.compute(collection).result()
    assert t.complete
    return plan, t.cross_site_bytes


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_plan_matches_measured_traffic(client: Client, site_data: Path, name: str) -> None:
    collection = WORKFLOWS[name](site_data)
    plan, measured = _measure(client, collection)
    assert measured > 0
    assert abs(plan.cross_site_bytes - measured) <= TOLERANCE * measured, (name, plan.summary(), measured)
    assert set(plan.tasks_by_site) == {"ecmwf", "eumetsat"}
    assert plan.joins, plan.summary()


def test_seed_plan_names_the_join_and_moves_one_field(client: Client, site_data: Path) -> None:
    pred, obs = _open(site_data)
    plan = explain(pred.mean("realization").isel(height=1) - obs, client)
    field = grid("small").nlat * grid("small").nlon * 4
    # The mean and the observations are the same size: the tie goes to the
    # first site name, so the observations move to ECMWF.
    assert plan.by_site_pair[("eumetsat", "ecmwf")] == field
    assert plan.cross_site_bytes == field
    [join] = plan.joins
    assert (join.layer, join.site) == ("sub", "ecmwf")
    assert list(join.moving.values()) == [field] and [s for _, s in join.moving] == ["eumetsat"]
    assert plan.by_site_pair[("ecmwf", "client")] == field
    # The steps of the expression per site, loads included although fused away.
    assert plan.layers_by_site["ecmwf"]["open_dataset"] == pred.data.npartitions
    assert {"mean_chunk", "sub"} <= set(plan.layers_by_site["ecmwf"])
    assert plan.layers_by_site["eumetsat"]["open_dataset"] == obs.data.npartitions
    assert "CROSS-SITE" in plan.summary() and "join: sub at ecmwf" in plan.summary()


def test_explain_computes_nothing(client: Client, site_data: Path) -> None:
    pred, obs = _open(site_data)
    with traffic(client) as t:
        plan = explain(pred.mean("realization") - obs.drop_vars("height"), client)
    assert plan.tasks_by_site["ecmwf"] > 0
    assert t.tasks_by_site == {"ecmwf": 0, "eumetsat": 0}
    assert t.bytes_read_by_site == {"ecmwf": 0, "eumetsat": 0}


def test_persisted_input_is_located_and_sized_by_the_scheduler(client: Client, site_data: Path) -> None:
    pred, obs = _open(site_data)
    mean = client.persist(pred.mean("realization").isel(height=1))
    wait(mean)
    diff = mean - obs
    plan, measured = _measure(client, diff)
    assert abs(plan.cross_site_bytes - measured) <= TOLERANCE * measured, plan.summary()
    assert plan.unknown_sizes == 0


def test_fan_out_crosses_once_per_site(client: Client) -> None:
    members, _ = _fields()
    with pool("eumetsat"):
        small = da.random.random((4, 300), chunks=(1, 300))
    plan, measured = _measure(client, members - small.mean(axis=0))
    # the mean, used by 8 tasks on both ECMWF workers, crosses once (a relay)
    assert plan.cross_site_bytes == 300 * 8, plan.summary()
    assert abs(plan.cross_site_bytes - measured) <= TOLERANCE * measured, plan.summary()


@pytest.fixture(scope="module")
def three_sites() -> Iterator[Client]:
    with (
        LocalSitesCluster({"ecmwf": 1, "eumetsat": 1, "dwd": 1}) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.mark.slow
def test_three_site_sum(three_sites: Client) -> None:
    parts = []
    for i, site in enumerate(("dwd", "ecmwf", "eumetsat")):
        with pool(site):
            parts.append(da.random.random((400, 400), chunks=(100, 400)) * (i + 1))
    plan, measured = _measure(three_sites, parts[0] + parts[1] + parts[2])
    assert abs(plan.cross_site_bytes - measured) <= TOLERANCE * measured, plan.summary()
    assert len(plan.tasks_by_site) == 3
    assert plan.cross_site_bytes == 2 * 400 * 400 * 8  # two of three inputs move, once


def test_plan_without_client_and_prices(tmp_path: Path) -> None:
    with pool("ecmwf"):
        a = da.ones((4, 1000), chunks=(1, 1000))  # float64
    with pool("eumetsat"):
        b = da.ones((1000,), chunks=1000, dtype="float32")
    plan = explain(a.sum(axis=0) - b, prices={"ecmwf": "0.09 EUR", "eumetsat": "$0.12 / GB"})
    # The sum (8000 B) outweighs b (4000 B): b moves to ECMWF.
    assert plan.by_site_pair == {("eumetsat", "ecmwf"): 4000, ("ecmwf", "client"): 8000}
    assert plan.cross_site_bytes == 4000 and plan.client_bytes == 8000
    assert plan.cost("eumetsat", "ecmwf") == f"{0.12 * 4000 / 1e9:.4g} $"
    assert plan.total_cost() == pytest.approx({"$": 0.12 * 4e-6, "EUR": 0.09 * 8e-6})
    assert "egress cost" in plan.summary()
    assert "<table>" in plan._repr_html_()
    png = plan.plot(tmp_path / "plan.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert catalog_pools.explain is explain


def test_unpooled_collection_has_no_crossing() -> None:
    x = da.ones((100,), chunks=10)
    plan = explain(x + 1)
    assert plan.cross_site_bytes == 0 and plan.joins == []
    assert plan.tasks_by_site == {"(any site)": 10}
    assert plan.client_bytes == 800
    assert np.all((x + 1).compute(scheduler="sync") == 2)


def _max_abs_diff(m: np.ndarray, f: np.ndarray) -> float:
    return float(np.abs(m - f).max())


@pytest.mark.parametrize("route", ["delayed", "to_delayed"])
def test_delayed_of_arrays_is_sized_from_the_guarded_tasks(route: str) -> None:
    """dask drops the chunk metadata of arrays embedded in a delayed graph; guarded tasks keep their size."""
    import dask

    with pool("ecmwf"):
        members = da.random.random((4, 30, 40), chunks=(1, 30, 40))
    with pool("eumetsat"):
        field = da.random.random((30, 40), chunks=(30, 40))
    mean = members.mean(axis=0)
    if route == "delayed":
        result = dask.delayed(_max_abs_diff)(mean, field)
    else:
        result = dask.delayed(_max_abs_diff)(mean.to_delayed().item(), field.to_delayed().item())
    plan = explain(result)
    assert set(plan.tasks_by_site) == {"ecmwf", "eumetsat"}
    assert plan.unknown_sizes == 0, plan.summary()
    # One of the two fields (same shape, float64) crosses to the other's site.
    assert plan.cross_site_bytes == 30 * 40 * 8, plan.summary()
    assert explain(mean - field).cross_site_bytes == 30 * 40 * 8
    assert result.compute(scheduler="sync") == pytest.approx(_max_abs_diff(*dask.compute(mean, field)))


@pytest.mark.parametrize(
    ("text", "price"),
    [
        ("0.09 EUR", Price(0.09, "EUR")),
        ("$0.12", Price(0.12, "$")),
        ("0.05 USD/GB", Price(0.05, "USD")),
        (0.02, Price(0.02, "")),
        ("1e-2 CHF per GB", Price(0.01, "CHF")),
    ],
)
def test_parse_price(text: object, price: Price) -> None:
    assert parse_price(text) == price


def test_prices_from_catalog_metadata() -> None:
    meta = {"sites": {"ecmwf": {"roots": ["/x"], "egress_per_gb": "0.09 EUR"}, "eumetsat": {"roots": []}}}
    assert prices_from_metadata(meta) == {"ecmwf": Price(0.09, "EUR")}
    with pytest.raises(ValueError, match="no number"):
        parse_price("free")


def test_cli_prints_the_plan_with_catalog_prices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from catalog_pools.cli import main

    root = tmp_path / "data"
    make_data(root, scale="small", progress=False)
    monkeypatch.setenv("CATALOG_POOLS_DATA", str(root))
    repo = Path(__file__).resolve().parents[1] / "catalogs"
    catalog = tmp_path / "priced.yaml"
    catalog.write_text(
        (repo / "multicloud.yaml")
        .read_text()
        .replace("{{ CATALOG_DIR }}/", f"{repo}/")
        .replace("    eumetsat:\n      roots:", "    eumetsat:\n      egress_per_gb: 0.08 EUR\n      roots:")
    )
    expr = "predictions.air_pressure.mean('realization').isel(height=1) - observations.air_pressure"
    png = tmp_path / "plan.png"
    argv = [
        "explain",
        str(catalog),
        "ecmwf.predictions",
        "eumetsat.observations",
        "--expr",
        expr,
        "--plot",
        str(png),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    field = grid("small").nlat * grid("small").nlon * 4
    assert f"cross-site bytes: 2.53 kiB ({field} B)" in out
    assert f"{0.08 * field / 1e9:.4g} EUR" in out
    assert "join: sub at ecmwf" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match=r"no entry 'ecmwf\.nothing'"):
        main(["explain", str(catalog), "ecmwf.nothing"])
