"""Pareto plot of a tuning run: memory against latency for every costed tiling.

Grey dots are the costed tilings, the line joins the Pareto frontier, the
untiled module is a square and the chosen tiling a star. The latency budget is
a vertical dashed line and the spec's activation SRAM a horizontal red one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .plots import _axis_unit, _new_figure, _plot_format, _save

if TYPE_CHECKING:
    from ..tuner.tuner import TuneResult

_CAPACITY_COLOR = "#c0392b"


def plot_pareto(result: TuneResult, path: str | os.PathLike, *,
                capacity_bytes: int | None = None, title: str | None = None) -> Path:
    """Draw ``result``'s memory/latency trade-off to ``path`` (.png or .svg), atomically."""
    fmt = _plot_format(path)
    points = [p for p in result.points if p.latency is not None]
    if not points:
        raise ValueError("the tuning result has no costed points: nothing to draw")
    top = max(p.memory_bytes for p in points)
    if capacity_bytes:
        top = max(top, capacity_bytes)
    scale, unit = _axis_unit(max(top, 1))
    fig = _new_figure(7.5, 5.0)
    ax = fig.subplots()
    ax.scatter([p.latency for p in points], [p.memory_bytes / scale for p in points],
               s=18, color="0.6", label="costed tilings", zorder=2)
    front = result.pareto
    ax.plot([p.latency for p in front], [p.memory_bytes / scale for p in front],
            "-o", color="C0", ms=4, lw=1.2, label="Pareto frontier", zorder=3)
    b, c = result.baseline, result.chosen
    ax.scatter([b.latency], [b.memory_bytes / scale], marker="s", s=60, color="C1",
               label="untiled", zorder=4)
    ax.scatter([c.latency], [c.memory_bytes / scale], marker="*", s=160, color="C3",
               label="chosen", zorder=5)
    if result.limit_ms is not None:
        ax.axvline(result.limit_ms, ls="--", color="0.3", lw=1,
                   label=f"budget {result.budget} ({result.limit_ms:.3g} ms)")
    if capacity_bytes:
        ax.axhline(capacity_bytes / scale, color=_CAPACITY_COLOR, lw=1.2,
                   label=f"{result.spec or 'SRAM'} activation SRAM")
    measured = "measured" if c.measured_ms is not None else "modelled"
    ax.set_xlabel(f"latency, ms ({measured}; {result.cost_model})")
    what = "activation SRAM needed" if c.sram_required_bytes is not None else "peak"
    ax.set_ylabel(f"{what} ({unit})")
    ax.set_ylim(0, top / scale * 1.08)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or f"{result.model}: memory vs latency\n{result.reason}", fontsize=9)
    return _save(fig, path, fmt)
