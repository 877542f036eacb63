"""Sites that cannot read each other's data, emulated on one machine.

Each site gets a Unix user ``cp-<site>`` owning a mode-700 data directory; the
site's workers run as that user (``runuser -u cp-<site> -- dask worker ...``), so a
worker of another site that tries to read the data gets ``PermissionError``
instead of quietly succeeding. Everything here needs root.
"""

from __future__ import annotations

import functools
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ..engine.sites import validate_site

logger = logging.getLogger(__name__)

USER_PREFIX = "cp-"
# Linux user names are limited to 32 characters by useradd.
_MAX_USER_LEN = 32


def site_user(site: str) -> str:
    """Name of the Unix user that stands for ``site`` (``cp-<site>``).

    Parameters
    ----------
    site
        A valid site name, see :func:`catalog_pools.engine.sites.validate_site`.

    Returns
    -------
    str
        The user name, lower-cased (``useradd`` rejects upper case by default).

    Raises
    ------
    ValueError
        If the site name is invalid or the user name would be too long.
    """
    name = USER_PREFIX + validate_site(site).lower()
    if len(name) > _MAX_USER_LEN:
        raise ValueError(f"user name {name!r} for site {site!r} is longer than 32 characters")
    return name


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def ensure_site_user(site: str) -> str:
    """Create the system user for ``site`` if it does not exist yet.

    Idempotent: an existing user is left unchanged. The user has no home
    directory and no login shell.

    Parameters
    ----------
    site
        Site name; the user is ``cp-<site>`` (see :func:`site_user`).

    Returns
    -------
    str
        The user name.

    Raises
    ------
    PermissionError
        If not running as root.
    RuntimeError
        If ``useradd`` is missing or fails.
    """
    user = site_user(site)
    if _user_exists(user):
        return user
    if os.geteuid() != 0:
        raise PermissionError(f"creating the site user {user!r} needs root")
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise RuntimeError("useradd not found: install the 'passwd' package (Debian) or shadow-utils")
    nologin = next(
        (p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)),
        "/bin/false",
    )
    cmd = [
        useradd,
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        nologin,
        "--user-group",
        user,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Another process (a parallel test run) may have created it in the meantime.
    if proc.returncode != 0 and not _user_exists(user):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    logger.info("created site user %s", user)
    return user


def _untraversable_ancestor(path: Path) -> Path | None:
    """First ancestor of ``path`` (inclusive) that others cannot enter."""
    for p in [*reversed(path.resolve().parents), path.resolve()]:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            return None
        if not mode & stat.S_IXOTH:
            return p
    return None


def open_to_site_users(path: Path, purpose: str) -> None:
    """Let other users enter ``path`` (``g+x``, ``o+x``), or say what blocks them.

    Parameters
    ----------
    path
        An existing directory.
    purpose
        What the site users need it for, for the error message.

    Raises
    ------
    PermissionError
        If an ancestor of ``path`` cannot be entered by other users (for example
        ``/root`` or pytest's ``/tmp/pytest-of-root``, both mode 700).
    """
    path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    blocked = _untraversable_ancestor(path)
    if blocked is not None:
        raise PermissionError(
            f"{blocked} is not enterable by other users (mode "
            f"{stat.S_IMODE(blocked.stat().st_mode):o}), so site users cannot enter it "
            f"to {purpose}; use a directory under /tmp"
        )


def make_site_dir(root: str | os.PathLike[str], site: str, user: str) -> Path:
    """Create ``root/site`` as a mode-0700 directory owned by ``user``.

    Files that the root process writes inside (even with mode 0644) can then be
    read by ``user`` only. ``root`` is created if missing and made enterable by
    others (``o+x``), otherwise the site user could not reach its own directory.

    Parameters
    ----------
    root
        Parent directory shared by all sites.
    site
        Site name; the directory is ``root/<site>``.
    user
        Owner of the directory, usually ``ensure_site_user(site)``.

    Returns
    -------
    Path
        The site directory.

    Raises
    ------
    PermissionError
        If an ancestor of ``root`` cannot be entered by other users (for example
        ``/root`` or pytest's ``/tmp/pytest-of-root``, both mode 700).
    """
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    path = root_path / validate_site(site)
    open_to_site_users(root_path, f"reach {path} (site user {user!r})")
    path.mkdir(exist_ok=True)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o700)
    return path


@functools.cache
def isolation_available(site: str = "probe") -> tuple[bool, str]:  # noqa: PLR0911 (one per check)
    """Whether per-site Unix users can isolate site data on this machine.

    Checks, in order: running as root; ``runuser`` and ``useradd`` present; the
    site user (created if needed) can run ``sys.executable -c "import
    catalog_pools"``. The last step fails when the interpreter or the source tree
    lives under a mode-700 directory such as ``/root``. The answer is cached.

    Parameters
    ----------
    site
        Site whose user is used for the probe (``cp-<site>``, created if
        missing). Pass a site you will use anyway to avoid an extra user.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` when available, else ``(False, reason)``.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "site isolation needs root (Unix users per site)"
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        return False, "runuser not found (util-linux)"
    if shutil.which("useradd") is None and shutil.which("useradd", path="/usr/sbin:/sbin") is None:
        return False, "useradd not found (passwd / shadow-utils)"
    import catalog_pools

    pkg_dir = Path(catalog_pools.__file__).resolve().parent
    for what, path in (("interpreter", Path(sys.executable)), ("catalog_pools source", pkg_dir)):
        blocked = _untraversable_ancestor(path)
        if blocked is not None:
            return False, (
                f"the {what} {path} is under {blocked} (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):o}) which site users cannot enter; "
                "build the venv from /usr/bin/python3 outside /root"
            )
    try:
        user = ensure_site_user(site)
    except (RuntimeError, PermissionError, ValueError) as e:
        return False, f"cannot create a site user: {e}"
    cmd = [runuser, "-u", user, "--", sys.executable, "-c", "import catalog_pools"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/", check=False)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(cmd)} timed out"
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return False, f"site user {user!r} cannot import catalog_pools with {sys.executable}: {tail}"
    return True, ""
