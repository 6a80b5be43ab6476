"""Matplotlib plots of a :class:`~tvm_memflat.analysis.memory_profile.MemoryProfile`.

* :func:`plot_timeline` -- live activation bytes over the schedule, in the style of the
  MCUNet / TinyEngine papers, with the live tensors drawn as stacked bands, the peak
  annotated, an optional on-chip capacity line and an optional "after" profile overlaid;
* :func:`plot_layer_bars` -- the layers with most live bytes as horizontal bars;
* :func:`format_bytes` -- ``"3.06 MiB"``-style sizes, shared with the text reports.

The plots never touch pyplot's global state: each one builds its own
:class:`matplotlib.figure.Figure` on an Agg canvas, so they are safe in threads, in
servers and under any backend. Matplotlib is imported lazily, so importing this module
for :func:`format_bytes` stays cheap. Files are written atomically (a temporary file in
the destination folder, then :func:`os.replace`); the format follows the suffix,
``.png`` (150 dpi) or ``.svg``.

Examples
--------
>>> from tvm_memflat.reports.plots import format_bytes
>>> format_bytes(1536)
'1.50 KiB'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import write_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..analysis.memory_profile import MemoryProfile, TensorLife

__all__ = ["MAX_TENSOR_BANDS", "format_bytes", "plot_layer_bars", "plot_timeline"]

#: Draw the live tensors as stacked bands only below this many tensors; larger
#: profiles get the filled live-bytes curve alone (bands would be unreadable).
MAX_TENSOR_BANDS = 600

#: Layer names label the x axis up to this many steps; beyond, numeric steps.
MAX_NAMED_TICKS = 40

_PNG_DPI = 150
_FORMATS = {".png": "png", ".svg": "svg"}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_BEFORE_COLOR = "#1f3b73"
_AFTER_COLOR = "#e8710a"
_CAPACITY_COLOR = "#c0392b"
# tab10 without orange and red, which mark the "after" curve and the capacity line
_BAND_COLORS = ("C0", "C2", "C4", "C5", "C6", "C7", "C8", "C9")


def format_bytes(n: float) -> str:
    """Format a byte count with binary units.

    Parameters
    ----------
    n
        Number of bytes (may be negative, a float or a numpy scalar).

    Returns
    -------
    str
        Whole bytes below 1 KiB (``"512 B"``), otherwise two decimals in the
        largest unit that keeps the value below 1024 (``"1.50 KiB"``,
        ``"3.06 MiB"``, ``"1.20 GiB"``).

    Examples
    --------
    >>> format_bytes(512), format_bytes(1536), format_bytes(5 * 2**30 // 4)
    ('512 B', '1.50 KiB', '1.25 GiB')
    """
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if round(value) < 1024:
        return f"{sign}{round(value)} B"
    unit = 0
    while unit < len(_UNITS) - 1 and round(value / 1024.0, 2) >= 1024:
        value /= 1024.0
        unit += 1
    return f"{sign}{value / 1024.0:.2f} {_UNITS[unit + 1]}"


def _axis_unit(max_bytes: float) -> tuple[float, str]:
    """Divisor and unit name for an axis whose largest value is ``max_bytes``."""
    unit = 0
    while unit < len(_UNITS) - 1 and max_bytes >= 1024.0 ** (unit + 1):
        unit += 1
    return 1024.0**unit, _UNITS[unit]


def _plot_format(path: str | os.PathLike) -> str:
    """Matplotlib format for ``path``'s suffix; raise before anything is written."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"plot file must end in .png or .svg: {os.fspath(path)}")
    return fmt


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, fmt: str) -> Path:
    """Render ``fig`` to ``path`` atomically in format ``fmt``."""
    # Fixed metadata keeps repeated renders of the same profile byte-identical.
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}

    def write(tmp: str) -> None:
        fig.savefig(tmp, format=fmt, dpi=_PNG_DPI, metadata=metadata)

    return write_atomic(path, write)


