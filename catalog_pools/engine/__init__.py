"""The engine: pin a site's loads to its workers and keep work where the bytes are.

Reading order: :mod:`.sites` (what a site, a resource and a pin are),
:mod:`.pools` (``pool()`` at graph construction), :mod:`.placement` (the rules
that give every task a site, and where relays go), :mod:`.optimize` (where the
rules run, inside dask's optimizer; :mod:`.layers` reads the layers,
:mod:`.plan` places, relays and fuses one graph), :mod:`.guard` (refuse
foreign-site reads on workers), :mod:`.plugin` (the scheduler side: tasks after
data already on the cluster, co-assignment, missing sites), :mod:`.install`
(putting it in place).

This package imports nothing at load time so that :mod:`catalog_pools.errors`
can use :mod:`.sites` without an import cycle.
"""
