"""Hostile and malformed catalogs (issue #7): one test per defect."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from catalog_data import predictions, write, write_catalog
from dead_host import dead_host_server

from catalog_pools.catalog import open_catalog
from catalog_pools.catalog.yaml_catalog import walk_entries
from catalog_pools.cli import app as cli
from catalog_pools.cli.check import check_catalog, counts
from catalog_pools.engine.sites import validate_site
from catalog_pools.errors import CatalogError, SiteConflictError, UnknownDriverError

ATTACK = "{{ cycler.__init__.__globals__.os.system('touch %s') }}"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write(predictions(), tmp_path / "p.zarr", "zarr3")


@pytest.fixture
def dead_host() -> Iterator[str]:
    """http://127.0.0.1:PORT of a server that accepts connections and never answers."""
    with dead_host_server() as url:
        yield url


def test_sandbox_refuses_template_in_roots(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites: {{ecmwf: {{roots: ["{ATTACK % marker}"]}}}}
        sources: {{}}
        """,
    )
    with pytest.raises(CatalogError, match="sandbox"):
        open_catalog(path)
    assert not marker.exists()


def test_sandbox_refuses_template_in_args_check_and_to_dask(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          evil: {{driver: zarr, metadata: {{site: ecmwf}}, args: {{urlpath: "{ATTACK % marker}"}}}}
        """,
    )
    cat = open_catalog(path)  # the entry is rendered only when used
    with pytest.raises(CatalogError, match=r"entry 'evil'.*sandbox"):
        cat.evil.to_dask()
    results = check_catalog(str(path))
    assert [r.status for r in results] == ["error"] and "sandbox" in results[0].reason
    assert not marker.exists()


def test_env_and_storage_option_secrets_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_host: str
) -> None:
    monkeypatch.setenv("CP_TEST_TOKEN", "s3cr3t-value")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        sources:
          a:
            driver: netcdf
            metadata: {{site: ecmwf}}
            args:
              urlpath: "{dead_host}/x.nc?token={{{{ env('CP_TEST_TOKEN') }}}}"
              storage_options: {{client_kwargs: {{}}, password: hunter2hunter2}}
          b:
            driver: csv
            metadata: {{site: ecmwf}}
            args: {{urlpath: "{dead_host}/y.csv", storage_options: {{key: AKIAKEYKEY, secret: sssecret}}}}
        """,
    )
    with dask.config.set({"catalog_pools.check.timeout": 0.5}):
        text = "".join(r.line() for r in check_catalog(str(path)))
    desc = str(open_catalog(path).b.describe())
    for secret in ("s3cr3t-value", "hunter2hunter2", "AKIAKEYKEY", "sssecret"):
        assert secret not in text and secret not in desc
    assert "***" in text and "***" in desc


def test_dotted_driver_does_not_import_arbitrary_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "evilmod_cp.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Src: container = 'x'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata: {site: ecmwf}
        sources:
          evil: {driver: evilmod_cp.Src, args: {}}
          nosuch: {driver: os.NoSuchClass, args: {}}
          number: {driver: 123, args: {}}
          nulldrv: {driver: null, args: {}}
          notsource: {driver: os.system, args: {}}
        """,
    )
    cat = open_catalog(path)
    assert not marker.exists() and "evilmod_cp" not in sys.modules
    for name, pattern in [
        ("evil", "may not import arbitrary code"),
        ("nosuch", "has no 'NoSuchClass'"),
        ("number", "got 123"),
        ("nulldrv", "driver: null"),
        ("notsource", "not an intake driver"),
    ]:
        with pytest.raises(UnknownDriverError, match=f"entry '{name}'.*{pattern}"):
            cat[name]
    assert counts(check_catalog(str(path)))["error"] == 5
    trusted = {"catalog_pools.catalog.trusted-modules": ["evilmod_cp"]}
    with dask.config.set(trusted), pytest.raises(CatalogError, match="rejected"):
        open_catalog(path).evil  # noqa: B018 - imported: allowed by configuration
    assert marker.exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_catalog_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "cat.yaml"
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path
    start = time.monotonic()
    with pytest.raises(CatalogError, match=f"{path}.*not a regular file"):
        open_catalog(path)
    assert time.monotonic() - start < 5
    assert cli.main(["check", str(path), "-q"]) == 1