def _shorten(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _check_profile(profile: MemoryProfile, what: str) -> None:
    if not profile.layers:
        raise ValueError(f"{what} has no layers to plot")


def _tensor_bands(profile: MemoryProfile) -> list[tuple[TensorLife, np.ndarray]]:
    """Stack the live tensors into bands: each tensor with its bottom at every live step.

    Tensors are stacked in order of their first step (longer-lived first on ties);
    at every step a tensor sits on top of the earlier ones still live, so the top
    of the stack is exactly the step's live bytes. Views (``view_of`` set) share
    their source's storage and are skipped.

    Returns
    -------
    list of (TensorLife, ndarray)
        Each tensor with its bottom in bytes at steps ``first`` to ``last``.
    """
    owned = [t for t in profile.tensors if t.view_of is None and t.bytes > 0]
    owned.sort(key=lambda t: (t.first, -t.last, t.name))
    level = np.zeros(len(profile.layers) + 1, dtype=np.float64)
    bands = []
    for t in owned:
        lo, hi = t.first, t.last + 1
        bands.append((t, level[lo:hi].copy()))
        level[lo:hi] += t.bytes
    return bands


def _band_polygon(tensor: TensorLife, bottom: np.ndarray, scale: float) -> np.ndarray:
    """Staircase polygon of one band in (step, scaled bytes) coordinates."""
    x0 = np.arange(tensor.first, tensor.first + len(bottom), dtype=np.float64)
    xs = np.column_stack([x0, x0 + 1.0]).ravel()
    lows = np.repeat(bottom, 2)
    upper = np.column_stack([xs, lows + tensor.bytes])
    lower = np.column_stack([xs[::-1], lows[::-1]])
    return np.vstack([upper, lower]) / (1.0, scale)


def _label_bands(ax: Axes, bands, scale: float, avoid: np.ndarray | None = None) -> None:
    """Write tensor names inside the bands that have room for them.

    A name goes at the middle of the longest flat stretch of its band, and only if
    it fits there at the current axes size, so labels never overlap each other.
    ``avoid`` (scaled values per step, e.g. the overlaid "after" curve) moves a name
    up or down its band, or drops it, so that the curve does not cross it.
    """
    fig = ax.figure
    fig.canvas.draw()  # settle the layout to know the axes size
    box = ax.get_window_extent()
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    pt_per_step = box.width * 72.0 / fig.dpi / (x_hi - x_lo)
    pt_per_unit = box.height * 72.0 / fig.dpi / (y_hi - y_lo)
    fontsize = 7.0
    for tensor, bottom in bands:
        height_pt = tensor.bytes / scale * pt_per_unit
        if height_pt < 1.6 * fontsize:
            continue
        # longest run of equal bottoms: the band is a plain rectangle there
        breaks = np.flatnonzero(np.diff(bottom)) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(bottom)]])
        k = int(np.argmax(ends - starts))
        label = _shorten(tensor.name, 16)
        if (ends[k] - starts[k]) * pt_per_step < 0.62 * fontsize * len(label) + 4.0:
            continue
        low, high = bottom[starts[k]] / scale, (bottom[starts[k]] + tensor.bytes) / scale
        half = 0.8 * fontsize / pt_per_unit  # half a text line, in data units
        crossing = np.empty(0)
        if avoid is not None:
            crossing = avoid[tensor.first + starts[k]:tensor.first + ends[k]]
        for frac in (0.5, 0.75, 0.25):
            y = low + frac * (high - low)
            if y - half >= low and y + half <= high and not np.any(np.abs(crossing - y) < half):
                ax.text(tensor.first + (starts[k] + ends[k]) / 2.0, y, label, ha="center",
                        va="center", fontsize=fontsize, color="#222222", zorder=3,
                        clip_on=True)
                break


def _annotate_peak(ax: Axes, profile: MemoryProfile, scale: float, n_steps: int, y_text: float,
                   color: str, prefix: str = "", dx: float = 0.0) -> None:
    """Mark the peak of ``profile`` and point to it from a text box at height ``y_text``."""
    layer = profile.peak_layer
    x = profile.peak_step + 0.5
    y = profile.peak_bytes / scale
    ax.plot([x], [y], "o", color=color, markersize=5, zorder=6)
    frac = (x + dx) / max(n_steps, 1)
    ha = "left" if frac < 0.35 else "right" if frac > 0.65 else "center"
    text = (f"{prefix}peak {format_bytes(profile.peak_bytes)} at "
            f"{_shorten(layer.name)} ({_shorten(layer.op, 24)})")
    ax.annotate(
        text, xy=(x, y), xytext=(x + dx, y_text), ha=ha, va="center", fontsize=9, color=color,
        zorder=7,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "lw": 0.8, "alpha": 0.9},
        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.0, "shrinkB": 3},
    )


def _stairs(ax: Axes, profile: MemoryProfile, scale: float, *, fill: bool = False, **kw):
    values = np.asarray(profile.live_bytes, dtype=np.float64) / scale
    return ax.stairs(values, np.arange(len(values) + 1), baseline=0.0 if fill else None,
                     fill=fill, **kw)


