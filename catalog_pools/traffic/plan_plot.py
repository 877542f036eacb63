"""Picture of a :class:`~catalog_pools.traffic.plan.Plan`: sites as boxes, arrows with bytes.

Needs matplotlib (the ``[plot]`` extra); imported only when a plan is plotted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

from .plot import _figure, site_colours
from .report import CLIENT

if TYPE_CHECKING:
    from .plan import Plan

_CROSS = "#d62728"
_CLIENT_COLOUR = "#7f7f7f"
_MAX_STEPS = 8


def _box_label(plan: Plan, site: str) -> str:
    steps = list(plan.layers_by_site.get(site, {}).items())
    lines = [f"{plan.tasks_by_site.get(site, 0)} tasks"]
    if site in plan.workers_by_site:
        lines[0] += f", {plan.workers_by_site[site]} workers"
    lines += [f"{name} x{n}" for name, n in steps[:_MAX_STEPS]]
    if len(steps) > _MAX_STEPS:
        lines.append(f"... {len(steps) - _MAX_STEPS} more steps")
    return "\n".join(lines)


def _positions(sites: list[str]) -> dict[str, tuple[float, float]]:
    n = len(sites)
    pos = {s: (0.5 if n == 1 else 0.15 + 0.7 * i / (n - 1), 0.32) for i, s in enumerate(sites)}
    pos[CLIENT] = (0.5, 0.88)
    return pos


def _arrow(
    ax: Any, start: tuple[float, float], end: tuple[float, float], nbytes: int, colour: str, rad: float
) -> None:
    from matplotlib.patches import FancyArrowPatch

    width = 1.0 + 1.2 * math.log10(max(nbytes, 1))
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=12 + width,
            lw=width,
            color=colour,
            alpha=0.85,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=0,
            shrinkB=0,
        )
    )


def plot_plan(plan: Plan, path: Path, title: str | None = None) -> Path:
    """Draw ``plan`` to the PNG ``path``; returns ``path``."""
    sites = plan.sites
    pos = _positions(sites)
    fig = _figure(figsize=(max(7.0, 3.2 * len(sites)), 6.0), dpi=110)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.92))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    _draw_boxes(ax, plan, pos, site_colours(sites))
    for (src, dst), n in sorted(plan.by_site_pair.items()):
        if src in pos and dst in pos and src != dst and n:
            _draw_crossing(ax, plan, pos, src, dst, n)
    fig.suptitle(title or f"plan: {format_bytes(plan.cross_site_bytes)} will cross sites", fontsize=11)
    fig.savefig(path)
    return path


def _draw_boxes(ax: Any, plan: Plan, pos: dict[str, tuple[float, float]], colours: dict[str, str]) -> None:
    """One box per site (tasks and steps), and the client's when results go there."""
    for site in plan.sites:
        x, y = pos[site]
        ax.text(
            x,
            y,
            f"{site}\n\n{_box_label(plan, site)}",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.6", "fc": "white", "ec": colours[site], "lw": 2.5},
        )
    if plan.client_bytes:
        x, y = pos[CLIENT]
        ax.text(
            x,
            y,
            "client",
            ha="center",
            va="center",
            fontsize=9,
            color="white",
            bbox={"boxstyle": "round,pad=0.5", "fc": _CLIENT_COLOUR, "ec": _CLIENT_COLOUR},
        )


def _draw_crossing(
    ax: Any, plan: Plan, pos: dict[str, tuple[float, float]], src: str, dst: str, n: int
) -> None:
    """An arrow from box edge to box edge, labelled with the bytes (and cost)."""
    to_client = dst == CLIENT
    rad = 0.0 if to_client else (0.25 if src < dst else -0.25)
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    if to_client:
        start, end = (x0, y0 + 0.13), (x1, y1 - 0.04)
    else:
        step = 0.13 if x1 > x0 else -0.13
        start, end = (x0 + step, y0 + 0.03), (x1 - step, y1 + 0.03)
    colour = _CLIENT_COLOUR if to_client else _CROSS
    _arrow(ax, start, end, n, colour, rad)
    cost = plan.cost(src, dst)
    label = format_bytes(n) + (f"\n{cost}" if cost else "")
    offset = 0.0 if to_client else (0.08 if src < dst else -0.08)
    ax.text(
        (x0 + x1) / 2,
        (y0 + y1) / 2 + offset,
        label,
        ha="center",
        va="center",
        fontsize=9,
        color=colour,
        bbox={"fc": "white", "ec": "none", "alpha": 0.8},
    )
