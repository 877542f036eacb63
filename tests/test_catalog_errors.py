"""Bad catalogs give one clear error naming the file and the entry."""

from __future__ import annotations

from pathlib import Path

import intake
import pytest
from catalog_data import http_server, predictions, write, write_catalog

import catalog_pools
from catalog_pools.catalog import open_catalog
from catalog_pools.errors import (
    CatalogError,
    DataNotFoundError,
    MissingSiteError,
    SiteConflictError,
    UnknownDriverError,
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write(predictions(), tmp_path / "data" / "p.zarr", "zarr3")


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "bad.yaml",
        """
        sources:
          p:
            driver: site_zarr
            args: {urlpath: "x.zarr"
        """,
    )
    with pytest.raises(CatalogError, match=r"bad\.yaml: invalid YAML at line \d+, column \d+"):
        open_catalog(path)


def test_not_a_catalog(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(CatalogError, match=r"list\.yaml: a catalog must be a YAML mapping"):
        open_catalog(path)


def test_entry_without_site(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          orphan: {{driver: zarr, args: {{urlpath: "{store}"}}}}
        """,
    )
    with pytest.raises(MissingSiteError) as info:
        open_catalog(path).orphan.to_dask()
    msg = str(info.value)
    assert "cat.yaml" in msg and "entry 'orphan'" in msg
    assert "metadata: {site: <name>}" in msg and "site: null" in msg


def test_entry_without_site_plain_intake(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          orphan: {{driver: site_zarr, args: {{urlpath: "{store}"}}}}
        """,
    )
    with pytest.raises(MissingSiteError, match=r"cat\.yaml, entry 'orphan': no site is declared"):
        intake.open_catalog(str(path)).orphan.to_dask()


def test_explicit_opt_out_is_not_an_error(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          free: {{driver: zarr, metadata: {{site: null}}, args: {{urlpath: "{store}"}}}}
        """,
    )
    assert catalog_pools.pool_of(open_catalog(path).free.to_dask()) is None


def test_unknown_driver(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          typo: {{driver: zar, args: {{urlpath: "{store}"}}}}
        """,
    )
    cat = open_catalog(path)
    with pytest.raises(UnknownDriverError) as info:
        cat.typo.to_dask()
    msg = str(info.value)
    assert "cat.yaml" in msg and "entry 'typo'" in msg and "unknown driver 'zar'" in msg
    assert "site_zarr" in msg


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"nope\.yaml.*catalog file not found"):
        open_catalog(tmp_path / "nope.yaml")


def test_missing_nested_catalog_file(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "top.yaml",
        """
        sources:
          ecmwf: {driver: site_catalog, args: {path: "{{ CATALOG_DIR }}/ecmwf.yaml"}}
        """,
    )
    with pytest.raises(DataNotFoundError) as info:
        open_catalog(path).ecmwf  # noqa: B018 - the access raises
    msg = str(info.value)
    assert "top.yaml" in msg and "entry 'ecmwf'" in msg and "ecmwf.yaml" in msg


def test_missing_data_file(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          gone: {{driver: site_netcdf, args: {{urlpath: "{tmp_path}/gone.nc"}}}}
        """,
    )
    with pytest.raises(DataNotFoundError) as info:
        open_catalog(path).gone.to_dask()
    msg = str(info.value)
    assert "cat.yaml" in msg and "entry 'gone'" in msg and "gone.nc" in msg
    assert "no distributed Client" in msg


@pytest.mark.parametrize("where", ["entry", "file"])
def test_invalid_site_name(tmp_path: Path, store: Path, where: str) -> None:
    entry_md = "metadata: {site: 'ecmwf west'}," if where == "entry" else ""
    file_md = "metadata: {site: 'ecmwf west'}" if where == "file" else ""
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        {file_md}
        sources:
          p: {{driver: zarr, {entry_md} args: {{urlpath: "{store}"}}}}
        """,
    )
    with pytest.raises(CatalogError, match=r"invalid site name 'ecmwf west'") as info:
        open_catalog(path).p.to_dask()
    assert "cat.yaml" in str(info.value)
    if where == "entry":
        assert "entry 'p'" in str(info.value)


def test_conflicting_nesting_and_file_sites(tmp_path: Path, store: Path) -> None:
    write_catalog(
        tmp_path / "child.yaml",
        f"""
        metadata: {{site: eumetsat}}
        sources:
          p: {{driver: zarr, args: {{urlpath: "{store}"}}}}
        """,
    )
    path = write_catalog(
        tmp_path / "top.yaml",
        """
        sources:
          child:
            driver: yaml_file_cat
            metadata: {site: ecmwf}
            args: {path: "{{ CATALOG_DIR }}/child.yaml"}
        """,
    )
    with pytest.raises(SiteConflictError) as info:
        open_catalog(path).child.p.to_dask()
    msg = str(info.value)
    assert "child.yaml" in msg and "'eumetsat'" in msg and "'ecmwf'" in msg
    assert "entry 'child'" in msg


def test_conflicting_site_and_roots(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites:
            eumetsat: {{roots: ["{store.parent}"]}}
        sources:
          p: {{driver: zarr, metadata: {{site: ecmwf}}, args: {{urlpath: "{store}"}}}}
        """,
    )
    with pytest.raises(SiteConflictError) as info:
        open_catalog(path).p.to_dask()
    msg = str(info.value)
    assert "entry 'p'" in msg and "'ecmwf'" in msg and "root of site 'eumetsat'" in msg


def test_malformed_site_roots(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata:
          sites:
            ecmwf: /data/ecmwf
        sources: {}
        """,
    )
    with pytest.raises(CatalogError, match=r"cat\.yaml: metadata\.sites\.ecmwf must be a mapping"):
        open_catalog(path)


def test_storage_options_not_a_mapping(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata: {site: ecmwf}
        sources:
          p: {driver: site_zarr, args: {urlpath: "s3://b/p.zarr", storage_options: "anon=true"}}
        """,
    )
    with pytest.raises(CatalogError, match=r"entry 'p': storage_options must be a mapping"):
        open_catalog(path).p.to_dask()


def test_storage_options_on_a_local_path(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          p: {{driver: site_zarr, args: {{urlpath: "{store}", storage_options: {{anon: true}}}}}}
        """,
    )
    with pytest.raises(CatalogError, match=r"entry 'p': storage_options .* local path"):
        open_catalog(path).p.to_dask()


def test_storage_options_rejected_by_the_filesystem(tmp_path: Path, store: Path) -> None:
    with http_server(store.parent) as base:
        path = write_catalog(
            tmp_path / "cat.yaml",
            f"""
            metadata: {{site: ecmwf}}
            sources:
              p:
                driver: site_zarr
                args:
                  urlpath: "{base}/p.zarr"
                  storage_options: {{client_kwargs: {{bogus: 1}}}}
            """,
        )
        with pytest.raises(CatalogError, match=r"entry 'p': storage_options .*rejected"):
            open_catalog(path).p.to_dask()


def test_entry_arguments_rejected_by_driver(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata: {site: ecmwf}
        sources:
          p: {driver: site_zarr, args: {}}
        """,
    )
    with pytest.raises(CatalogError, match=r"entry 'p': driver 'site_zarr' rejected"):
        open_catalog(path).p  # noqa: B018 - the access raises