def test_nested_dev_zero_is_an_entry_error(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml", "sources:\n  z: {driver: yaml_file_cat, args: {path: /dev/zero}}\n"
    )
    [result] = check_catalog(str(path))
    assert result.status == "error" and "not a regular file" in result.reason and "entry 'z'" in result.reason


def test_alias_bomb(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write_catalog(
        tmp_path / "bomb.yaml", "\n".join(lines) + "\nsources: {x: {driver: csv, args: {urlpath: *a8}}}\n"
    )
    start = time.monotonic()
    with pytest.raises(CatalogError, match=r"bomb.yaml.*alias"):
        open_catalog(path)
    assert time.monotonic() - start < 5


def test_cycles_and_depth(tmp_path: Path) -> None:
    write_catalog(
        tmp_path / "a.yaml",
        "sources:\n  b: {driver: yaml_file_cat, args: {path: '{{ CATALOG_DIR }}/b.yaml'}}\n",
    )
    write_catalog(
        tmp_path / "b.yaml",
        "sources:\n  a: {driver: yaml_file_cat, args: {path: '{{ CATALOG_DIR }}/a.yaml'}}\n",
    )
    [info] = [i for i in walk_entries(open_catalog(tmp_path / "a.yaml")) if i.error]
    assert "cycle" in str(info.error) and "a.yaml -> " in str(info.error) and "b.yaml" in str(info.error)
    for i in range(20):
        nested = f"{{{{ CATALOG_DIR }}}}/d{i + 1}.yaml"
        nxt = f"sources:\n  n: {{driver: yaml_file_cat, args: {{path: '{nested}'}}}}\n"
        write_catalog(tmp_path / f"d{i}.yaml", nxt)
    errors = [i.error for i in walk_entries(open_catalog(tmp_path / "d0.yaml"), max_depth=5) if i.error]
    assert len(errors) == 1 and "nested more than 5 deep" in str(errors[0])


def test_one_bad_entry_never_stops_the_others(tmp_path: Path, store: Path) -> None:
    write_catalog(tmp_path / "child.yaml", "sources:\n  x: {driver: csv, driver: zarr}\n")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        plugins: {{source: [{{module: not_installed_cp}}]}}
        sources:
          good: {{driver: zarr, args: {{urlpath: "{store}"}}}}
          dup: {{driver: zarr, args: {{urlpath: a, urlpath: b}}}}
          child: {{driver: yaml_file_cat, args: {{path: "{{{{ CATALOG_DIR }}}}/child.yaml"}}}}
          derived: {{driver: intake.source.derived.GenericTransform,
                     args: {{targets: [good], transform: not_installed_cp.f, transform_kwargs: {{}}}}}}
          notmapping: 5
        """,
    )
    results = {r.label: r for r in check_catalog(str(path))}
    assert results["good"].status == "OK"
    assert "not_installed_cp" in results["plugins"].reason
    assert "duplicate key 'urlpath'" in results["dup"].reason
    assert "child.yaml" in results["child.x"].reason and "duplicate key 'driver'" in results["child.x"].reason
    assert "not_installed_cp" in results["derived"].reason
    assert "entry 'notmapping'" in results["notmapping"].reason
    assert open_catalog(path).good.to_dask().sizes


def test_validate_site_rejects_trailing_newline() -> None:
    with pytest.raises(ValueError):
        validate_site("ecmwf\n")


def test_scheme_only_roots_lists_globs_and_reference(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata:
          sites:
            gcp: {roots: ["gs://"]}
            ecmwf: {roots: ["/data/ecmwf"]}
            eumetsat: {roots: ["/data/eumetsat"]}
        sources:
          g: {driver: zarr, args: {urlpath: "gs://bucket/x.zarr"}}
          ref: {driver: zarr, args: {urlpath: "reference://", storage_options: {fo: /data/ecmwf/refs.json}}}
          glob: {driver: netcdf, args: {urlpath: "/data/eumetsat/*.nc"}}
          mixed: {driver: netcdf, args: {urlpath: ["/data/ecmwf/a.nc", "/data/eumetsat/b.nc"]}}
          chained:
            {driver: netcdf, metadata: {site: eumetsat}, args: {urlpath: "simplecache::/data/ecmwf/a.nc"}}
        """,
    )
    cat = open_catalog(path)
    assert cat.g.site == "gcp" and cat.ref.site == "ecmwf" and cat.glob.site == "eumetsat"
    with pytest.raises(SiteConflictError, match="several sites"):
        cat.mixed.site  # noqa: B018
    with pytest.raises(SiteConflictError, match="'ecmwf'"):
        cat.chained.site  # noqa: B018


