"""Private intake names used by catalog_pools; see :mod:`catalog_pools._compat`."""

from __future__ import annotations
