"""The ``catalog-pools`` command line: ``check``, ``make-data`` and plugins' commands."""

from __future__ import annotations

from .app import build_parser, main, register_command

__all__ = ["build_parser", "main", "register_command"]