def test_symlink_into_another_site(tmp_path: Path, store: Path) -> None:
    (tmp_path / "eumetsat").mkdir()
    os.symlink(store, tmp_path / "eumetsat" / "link.zarr")
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites: {{ecmwf: {{roots: ["{tmp_path}/p.zarr"]}}, eumetsat: {{roots: ["{tmp_path}/eumetsat"]}}}}
        sources:
          x:
            driver: zarr
            metadata: {{site: eumetsat}}
            args: {{urlpath: "{tmp_path}/eumetsat/link.zarr"}}
        """,
    )
    with pytest.raises(SiteConflictError, match="'ecmwf'"):
        open_catalog(path).x.site  # noqa: B018


def test_catalog_parameters_rendered_in_check_and_lookup(tmp_path: Path, store: Path) -> None:
    from catalog_pools.catalog import load_from_catalog

    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          site: ecmwf
          parameters: {{DATA_ROOT: {{type: str, default: "{tmp_path}"}}}}
        sources:
          p: {{driver: zarr, args: {{urlpath: "{{{{ DATA_ROOT }}}}/p.zarr"}}}}
        """,
    )
    [result] = check_catalog(str(path))
    assert result.status == "OK" and result.urls == [str(store)]
    assert load_from_catalog(store, path).sizes


def test_site_private_unreachable_and_missing(tmp_path: Path, dead_host: str) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites: {{hovenweep: {{roots: ["/caldera/hovenweep"]}}, here: {{roots: ["{tmp_path}"]}},
                   dead: {{roots: ["{dead_host}"]}}}}
        sources:
          private: {{driver: zarr, args: {{urlpath: /caldera/hovenweep/x.zarr}}}}
          missing: {{driver: zarr, args: {{urlpath: "{tmp_path}/nope.zarr"}}}}
          dead1: {{driver: zarr, args: {{urlpath: "{dead_host}/a.zarr"}}}}
          dead2: {{driver: zarr, args: {{urlpath: "{dead_host}/b.zarr"}}}}
        """,
    )
    start = time.monotonic()
    with dask.config.set({"catalog_pools.check.timeout": 1.0}):
        results = {r.label: r.status for r in check_catalog(str(path))}
    assert time.monotonic() - start < 4  # the dead host is asked once
    assert results == {
        "private": "site-private",
        "missing": "missing",
        "dead1": "unreachable",
        "dead2": "unreachable",
    }


def test_parameterised_entry_describe_and_tabular(tmp_path: Path) -> None:
    (tmp_path / "01013500.csv").write_text("a,b\n1,2\n")
    path = write_catalog(
        tmp_path / "cat.yaml",
        """
        metadata: {site: ecmwf}
        sources:
          basin:
            driver: csv
            parameters: {basin_id: {type: str, default: "05056000"}}
            args: {urlpath: "{{ CATALOG_DIR }}/{{ basin_id }}.csv"}
          img:
            driver: rasterio
            args: {urlpath: "{{ CATALOG_DIR }}/x.tif", storage_options: {token: abcdefgh}}
        """,
    )
    cat = open_catalog(path)
    src = cat.basin(basin_id="01013500")
    assert src.site == "ecmwf"
    assert list(src.discover().columns) == ["a", "b"]  # only 01013500.csv exists
    with pytest.raises(CatalogError, match=r"entry 'basin'.*tabular"):
        src.to_dask()
    desc = cat.img.describe()
    assert desc["site"] == "ecmwf" and "abcdefgh" not in str(desc)
    assert "basin" in cat.basin.yaml()


def test_to_dask_on_a_dead_host_fails_fast(tmp_path: Path, dead_host: str) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          dead: {{driver: zarr, args: {{urlpath: "{dead_host}/x.zarr"}}}}
          gcs: {{driver: zarr, args: {{urlpath: "gs://bucket/x.zarr"}}}}
        """,
    )
    start = time.monotonic()
    with dask.config.set({"catalog_pools.open-timeout": 1.0}), pytest.raises(CatalogError, match="'dead'"):
        open_catalog(path).dead.to_dask()
    assert time.monotonic() - start < 10
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(CatalogError, match=r"entry 'gcs'.*catalog-pools\[gcs\]"):
            open_catalog(path).gcs.to_dask()


