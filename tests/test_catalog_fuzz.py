"""A fuzz corpus of malformed catalogs: each ends as a valid catalog or a CatalogError naming file and entry.

Inputs are generated here (whole-file mutations and per-entry mutations of a
valid catalog); each must finish within a time bound, with no other exception.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog_pools.catalog import open_catalog
from catalog_pools.cli.check import check_catalog
from catalog_pools.errors import CatalogError

BOUND = 10.0  # seconds per input

FILES: list[str] = [
    "",
    "null",
    "42",
    "[]",
    "- a\n- b\n",
    "sources: []",
    "sources: 5",
    "sources: null",
    "sources:\n  a: [",
    "sources: {}\nmetadata: []",
    "sources: {}\nmetadata: {sites: []}",
    "sources: {}\nmetadata: {sites: {x: 5}}",
    "sources: {}\nmetadata: {sites: {x: {roots: 5}}}",
    "sources: {}\nmetadata: {sites: {'a,b': {roots: ['/']}}}",
    "sources: {}\nmetadata: {sites: {x: {roots: ['{{ cycler.__init__.__globals__ }}']}}}",
    "sources: {}\nmetadata: {site: 'ecmwf\\n'}",
    "sources: {}\nmetadata: {site: 5}",
    "sources: {}\nmetadata: {parameters: [1]}",
    "sources: {}\nmetadata: {parameters: {p: 5}}",
    "sources: {}\nmetadata: {parameters: {p: {type: nosuchtype, default: 1}}}",
    "sources: {}\nversion: 2",
    "sources: {}\nsources: {}",
    "sources: {}\nplugins: 5",
    "sources: {}\nplugins: {source: [5, {module: 7}, {module: os}, {dir: /tmp}]}",
    "\t sources: {}",
    "sources: {a: &x [*x]}",
    "a: &a ["
    + ", ".join(["x"] * 50)
    + "]\nb: &b ["
    + ", ".join(["*a"] * 50)
    + "]\nc: &c ["
    + ", ".join(["*b"] * 50)
    + "]\nd: ["
    + ", ".join(["*c"] * 50)
    + "]\nsources: {}",
    "[" * 5000 + "]" * 5000,
    "sources: {}\n" + "# " + "x" * 100_000,
    "sources: !!python/object/apply:os.system ['true']",
    "sources: {a: !!python/name:os.system}",
    "%YAML 9.9\n---\nsources: {}",
    "sources: {}\n---\nsources: {}",
    "\x00\x01\x02",
    "sources: {a: {driver: zarr, args: {urlpath: /x}}}\n" * 2,
]

ENTRIES: list[Any] = [
    None,
    5,
    "zarr",
    [],
    {},
    {"args": {}},
    {"driver": None},
    {"driver": 123},
    {"driver": ""},
    {"driver": "   "},
    {"driver": []},
    {"driver": [1, 2]},
    {"driver": {}},
    {"driver": {"x": 1}},
    {"driver": {"x": {"class": 5}}},
    {"driver": "nosuchdriver"},
    {"driver": "os.NoSuchClass"},
    {"driver": "os.system"},
    {"driver": "no_such_pkg_cp.Mod.Cls"},
    {"driver": "intake.NoSuch"},
    {"driver": ".startsdot"},
    {"driver": "zarr", "args": []},
    {"driver": "zarr", "args": "x"},
    {"driver": "zarr", "args": {"urlpath": 5}},
    {"driver": "zarr", "args": {"urlpath": []}},
    {"driver": "zarr", "args": {"urlpath": [1, 2]}},
    {"driver": "zarr", "args": {"urlpath": ""}},
    {"driver": "zarr", "args": {"urlpath": "{{"}},
    {"driver": "zarr", "args": {"urlpath": "{% for x in y %}"}},
    {"driver": "zarr", "args": {"urlpath": "{{ undefined.attr }}"}},
    {"driver": "zarr", "args": {"urlpath": "{{ ''.__class__.__mro__ }}"}},
    {"driver": "zarr", "args": {"urlpath": "{{ 1/0 }}"}},
    {"driver": "zarr", "args": {"urlpath": "{{ range(10**9) | list }}"}},
    {"driver": "zarr", "args": {"urlpath": "/x", "storage_options": "x"}},
    {"driver": "zarr", "args": {"urlpath": "/x", "storage_options": {"anon": True}}},
    {"driver": "zarr", "args": {"urlpath": "nosuchproto://x/y"}},
    {"driver": "zarr", "args": {"urlpath": "/x", "chunks": "nonsense"}},
    {"driver": "zarr", "args": {"urlpath": "/x", "open_on": "moon"}},
    {"driver": "zarr", "args": {"urlpath": "/x", "xarray_kwargs": 5}},
    {"driver": "zarr", "args": {"urlpath": "/x", "nosucharg": 1}},
    {"driver": "netcdf", "args": {"urlpath": "/x/{a}.nc"}},
    {"driver": "opendap", "args": {"urlpath": "http://x", "auth": "u:p"}},
    {"driver": "zarr", "metadata": []},
    {"driver": "zarr", "metadata": {"site": 5}, "args": {"urlpath": "/x"}},
    {"driver": "zarr", "metadata": {"site": "a b"}, "args": {"urlpath": "/x"}},
    {"driver": "zarr", "metadata": {"site": ["x"]}, "args": {"urlpath": "/x"}},
    {"driver": "zarr", "metadata": {"site": "x\n"}, "args": {"urlpath": "/x"}},
    {"driver": "zarr", "parameters": []},
    {"driver": "zarr", "parameters": {"p": 5}},
    {"driver": "zarr", "parameters": {"p": {"type": "nosuch"}}},
    {"driver": "zarr", "parameters": {"p": {"type": "int", "default": "x"}}, "args": {"urlpath": "/{{p}}"}},
    {"driver": "zarr", "parameters": {"p": {"type": "int", "min": []}}},
    {"driver": "zarr", "parameters": {"p": {"type": "str", "allowed": 5}}},
    {"driver": "zarr", "parameters": {"p": {"nonsense": 1}}},
    {"driver": "zarr", "cache": 5, "args": {"urlpath": "/x"}},
    {"driver": "zarr", "description": [], "args": {"urlpath": "/x"}},
    {"driver": "zarr", "direct_access": "maybe", "args": {"urlpath": "/x"}},
    {"cls": "os.system", "args": {}},
    {"driver": "yaml_file_cat", "args": {}},
    {"driver": "yaml_file_cat", "args": {"path": 5}},
    {"driver": "yaml_file_cat", "args": {"path": "/dev/zero"}},
    {"driver": "yaml_file_cat", "args": {"path": "/"}},
    {"driver": "yaml_file_cat", "args": {"path": "/nonexistent/cat.yaml"}},
    {"driver": "yaml_file_cat", "args": {"path": "{{ CATALOG_DIR }}/cat.yaml"}},
    {"driver": "yaml_file_cat", "args": {"path": "gs://nobucket/cat.yaml"}},
    {"driver": "site_catalog", "metadata": {"site": "other"}, "args": {"path": "{{ CATALOG_DIR }}/cat.yaml"}},
    {
        "driver": "intake.source.derived.GenericTransform",
        "args": {"targets": ["x"], "transform": "os.system"},
    },
    {
        "driver": "intake.source.derived.GenericTransform",
        "args": {"targets": ["x"], "transform": "nope_cp.f"},
    },
    {"driver": "csv", "args": {"urlpath": ["/a", 5]}},
    {"driver": "numpy", "args": {"path": "/dev/zero"}},
]


def _inputs() -> list[tuple[str, str]]:
    out = [(f"file{i}", text) for i, text in enumerate(FILES)]
    for i, spec in enumerate(ENTRIES):
        doc = {
            "metadata": {"site": "ecmwf"},
            "sources": {"ok": {"driver": "zarr", "args": {"urlpath": "/x"}}},
        }
        doc["sources"][f"e{i}"] = spec
        out.append((f"entry{i}", yaml.safe_dump(doc)))
    return out


INPUTS = _inputs()


def test_corpus_is_large_enough() -> None:
    assert len(INPUTS) >= 80


def _use(cat: Any, path: Path) -> None:
    for name in list(cat):
        try:
            src = cat[name]
            getattr(src, "site", None)
            src.describe()
        except CatalogError as exc:
            assert str(path) in str(exc) or "catalog " in str(exc), exc
            if name != "ok" and exc.entry is None:
                pytest.fail(f"entry error without entry name: {exc}")


@pytest.mark.parametrize(("name", "text"), INPUTS, ids=[n for n, _ in INPUTS])
def test_malformed_catalog(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text(text)
    start = time.monotonic()
    try:
        cat = open_catalog(path)
    except CatalogError as exc:
        assert str(path) in str(exc)
    else:
        _use(cat, path)
    results = check_catalog(str(path), timeout=0.5)
    for r in results:
        if r.status == "error":
            assert str(path) in r.reason or "catalog " in r.reason, r.reason
            assert "Traceback" not in r.reason
    assert time.monotonic() - start < BOUND
