"""Write under a user's directory without ever touching what the user put there.

A :class:`Ledger` is a manifest file (JSON) recording every path catalog_pools
wrote below a root, with the size and SHA-256 of each file it holds. A path may
be written only if it does not exist yet, or if the ledger proves it is ours and
unchanged since we wrote it. Every write goes to a fresh temporary name in the
same directory and is renamed into place when complete: a new path with
``renameat2(RENAME_NOREPLACE)`` (it fails instead of replacing something that
appeared meanwhile), one of ours with an atomic exchange. Nothing we did not
write is ever deleted; temporaries of an interrupted run stay where they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UnsafeWriteError

__all__ = ["Ledger", "UnsafeWriteError", "fingerprint"]

#: Marks a manifest as ours; one written by another program is never replaced.
GENERATOR = "catalog_pools.data"

Record = dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path, *, hashes: bool = True) -> Record:
    """What ``path`` holds: ``{"type": "file", "size", "sha256"}`` or, for a directory,
    ``{"type": "dir", "dirs": [...], "files": {relative path: [size, sha256]}}``.

    With ``hashes=False`` checksums are left out (``None``): a quick look.
    """
    if path.is_symlink():
        return {"type": "symlink"}
    if path.is_file():
        return {"type": "file", "size": path.stat().st_size, "sha256": _sha256(path) if hashes else None}
    if not path.is_dir():
        return {"type": "other"}
    dirs, files = [], {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_dir() and not p.is_symlink():
            dirs.append(rel)
        elif p.is_file() and not p.is_symlink():
            files[rel] = [p.stat().st_size, _sha256(p) if hashes else None]
        else:
            files[rel] = [-1, "not a regular file"]
    return {"type": "dir", "dirs": dirs, "files": files}


def _matches(found: Record, recorded: Record) -> bool:
    """``found`` equals ``recorded``, ignoring checksums missing from ``found``."""
    if found.get("type") != recorded.get("type"):
        return False
    if found["type"] == "file":
        return found["size"] == recorded["size"] and found["sha256"] in (None, recorded["sha256"])
    if found["type"] != "dir" or found["dirs"] != recorded["dirs"]:
        return False
    files, want = found["files"], recorded["files"]
    return files.keys() == want.keys() and all(
        files[k][0] == want[k][0] and files[k][1] in (None, want[k][1]) for k in files
    )


def _only_our_names(found: Record, recorded: Record) -> bool:
    """Every file and directory in ``found`` is one we recorded (contents may differ)."""
    if found.get("type") != recorded.get("type") or found["type"] not in ("file", "dir"):
        return False
    if found["type"] == "file":
        return True
    return set(found["dirs"]) <= set(recorded["dirs"]) and set(found["files"]) <= set(recorded["files"])


_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(2)``; False when this platform has none (then the caller falls back)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(err, os.strerror(err), str(dst))
    return True


def _install_new(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, failing if ``final`` appeared meanwhile."""
    if _renameat2(tmp, final, _RENAME_NOREPLACE):
        return
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, "appeared while we were writing", str(final))
    os.rename(tmp, final)


def _install_over_ours(tmp: Path, final: Path) -> None:
    """Put ``tmp`` in place of our own ``final`` atomically, then delete the old one."""
    if tmp.is_dir():
        if not _renameat2(tmp, final, _RENAME_EXCHANGE):
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.rename(final, old / final.name)
            os.rename(tmp, final)
            tmp = old
        shutil.rmtree(tmp)  # now holds our old version
    else:
        os.replace(tmp, final)


