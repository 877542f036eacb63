"""``catalog-pools make-data``: write the synthetic ECMWF/EUMETSAT data."""

from __future__ import annotations

import sys
from typing import Any

from dask.utils import format_bytes

from ..datagen.synthetic import SCALES, grid, make_data
from ..errors import UnsafeWriteError
from .app import register_command


@register_command("make-data", "generate the synthetic ECMWF/EUMETSAT data (see examples/make_data.py)")
def setup(parser: Any) -> Any:
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="demo",
        help="small: tests (1.5 MiB of predictions); demo (default): 464 MiB; seed: 2.7 GiB, "
        "like the 2022 experiment",
    )
    parser.add_argument("--root", default="data", help="data root (default: ./data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="also replace files make-data wrote before that were changed since "
        "(never a file it did not write)",
    )

    def run(args: Any) -> int:
        g = grid(args.scale)
        print(
            f"scale {args.scale}: predictions {g.prediction_shape} "
            f"({format_bytes(g.prediction_nbytes)} per format), observations "
            f"({g.nlat}, {g.nlon}) ({format_bytes(g.observation_nbytes)})"
        )
        try:
            paths = make_data(args.root, args.scale, args.seed, not args.quiet, force=args.force)
        except UnsafeWriteError as e:
            print(f"catalog-pools make-data: error: {e}", file=sys.stderr)
            return 2
        for name, path in paths.items():
            print(f"{name:18s} {path}")
        return 0

    return run
