"""Opening catalogs: both ways in, the YAML forms, formats and protocols."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import dask.array as da
import intake
import numpy as np
import pytest
import xarray as xr
from catalog_data import (
    CATALOGS,
    http_server,
    moto_python,
    moto_s3,
    observations,
    predictions,
    write,
    write_catalog,
    write_site_data,
)

import catalog_pools
from catalog_pools.catalog import PooledSource, SiteCatalog, open_catalog
from catalog_pools.catalog.sources import SiteNetCDFSource, SiteZarrSource
from catalog_pools.errors import CatalogError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_site_data(root)
    return root


@pytest.fixture
def example_env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CATALOG_POOLS_DATA", str(data_root))
    return data_root


def _assert_example(cat: object) -> None:
    pred = cat.ecmwf.predictions.to_dask()
    obs = cat.eumetsat.observations.to_dask()
    pred_nc = cat.ecmwf.predictions_nc.to_dask()
    for ds, site in ((pred, "ecmwf"), (pred_nc, "ecmwf"), (obs, "eumetsat")):
        assert isinstance(ds, xr.Dataset)
        assert isinstance(ds.air_pressure.data, da.Array), "opening must stay lazy"
        assert ds.air_pressure.dtype == np.float32
        assert catalog_pools.pool_of(ds) == site
    assert pred.air_pressure.dims == ("realization", "height", "latitude", "longitude")
    assert obs.air_pressure.dims == ("latitude", "longitude")
    xr.testing.assert_equal(pred.compute(), predictions())
    xr.testing.assert_equal(pred_nc.compute(), predictions())
    xr.testing.assert_equal(obs.compute(), observations())


def test_example_catalog_with_open_catalog(example_env: Path) -> None:
    cat = catalog_pools.catalog.open_catalog(CATALOGS / "multicloud.yaml")
    assert isinstance(cat, SiteCatalog)
    assert sorted(cat) == ["ecmwf", "eumetsat"]
    assert sorted(cat.ecmwf) == ["predictions", "predictions_nc"]
    _assert_example(cat)


def test_example_catalog_with_plain_intake(example_env: Path) -> None:
    cat = intake.open_catalog(str(CATALOGS / "multicloud.yaml"))
    assert type(cat).__module__.startswith("intake.")  # intake's own top-level catalog
    assert isinstance(cat.ecmwf.predictions, SiteZarrSource)
    _assert_example(cat)


def test_package_exports_catalog_api() -> None:
    assert catalog_pools.open_catalog is open_catalog
    from catalog_pools.catalog.lookup import load_from_catalog

    assert catalog_pools.load_from_catalog is load_from_catalog


def test_registered_driver_names() -> None:
    assert intake.registry["site_zarr"] is SiteZarrSource
    assert intake.registry["site_netcdf"] is SiteNetCDFSource
    assert intake.registry["site_catalog"] is SiteCatalog


def test_opening_reads_no_data(example_env: Path, tmp_path: Path) -> None:
    store = write(predictions(), tmp_path / "p.zarr", "zarr3")
    cat = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          p: {{driver: site_zarr, args: {{urlpath: "{store}"}}}}
        """,
    )
    ds = open_catalog(cat).p.to_dask()
    # Chunks removed after opening: if opening had read data, values would survive.
    shutil.rmtree(store / "air_pressure" / "c")
    assert not np.array_equal(ds.air_pressure.values, predictions().air_pressure.values)


def test_describe_metadata_and_read(example_env: Path) -> None:
    src = open_catalog(CATALOGS / "multicloud.yaml").ecmwf.predictions
    assert src.metadata["site"] == "ecmwf"
    desc = src.describe()
    assert desc["site"] == "ecmwf" and desc["metadata"]["site"] == "ecmwf"
    assert desc["driver"] == ["site_zarr"]
    assert "Ensemble predictions" in desc["description"]
    loaded = src.read()
    assert isinstance(loaded.air_pressure.data, np.ndarray)
    xr.testing.assert_equal(loaded, predictions())
    assert src.discover()["metadata"]["dims"]["realization"] == 3


