"""SRAM occupancy map: each buffer a rectangle of schedule steps x bytes at its offset.

One panel per planned memory of a :class:`~tvm_memflat.planner.sram_plan.SpecPlan`
(empty memories are left out): the x axis is the kernel step, the y axis the
offset in the memory. The capacity is a red line; pieces of spilled buffers
(resident only while produced or reloaded) are hatched; the arena and lower
bound are given in each panel's title.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .plots import _axis_unit, _new_figure, _plot_format, _save, _shorten, format_bytes

if TYPE_CHECKING:
    from ..planner.sram_plan import SpecPlan

_COLORS = ("C0", "C2", "C4", "C5", "C6", "C7", "C8", "C9")
_CAPACITY_COLOR = "#c0392b"
#: Name rectangles with their tensor only when there are few enough to read.
MAX_LABELLED = 40


def plot_occupancy(plan: SpecPlan, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw ``plan``'s occupancy map to ``path`` (``.png`` or ``.svg``), atomically.

    A buffered spec's plan (per-call tiles) is drawn by :func:`plot_tile_occupancy`."""
    from ..hardware.call_tiling import BufferedPlan

    if isinstance(plan, BufferedPlan):
        return plot_tile_occupancy(plan, path, title=title)
    fmt = _plot_format(path)
    panels = [m for m in plan.memories if m.plan.placements]
    if not panels:
        raise ValueError("the plan places no buffers: nothing to draw")
    fig = _new_figure(11.0, 2.2 + 3.0 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    spilled = {s.name for m in plan.memories for s in m.plan.spills}
    for ax, mem in zip(axes, panels, strict=True):
        p = mem.plan
        top = max(p.arena_bytes, mem.size_bytes if mem.size_bytes < 4 * p.arena_bytes else 0)
        scale, unit = _axis_unit(max(top, 1))
        last = max(pl.end for pl in p.placements) + 1
        for i, pl in enumerate(p.placements):
            base = pl.name.split("@")[0]
            is_spill_piece = base in spilled and "@" in pl.name
            ax.add_patch(_rect(pl.start, pl.offset_bytes / scale, pl.end - pl.start + 1,
                               pl.size_bytes / scale, _COLORS[i % len(_COLORS)],
                               "////" if is_spill_piece else None))
            if len(p.placements) <= MAX_LABELLED and pl.end - pl.start >= 1:
                ax.text(pl.start + 0.1, (pl.offset_bytes + pl.size_bytes / 2) / scale,
                        _shorten(mem.labels.get(base, base), 22), fontsize=6, va="center")
        if mem.size_bytes <= top:
            ax.axhline(mem.size_bytes / scale, color=_CAPACITY_COLOR, lw=1.2,
                       label=f"capacity {format_bytes(mem.size_bytes)}")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_xlim(0, last)
        ax.set_ylim(0, top / scale * 1.05)
        ax.set_ylabel(f"offset ({unit})")
        fits = "fits" if p.fits else f"exceeds by {format_bytes(p.excess_bytes)}"
        spill = f", {len(p.spills)} spilled" if p.spills else ""
        ax.set_title(f"{mem.memory}: arena {format_bytes(p.arena_bytes)}, lower bound "
                     f"{format_bytes(p.lower_bound_bytes)}, {fits}{spill}", fontsize=9)
    axes[-1].set_xlabel("schedule step (kernel call)")
    fig.suptitle(title or f"SRAM occupancy on {plan.spec} ({plan.activation_dtype} activations)",
                 fontsize=10)
    return _save(fig, path, fmt)


def _rect(x, y, w, h, color, hatch):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=color, edgecolor="black", linewidth=0.3,
                     alpha=0.75, hatch=hatch)


_OPERAND_COLORS = {"input": "C0", "weight": "C2", "accumulator": "C1"}
_KEPT_COLOR = "C3"


def plot_tile_occupancy(plan, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """One panel per buffer: the bytes one tile of each operand takes there (stacked:
    the activations kept on chip, then the input, weight, accumulator tiles), call
    by call, against the buffer's size."""
    fmt = _plot_format(path)
    if not plan.calls:
        raise ValueError("the plan has no calls: nothing to draw")
    memories = sorted({m for c in plan.calls for m in c.footprint_bytes})
    fig = _new_figure(11.0, 2.2 + 2.6 * len(memories))
    axes = fig.subplots(len(memories), 1, squeeze=False)[:, 0]
    x = list(range(len(plan.calls)))
    # the memory of each kind of reservation: weights and accumulators where the
    # calls put those tiles
    homes = {role: next((c.memories[role] for c in plan.calls if role in c.memories
                         and c.shape.kind == "gemm"), None) for role in ("weight", "accumulator")}
    for ax, mem in zip(axes, memories, strict=True):
        size = plan.capacity_bytes.get(mem)
        peak = max(c.footprint_bytes.get(mem, 0) for c in plan.calls)
        scale, unit = _axis_unit(max(peak, size or 0, 1))
        bottom = [0.0] * len(x)
        held = [_reserved(c, mem, plan, homes) / scale for c in plan.calls]
        if any(held):
            bottom = held
            ax.bar(x, bottom, width=1.0, color=_KEPT_COLOR, linewidth=0,
                   label="kept on chip across calls")
        for operand, color in _OPERAND_COLORS.items():
            heights = [(getattr(c.tiles, operand) if c.memories.get(operand) == mem else 0)
                       / scale for c in plan.calls]
            if any(heights):
                ax.bar(x, heights, bottom=bottom, width=1.0, color=color, label=f"{operand} tile",
                       linewidth=0)
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        if size:
            ax.axhline(size / scale, color=_CAPACITY_COLOR, lw=1.2,
                       label=f"size {format_bytes(size)}")
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylabel(unit)
        ax.legend(loc="upper right", fontsize=7)
        ax.set_title(f"{mem}: largest tile set {format_bytes(peak)}", fontsize=9)
    axes[-1].set_xlabel("kernel call (tiles stream through the buffers; activations in DRAM"
                        + (", except those kept on chip)" if plan.kept_on_chip else ")"))

    fig.suptitle(title or f"on-chip tiles per call on {plan.spec}", fontsize=10)
    return _save(fig, path, fmt)


def _reserved(call, mem: str, plan, homes: dict) -> int:
    """Bytes of ``mem`` that tensors and weights kept on chip hold during ``call``."""
    shape = call.shape
    return ((shape.reserved_bytes if mem == plan.activation_memory else 0)
            + (shape.weight_reserved_bytes if mem == homes["weight"] else 0)
            + (shape.acc_reserved_bytes if mem == homes["accumulator"] else 0))