def _remove_temporary(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class Ledger:
    """The record of what catalog_pools wrote under ``root``, kept in ``root/<name>``.

    Parameters
    ----------
    root
        Directory the paths are relative to; created if missing.
    name
        File name of the manifest inside ``root``.
    force
        Also replace paths we wrote that were changed since (never a path or a
        file inside it that we did not write).

    Raises
    ------
    UnsafeWriteError
        If ``root`` is not a directory, or ``root/<name>`` exists and was not
        written by catalog_pools.
    """

    def __init__(self, root: str | os.PathLike[str], name: str, *, force: bool = False) -> None:
        self.root = Path(root).absolute()
        self.path = self.root / name
        self.force = force
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise UnsafeWriteError(self.root, "it is not a directory; give a directory as the root")
        self.manifest: dict[str, Any] | None = None
        if os.path.lexists(self.path):
            self.manifest = self._read()
        self.written: dict[str, Record] = dict((self.manifest or {}).get("written", {}))

    def _read(self) -> dict[str, Any]:
        foreign = "it was not written by catalog_pools; move it away or choose another root"
        if self.path.is_symlink() or not self.path.is_file():
            raise UnsafeWriteError(self.path, foreign)
        try:
            manifest = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raise UnsafeWriteError(self.path, foreign) from None
        if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
            raise UnsafeWriteError(self.path, foreign)
        return manifest

    def up_to_date(self, rel: str, tag: str | None = None) -> bool:
        """``rel`` exists as recorded, written with ``tag`` (sizes and names: a quick look)."""
        final = self.root / rel
        record = self.written.get(rel)
        if record is None or record.get("tag") != tag or not os.path.lexists(final):
            return False
        return _matches(fingerprint(final, hashes=False), record)

    def problem(self, rel: str) -> str | None:
        """Why ``rel`` may not be written, or ``None`` when it may."""
        final = self.root / rel
        for parent in [*reversed(Path(rel).parents)][1:]:
            p = self.root / parent
            if os.path.lexists(p) and not p.is_dir():  # a link to a directory is fine
                return f"{p} is not a directory"
        if os.path.lexists(final):
            return self._problem_replacing(final, self.written.get(rel))
        return None

    def _problem_replacing(self, final: Path, record: Record | None) -> str | None:
        if record is None:
            if self.manifest is not None and "written" not in self.manifest:
                return (
                    f"{final} exists and {self.path} (of an older catalog_pools) does not record "
                    "what it wrote: move the data away to regenerate it"
                )
            return f"{final} exists and was not written by catalog_pools"
        found = fingerprint(final)
        if _matches(found, record):
            return None
        if not _only_our_names(found, record):
            return f"{final} holds files catalog_pools did not write"
        if self.force:
            return None
        return f"{final} was changed since catalog_pools wrote it (use --force / force=True to replace it)"

    def check(self, rels: list[str]) -> None:
        """Raise :class:`UnsafeWriteError` naming every path of ``rels`` we may not write."""
        problems = [p for p in map(self.problem, rels) if p is not None]
        if problems:
            raise UnsafeWriteError(
                self.root, "refusing to write:\n  " + "\n  ".join(problems) + "\nnothing was changed"
            )

    def write(
        self, rel: str, writer: Callable[[Path], Any], *, directory: bool = False, tag: str | None = None
    ) -> Path:
        """Write ``root/rel`` with ``writer(temporary path)``, then rename it into place.

        ``writer`` gets a fresh empty directory (``directory=True``) or an empty
        file whose name ends with the final suffix. The path is checked first.
        ``tag`` is kept in its record (say, what it was made from).
        """
        final = self.root / rel
        self.check([rel])
        replacing = os.path.lexists(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        stem, suffix = final.stem, final.suffix
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=final.parent)
            os.close(fd)
            tmp = Path(name)
        try:
            writer(tmp)
            record = {**fingerprint(tmp), "tag": tag}
            if not replacing:
                _install_new(tmp, final)
            else:
                self.check([rel])  # still ours after the (long) write?
                _install_over_ours(tmp, final)
        except BaseException:
            _remove_temporary(tmp)
            raise
        self.written[rel] = record
        return final

    def commit(self, fields: Mapping[str, Any]) -> None:
        """Write the manifest (``fields`` plus the ledger), atomically."""
        manifest = {**fields, "generator": GENERATOR, "written": self.written}
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        if self.manifest is not None:
            self._read()  # still ours?
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            if self.manifest is None:
                _install_new(Path(name), self.path)
            else:
                os.replace(name, self.path)
        except BaseException:
            _remove_temporary(Path(name))
            raise
        self.manifest = manifest
