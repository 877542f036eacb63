"""The ``catalog-pools`` command line.

Subcommands register themselves with :func:`register_command`. Other modules
add theirs (``make-data``, ``demo``...) by calling it at import time; such a
module is imported before parsing if it is listed in :data:`COMMAND_MODULES`
or declared in the entry-point group ``catalog_pools.commands``
(``name = "package.module"``)::

    from catalog_pools.cli import register_command

    @register_command("make-data", help="write the example data")
    def _setup(parser):            # add arguments to the subparser
        parser.add_argument("root")
        return run                 # called with the parsed args, returns an exit code
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Runner = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], Runner]


@dataclass(frozen=True)
class Command:
    """A registered subcommand."""

    name: str
    help: str
    setup: Setup


COMMANDS: dict[str, Command] = {}
#: Modules imported before parsing, so that their commands register.
COMMAND_MODULES: list[str] = [
    "catalog_pools.cli.check",
    "catalog_pools.cli.explain",
    "catalog_pools.cli.make_data",
]
ENTRY_POINT_GROUP = "catalog_pools.commands"


def register_command(name: str, help: str) -> Callable[[Setup], Setup]:
    """Register a subcommand.

    Parameters
    ----------
    name
        The subcommand (``catalog-pools NAME``).
    help
        One-line description for ``--help``.

    Returns
    -------
    callable
        Decorator for ``setup(parser) -> run``: ``setup`` adds arguments to the
        subcommand's parser and returns ``run(args) -> exit code``.
    """

    def decorator(setup: Setup) -> Setup:
        COMMANDS[name] = Command(name, help, setup)
        return setup

    return decorator


def _load_command_modules() -> None:
    from importlib.metadata import entry_points

    modules = list(COMMAND_MODULES)
    modules += [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                logger.warning("cannot load commands from %s: %s", module, exc)
        except Exception as exc:  # a broken plugin must not break `check`
            logger.warning("cannot load commands from %s: %s", module, exc)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    _load_command_modules()
    parser = argparse.ArgumentParser(
        prog="catalog-pools",
        description="Pin Dask work to the data centre holding the data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in sorted(COMMANDS.values(), key=lambda c: c.name):
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.set_defaults(_run=command.setup(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``catalog-pools`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
