"""The engine: pin a site's loads to its workers and keep work where the bytes are.

Reading order: :mod:`.sites` (what a site, a resource and a pin are),
:mod:`.pools` (``pool()`` at graph construction), :mod:`.placement` (the rules
that give every task a site), :mod:`.optimize` (where the rules run, inside
dask's optimizer), :mod:`.guard` (refuse foreign-site reads on workers),
:mod:`.plugin` (the scheduler side), :mod:`.install` (putting it in place).

This package imports nothing at load time so that :mod:`catalog_pools.errors`
can use :mod:`.sites` without an import cycle.
"""
