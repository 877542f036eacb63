"""The pooled optimizers, in-process: pins survive fusion, values are unchanged."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
from dask.base import collections_to_expr

import catalog_pools
from catalog_pools import pool, pool_of, pools_in, propagate_pools
from catalog_pools.engine.optimize import PoolOptimizer
from catalog_pools.engine.sites import sites_of_resources


def optimized(*collections):
    expr = collections_to_expr(list(collections)).optimize()
    return expr.__dask_graph__(), expr.__dask_annotations__()


def two_site_arrays():
    with pool("ecmwf"):
        big = da.arange(64 * 64, chunks=256).reshape(64, 64).astype("f8") * 2
    with pool("eumetsat"):
        small = da.ones(64, chunks=16)
    return big, small


@pytest.mark.parametrize("site", ["ecmwf", "eu-west-1", "ewc_bologna", "site.2"])
def test_real_site_names_work(site: str) -> None:
    with pool(site):
        x = da.ones(4, chunks=2)
    assert pool_of(x) == site


@pytest.mark.parametrize("site", ["", " ", "ecmwf ", "a,b", "a=b", "pool'x", "-lead", 3])
def test_invalid_site_names_are_refused(site: object) -> None:
    with pytest.raises(ValueError, match="site"), pool(site):  # type: ignore[arg-type]
        pass


def test_dask_default_loses_pins_in_fusion() -> None:
    """Pins the upstream behaviour this package exists to work around."""
    with pool("ecmwf"):
        x = da.ones(8, chunks=4) + 1
    with dask.config.set(array_optimize=None):
        opt = dask.array.optimization.optimize(x.__dask_graph__(), x.__dask_keys__())
    assert isinstance(opt, dict)  # fused to a plain dict: layer annotations gone


def test_pins_survive_fusion_and_every_task_has_one_site() -> None:
    big, small = two_site_arrays()
    result = (big + small).sum(axis=0)
    graph, annotations = optimized(result)
    pools = annotations["pool"]
    resources = annotations["resources"]
    assert set(graph) == set(pools), "every task of a pooled graph gets a site"
    for key in graph:
        assert len(sites_of_resources(resources[key])) == 1
        assert resources[key][f"pool-{pools[key]}"] == 0
    by_name = {}
    for key, site in pools.items():
        by_name.setdefault(dask.utils.key_split(key), set()).add(site)
    # the small operand is computed on eumetsat; its key is taken over by a
    # relay at ecmwf that fetches it once for all the ecmwf tasks using it
    assert by_name["relayed"] == {"eumetsat"}
    relays = {k for k, flag in annotations["pool_relay"].items() if flag}
    assert {dask.utils.key_split(k) for k in relays} == {"ones_like"}
    assert {pools[k] for k in relays} == {"ecmwf"}
    # the join (fused into the sum tasks) runs on the big side
    assert {s for n, sites in by_name.items() if n != "relayed" for s in sites} == {"ecmwf"}


def test_pooled_values_equal_numpy_without_a_cluster() -> None:
    big, small = two_site_arrays()
    expected = (np.arange(64 * 64).reshape(64, 64) * 2.0).sum(axis=0) + 1
    np.testing.assert_array_equal((big.sum(axis=0) + small).compute(), expected)
    np.testing.assert_array_equal((big.sum(axis=0) + small).compute(scheduler="sync"), expected)


def test_data_read_by_two_groups_of_a_site_stays_in_the_graph() -> None:
    """``da.from_array`` chunks read by pinned and by propagated tasks of their site (``xr.corr``)."""
    import xarray as xr

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    with pool("ecmwf"):
        a = xr.DataArray(da.from_array(x, chunks=(1, 3, 5)), dims=("t", "y", "x"))
    with pool("eumetsat"):
        b = xr.DataArray(da.from_array(y, chunks=(1, 3, 5)), dims=("t", "y", "x"))
    expected = xr.corr(xr.DataArray(x, dims=a.dims), xr.DataArray(y, dims=b.dims), "t")
    np.testing.assert_allclose(xr.corr(a, b, "t").compute(scheduler="sync"), expected)


def test_unpooled_graphs_are_left_to_dask() -> None:
    x = da.ones((8, 8), chunks=4).sum(axis=0)
    graph, annotations = optimized(x)
    assert "pool" not in annotations
    assert not any(getattr(t, "func", None) is catalog_pools.engine.guard.run_in_site for t in graph.values())


def test_pinned_tasks_are_guarded() -> None:
    with pool("ecmwf"):
        x = da.ones(8, chunks=4) + 1
    graph, _ = optimized(x)
    funcs = {getattr(t, "func", None) for t in graph.values()}
    assert catalog_pools.engine.guard.run_in_site in funcs
    with dask.config.set({"catalog_pools.guard": False}):
        graph, _ = optimized(x)
    assert catalog_pools.engine.guard.run_in_site not in {getattr(t, "func", None) for t in graph.values()}


def test_propagation_can_be_switched_off() -> None:
    big, small = two_site_arrays()
    result = big.sum(axis=0) + small
    with propagate_pools(False):
        _, annotations = optimized(result)
    names = {dask.utils.key_split(k) for k in annotations["pool"]}
    assert "add" not in names
    _, annotations = optimized(result)
    assert "add" in {dask.utils.key_split(k) for k in annotations["pool"]}


def test_opt_out_block() -> None:
    with pool("ecmwf"):
        x = da.ones(8, chunks=4)
        with pool(None):
            y = da.zeros(8, chunks=4)
    assert pools_in(y) == set()
    _, annotations = optimized(x + y)
    zeros = [k for k in annotations.get("pool", {}) if dask.utils.key_split(k) == "zeros"]
    assert zeros == []


def test_optimizer_pickles_with_the_client_settings() -> None:
    opt = PoolOptimizer("array")
    with dask.config.set({"catalog_pools.propagate": False, "catalog_pools.no-worker-timeout": "3s"}):
        clone = pickle.loads(pickle.dumps(opt))
    assert (clone.propagate, clone.wait) == (False, 3.0)


def test_import_alone_ships_dask_own_optimizer() -> None:
    code = (
        "import pickle, catalog_pools, dask;"
        "f = pickle.loads(pickle.dumps(dask.config.get('array_optimize')));"
        "print(f.__module__, f.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["dask.array.optimization", "optimize"]


def test_private_hooks_still_exist() -> None:
    """Private dask internals we rely on; if one moves, this fails first."""
    from dask._task_spec import Task, _execute_subgraph, fuse_linear_task_spec  # noqa: F401
    from dask.array import optimization
    from dask.blockwise import _can_fuse_annotations

    assert callable(optimization._optimize_slices)
    assert not _can_fuse_annotations({"pool": "a", "resources": {"pool-a": 0}}, {})
    assert Task("k", len, [1], _data_producer=True).data_producer


def test_query_planning_fails_loudly() -> None:
    code = (
        "import catalog_pools\n"
        "try:\n"
        "    with catalog_pools.pool('ecmwf'):\n"
        "        pass\n"
        "except catalog_pools.QueryPlanningError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "DASK_ARRAY__QUERY_PLANNING": "True"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "refused:" in out.stdout, out.stderr
    assert "query-planning" in out.stdout


def test_pooled_graph_fuses_like_an_unpooled_one() -> None:
    """Pins must not cost tasks: loads fuse with what follows, as without pools."""
    values = np.arange(6 * 8 * 10.0).reshape(6, 8, 10)
    plain = da.from_array(values, chunks=(1, 8, 10)).mean(axis=0)[3]
    with pool("ecmwf"):
        pooled = da.from_array(values, chunks=(1, 8, 10)).mean(axis=0)[3]
    plain_graph, _ = optimized(plain)
    pooled_graph, annotations = optimized(pooled)
    assert len(pooled_graph) <= len(plain_graph)
    assert set(annotations["pool"].values()) == {"ecmwf"}
    from dask._task_spec import DataNode

    assert not any(isinstance(t, DataNode) for t in pooled_graph.values())
    np.testing.assert_array_equal(pooled.compute(), values.mean(axis=0)[3])


def _guarded_names(collection) -> dict[str, set[bool]]:
    """Key name -> whether its tasks are guarded, in the pooled optimizer's graph."""
    from dask.core import flatten
    from dask.utils import key_split

    from catalog_pools._compat.dask_internals import Task, convert_legacy_graph, fused_keys
    from catalog_pools.engine.guard import guarded_site, run_in_site
    from catalog_pools.engine.optimize import optimize_pooled
    from catalog_pools.engine.plan import relay

    graph = convert_legacy_graph(
        dict(optimize_pooled(collection.__dask_graph__(), list(flatten(collection.__dask_keys__()))))
    )
    out: dict[str, set[bool]] = {}
    for key, task in graph.items():
        if not isinstance(task, Task) or task.func is relay:  # aliases; copies under a load's key
            continue
        inner = task.args[1].task if getattr(task, "func", None) is run_in_site else task
        for k in fused_keys(key, inner):
            out.setdefault(key_split(k), set()).add(guarded_site(task) is not None)
    return out


def test_spread_pins_read_only_in_their_site_need_no_guard() -> None:
    """Loads are always guarded; a pin the optimizer spread is guarded only when another site reads it."""
    import xarray as xr

    arrays = []
    for seed, site in enumerate(("ecmwf", "eumetsat")):
        with pool(site):
            data = da.random.default_rng(seed).standard_normal((6, 4), chunks=(1, 4))
        arrays.append(xr.DataArray(data, dims=("time", "x")))
    names = _guarded_names(xr.corr(*arrays, dim="time").data)
    assert names["standard_normal"] == names["relayed"] == {True}  # loads, and loads renamed for a relay
    assert names["invert"] == {False}  # validity masks, all read in the site of the join
    with pool("ecmwf"):
        a = da.random.default_rng(0).standard_normal((6, 4), chunks=(1, 4))
    with pool("dwd"):
        c = da.random.default_rng(1).standard_normal((4,), chunks=4)
    names = _guarded_names(da.where(c > 0, a, 0).mean(axis=0))
    assert names["relayed-gt"] == {True}  # the mask crosses to ecmwf (through a relay): guarded
    assert names["standard_normal"] == {True}
