"""Offset allocation of buffers in one SRAM, with spills to DRAM when it is too small.

Everything here is a pure function of :class:`LiveRange` records (name, first and last
live schedule step, size, use steps), in the spirit of Arm Vela's allocators: no model,
no TVM, deterministic, testable by hand.

* :func:`greedy_by_size` — the classic greedy-by-size placement with gap filling
  (TFLite; Pisarchyk & Lee 2020, "Efficient Memory Management for Deep Neural Net
  Inference"): biggest buffers first, each at the lowest aligned offset that does not
  overlap a buffer already placed and live at a common step.
* :func:`allocate` — greedy-by-size, then a deterministic hill climb over the placement
  order (after Vela's ``HillClimbAllocator``, with a seeded local RNG) until the arena
  reaches the lower bound or the iterations run out; if a capacity is given and the
  arena exceeds it, buffers idle across the worst steps are spilled to DRAM (Belady:
  furthest next use first) and the resident pieces are placed again.

Conventions: steps are inclusive (``start <= step <= end``); a size is rounded up to the
alignment wherever it is placed or counted, so ``offset + align_up(size)`` is a
buffer's *top* and the arena is the highest top.

A spilled buffer ``X`` is written to DRAM right after its producing step ``start`` and
read back right before each later use step; in SRAM it exists only as one-step pieces
named ``f"X@{step}"`` (:func:`piece_name`) at ``start`` and at each reload step.
"""

from __future__ import annotations

import functools
import operator
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LiveRange",
    "Placement",
    "Plan",
    "Spill",
    "align_up",
    "allocate",
    "greedy_by_size",
    "live_bytes_per_step",
    "lower_bound",
    "no_reuse_arena",
    "piece_name",
    "spill_pieces",
]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LiveRange:
    """One buffer: live from step ``start`` to step ``end`` (both inclusive).

    Parameters
    ----------
    name : str
        Unique buffer name.
    start, end : int
        First and last schedule step at which the buffer is live, ``end >= start``.
    size_bytes : int
        Size before alignment, ``> 0``.
    uses : tuple of int, optional
        Steps that read or write the buffer, within ``[start, end]``. Stored sorted and
        without duplicates. Only spill decisions look at them; see :attr:`use_steps`.

    Raises
    ------
    ValueError
        If ``end < start``, ``size_bytes <= 0``, the name is empty or a use lies outside
        ``[start, end]``.
    """

    name: str
    start: int
    end: int
    size_bytes: int
    uses: tuple[int, ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"live range name must be a non-empty string, got {self.name!r}")
        # operator.index accepts numpy integers but not floats: steps and sizes are counts.
        for attr in ("start", "end", "size_bytes"):
            object.__setattr__(self, attr, operator.index(getattr(self, attr)))
        uses = tuple(sorted({operator.index(u) for u in self.uses}))
        object.__setattr__(self, "uses", uses)
        if self.end < self.start:
            raise ValueError(f"live range {self.name!r}: end {self.end} < start {self.start}")
        if self.size_bytes <= 0:
            raise ValueError(f"live range {self.name!r}: size_bytes must be > 0, "
                             f"got {self.size_bytes}")
        if uses and (uses[0] < self.start or uses[-1] > self.end):
            raise ValueError(f"live range {self.name!r}: uses {uses} outside "
                             f"[{self.start}, {self.end}]")

    @property
    def use_steps(self) -> tuple[int, ...]:
        """The steps at which the buffer must be in SRAM if it is spilled, sorted.

        ``start`` (the producer writes it) and ``end`` (a buffer is live up to the last
        step that needs it, otherwise its range would end earlier) are always included,
        so empty ``uses`` means ``(start, end)``.
        """
        return tuple(sorted({self.start, self.end, *self.uses}))


@dataclass(frozen=True)
class Placement:
    """A buffer (or a spilled buffer's resident piece) at an SRAM offset."""

    name: str
    start: int
    end: int
    size_bytes: int
    offset_bytes: int

    def top(self, alignment_bytes: int = 1) -> int:
        """First byte above the buffer: ``offset + align_up(size)``."""
        return self.offset_bytes + align_up(self.size_bytes, alignment_bytes)


@dataclass(frozen=True)
class Spill:
    """A buffer kept in DRAM between its uses.

    It is written once after ``store_step`` (its producing step) and read back right
    before each of ``reload_steps``.
    """

    name: str
    size_bytes: int
    store_step: int
    reload_steps: tuple[int, ...]
    dram_write_bytes: int
    dram_read_bytes: int


