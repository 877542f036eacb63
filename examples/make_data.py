"""Generate the synthetic ECMWF predictions and EUMETSAT observations.

    python examples/make_data.py --scale small|demo|seed --root data/ [--seed 0] [--force]

The same as ``catalog-pools make-data``. Does nothing when
``<root>/manifest.json`` already records the same scale and seed. Never replaces
or deletes a file it did not write: it refuses, naming the path, and changes
nothing. See :mod:`catalog_pools.datagen.synthetic` for what is written and how
it is chunked.
"""

from __future__ import annotations

import sys

from catalog_pools.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-data", *sys.argv[1:]]))
