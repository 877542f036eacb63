"""The one place where catalog_pools touches private dask, distributed or intake names.

Every name used here is private (underscored, or internal state such as a
scheduler's ``TaskState`` attributes) because no public hook does the job; each
is introduced with a comment saying why, and ``tests/test_compat.py`` pins the
behaviour we rely on, so a dask / distributed / intake release that changes it
fails a test instead of silently breaking site pinning.

- :mod:`.dask_internals`: task-spec objects and linear fusion (the optimizer and guard);
- :mod:`.distributed_internals`: scheduler and cluster internals (plugin, cluster);
- :mod:`.intake_internals`: intake v1 catalog internals (the catalog layer).

Nothing outside this package may import a private name of those libraries:
``tests/test_layout.py`` scans every module's imports.
"""