@dataclass(frozen=True)
class Plan:
    """An SRAM plan: what sits where, what goes to DRAM, and how good it is.

    ``placements`` hold every SRAM resident: unspilled buffers under their own name and
    the one-step pieces of spilled buffers (see :func:`piece_name`), sorted by
    ``(start, name)``; ``spills`` are sorted by ``(store_step, name)``.
    ``lower_bound_bytes`` is the lower bound of the *original* ranges (before spilling),
    so a plan with spills can be below it. ``algorithm`` is ``"greedy_by_size"``, plus
    ``"+hill_climb"`` if the climb beat greedy-by-size and ``"+belady_spill"`` if
    anything was spilled.
    """

    placements: tuple[Placement, ...]
    spills: tuple[Spill, ...]
    arena_bytes: int
    lower_bound_bytes: int
    alignment_bytes: int
    capacity_bytes: int | None
    algorithm: str
    iterations: int = 0  # hill-climbing moves tried for the final placement

    @property
    def fits(self) -> bool:
        """True without a capacity or when the arena is within it."""
        return self.capacity_bytes is None or self.arena_bytes <= self.capacity_bytes

    @property
    def excess_bytes(self) -> int:
        """Bytes over capacity (0 when it fits)."""
        if self.capacity_bytes is None:
            return 0
        return max(0, self.arena_bytes - self.capacity_bytes)

    @property
    def overhead_pct(self) -> float:
        """Arena over the lower bound, in percent (negative is possible with spills)."""
        if self.lower_bound_bytes == 0:
            return 0.0
        return 100.0 * (self.arena_bytes / self.lower_bound_bytes - 1.0)

    @property
    def spilled_bytes(self) -> int:
        return sum(s.size_bytes for s in self.spills)

    @property
    def dram_write_bytes(self) -> int:
        return sum(s.dram_write_bytes for s in self.spills)

    @property
    def dram_read_bytes(self) -> int:
        return sum(s.dram_read_bytes for s in self.spills)

    @property
    def dram_traffic_bytes(self) -> int:
        return self.dram_write_bytes + self.dram_read_bytes

    def offsets(self) -> dict[str, int]:
        """Name -> offset of every placement."""
        return {p.name: p.offset_bytes for p in self.placements}

    def to_dict(self) -> dict:
        """JSON-ready dict: the fields, the derived numbers, placements and spills."""
        return {
            "algorithm": self.algorithm,
            "iterations": self.iterations,
            "alignment_bytes": self.alignment_bytes,
            "capacity_bytes": self.capacity_bytes,
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "overhead_pct": self.overhead_pct,
            "fits": self.fits,
            "excess_bytes": self.excess_bytes,
            "spilled_bytes": self.spilled_bytes,
            "dram_write_bytes": self.dram_write_bytes,
            "dram_read_bytes": self.dram_read_bytes,
            "dram_traffic_bytes": self.dram_traffic_bytes,
            "placements": [
                {"name": p.name, "start": p.start, "end": p.end, "size_bytes": p.size_bytes,
                 "offset_bytes": p.offset_bytes}
                for p in self.placements
            ],
            "spills": [
                {"name": s.name, "size_bytes": s.size_bytes, "store_step": s.store_step,
                 "reload_steps": list(s.reload_steps), "dram_write_bytes": s.dram_write_bytes,
                 "dram_read_bytes": s.dram_read_bytes}
                for s in self.spills
            ],
        }


# --------------------------------------------------------------------------- helpers


