"""Pins the private intake behaviour catalog_pools._compat.intake_internals relies on.

If an intake release changes one of these, this test fails instead of the
catalog layer silently reading files unchecked or rendering unsandboxed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from catalog_data import write_catalog
from intake.source.base import DataSource

from catalog_pools._compat.intake_internals import CatalogFileBase, EntryBase, UserParameter, catalog_entries


class Counting(CatalogFileBase):
    loads = 0

    def load_file(self) -> None:
        type(self).loads += 1
        self.set_entries({}, "/somewhere")


class Rendering(EntryBase):
    calls: ClassVar[list[dict[str, Any]]] = []

    def open_args(self, user_parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        type(self).calls.append(user_parameters)
        return _Source, {"value": user_parameters.get("value", 1)}


class _Source(DataSource):
    container = "python"
    name = "source_cp"

    def __init__(self, value: int, metadata: Any = None) -> None:
        self.value = value
        super().__init__(metadata=metadata)


def test_load_is_the_only_file_read(tmp_path: Path) -> None:
    Counting.loads = 0
    cat = Counting(str(tmp_path / "absent.yaml"), ttl=0.01)
    assert Counting.loads == 1 and list(cat) == [] and cat.catalog_directory == "/somewhere"
    time.sleep(0.05)
    list(cat)  # ttl expired: intake reloads through _load
    assert Counting.loads == 2
    Counting(str(tmp_path / "absent.yaml"), name="sub")  # named sub-catalogs skip the first load
    assert Counting.loads == 2


def test_create_open_args_is_the_rendering_hook() -> None:
    entry = Rendering(name="e", description="", driver=[], args={})
    assert entry.get(value=5).value == 5 and Rendering.calls[-1] == {"value": 5}
    assert entry.entry_name == "e" and entry.raw_args == {} and entry.parameters == []
    assert entry.declared_metadata == {} and entry.catalog is None and entry.filesystem is None


def test_catalog_entries_do_not_instantiate_sources(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.yaml", "sources:\n  x: {driver: csv, args: {urlpath: /nope}}\n")
    import intake

    cat = intake.open_catalog(str(path))
    entries = catalog_entries(cat)
    assert list(entries) == ["x"] and isinstance(entries["x"], EntryBase.__mro__[1])
    assert EntryBase.__mro__[1].__name__ == "LocalCatalogEntry"


def test_user_parameter_validates_and_keeps_default() -> None:
    par = UserParameter("p", type="int", default=3, min=1)
    assert par.default == 3 and par.validate("4") == 4
    try:
        par.validate(0)
    except ValueError:
        pass
    else:
        raise AssertionError("min not checked")