def test_call_time_chunks_are_honoured(example_env: Path) -> None:
    for cat in (
        open_catalog(CATALOGS / "multicloud.yaml"),
        intake.open_catalog(str(CATALOGS / "multicloud.yaml")),
    ):
        default = cat.ecmwf.predictions.to_dask()
        assert default.air_pressure.chunks[2] == (4, 4)  # the store's own chunks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # xarray: "separate the stored chunks"
            by_call = cat.ecmwf.predictions(chunks={"realization": 1}).to_dask()
            by_to_dask = cat.ecmwf.predictions.to_dask(chunks={"realization": 1})
        assert by_call.air_pressure.chunks[0] == (1, 1, 1)
        assert by_to_dask.air_pressure.chunks[0] == (1, 1, 1)
        assert catalog_pools.pool_of(by_call) == "ecmwf"


FORMATS = [
    ("zarr3", "site_zarr", "x.zarr"),
    ("zarr2", "site_zarr", "x.zarr"),
    ("netcdf4", "site_netcdf", "x.nc"),
    ("netcdf3", "site_netcdf", "x.nc"),
]


@pytest.mark.parametrize("fmt,driver,name", FORMATS)
@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_formats(tmp_path: Path, fmt: str, driver: str, name: str, as_url: bool) -> None:
    path = write(predictions(), tmp_path / name, fmt)
    url = path.as_uri() if as_url else str(path)
    cat = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          p:
            driver: {driver}
            metadata: {{site: ecmwf}}
            args: {{urlpath: "{url}"}}
        """,
    )
    ds = open_catalog(cat).p.to_dask()
    assert catalog_pools.pool_of(ds) == "ecmwf"
    xr.testing.assert_equal(ds.compute(), predictions())


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("http")
    for fmt, _, name in FORMATS:
        write(predictions(), root / fmt / name, fmt)
    return root


@pytest.mark.parametrize("fmt,driver,name", FORMATS)
def test_http_formats(http_root: Path, tmp_path: Path, fmt: str, driver: str, name: str) -> None:
    with http_server(http_root) as base:
        cat = write_catalog(
            tmp_path / "cat.yaml",
            f"""
            metadata: {{site: ecmwf}}
            sources:
              p: {{driver: {driver}, args: {{urlpath: "{base}/{fmt}/{name}"}}}}
            """,
        )
        ds = open_catalog(cat).p.to_dask()
        assert catalog_pools.pool_of(ds) == "ecmwf"
        xr.testing.assert_equal(ds.compute(), predictions())


def test_call_time_storage_options_are_honoured(http_root: Path, tmp_path: Path) -> None:
    with http_server(http_root) as base:
        cat = open_catalog(
            write_catalog(
                tmp_path / "cat.yaml",
                f"""
            metadata: {{site: ecmwf}}
            sources:
              p: {{driver: site_zarr, args: {{urlpath: "{base}/zarr3/x.zarr"}}}}
            """,
            )
        )
        assert catalog_pools.pool_of(cat.p.to_dask()) == "ecmwf"
        bad = {"client_kwargs": {"no_such_option": 1}}
        with pytest.raises(CatalogError, match=r"entry 'p'.*storage_options"):
            cat.p(storage_options=bad).to_dask()


@pytest.mark.skipif(
    moto_python() is None,
    reason="moto[server] not installed (pip install "
    "'catalog_pools[test]'); s3:// is tested against a local moto server",
)
def test_s3_with_storage_options(tmp_path: Path) -> None:
    pytest.importorskip("s3fs", reason="s3fs not installed (pip install 'catalog_pools[test]')")
    import s3fs

    with moto_s3() as endpoint:
        so = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
        fs = s3fs.S3FileSystem(**so)
        fs.mkdir("ecmwf-bucket")
        fs.put(str(write(predictions(), tmp_path / "p.zarr", "zarr3")), "ecmwf-bucket/p.zarr", recursive=True)
        fs.put(str(write(predictions(), tmp_path / "p.nc", "netcdf4")), "ecmwf-bucket/p.nc")
        cat = open_catalog(
            write_catalog(
                tmp_path / "cat.yaml",
                f"""
            metadata: {{site: ecmwf}}
            sources:
              zarr:
                driver: site_zarr
                args:
                  urlpath: s3://ecmwf-bucket/p.zarr
                  storage_options: {{key: testing, secret: testing,
                                     client_kwargs: {{endpoint_url: "{endpoint}"}}}}
              nc:
                driver: site_netcdf
                args: {{urlpath: s3://ecmwf-bucket/p.nc}}
            """,
            )
        )
        ds = cat.zarr.to_dask()
        assert catalog_pools.pool_of(ds) == "ecmwf"
        xr.testing.assert_equal(ds.compute(), predictions())
        # The netCDF entry has no storage options in the catalog: given at call time.
        ds = cat.nc(storage_options=so).to_dask()
        assert catalog_pools.pool_of(ds) == "ecmwf"
        xr.testing.assert_equal(ds.compute(), predictions())


def test_intake_xarray_drivers_are_broken_and_replaced(tmp_path: Path) -> None:
    """intake-xarray 2.0.0 is unusable as is; open_catalog opens its entries itself."""
    nc = write(predictions(), tmp_path / "p.nc", "netcdf4")
    store = write(predictions(), tmp_path / "p.zarr", "zarr3")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          nc: {{driver: netcdf, args: {{urlpath: "{nc}", chunks: {{}}}}}}
          zarr: {{driver: zarr, args: {{urlpath: "{store}"}}}}
        """,
    )
    plain = intake.open_catalog(str(path))
    # If these start failing, intake-xarray was fixed: the workaround may go.
    with pytest.raises(TypeError):  # netCDF4 forced through engine="scipy"
        plain.nc.to_dask()
    assert not hasattr(plain.zarr, "metadata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ignored = plain.zarr(chunks={"realization": 1}).to_dask()
    assert ignored.air_pressure.chunks[0] == (3,), "call-time chunks are ignored"

    cat = open_catalog(path)
    assert isinstance(cat.nc, SiteNetCDFSource) and isinstance(cat.zarr, SiteZarrSource)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        z = cat.zarr(chunks={"realization": 1}).to_dask()
    assert z.air_pressure.chunks[0] == (1, 1, 1)
    assert cat.zarr.metadata["site"] == "ecmwf"
    ds = cat.nc.to_dask()
    assert catalog_pools.pool_of(ds) == "ecmwf" and catalog_pools.pool_of(z) == "ecmwf"
    xr.testing.assert_equal(ds.compute(), predictions())


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A top file (default site ecmwf) nesting a file through yaml_file_cat."""
    p = write(predictions(), tmp_path / "data" / "p.zarr", "zarr3")
    o = write(observations(), tmp_path / "data" / "o.zarr", "zarr3")
    write_catalog(
        tmp_path / "child.yaml",
        f"""
        sources:
          inherited: {{driver: zarr, args: {{urlpath: "{p}"}}}}
          overridden:
            driver: zarr
            metadata: {{site: eumetsat}}
            args: {{urlpath: "{o}"}}
          unpinned:
            driver: zarr
            metadata: {{site: null}}
            args: {{urlpath: "{o}"}}
        """,
    )
    return write_catalog(
        tmp_path / "top.yaml",
        """
        metadata: {site: ecmwf}
        sources:
          child:
            driver: yaml_file_cat
            args: {path: "{{ CATALOG_DIR }}/child.yaml"}
        """,
    )


def test_file_default_entry_override_and_opt_out_through_nesting(nested: Path) -> None:
    cat = open_catalog(nested)
    assert isinstance(cat.child, SiteCatalog)
    assert catalog_pools.pool_of(cat.child.inherited.to_dask()) == "ecmwf"
    assert catalog_pools.pool_of(cat.child.overridden.to_dask()) == "eumetsat"
    unpinned = cat.child.unpinned.to_dask()
    assert catalog_pools.pool_of(unpinned) is None
    assert cat.child.unpinned.site is None
    assert cat.child.inherited.metadata["site"] == "ecmwf"


def test_plain_intake_file_default_reaches_nested_site_drivers(nested: Path) -> None:
    text = nested.with_name("child.yaml").read_text().replace("driver: zarr", "driver: site_zarr")
    nested.with_name("child.yaml").write_text(text)
    cat = intake.open_catalog(str(nested))
    assert catalog_pools.pool_of(cat.child.inherited.to_dask()) == "ecmwf"
    assert catalog_pools.pool_of(cat.child.overridden.to_dask()) == "eumetsat"


def test_site_from_roots_when_entry_has_none(tmp_path: Path) -> None:
    p = write(predictions(), tmp_path / "ecmwf" / "p.zarr", "zarr3")
    cat = open_catalog(
        write_catalog(
            tmp_path / "cat.yaml",
            f"""
        metadata:
          sites:
            ecmwf: {{roots: ["{{{{ CATALOG_DIR }}}}/ecmwf"]}}
            eumetsat: {{roots: [eumetsat]}}
        sources:
          p: {{driver: zarr, args: {{urlpath: "{p}"}}}}
        """,
        )
    )
    assert cat.p.site == "ecmwf"
    assert catalog_pools.pool_of(cat.p.to_dask()) == "ecmwf"


def test_other_drivers_are_pooled_too(tmp_path: Path) -> None:
    import zarr

    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 4), chunks=(2, 2), dtype="f4")
    arr[:] = 1.0
    cat = open_catalog(
        write_catalog(
            tmp_path / "cat.yaml",
            f"""
        metadata: {{site: eumetsat}}
        sources:
          arr: {{driver: ndzarr, args: {{urlpath: "{tmp_path / "a.zarr"}"}}}}
        """,
        )
    )
    src = cat.arr
    assert isinstance(src, PooledSource) and src.site == "eumetsat"
    x = src.to_dask()
    assert catalog_pools.pool_of(x) == "eumetsat"
    assert float(x.sum().compute()) == 16.0


def test_getshell_warning_is_filtered(tmp_path: Path, example_env: Path) -> None:
    store = write(predictions(), tmp_path / "p.zarr", "zarr3")
    cat_path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          p:
            driver: zarr
            parameters:
              name: {{description: store name, type: str, default: p.zarr}}
            args: {{urlpath: "{store.parent}/{{{{ name }}}}"}}
        """,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_catalog(cat_path).p.to_dask()
    assert catalog_pools.pool_of(ds) == "ecmwf"
    assert not [w for w in caught if "getshell" in str(w.message)]


def test_open_on_site_needs_a_client(example_env: Path) -> None:
    cat = open_catalog(CATALOGS / "multicloud.yaml")
    with pytest.raises(CatalogError, match=r"entry 'ecmwf.predictions'.*needs a distributed Client"):
        cat.ecmwf.predictions(open_on="site").to_dask()
    with pytest.raises(CatalogError, match="open_on must be one of"):
        cat.ecmwf.predictions(open_on="somewhere").to_dask()


def test_opendap_driver_opens_the_url_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPeNDAP server here: check what the driver asks xarray for."""
    from catalog_pools.catalog.sources import SiteOpenDapSource

    calls: list[tuple[str, dict]] = []

    def fake_open_dataset(url: str, **kwargs: object) -> xr.Dataset:
        calls.append((url, kwargs))
        return predictions().chunk()

    monkeypatch.setattr(xr, "open_dataset", fake_open_dataset)
    assert intake.registry["site_opendap"] is SiteOpenDapSource
    ds = SiteOpenDapSource("https://server/dap/x", site="eumetsat", chunks={"height": 1}).to_dask()
    assert calls == [("https://server/dap/x", {"chunks": {"height": 1}, "engine": "netcdf4"})]
    assert catalog_pools.pool_of(ds) == "eumetsat"


def test_example_catalog_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalog and data served over HTTP; the default data root is relative to the catalog."""
    monkeypatch.delenv("CATALOG_POOLS_DATA", raising=False)
    shutil.copytree(CATALOGS, tmp_path / "catalogs")
    write_site_data(tmp_path / "data")
    write(observations(), tmp_path / "data" / "eumetsat" / "obs2.zarr", "zarr3")
    with http_server(tmp_path) as base:
        cat = open_catalog(f"{base}/catalogs/multicloud.yaml")
        src = cat.ecmwf.predictions_nc
        assert src.urlpath.startswith(f"{base}/catalogs/")
        _assert_example(cat)
        from catalog_pools.catalog.lookup import load_from_catalog

        # Not an entry: the site comes from the roots, "{{ CATALOG_DIR }}/../data/eumetsat".
        ds = load_from_catalog(f"{base}/data/eumetsat/obs2.zarr", cat)
        assert catalog_pools.pool_of(ds) == "eumetsat"
        xr.testing.assert_equal(ds.compute(), observations())