def test_remote_catalog_file_without_network(dead_host: str) -> None:
    start = time.monotonic()
    with dask.config.set({"catalog_pools.check.timeout": 1.0}):
        [result] = check_catalog(f"{dead_host}/catalog.yaml")
        assert result.status == "error" and "unreachable" in result.reason
        [result] = check_catalog("gs://no-network-bucket/catalog.yaml")
        assert result.status == "error" and "gs://no-network-bucket/catalog.yaml" in result.reason
    assert time.monotonic() - start < 10


def _raise_botocore(**kwargs: object) -> None:
    from botocore.exceptions import EndpointConnectionError

    raise EndpointConnectionError(endpoint_url="https://s3.example.invalid")


def test_botocore_connection_error_takes_the_fallback() -> None:
    from catalog_pools.catalog.opening import open_pinned
    from catalog_pools.errors import DataNotFoundError

    pytest.importorskip("botocore")
    with pytest.raises(DataNotFoundError, match=r"entry 'x'.*EndpointConnectionError.*no distributed Client"):
        open_pinned(_raise_botocore, {}, site="ecmwf", open_on="auto", file="cat.yaml", entry="x")


def test_reference_targets_are_matched_against_roots(tmp_path: Path) -> None:
    import json

    (tmp_path / "eumetsat").mkdir()
    refs = {"version": 1, "templates": {"u": "/data/ecmwf/big.nc"}, "refs": {"a/0": ["{{u}}", 0, 10]}}
    (tmp_path / "eumetsat" / "refs.json").write_text(json.dumps(refs))
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata:
          sites: {{ecmwf: {{roots: ["/data/ecmwf"]}}, eumetsat: {{roots: ["{tmp_path}/eumetsat"]}}}}
        sources:
          r:
            driver: zarr
            args: {{urlpath: "reference://", storage_options: {{fo: "{tmp_path}/eumetsat/refs.json"}}}}
        """,
    )
    with pytest.raises(SiteConflictError, match=r"several sites.*/data/ecmwf -> ecmwf"):
        open_catalog(path).r.site  # noqa: B018


def test_secrets_redacted_in_our_errors(tmp_path: Path, store: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        f"""
        metadata: {{site: ecmwf}}
        sources:
          p: {{driver: zarr, args: {{urlpath: "{store}", storage_options: {{secret: verysecret1}}}}}}
        """,
    )
    with pytest.raises(CatalogError) as info:
        open_catalog(path).p.to_dask()
    assert "verysecret1" not in str(info.value) and "***" in str(info.value)
    [result] = check_catalog(str(path))
    assert result.status == "error" and "verysecret1" not in result.reason
