"""What crossed sites during a computation, and pictures of it.

``with traffic(client) as t: ...`` records bytes per site pair and tasks per
site (:mod:`.report`); :mod:`.plot` draws them (needs the ``[plot]`` extra).
"""

from __future__ import annotations

from .report import Traffic, Transfer, traffic

__all__ = ["Traffic", "Transfer", "traffic"]
