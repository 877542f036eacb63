"""Worker preload: tag every HTTP request of this process with its site.

``dask worker ... --preload benchmarks.readerhdr`` with ``CP_READER_SITE=<site>``
in the environment adds ``X-Reader-Site: <site>`` to every aiohttp request the
process makes (fsspec's HTTP filesystem uses aiohttp), so the site HTTP servers
of :mod:`benchmarks.httpserve` can tally which site read their bytes.

The tag is added per process at request time on purpose: a header put in
fsspec storage options travels with pickled filesystem objects (a worker of
one site can receive a store object deserialised on another site's worker)
and would then name the wrong reader.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

HEADER = "X-Reader-Site"
ENV = "CP_READER_SITE"
_patched = False


def patch() -> None:
    """Wrap ``aiohttp.ClientSession._request`` to add the header (idempotent)."""
    global _patched
    site = os.environ.get(ENV)
    if _patched or not site:
        return
    import aiohttp

    original = aiohttp.ClientSession._request

    async def _request(self: Any, method: str, str_or_url: Any, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault(HEADER, site)
        return await original(self, method, str_or_url, headers=headers, **kwargs)

    aiohttp.ClientSession._request = _request  # type: ignore[method-assign]
    _patched = True
    logger.info("HTTP requests of this process carry %s: %s", HEADER, site)


def dask_setup(worker: Any) -> None:
    """Dask preload hook."""
    patch()