def _timeline_figure(
    profile: MemoryProfile,
    *,
    capacity_bytes: int | None = None,
    capacity_label: str = "SRAM",
    compare: MemoryProfile | None = None,
    labels: Sequence[str] = ("before", "after"),
    title: str | None = None,
) -> Figure:
    """Build the figure drawn by :func:`plot_timeline` (without saving it)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.ticker import MaxNLocator

    _check_profile(profile, "profile")
    if compare is not None:
        _check_profile(compare, "compare")
    if len(labels) != 2:
        raise ValueError(f"labels must be two strings (before, after), got {labels!r}")
    if capacity_bytes is not None and capacity_bytes <= 0:
        raise ValueError(f"capacity_bytes must be positive, got {capacity_bytes}")
    before, after = (str(s) for s in labels)

    n = len(profile.layers)
    n_steps = max(n, len(compare.layers)) if compare is not None else n
    top_bytes = max([1, profile.peak_bytes]
                    + ([compare.peak_bytes] if compare is not None else [])
                    + ([capacity_bytes] if capacity_bytes is not None else []))
    scale, unit = _axis_unit(top_bytes)

    named = n_steps <= MAX_NAMED_TICKS and (
        compare is None or [r.name for r in compare.layers] == [r.name for r in profile.layers])
    width = float(np.clip(4.0 + 0.2 * n_steps, 8.0, 16.0))
    fig = _new_figure(width, 5.5 if named else 4.8)
    ax = fig.add_subplot()

    handles = []
    bands = len(profile.tensors) < MAX_TENSOR_BANDS
    if bands:
        band_list = _tensor_bands(profile)
        polys = [_band_polygon(t, bottom, scale) for t, bottom in band_list]
        colors = [_BAND_COLORS[i % len(_BAND_COLORS)] for i in range(len(polys))]
        ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="white",
                                         linewidths=0.4, alpha=0.5, zorder=2),
                          autolim=False)
    else:
        _stairs(ax, profile, scale, fill=True, color=_BEFORE_COLOR, alpha=0.25, lw=0,
                zorder=2)
    if compare is not None:
        label = f"{before}: {format_bytes(profile.peak_bytes)} peak"
    else:
        label = f"live activations ({format_bytes(profile.peak_bytes)} peak)"
    line = _stairs(ax, profile, scale, color=_BEFORE_COLOR, lw=1.4, zorder=4, label=label)
    handles.append(line)
    if bands:
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor=_BAND_COLORS[0], alpha=0.5, edgecolor="white",
                             label=f"live tensors ({profile.activation_dtype})"))

    if compare is not None:
        change = 100.0 * (compare.peak_bytes - profile.peak_bytes) / max(profile.peak_bytes, 1)
        sign = "\u2212" if change < 0 else "+"
        handles.append(_stairs(
            ax, compare, scale, color=_AFTER_COLOR, lw=1.8, zorder=5,
            label=f"{after}: {format_bytes(compare.peak_bytes)} peak ({sign}{abs(change):.1f} %)",
        ))

    if capacity_bytes is not None:
        handles.append(ax.axhline(
            capacity_bytes / scale, color=_CAPACITY_COLOR, ls="--", lw=1.2, zorder=3,
            label=f"{capacity_label} {format_bytes(capacity_bytes)}",
        ))

    ytop = top_bytes / scale * (1.38 if compare is not None else 1.25)
    ax.set_xlim(0, n_steps)
    ax.set_ylim(0, ytop)
    y_before = ytop * (0.93 if compare is not None else 0.9)
    _annotate_peak(ax, profile, scale, n_steps, y_before, _BEFORE_COLOR,
                   f"{before}: " if compare is not None else "")
    if compare is not None:
        # keep the two arrows apart when both peaks sit at (nearly) the same step
        dx = 0.0
        if abs(compare.peak_step - profile.peak_step) < 0.06 * n_steps:
            dx = 0.08 * n_steps * (1.0 if compare.peak_step + 0.5 < n_steps / 2 else -1.0)
        _annotate_peak(ax, compare, scale, n_steps, ytop * 0.82, _AFTER_COLOR, f"{after}: ",
                       dx=dx)

    if named:
        ax.set_xticks(np.arange(n) + 0.5,
                      labels=[_shorten(r.name, 24) for r in profile.layers],
                      rotation=55, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_xlabel("layer (schedule order)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=20, integer=True))
        ax.set_xlabel("schedule step (layer index)")
    ax.set_ylabel(f"live activation memory ({unit})")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01),
              ncol=len(handles) if len(handles) <= 3 else 2, frameon=False, fontsize=9,
              borderaxespad=0.0)
    if title is None:
        title = f"{profile.model}: activation memory per layer ({profile.activation_dtype})"
    fig.suptitle(title, fontsize=12)
    if bands and named:
        avoid = None
        if compare is not None:
            avoid = np.asarray(compare.live_bytes, dtype=np.float64) / scale
        _label_bands(ax, band_list, scale, avoid)
    return fig


def plot_timeline(
    profile: MemoryProfile,
    path: str | os.PathLike,
    *,
    capacity_bytes: int | None = None,
    capacity_label: str = "SRAM",
    compare: MemoryProfile | None = None,
    labels: Sequence[str] = ("before", "after"),
    title: str | None = None,
) -> Path:
    """Plot live activation memory over the schedule and write it to ``path``.

    The x axis is the schedule step (layer ``i`` spans ``[i, i + 1)``), the y axis
    the live activation bytes in an automatically chosen unit. The live-bytes
    curve is a step plot; below :data:`MAX_TENSOR_BANDS` tensors the tensors that
    make it up are drawn as stacked bands (each tensor spans its live range
    ``first`` to ``last + 1``; views are not drawn, their storage is their
    source's), otherwise the area under the curve is filled. The peak is marked
    and annotated ``"peak X MiB at <layer> (<op>)"``.

    Parameters
    ----------
    profile
        The profile to plot (the "before" profile when ``compare`` is given).
    path
        Output file; ``.png`` (150 dpi) or ``.svg``. Written atomically, and
        parent folders are created.
    capacity_bytes
        Draw a dashed horizontal line at this many bytes (e.g. the on-chip SRAM).
    capacity_label
        Legend label of the capacity line.
    compare
        A second profile (typically after optimisation) overlaid as a second step
        curve; both peaks are annotated and the legend gives the peak change.
    labels
        Names of ``profile`` and ``compare`` in the legend and annotations.
    title
        Figure title; default ``"<model>: activation memory per layer (<dtype>)"``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.png`` or ``.svg`` (nothing is written), a
        profile has no layers, ``labels`` is not a pair or ``capacity_bytes`` is
        not positive.
    """
    fmt = _plot_format(path)
    fig = _timeline_figure(profile, capacity_bytes=capacity_bytes,
                           capacity_label=capacity_label, compare=compare, labels=labels,
                           title=title)
    return _save(fig, path, fmt)


def _layer_bars_figure(profile: MemoryProfile, *, top: int = 30) -> Figure:
    """Build the figure drawn by :func:`plot_layer_bars` (without saving it)."""
    _check_profile(profile, "profile")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    rows = profile.top_layers(top)
    scale, unit = _axis_unit(max(r.live_bytes for r in rows))
    peak = max(profile.peak_bytes, 1)

    fig = _new_figure(9.0, 1.4 + 0.28 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    live = np.array([r.live_bytes for r in rows], dtype=np.float64) / scale
    out = np.array([min(r.output_bytes, r.live_bytes) for r in rows], dtype=np.float64) / scale
    is_peak = [r.index == profile.peak_step for r in rows]
    ax.barh(y, live, color=[_CAPACITY_COLOR if p else "#7f9fce" for p in is_peak], height=0.72,
            zorder=2)
    ax.barh(y, out, color=_BEFORE_COLOR, height=0.36, zorder=3)
    for yi, (value, row) in enumerate(zip(live, rows, strict=True)):
        ax.text(value, yi, f" {100.0 * row.live_bytes / peak:.1f} %", va="center",
                fontsize=8, zorder=4)
    ax.set_yticks(y, labels=[f"{_shorten(r.name)} ({_shorten(r.op, 20)}) #{r.index}"
                             for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # highest first, no empty margins
    ax.set_xlim(0, float(live.max()) * 1.15)
    ax.set_xlabel(f"live activation memory ({unit}); labels: % of peak")
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    handles = [Patch(color="#7f9fce", label="live at the layer"),
               Patch(color=_CAPACITY_COLOR, label="live at the peak layer"),
               Patch(color=_BEFORE_COLOR, label="of which: the layer's output")]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3,
              frameon=False, fontsize=8, borderaxespad=0.2)
    fig.suptitle(f"{profile.model}: top {len(rows)} of {len(profile.layers)} layers by live "
                 f"memory (peak {format_bytes(profile.peak_bytes)}, "
                 f"{profile.activation_dtype})", fontsize=11)
    return fig


def plot_layer_bars(profile: MemoryProfile, path: str | os.PathLike, *, top: int = 30) -> Path:
    """Plot the layers with most live activation bytes as horizontal bars.

    Bars are sorted highest first; each is annotated with its share of the peak,
    the peak layer is highlighted and an inner bar shows the layer's own output.

    Parameters
    ----------
    profile
        The profile to plot.
    path
        Output file; ``.png`` (150 dpi) or ``.svg``, written atomically.
    top
        How many layers to show (at most the number of layers).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.png`` or ``.svg`` (nothing is written), the
        profile has no layers or ``top`` is below 1.
    """
    fmt = _plot_format(path)
    return _save(_layer_bars_figure(profile, top=top), path, fmt)
