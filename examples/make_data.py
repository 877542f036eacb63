"""Generate the synthetic ECMWF predictions and EUMETSAT observations.

    python examples/make_data.py --scale small|demo|seed --root data/ [--seed 0]

Does nothing when ``<root>/manifest.json`` already records the same scale and
seed. Never replaces or deletes a file it did not write: it refuses, naming the
path, and changes nothing. See :mod:`catalog_pools.datagen.synthetic` for what is
written and how it is chunked.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dask.utils import format_bytes

from catalog_pools.datagen.synthetic import SCALES, grid, make_data
from catalog_pools.errors import UnsafeWriteError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="demo",
        help="small: tests (1.5 MiB of predictions); demo: 464 MiB; seed: 2.7 GiB, like the 2022 experiment",
    )
    parser.add_argument("--root", default="data", help="data root (default: ./data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="also replace files written by an earlier run that were changed since",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    g = grid(args.scale)
    print(
        f"scale {args.scale}: predictions {g.prediction_shape} "
        f"({format_bytes(g.prediction_nbytes)} per format), observations "
        f"({g.nlat}, {g.nlon}) ({format_bytes(g.observation_nbytes)})"
    )
    try:
        paths = make_data(
            args.root, scale=args.scale, seed=args.seed, progress=not args.quiet, force=args.force
        )
    except UnsafeWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:18s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
