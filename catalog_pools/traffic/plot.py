"""Pictures: the traffic between sites, and a map of a 2-D field (matplotlib, Agg)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

if TYPE_CHECKING:
    from .report import Traffic

logger = logging.getLogger(__name__)

_CROSS = "#d62728"
_CLIENT_COLOUR = "#7f7f7f"
_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#bcbd22")


def _figure(**kwargs: Any) -> Any:
    # A bare Figure, not pyplot: no global state, no backend switch in the
    # caller's notebook, nothing to close.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def site_colours(sites: list[str]) -> dict[str, str]:
    """A stable colour per site (sorted order), the client grey."""
    from .report import CLIENT

    colours = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sorted(sites))}
    colours[CLIENT] = _CLIENT_COLOUR
    return colours


def _flow_panel(ax: Any, t: Traffic, colours: dict[str, str]) -> None:
    pos = _flow_positions(t.sites)
    _draw_nodes(ax, t, pos, colours)
    biggest = max([n for (a, b), n in t.by_site_pair.items() if a != b] or [1])
    drawn: set[frozenset[str]] = set()
    for (src, dst), nbytes in sorted(t.by_site_pair.items()):
        if src == dst or src not in pos or dst not in pos:
            continue
        # Opposite directions between the same pair are drawn on two arcs.
        bend = 0.25 if frozenset((src, dst)) in drawn else -0.25
        drawn.add(frozenset((src, dst)))
        _draw_flow(ax, pos[src], pos[dst], nbytes, biggest, bend, to_client=dst == _client())
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.15, 1.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"bytes between sites: {format_bytes(t.cross_site_bytes)}"
        f"  (to client {format_bytes(t.client_bytes)})",
        fontsize=11,
    )


def _client() -> str:
    from .report import CLIENT

    return CLIENT


def _flow_positions(sites: list[str]) -> dict[str, tuple[float, float]]:
    """Sites on a lower row, the client on top: arrows up are results."""
    n = len(sites)
    pos = {s: (0.5 if n == 1 else 0.12 + 0.76 * i / (n - 1), 0.3) for i, s in enumerate(sites)}
    pos[_client()] = (0.5, 0.85)
    return pos


def _draw_nodes(ax: Any, t: Traffic, pos: dict[str, tuple[float, float]], colours: dict[str, str]) -> None:
    reads = t.bytes_read_by_site
    for s in t.sites:
        x, y = pos[s]
        label = f"{s}\n{len(t.workers_by_site.get(s, ()))} workers, {t.tasks_by_site.get(s, 0)} tasks"
        if reads is not None:
            label += f"\nread {format_bytes(reads.get(s, 0))}"
        label += f"\nwithin site {format_bytes(t.by_site_pair.get((s, s), 0))}"
        ax.add_patch(_circle((x, y), 0.1, colours[s]))
        ax.text(x, y - 0.13, label, ha="center", va="top", fontsize=9)
        ax.text(x, y, s, ha="center", va="center", fontsize=10, color="white", weight="bold")
    cx, cy = pos[_client()]
    ax.add_patch(_square((cx, cy), 0.07, colours[_client()]))
    ax.text(cx, cy, "client", ha="center", va="center", fontsize=10, color="white", weight="bold")


def _draw_flow(
    ax: Any,
    start: tuple[float, float],
    end: tuple[float, float],
    nbytes: int,
    biggest: int,
    bend: float,
    to_client: bool,
) -> None:
    """One arrow, its width growing with the log of the bytes, labelled with them."""
    (x0, y0), (x1, y1) = start, end
    colour = _CLIENT_COLOUR if to_client else _CROSS
    ax.annotate(
        "",
        xy=(x1, y1),
        xytext=(x0, y0),
        arrowprops={
            "arrowstyle": "-|>",
            "lw": 1.0 + 7.0 * math.log1p(nbytes) / math.log1p(biggest),
            "color": colour,
            "shrinkA": 28,
            "shrinkB": 28,
            "mutation_scale": 18,
            "connectionstyle": f"arc3,rad={bend}",
        },
    )
    ox, oy = -(y1 - y0) * bend * 0.55, (x1 - x0) * bend * 0.55
    ax.text(
        (x0 + x1) / 2 + ox,
        (y0 + y1) / 2 + oy,
        format_bytes(nbytes),
        ha="center",
        va="center",
        fontsize=10,
        color=colour,
        weight="bold",
        bbox={"boxstyle": "round", "fc": "white", "ec": colour, "alpha": 0.9},
    )


def _circle(xy: tuple[float, float], r: float, colour: str) -> Any:
    from matplotlib.patches import Circle

    return Circle(xy, r, color=colour, alpha=0.9)


def _square(xy: tuple[float, float], half: float, colour: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((xy[0] - half, xy[1] - half), 2 * half, 2 * half, color=colour, alpha=0.9)


def _timeline_panel(ax: Any, t: Traffic, colours: dict[str, str]) -> None:
    from .report import CLIENT

    lanes: list[tuple[str, str]] = [("client", CLIENT)]
    lanes += [(w, site) for site in t.sites for w in sorted(t.workers_by_site.get(site, ()))]
    index = {w: i for i, (w, _) in enumerate(lanes)}
    crossing = [tr for tr in t.transfers if tr.src != tr.dst]
    t0 = _timeline_axis(ax, t, crossing)
    _draw_task_bars(ax, t, index, colours, t0)
    _draw_transfers(ax, crossing, index, t0)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(["client"] + [f"{site}  {w.rsplit(':', 1)[-1]}" for w, site in lanes[1:]], fontsize=8)
    for label, (_, site) in zip(ax.get_yticklabels(), lanes, strict=False):
        label.set_color(colours.get(site, "black"))
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("tasks per worker (bars) and cross-site transfers (arrows)", fontsize=11)
    ax.grid(axis="x", alpha=0.3)


def _timeline_axis(ax: Any, t: Traffic, crossing: list[Any]) -> float:
    """Set the time axis; return its origin (the first start)."""
    starts = [ss["start"] for rec in t.tasks for ss in rec.get("startstops", ()) if ss.get("start")]
    starts += [tr.start for tr in t.transfers if tr.start]
    t0 = min(starts) if starts else 0.0
    # Zero-length records (data nodes, aliases) can carry odd times: scale the
    # axis to real work and transfers.
    ends = [
        ss["stop"]
        for rec in t.tasks
        for ss in rec.get("startstops", ())
        if ss.get("stop") and ss["stop"] > ss.get("start", ss["stop"])
    ] + [tr.stop for tr in crossing if tr.stop]
    if ends:
        span = max(ends) - t0
        ax.set_xlim(-0.02 * span, 1.05 * span)
    return t0


def _draw_task_bars(ax: Any, t: Traffic, index: dict[str, int], colours: dict[str, str], t0: float) -> None:
    from .report import NO_SITE

    for rec in t.tasks:
        lane = index.get(str(rec.get("worker")))
        if lane is None:
            continue
        colour = colours.get(t.task_sites.get(rec["key"], NO_SITE), "black")
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute":
                ax.barh(
                    lane,
                    max(ss["stop"] - ss["start"], 1e-3),
                    left=ss["start"] - t0,
                    height=0.6,
                    color=colour,
                    alpha=0.85,
                    edgecolor="black",
                    linewidth=0.3,
                )


def _draw_transfers(ax: Any, crossing: list[Any], index: dict[str, int], t0: float) -> None:
    from .report import CLIENT

    for tr in crossing:
        src = index.get(tr.src_worker)
        dst = index.get(tr.dst_worker) if tr.dst_worker else index["client"]
        if src is None or dst is None or tr.stop is None:
            continue
        colour = _CLIENT_COLOUR if tr.dst == CLIENT else _CROSS
        x = tr.stop - t0
        ax.annotate(
            "",
            xy=(x, dst),
            xytext=(x, src),
            arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2, "alpha": 0.8},
        )
        if len(crossing) <= 3:  # beyond that the labels only overlap
            ax.text(x, (src + dst) / 2, " " + format_bytes(tr.nbytes), fontsize=7, color=colour, va="center")


def plot_traffic(t: Traffic, path: Path, title: str | None = None) -> Path:
    """Write the traffic picture of :meth:`catalog_pools.traffic.Traffic.plot` to ``path``."""
    colours = site_colours(t.sites)
    fig = _figure(figsize=(14, 5.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    _flow_panel(left, t, colours)
    _timeline_panel(right, t, colours)
    fig.suptitle(
        title or f"wall time {t.wall_time:.2f} s, cross-site {format_bytes(t.cross_site_bytes)}",
        fontsize=12,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    logger.info("wrote %s", path)
    return path


def plot_map(field: Any, path: Path, title: str, cmap: str = "RdBu_r") -> Path:
    """Save a PNG map of a 2-D ``xarray.DataArray`` on (latitude, longitude).

    Parameters
    ----------
    field
        In-memory DataArray with ``latitude`` and ``longitude`` coordinates.
    path
        Output PNG.
    title
        Plot title.
    cmap
        Matplotlib colormap; the colour scale is symmetric about zero.
    """
    import numpy as np

    values = np.asarray(field.values, dtype="float64")
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig = _figure(figsize=(10, 5))
    ax = fig.subplots()
    mesh = ax.pcolormesh(
        field["longitude"].values,
        field["latitude"].values,
        values,
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        shading="auto",
    )
    units = field.attrs.get("units", "")
    fig.colorbar(mesh, ax=ax, label=f"{field.name or ''} [{units}]".strip())
    ax.set_xlabel("longitude [degrees_east]")
    ax.set_ylabel("latitude [degrees_north]")
    ax.set_title(title)
    ax.set_aspect("equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    logger.info("wrote %s", path)
    return path
