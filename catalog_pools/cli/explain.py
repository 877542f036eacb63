"""``catalog-pools explain CATALOG ENTRY...``: where work will run, what will cross sites.

Opens the entries lazily (metadata only), builds the expression given with
``--expr`` (or loading each entry whole), and prints
:func:`catalog_pools.explain`'s plan. Nothing is computed, no data is read.
Egress prices come from the catalog's ``metadata.sites.<site>.egress_per_gb``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from .app import Runner, register_command

EXAMPLE = "predictions.air_pressure.mean('realization').isel(height=10) - observations.air_pressure"


def _entry(catalog: Any, dotted: str) -> Any:
    node = catalog
    for part in dotted.split("."):
        try:
            node = node[part]
        except KeyError:
            raise SystemExit(
                f"catalog-pools explain: no entry {dotted!r} (no {part!r} in {list(node)})"
            ) from None
    return node


def _name(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1].replace("-", "_")


def run(args: argparse.Namespace) -> int:
    """Print the plan of each expression; exit code 0."""
    import numpy as np
    import xarray as xr

    from .. import open_catalog
    from ..errors import CatalogError
    from ..traffic import explain

    try:
        catalog = open_catalog(args.catalog)
        data = {_name(e): _entry(catalog, e).to_dask() for e in args.entries}
    except CatalogError as exc:
        print(f"catalog-pools explain: {exc}", file=sys.stderr)
        return 1
    if args.expr:
        namespace = {"np": np, "xr": xr, **data}
        targets = {args.expr: eval(args.expr, namespace)}  # the user's own expression, from their shell
    else:
        targets = {f"load {e}": data[_name(e)] for e in args.entries}
    with contextlib.ExitStack() as stack:
        client = None
        if args.scheduler:
            from distributed import Client

            client = stack.enter_context(Client(args.scheduler))
        for i, (label, collection) in enumerate(targets.items()):
            plan = explain(collection, client, prices=catalog)
            print(f"# {label}")
            print(plan.summary())
            if args.plot:
                path = args.plot if len(targets) == 1 else args.plot.with_stem(f"{args.plot.stem}-{i}")
                print(f"picture: {plan.plot(path)}")
    return 0


@register_command("explain", help="show where work on catalog entries will run and what will cross sites")
def _setup(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("catalog", help="catalog YAML file")
    parser.add_argument(
        "entries", nargs="+", metavar="ENTRY", help="dotted entry names, e.g. ecmwf.predictions"
    )
    parser.add_argument(
        "--expr",
        help=f"Python expression over the entries, each named by its last part; e.g. {EXAMPLE!r}. "
        "Default: load each entry whole.",
    )
    parser.add_argument("--scheduler", help="address of a running scheduler (counts its workers per site)")
    parser.add_argument("--plot", type=Path, help="also write the plan's picture to this PNG")
    return run


if __name__ == "__main__":  # pragma: no cover
    from .app import main

    sys.exit(main(["explain", *sys.argv[1:]]))