def align_up(n: int, alignment: int) -> int:
    """Smallest multiple of ``alignment`` that is ``>= n`` (``alignment`` > 0)."""
    return -(-n // alignment) * alignment


def _check_alignment(alignment_bytes) -> int:
    a = operator.index(alignment_bytes)
    if a <= 0 or a & (a - 1):
        raise ValueError(f"alignment_bytes must be a positive power of two, got {alignment_bytes}")
    return a


def _validate(ranges: Iterable[LiveRange], alignment_bytes) -> tuple[list[LiveRange], int]:
    ranges = list(ranges)
    a = _check_alignment(alignment_bytes)
    seen: set[str] = set()
    for r in ranges:
        if not isinstance(r, LiveRange):
            raise ValueError(f"expected LiveRange, got {type(r).__name__}")
        if r.name in seen:
            raise ValueError(f"duplicate live range name {r.name!r}")
        seen.add(r.name)
    return ranges, a


def piece_name(name: str, step: int) -> str:
    """Name of the resident piece of spilled buffer ``name`` at ``step``."""
    return f"{name}@{step}"


def spill_pieces(r: LiveRange) -> list[LiveRange]:
    """The one-step SRAM pieces of ``r`` when it is spilled: one per use step."""
    return list(_pieces(r))


@functools.lru_cache(maxsize=4096)
def _pieces(r: LiveRange) -> tuple[LiveRange, ...]:
    # Cached: spilling asks for the same buffer's pieces once per spill decision.
    return tuple(LiveRange(piece_name(r.name, u), u, u, r.size_bytes) for u in r.use_steps)


def _live_profile(ranges: Sequence[LiveRange], alignment: int,
                  extra_steps: Iterable[int] = ()) -> tuple[list[int], list[int]]:
    """Live bytes as a step function: ``(steps, live)``, ``live[i]`` holds from ``steps[i]``
    up to the next step. ``extra_steps`` become breakpoints even where nothing changes."""
    delta: dict[int, int] = dict.fromkeys(extra_steps, 0)
    for r in ranges:
        a = align_up(r.size_bytes, alignment)
        delta[r.start] = delta.get(r.start, 0) + a
        delta[r.end + 1] = delta.get(r.end + 1, 0) - a
    steps = sorted(delta)
    live, total = [], 0
    for s in steps:
        total += delta[s]
        live.append(total)
    return steps, live


def lower_bound(ranges: Iterable[LiveRange], alignment_bytes: int = 1) -> int:
    """Max over steps of the aligned bytes live at that step; no placement beats it.

    Raises
    ------
    ValueError
        On an invalid alignment or duplicate names.
    """
    ranges, a = _validate(ranges, alignment_bytes)
    _, live = _live_profile(ranges, a)
    return max(live, default=0)


def live_bytes_per_step(ranges: Iterable[LiveRange], alignment_bytes: int = 1) -> dict[int, int]:
    """Aligned live bytes at every step from the first start to the last end (inclusive).

    Returns an empty dict for no ranges.
    """
    ranges, a = _validate(ranges, alignment_bytes)
    if not ranges:
        return {}
    lo, hi = min(r.start for r in ranges), max(r.end for r in ranges)
    diff = np.zeros(hi - lo + 2, dtype=np.int64)
    for r in ranges:
        b = align_up(r.size_bytes, a)
        diff[r.start - lo] += b
        diff[r.end - lo + 1] -= b
    live = np.cumsum(diff)[:-1]
    return {lo + i: int(v) for i, v in enumerate(live)}


def no_reuse_arena(ranges: Iterable[LiveRange], alignment_bytes: int = 1) -> int:
    """Arena without any reuse (every buffer its own slot): the baseline for reports."""
    ranges, a = _validate(ranges, alignment_bytes)
    return sum(align_up(r.size_bytes, a) for r in ranges)


def _default_key(r: LiveRange):
    # Size first (the greedy-by-size rule), then longer lifetimes, which constrain more
    # buffers; the name only makes ties deterministic.
    return (-r.size_bytes, -(r.end - r.start), r.name)


# --------------------------------------------------------------------------- packing core


def _overlap_lists(starts: list[int], ends: list[int]) -> list[list[int]]:
    """For each buffer, the indices (ascending) of the others live at a common step."""
    n = len(starts)
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    out: list[list[int]] = []
    block = 1024  # bounds the boolean matrix at block * n bytes for big inputs
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        ov = (s[b0:b1, None] <= e[None, :]) & (s[None, :] <= e[b0:b1, None])
        ov[np.arange(b1 - b0), np.arange(b0, b1)] = False
        rows, cols = np.nonzero(ov)  # row-major: each row's columns ascending, rows in order
        flat = cols.tolist()
        bounds = np.searchsorted(rows, np.arange(b1 - b0 + 1)).tolist()
        out.extend(flat[bounds[k]:bounds[k + 1]] for k in range(b1 - b0))
    return out


class _State:
    """An order and its placement; lists for fast scalar access, numpy mirrors for the
    vectorized fit of buffers with many neighbours. ``pred[i]`` is the buffer whose top
    is ``i``'s offset (-1 at offset 0): what ``i`` rests on."""

    __slots__ = ("order", "pos", "pos_np", "offsets", "off_np", "pred")

    def __init__(self, order, pos, pos_np, offsets, off_np, pred):
        self.order, self.pos, self.pos_np = order, pos, pos_np
        self.offsets, self.off_np, self.pred = offsets, off_np, pred


class _Packer:
    """Greedy placement of a fixed set of buffers in a given order.

    Indices refer to the buffers passed in; ``order`` is a permutation of them and
    ``pos[i]`` the position of buffer ``i`` in it. A buffer goes to the lowest offset
    where it overlaps none of its time-neighbours placed before it (first fit by address,
    as in Vela's hill-climb allocator; the hill climb then repairs what first fit
    misses). Sizes are already aligned and offsets start at 0, so every offset is aligned.
    """

    #: Above this many time-neighbours a fit is done with numpy (~25 us whatever the
    #: count) rather than in Python (~0.2 us per neighbour plus a sort) ...
    NUMPY_DEGREE = 128
    #: ... and the neighbours a change disturbs are found with numpy (~5 us).
    NUMPY_TOUCH_DEGREE = 24

    def __init__(self, starts: list[int], ends: list[int], sizes: list[int]):
        self.sizes = sizes
        self.size_np = np.asarray(sizes, dtype=np.int64)
        self.nbrs = _overlap_lists(starts, ends)
        small = min(self.NUMPY_DEGREE, self.NUMPY_TOUCH_DEGREE)
        self.nbr_np = [np.asarray(nb, dtype=np.int64) if len(nb) > small else None
                       for nb in self.nbrs]

    def _fit(self, i: int, k: int, st: _State) -> tuple[int, int]:
        """``(offset, pred)`` of buffer ``i`` placed at position ``k`` of the order."""
        nb = self.nbr_np[i]
        size = self.sizes[i]
        if nb is not None and len(nb) > self.NUMPY_DEGREE:
            idx = nb[st.pos_np[nb] < k]
            if not idx.size:
                return 0, -1
            offs = st.off_np[idx]
            srt = np.argsort(offs, kind="stable")
            idx, offs = idx[srt], offs[srt]
            raw = offs + self.size_np[idx]
            tops = np.maximum.accumulate(raw)
            below = np.empty_like(tops)  # highest top of the buffers before each one
            below[0] = 0
            below[1:] = tops[:-1]
            fits = offs - below >= size
            m = int(fits.argmax())
            if not fits[m]:
                m = len(offs)  # no gap: on top of everything
            if m == 0:
                return 0, -1
            return int(tops[m - 1]), int(idx[int(raw[:m].argmax())])
        offsets, pos, sizes = st.offsets, st.pos, self.sizes
        busy = [j for j in self.nbrs[i] if pos[j] < k]
        busy.sort(key=offsets.__getitem__)
        cur, pred = 0, -1
        for j in busy:
            off = offsets[j]
            if off >= cur + size:
                break  # the gap [cur, off) takes it
            top = off + sizes[j]
            if top > cur:
                cur, pred = top, j
        return cur, pred

    def place(self, order: list[int]) -> _State:
        """``order`` placed from scratch."""
        n = len(order)
        pos = [0] * n
        for k, i in enumerate(order):
            pos[i] = k
        st = _State(order, pos, np.asarray(pos, dtype=np.int64), [0] * n,
                    np.zeros(n, dtype=np.int64), [-1] * n)
        for k, i in enumerate(order):
            off, st.pred[i] = self._fit(i, k, st)
            st.offsets[i] = off
            st.off_np[i] = off
        return st

    def _touch(self, i: int, low: int, st: _State, dirty: set[int]) -> None:
        """Mark the neighbours of ``i`` that a change of ``i`` at or above ``low`` can move.

        A buffer ``x`` sits at the lowest gap that fits under the intervals of its earlier
        neighbours. Adding, removing or moving an interval that lies entirely at or above
        ``x``'s top blocks none of the lower gaps and frees none of them, and leaves
        ``x``'s own gap free, so ``x`` stays. Only neighbours with top > ``low`` can move.
        """
        nb = self.nbr_np[i]
        if nb is not None:
            dirty.update(nb[st.off_np[nb] + self.size_np[nb] > low].tolist())
        else:
            offsets, sizes = st.offsets, self.sizes
            dirty.update([j for j in self.nbrs[i] if offsets[j] + sizes[j] > low])

    def replace(self, old: _State, order: list[int], q: int, last: int,
                moved: Sequence[int], limit: int) -> _State | None:
        """Placement of ``order``, which differs from ``old.order`` only at positions
        ``q..last`` and only by moving the buffers ``moved``; ``None`` as soon as a top
        exceeds ``limit``.

        Incremental: a buffer is fitted again only if something under its old top
        changed among its earlier neighbours (see :meth:`_touch`); every other buffer
        keeps its offset without a search, so a move usually costs a handful of fits
        instead of a full greedy pass.
        """
        sizes = self.sizes
        pos, pos_np = old.pos[:], old.pos_np.copy()
        for k in range(q, last + 1):
            pos[order[k]] = k
            pos_np[order[k]] = k
        st = _State(order, pos, pos_np, old.offsets[:], old.off_np.copy(), old.pred[:])
        dirty = set(moved)
        for m in moved:
            # Buffers between q and last may have lost m as an earlier neighbour before m
            # itself is fitted again: mark them against m's old interval now.
            self._touch(m, st.offsets[m], st, dirty)
        for k in range(q, len(order)):
            i = order[k]
            if i not in dirty:
                continue
            was = st.offsets[i]
            # A buffer that is not fitted again keeps its pred too: had its pred moved,
            # the pred's old interval (just under the buffer) would have touched it.
            off, st.pred[i] = self._fit(i, k, st)
            if off + sizes[i] > limit:
                return None
            if off != was:
                st.offsets[i] = off
                st.off_np[i] = off
                self._touch(i, min(off, was), st, dirty)
            # (A moved buffer that stays put needs nothing more: the touch before the
            # loop, with the same interval, already marked whoever gains or loses it.)
        return st


@dataclass(frozen=True)
class _Packing:
    offsets: dict[str, int]
    arena: int
    order: tuple[str, ...]  # the final placement order, to start a later placement from
    climbed: bool  # the climb (this one or the one it started from) beat greedy-by-size
    iterations: int


def _arena(st: _State, sizes: list[int]) -> int:
    return max(o + s for o, s in zip(st.offsets, sizes, strict=True))


def _bottleneck_swap(packer: _Packer, st: _State, c: int,
                     rng: random.Random) -> tuple[int, int]:
    """Two positions to swap, as in Vela's ``HillClimbAllocator.attempt_bottleneck_fix``.

    The candidates are the buffers that decided where ``c`` went: ``c``, its earlier
    time-neighbours and everything these rest on (their ``pred`` chains). Vela prefers,
    30 % of the time, one that is not a time-neighbour of ``c``: such buffers are what
    leaves gaps under it. Returns ``(q, last)`` with ``q <= last``.
    """
    pos, pred = st.pos, st.pred
    turns: list[int] = []
    seen: set[int] = set()
    for start in [c] + [j for j in packer.nbrs[c] if pos[j] < pos[c]]:
        x = start
        while x >= 0 and x not in seen:
            seen.add(x)
            turns.append(pos[x])
            x = pred[x]
    near = set(packer.nbrs[c])
    near.add(c)
    far = [t for t in turns if st.order[t] not in near]
    if far and rng.random() < 0.3:
        ix1 = far[rng.randrange(len(far))]
    else:
        ix1 = turns[rng.randrange(len(turns))]
    ix2 = turns[rng.randrange(len(turns) - 1)] if len(turns) > 1 else ix1
    if ix1 == ix2:
        ix2 = turns[-1]
    return min(ix1, ix2), max(ix1, ix2)


def _urgency_order(ranges: Sequence[LiveRange], sizes: Sequence[int]) -> list[int]:
    """Indices by decreasing urgency (the most bytes live at any step of the buffer's
    lifetime), then size, then start: Vela's order for its first placement."""
    urgency = _urgency(ranges, sizes)
    return sorted(range(len(ranges)),
                  key=lambda i: (-urgency[i], -sizes[i], ranges[i].start, i))


def _urgency(ranges: Sequence[LiveRange], sizes: Sequence[int]) -> list[int]:
    """Per buffer, the most bytes live at any step of its lifetime (sizes as placed)."""
    live: dict[int, int] = {}
    for r, size in zip(ranges, sizes, strict=True):
        for t in range(r.start, r.end + 1):
            live[t] = live.get(t, 0) + size
    return [max(live[t] for t in range(r.start, r.end + 1)) for r in ranges]


def _long_lived_order(ranges: Sequence[LiveRange], sizes: Sequence[int]) -> list[int]:
    """Indices with the long-lived buffers first (alive over more than a tenth of the
    schedule), each group by size: what spans many steps settles at the bottom, and
    the short ones that come and go (a tiled region's tiles) pack above it."""
    span = max(r.end for r in ranges) - min(r.start for r in ranges) + 1
    return sorted(range(len(ranges)), key=lambda i: (
        ranges[i].end - ranges[i].start < span / 10, -sizes[i], ranges[i].start, i))


def _timeline_order(ranges: Sequence[LiveRange], sizes: Sequence[int]) -> list[int]:
    """Indices by decreasing urgency (as :func:`_urgency_order`), ties by start: the
    buffers live at the busiest steps in the order they appear, so a tiled region's
    tiles, which share the peak's urgency, stack as they come and go."""
    urgency = _urgency(ranges, sizes)
    return sorted(range(len(ranges)),
                  key=lambda i: (-urgency[i], ranges[i].start, -sizes[i], i))


def _area_order(ranges: Sequence[LiveRange], sizes: Sequence[int]) -> list[int]:
    """Indices by decreasing bytes x steps: what occupies most of the timeline first."""
    return sorted(range(len(ranges)), key=lambda i: (
        -sizes[i] * (ranges[i].end - ranges[i].start + 1), ranges[i].start, i))


#: The climb's later starts, in turn while the arena is above the target, with the
#: divisor of its moves: the long-lived buffers first (a patch stage's input and
#: output under its tiles: ResNet18's arena 1,519,616 -> 1,476,608 B), then the
#: timeline and area orders at half the moves (they reach VGG16's lower bound and take
#: 28 KiB off ResNet18's streamed arena, 2026-12-05).
_LATER_STARTS = ((_long_lived_order, 1), (_timeline_order, 2), (_area_order, 2))


def _climb(packer: _Packer, st: _State, sizes: list[int], max_iterations: int, seed: int,
           target: int) -> tuple[_State, int, int]:
    """Hill climbing over the placement order of ``st`` until its arena is <= ``target``
    or ``max_iterations`` moves were tried: the placement, its arena, the moves tried."""
    arena = _arena(st, sizes)
    rng = random.Random(seed)
    it = 0
    while it < max_iterations and arena > target:
        it += 1
        order, pos, offsets = st.order, st.pos, st.offsets
        # A buffer at the top of the arena is the one to move: only moves that change
        # what lies under it can lower the arena. It is never first in the order (the
        # first buffer sits at 0 and alone is <= the lower bound < arena).
        critical = [i for i in order if offsets[i] + sizes[i] == arena and pos[i] > 0]
        if not critical:
            break
        c = critical[rng.randrange(len(critical))]
        pc = pos[c]
        new_order = order[:]
        if rng.random() < 0.5:
            # Vela's move: swap two of the buffers that decided where c went.
            q, last = _bottleneck_swap(packer, st, c, rng)
            new_order[q], new_order[last] = new_order[last], new_order[q]
            moved: tuple[int, ...] = (new_order[q], new_order[last])
        else:
            # Move c to any earlier position, so that it is placed lower.
            q, last = rng.randrange(pc), pc
            del new_order[pc]
            new_order.insert(q, c)
            moved = (c,)
        if q == last:
            continue
        new = packer.replace(st, new_order, q, last, moved, arena)
        if new is not None:
            # Sideways moves (same arena) are kept too: they walk plateaus, as in Vela.
            st = new
            arena = _arena(st, sizes)
    return st, arena, it


def _pack(ranges: Sequence[LiveRange], alignment: int, max_iterations: int, seed: int,
          target: int, start: _Packing | None = None,
          order: Sequence[str] | None = None) -> _Packing:
    """Greedy placement in ``order`` (default: greedy-by-size), then hill climbing over the
    order until the arena is <= ``target`` (at least the lower bound) or the iterations
    run out. ``start`` is the placement ``order`` comes from, if any."""
    n = len(ranges)
    if n == 0:
        return _Packing({}, 0, (), False, 0)
    # Index buffers in placement order, so that the climb (its neighbour lists, its random
    # picks) does not depend on the order the caller listed them in.
    if order is None:
        ranges = sorted(ranges, key=_default_key)
    else:
        by_name = {r.name: r for r in ranges}
        ranges = [by_name[name] for name in order]
    sizes = [align_up(r.size_bytes, alignment) for r in ranges]
    packer = _Packer([r.start for r in ranges], [r.end for r in ranges], sizes)
    st = packer.place(list(range(n)))
    if order is None and _arena(st, sizes) > target:
        # Multi-start: Vela's heuristic order (most "urgent" first: the buffers alive at
        # the busiest steps) often starts the climb much closer to the lower bound.
        urgent = packer.place(_urgency_order(ranges, sizes))
        if _arena(urgent, sizes) < _arena(st, sizes):
            st = urgent
    first_arena = _arena(st, sizes)
    st, arena, it = _climb(packer, st, sizes, max_iterations, seed, target)
    # More climbs while above the target, each from another order and kept only if it
    # ends lower, so no plan gets worse for them (:data:`_LATER_STARTS`).
    for make_order, share in _LATER_STARTS if order is None else ():
        if arena <= target:
            break
        other = packer.place(make_order(ranges, sizes))
        first_arena = min(first_arena, _arena(other, sizes))
        other, other_arena, other_it = _climb(packer, other, sizes, max_iterations // share,
                                              seed, target)
        it += other_it
        if other_arena < arena:
            st, arena = other, other_arena
    return _Packing(offsets={r.name: st.offsets[i] for i, r in enumerate(ranges)}, arena=arena,
                    order=tuple(ranges[i].name for i in st.order),
                    climbed=arena < first_arena or (start is not None and start.climbed),
                    iterations=it)


# --------------------------------------------------------------------------- public API


def greedy_by_size(ranges: Iterable[LiveRange], alignment_bytes: int = 1,
                   order: Sequence[str] | None = None) -> dict[str, int]:
    """Greedy-by-size offsets, with gap filling.

    Parameters
    ----------
    ranges : iterable of LiveRange
    alignment_bytes : int
        Power of two; offsets are multiples of it and sizes are rounded up to it.
    order : sequence of str, optional
        Placement order (a permutation of the names). Default: size descending, then
        longer lifetime first, then name.

    Returns
    -------
    dict
        Name -> offset. Each buffer is at the lowest aligned offset at which it overlaps
        no buffer placed before it that is live at a common step.
    """
    ranges, a = _validate(ranges, alignment_bytes)
    index = {r.name: i for i, r in enumerate(ranges)}
    if order is None:
        idx = sorted(range(len(ranges)), key=lambda i: _default_key(ranges[i]))
    else:
        order = list(order)
        if sorted(order) != sorted(index):
            raise ValueError("order must name every live range exactly once")
        idx = [index[name] for name in order]
    sizes = [align_up(r.size_bytes, a) for r in ranges]
    packer = _Packer([r.start for r in ranges], [r.end for r in ranges], sizes)
    offsets = packer.place(idx).offsets
    return {r.name: offsets[i] for i, r in enumerate(ranges)}


def allocate(ranges: Iterable[LiveRange], *, alignment_bytes: int = 1,
             capacity_bytes: int | None = None, max_iterations: int = 200,
             seed: int = 0, spill: bool = True) -> Plan:
    """Place ``ranges`` in one SRAM arena, spilling to DRAM if ``capacity_bytes`` is short.

    Parameters
    ----------
    ranges : iterable of LiveRange
        Unique names.
    alignment_bytes : int
        Power of two for offsets and sizes.
    capacity_bytes : int, optional
        SRAM size. Without it nothing is spilled.
    spill : bool
        False: never spill (a scratchpad machine has no writable memory to spill to);
        over ``capacity_bytes`` the plan does not fit and says by how much.
    max_iterations : int
        Hill-climbing moves per placement (each is one re-evaluation of the order).
    seed : int
        Seed of the climber's own ``random.Random``; same input, same plan.

    Returns
    -------
    Plan
        Never over capacity silently: if spilling cannot bring the arena within capacity
        (a step whose buffers are all in use needs more, or no buffer is idle where the
        packing overflows), ``fits`` is False and ``excess_bytes`` says by how much.

    Notes
    -----
    Placement: greedy-by-size, stopped if it reaches the lower bound, else hill climbing
    over the placement order until the lower bound or ``max_iterations``. Each move picks
    a buffer at the top of the arena and, with equal odds, either swaps two of the
    buffers that decided where it went (Vela's ``attempt_bottleneck_fix``) or moves it to
    a random earlier position; the move is kept if the arena does not grow. On random
    problems the mix reached the lower bound more often than Vela's swap alone. The
    climb starts from the lower arena of greedy-by-size and Vela's most-urgent-first
    order; if it ends above the lower bound, a second climb starts from the long-lived
    buffers first (alive over a tenth of the schedule), then, while still above it, one
    from the most urgent first in start order (:func:`_timeline_order`) and one from the
    largest bytes x steps first (:func:`_area_order`), each of half the moves; the
    lowest is kept, so no start makes a plan worse.

    Spilling (only when the arena exceeds the capacity): take the steps whose live bytes
    exceed the capacity, worst first; at the first one where some buffer is live but not
    used, spill the one whose next use is furthest away (Belady; ties: larger, then
    name). It is then resident only at its use steps (:attr:`LiveRange.use_steps`).
    Repeat until the live bytes fit everywhere or no such buffer is left, then place the
    resident pieces, starting from the order found before spilling with each spilled
    buffer's pieces where it stood (the climb now stops as soon as the arena fits: once
    spilling, a smaller arena saves no traffic). If the lower bound then fits but
    fragmentation still pushes the arena over, keep spilling, one buffer at a time, at
    the steps of the buffers above the capacity (fullest step first), and place again
    from the previous order with a short climb (at most 20 moves), until it fits or
    nothing is left to spill.

    Cost: about ``n * d`` work for greedy-by-size (``d``: buffers live at a common step),
    and each climbing move refits only the buffers under which something changed.
    """
    ranges, a = _validate(ranges, alignment_bytes)
    if capacity_bytes is not None:
        capacity_bytes = operator.index(capacity_bytes)
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
    if operator.index(max_iterations) < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    lb = lower_bound(ranges, a)

    def place(items: list[LiveRange], enough: int = 0, start: _Packing | None = None,
              short: bool = False) -> _Packing:
        # The climb stops at the lower bound, or as soon as the arena is ``enough``. From a
        # ``start``, it begins with that placement's order, the spilled buffers' pieces
        # standing where the buffers stood.
        order = None
        if start is not None:
            pieces = {r.name: [p.name for p in spill_pieces(r)] for r in spilled.values()}
            order = [q for name in start.order for q in pieces.get(name, [name])]
        iterations = min(max_iterations, _ROUND_ITERATIONS) if short else max_iterations
        return _pack(items, a, iterations, seed, max(lower_bound(items, a), enough), start,
                     order)

    spilled: dict[str, LiveRange] = {}  # filled in by _spill_and_place, read by place
    packing = place(ranges)
    if spill and capacity_bytes is not None and packing.arena > capacity_bytes:
        packing = _spill_and_place(ranges, a, capacity_bytes, packing, place, spilled)

    items = _resident(ranges, spilled)
    placements = tuple(sorted(
        (Placement(r.name, r.start, r.end, r.size_bytes, packing.offsets[r.name]) for r in items),
        key=lambda p: (p.start, p.name)))
    spills = tuple(sorted((_spill_record(r) for r in spilled.values()),
                          key=lambda s: (s.store_step, s.name)))
    algorithm = "greedy_by_size"
    if packing.climbed:
        algorithm += "+hill_climb"
    if spills:
        algorithm += "+belady_spill"
    return Plan(placements=placements, spills=spills, arena_bytes=packing.arena,
                lower_bound_bytes=lb, alignment_bytes=a, capacity_bytes=capacity_bytes,
                algorithm=algorithm, iterations=packing.iterations)


# --------------------------------------------------------------------------- spilling


def _spill_record(r: LiveRange) -> Spill:
    reloads = tuple(u for u in r.use_steps if u > r.start)
    return Spill(name=r.name, size_bytes=r.size_bytes, store_step=r.start,
                 reload_steps=reloads, dram_write_bytes=r.size_bytes,
                 dram_read_bytes=r.size_bytes * len(reloads))


def _resident(ranges: Sequence[LiveRange], spilled: dict[str, LiveRange]) -> list[LiveRange]:
    out: list[LiveRange] = []
    for r in ranges:
        out.extend(_pieces(r) if r.name in spilled else (r,))
    return out


def _belady_victim(ranges: Sequence[LiveRange], spilled: dict[str, LiveRange],
                   step: int) -> LiveRange | None:
    """The unspilled buffer live but idle at ``step`` whose next use is furthest away."""
    best, best_key = None, None
    for r in ranges:
        if r.name in spilled or not (r.start < step < r.end):
            continue
        uses = r.use_steps
        if step in uses:
            continue
        next_use = next(u for u in uses if u > step)  # exists: end is a use and end > step
        key = (next_use, r.size_bytes, r.name)
        if best_key is None or key > best_key:
            best, best_key = r, key
    return best


def _spill_once(ranges: Sequence[LiveRange], spilled: dict[str, LiveRange], a: int,
                eligible, exhausted: set[int]) -> LiveRange | None:
    """Spill one Belady victim at the fullest step with ``eligible(step, live)``.

    Steps found without a victim go to ``exhausted``: spilling only removes victims, so
    they never get one back. Returns the victim, None when no eligible step has one.
    """
    resident = _resident(ranges, spilled)
    # Breakpoints at every use step and the one after it of the unspilled buffers: between
    # breakpoints neither live bytes nor any buffer's used/idle state change, so checking
    # breakpoints alone finds every (step, victim) pair.
    marks = [s for r in ranges if r.name not in spilled for u in r.use_steps for s in (u, u + 1)]
    steps, live = _live_profile(resident, a, marks)
    for _, s in sorted(((-v, s) for s, v in zip(steps, live, strict=True)
                        if s not in exhausted and eligible(s, v))):
        victim = _belady_victim(ranges, spilled, s)
        if victim is not None:
            spilled[victim.name] = victim
            return victim
        exhausted.add(s)
    return None


#: Climbing moves per placement while relieving fragmentation: each such placement starts
#: from the previous one's order, so together they continue one climb.
_ROUND_ITERATIONS = 20


def _spill_and_place(ranges, a, capacity, packing, place, spilled):
    """Spill (into ``spilled``) and place the resident pieces, as :func:`allocate` says."""
    names = {r.name for r in ranges}
    for r in ranges:
        for u in r.use_steps:
            if piece_name(r.name, u) in names:
                raise ValueError(f"cannot spill {r.name!r}: its piece name "
                                 f"{piece_name(r.name, u)!r} is another buffer's name")
    exhausted: set[int] = set()
    # Phase 1: bring the live bytes of every step within capacity, if spilling can.
    while _spill_once(ranges, spilled, a, lambda s, v: v > capacity, exhausted):
        pass
    resident = _resident(ranges, spilled)
    if spilled:
        # Once spilling, fitting is the goal: a smaller arena saves no traffic.
        packing = place(resident, capacity, start=packing)
    if lower_bound(resident, a) > capacity:
        return packing  # some step cannot fit: report the excess, spill no more
    # Phase 2: the live bytes fit but the packing does not (fragmentation). Relieve the
    # steps of the buffers sticking out above the capacity and place again, from the
    # previous order with the victim's pieces in its place, with a short climb.
    while packing.arena > capacity:
        over = [r for r in resident if packing.offsets[r.name]
                + align_up(r.size_bytes, a) > capacity]

        def eligible(s, v, over=over):
            return any(r.start <= s <= r.end for r in over)

        # A fresh set: which steps count depends on the placement, which changes.
        if _spill_once(ranges, spilled, a, eligible, set()) is None:
            break
        resident = _resident(ranges, spilled)
        packing = place(resident, capacity, start=packing, short=True)
    return packing
