"""What crosses sites: estimated before a computation, measured during it, and pictures.

:func:`explain` estimates where tasks will run and which bytes will cross sites
(:mod:`.explain`, :mod:`.plan`); ``with traffic(client) as t: ...`` records
bytes per site pair and tasks per site (:mod:`.report`); :mod:`.plot` and
:mod:`.plan_plot` draw them (need the ``[plot]`` extra); :mod:`.dashboard` adds
a "Sites" page to the scheduler's dashboard.
"""

from __future__ import annotations

from .explain import explain
from .plan import Join, Plan
from .report import Traffic, Transfer, traffic

__all__ = ["Join", "Plan", "Traffic", "Transfer", "explain", "traffic"]
