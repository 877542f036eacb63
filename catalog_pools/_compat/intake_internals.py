"""Private intake (v1 catalog) names used by catalog_pools; see :mod:`catalog_pools._compat`.

intake 2.0.9's v1 catalog classes have no public hooks for what the catalog
layer must control: how a catalog file is read (size limits, regular files,
timeouts), how an entry's arguments are rendered (sandboxed Jinja), and
access to an entry's parsed parts without instantiating its source (which may
do network I/O). Each private name is reached here only, behind a public
method or function of ours; ``tests/test_compat_intake.py`` pins each.
"""

from __future__ import annotations

from typing import Any

from intake.catalog.local import LocalCatalogEntry, UserParameter, YAMLFileCatalog

__all__ = [
    "CatalogFileBase",
    "EntryBase",
    "UserParameter",
    "catalog_entries",
]


class CatalogFileBase(YAMLFileCatalog):
    """``YAMLFileCatalog`` that reads its file with :meth:`load_file` (ours)."""

    def _load(self, reload: bool = False) -> None:
        # why: ``YAMLFileCatalog._load`` is the only place the file is read (through
        # fsspec, with no size limit, FIFO check or timeout); intake calls it from
        # ``__init__`` and on ``reload()``. ``access`` False skips the first load
        # of a named sub-catalog, as intake does.
        if getattr(self, "access", True) is False:
            self.updated = 0
            self.access = True
            return
        if self.autoreload or reload:
            self.load_file()

    def load_file(self) -> None:
        """Read and parse ``self.path``; subclasses implement it."""
        raise NotImplementedError

    def set_entries(self, entries: dict[str, Any], directory: str) -> None:
        """Install parsed entries and the catalog directory (``CATALOG_DIR``)."""
        # why: intake keeps entries in ``_entries`` and the directory in ``_dir``;
        # there is no setter.
        self._entries = entries
        self._dir = directory

    @property
    def catalog_directory(self) -> str | None:
        """The directory templates see as ``CATALOG_DIR``."""
        d = vars(self).get("_dir")
        return d if isinstance(d, str) else None


class EntryBase(LocalCatalogEntry):
    """``LocalCatalogEntry`` whose arguments are rendered by :meth:`open_args` (ours)."""

    def _create_open_args(self, user_parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        # why: ``LocalCatalogEntry.get`` renders templates with an unsandboxed
        # ``jinja2.Environment`` inside ``_create_open_args``; overriding it is the
        # only way to render with ``jinja2.sandbox`` and keep ``get()``'s caching.
        return self.open_args(dict(user_parameters))

    def open_args(self, user_parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """``(driver class, keyword arguments)``; subclasses implement it."""
        raise NotImplementedError

    # why (all below): intake stores the parsed parts of an entry in private
    # attributes set by ``LocalCatalogEntry.__init__`` and exposes only
    # ``describe()``, which would not tell a class from a name.
    @property
    def entry_name(self) -> str:
        """The entry's key in its catalog."""
        return str(self._name)

    @property
    def catalog(self) -> Any:
        """The catalog holding the entry."""
        return self._catalog

    @catalog.setter
    def catalog(self, value: Any) -> None:
        self._catalog = value

    @property
    def declared_metadata(self) -> dict[str, Any]:
        """The entry's ``metadata:`` block."""
        md = self._metadata
        return md if isinstance(md, dict) else {}

    @property
    def raw_args(self) -> dict[str, Any]:
        """The entry's ``args:`` as written (templates not rendered)."""
        args = self._open_args
        return args if isinstance(args, dict) else {}

    @property
    def plugins(self) -> Any:
        """The loaded driver classes (a list, or a dict for named choices)."""
        return self._plugin

    @property
    def parameters(self) -> list[Any]:
        """The entry's ``UserParameter`` objects."""
        return list(self._user_parameters or [])

    @property
    def catalog_dir(self) -> str:
        """``CATALOG_DIR`` of the file holding the entry."""
        return str(self._catalog_dir or "")

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem the catalog file was read with, if any."""
        return self._filesystem

    @filesystem.setter
    def filesystem(self, value: Any) -> None:
        self._filesystem = value


def catalog_entries(catalog: Any) -> dict[str, Any]:
    """The entries of an intake catalog, without instantiating their sources."""
    # why: ``Catalog.items()``/``walk()`` instantiate every source (I/O for
    # third-party drivers); ``_get_entries`` returns the entry objects.
    entries = catalog._get_entries()
    return dict(entries) if entries is not None else {}
