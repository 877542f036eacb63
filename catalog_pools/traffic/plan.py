"""What a computation will move between sites, estimated before it runs.

:class:`Plan` is what :func:`catalog_pools.explain` returns: tasks per site,
estimated bytes per site pair, the joins that make data cross, and optional
egress prices turning bytes into money.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from .report import CLIENT

#: Location of tasks no site pin reaches: any worker may run them.
ANYWHERE = "(any site)"

__all__ = ["ANYWHERE", "Join", "Plan", "Price", "parse_price", "prices_from_metadata"]


@dataclass(frozen=True)
class Price:
    """Egress price per GB (10**9 bytes) leaving a site."""

    amount: float
    currency: str = ""

    def cost(self, nbytes: int) -> float:
        """Price of sending ``nbytes`` out of the site."""
        return self.amount * nbytes / 1e9

    def format(self, nbytes: int) -> str:
        """``"0.0001 EUR"`` for ``nbytes``."""
        return f"{self.cost(nbytes):.4g} {self.currency}".strip()


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def parse_price(value: object) -> Price:
    """Read ``"0.09 EUR"``, ``"$0.12"``, ``"0.05 USD/GB"`` or ``0.09`` as a :class:`Price`.

    Raises
    ------
    ValueError
        If ``value`` holds no number.
    """
    if isinstance(value, Price):
        return value
    if isinstance(value, int | float):
        return Price(float(value))
    text = str(value)
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"egress price {value!r} has no number; write it like '0.09 EUR'")
    rest = (text[: match.start()] + text[match.end() :]).strip()
    currency = re.sub(r"\s*(/|per)\s*GB\s*$", "", rest, flags=re.IGNORECASE).strip()
    return Price(float(match.group(0)), currency)


def prices_from_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Price]:
    """``{site: Price}`` from catalog metadata ``sites.<site>.egress_per_gb``."""
    sites = (metadata or {}).get("sites") or {}
    out = {}
    for site, info in sites.items():
        if isinstance(info, Mapping) and info.get("egress_per_gb") is not None:
            out[site] = parse_price(info["egress_per_gb"])
    return out


@dataclass(frozen=True)
class Join:
    """A step that combines data from several sites, and what it pulls in.

    Attributes
    ----------
    layer
        Name of the step (dask key prefix, e.g. ``"sub"``).
    site
        Where it runs.
    moving
        ``{(input layer, source site): bytes}`` that cross to ``site``.
    staying
        Input layers already at ``site``.
    unsized
        Crossing inputs ``(input layer, source site)`` whose size is unknown
        (their bytes in ``moving`` are a lower bound).
    """

    layer: str
    site: str
    moving: dict[tuple[str, str], int]
    staying: tuple[str, ...]
    unsized: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One line: ``sub at ecmwf: open_dataset (eumetsat) moves 800.00 kiB; mean stays``."""
        moves = ", ".join(
            f"{layer} ({src}) moves "
            + ("data of unknown size" if (layer, src) in self.unsized and not n else format_bytes(n))
            for (layer, src), n in self.moving.items()
        )
        text = f"{self.layer} at {self.site}: {moves}"
        if self.staying:
            text += "; " + ", ".join(self.staying) + " stay" + ("s" if len(self.staying) == 1 else "")
        return text


@dataclass
class Plan:
    """Where each task of a computation will run and what will cross sites.

    Attributes
    ----------
    by_site_pair
        ``{(source site, destination): estimated bytes}``; the client is
        ``"client"``, tasks no pin reaches are ``"(any site)"``.
    tasks_by_site
        ``{site: number of tasks}`` after the optimizer's fusion.
    layers_by_site
        ``{site: {step name: chunks}}``: the user's expression step by step,
        inputs first, before fusion (a load fused into the step using it is
        still listed).
    joins
        The steps that pull data across sites (:class:`Join`).
    workers_by_site
        ``{site: workers}`` when a client was given, else empty.
    prices
        ``{site: Price}`` of egress, if known.
    unsized_edges
        ``{(producer step, source site, destination site): edges}`` crossing
        with no size estimate (counted as 0 bytes), e.g. a key of an array
        embedded in a ``dask.delayed`` graph, whose chunk metadata dask dropped.
    """

    by_site_pair: dict[tuple[str, str], int] = field(default_factory=dict)
    tasks_by_site: dict[str, int] = field(default_factory=dict)
    layers_by_site: dict[str, dict[str, int]] = field(default_factory=dict)
    joins: list[Join] = field(default_factory=list)
    workers_by_site: dict[str, int] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    unsized_edges: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def unknown_sizes(self) -> int:
        """Number of crossing edges whose size could not be estimated (counted as 0 bytes)."""
        return sum(self.unsized_edges.values())

    @property
    def cross_site_bytes(self) -> int:
        """Estimated bytes between different sites (the client and ``(any site)`` excluded)."""
        return sum(
            n
            for (s, d), n in self.by_site_pair.items()
            if s != d and CLIENT not in (s, d) and ANYWHERE not in (s, d)
        )

    @property
    def client_bytes(self) -> int:
        """Estimated bytes of the result sent to the client."""
        return sum(n for (_, d), n in self.by_site_pair.items() if d == CLIENT)

    @property
    def sites(self) -> list[str]:
        """Sites with a task or a transfer, sorted."""
        found = set(self.tasks_by_site)
        for pair in self.by_site_pair:
            found |= set(pair)
        found.discard(CLIENT)
        return sorted(found)

    def cost(self, src: str, dst: str) -> str | None:
        """Egress cost of the ``src -> dst`` bytes, ``None`` if ``src`` has no price."""
        price = self.prices.get(src)
        if price is None:
            return None
        return price.format(self.by_site_pair.get((src, dst), 0))

    def total_cost(self) -> dict[str, float]:
        """``{currency: cost}`` of every priced transfer (cross-site and to the client)."""
        out: dict[str, float] = {}
        for (src, dst), n in self.by_site_pair.items():
            price = self.prices.get(src)
            if price is not None and src != dst:
                out[price.currency] = out.get(price.currency, 0.0) + price.cost(n)
        return out

    def _pair_rows(self) -> list[tuple[str, str, str, str]]:
        unsized = {(s, d) for _, s, d in self.unsized_edges}
        rows = []
        for (s, d), n in sorted(self.by_site_pair.items(), key=lambda kv: -kv[1]):
            kind = "result" if d == CLIENT else ("may cross" if ANYWHERE in (s, d) else "CROSS-SITE")
            size = format_bytes(n) + (" + ?" if (s, d) in unsized else "")
            rows.append((f"{s} -> {d}", size, kind, self.cost(s, d) or ""))
        return rows

    def summary(self) -> str:
        """A text table: tasks and steps per site, bytes (and cost) per site pair, joins."""
        lines = ["plan (estimated before computing)"]
        width = max([len(s) for s in self.sites] + [4])
        lines.append(f"  {'site'.ljust(width)}  {'tasks':>6}  steps")
        for site in self.sites:
            steps = ", ".join(f"{name} x{n}" for name, n in self.layers_by_site.get(site, {}).items())
            lines.append(f"  {site.ljust(width)}  {self.tasks_by_site.get(site, 0):>6}  {steps}")
        lines.append("  transfers (source -> destination):")
        for pair, size, kind, cost in self._pair_rows() or [("none", "", "", "")]:
            lines.append(f"    {pair:32s} {size:>10s}  {kind:10s} {cost}".rstrip())
        lines.append(f"  cross-site bytes: {format_bytes(self.cross_site_bytes)} ({self.cross_site_bytes} B)")
        for currency, amount in sorted(self.total_cost().items()):
            lines.append(f"  egress cost: {amount:.4g} {currency}".rstrip())
        for join in self.joins:
            lines.append(f"  join: {join.describe()}")
        if self.unknown_sizes:
            which = ", ".join(
                f"{step} {src} -> {dst}" + (f" x{n}" if n > 1 else "")
                for (step, src, dst), n in sorted(self.unsized_edges.items())
            )
            lines.append(f"  {self.unknown_sizes} crossing edge(s) of unknown size counted as 0 B: {which}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(s)}</td><td>{self.tasks_by_site.get(s, 0)}</td>"
            f"<td>{esc(', '.join(self.layers_by_site.get(s, {})))}</td></tr>"
            for s in self.sites
        )
        pairs = "".join(
            f"<tr><td>{esc(p)}</td><td>{esc(b)}</td><td>{esc(k)}</td><td>{esc(c)}</td></tr>"
            for p, b, k, c in self._pair_rows()
        )
        joins = "".join(f"<li>{esc(j.describe())}</li>" for j in self.joins)
        return (
            f"<div><b>Plan</b>: {esc(format_bytes(self.cross_site_bytes))} will cross sites"
            f"<table><tr><th>site</th><th>tasks</th><th>steps</th></tr>{rows}</table>"
            f"<table><tr><th>transfer</th><th>bytes</th><th>kind</th><th>cost</th></tr>{pairs}</table>"
            f"<ul>{joins}</ul></div>"
        )

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Save a PNG: sites as boxes with their tasks and steps, arrows with bytes and cost.

        Needs matplotlib (the ``[plot]`` extra).
        """
        from .plan_plot import plot_plan

        return plot_plan(self, Path(path), title=title)
