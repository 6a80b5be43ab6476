"""Independent checker of SRAM plans.

:func:`check_plan` re-derives everything a :class:`~.allocator.Plan` claims from the
original live ranges — coverage, no overlap, alignment, arena, lower bound, capacity,
spill traffic — without trusting the allocator, so the allocator's tests (and any later
planner) can be validated against it. It lists every violation it finds rather than
stopping at the first, so a broken plan can be diagnosed in one run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .allocator import LiveRange, Placement, Plan, align_up, piece_name

__all__ = ["PlanError", "check_plan", "verify_plan"]

#: How many violations :func:`verify_plan` puts in its message.
MAX_REPORTED = 5


class PlanError(RuntimeError):
    """A plan that violates its own invariants (overlap, missing buffer, wrong totals...).

    Plans are checked in production before they are applied, so this is a bug in the
    planner, never bad input: it is not a :class:`~tvm_memflat.errors.MemflatError`
    (the CLI exits 1 naming it, not 2)."""


def _aligned_lower_bound(ranges: Sequence[LiveRange], a: int) -> int:
    # Recomputed here rather than calling allocator.lower_bound, so a bug there shows up
    # as a disagreement instead of being checked against itself.
    events: list[tuple[int, int]] = []
    for r in ranges:
        size = align_up(r.size_bytes, a)
        events += [(r.start, size), (r.end + 1, -size)]
    best = live = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # frees before allocs
        live += delta
        best = max(best, live)
    return best


def check_plan(plan: Plan, ranges: Sequence[LiveRange]) -> list[str]:
    """All the ways ``plan`` is not a valid plan of ``ranges``.

    Parameters
    ----------
    plan : Plan
    ranges : sequence of LiveRange
        The original ranges the plan was made for (before spilling).

    Returns
    -------
    list of str
        Human-readable violations; empty if the plan is valid.
    """
    out: list[str] = []
    a = plan.alignment_bytes
    if not isinstance(a, int) or a <= 0 or a & (a - 1):
        out.append(f"alignment_bytes {a!r} is not a positive power of two; checking with 1")
        a = 1

    for name, n in Counter(r.name for r in ranges).items():
        if n > 1:
            out.append(f"live range name {name!r} appears {n} times in the input")
    placed: dict[str, Placement] = {}
    for p in plan.placements:
        if p.name in placed:
            out.append(f"{p.name!r} is placed more than once")
        placed[p.name] = p
    spills = {}
    for s in plan.spills:
        if s.name in spills:
            out.append(f"{s.name!r} is spilled more than once")
        spills[s.name] = s

    # Coverage: every buffer is resident as itself or spilled with all its pieces placed.
    expected: set[str] = set()
    by_name = {r.name: r for r in ranges}
    for r in ranges:
        if r.name not in spills:
            expected.add(r.name)
            p = placed.get(r.name)
            if p is None:
                out.append(f"{r.name!r} is neither placed nor spilled")
            elif (p.start, p.end, p.size_bytes) != (r.start, r.end, r.size_bytes):
                out.append(f"{r.name!r} placed as steps [{p.start}, {p.end}] size "
                           f"{p.size_bytes}, expected [{r.start}, {r.end}] size {r.size_bytes}")
            continue
        s = spills[r.name]
        if r.name in placed:
            out.append(f"{r.name!r} is spilled but also placed whole")
        if s.size_bytes != r.size_bytes:
            out.append(f"spill {r.name!r} size {s.size_bytes} != buffer size {r.size_bytes}")
        if s.store_step != r.start:
            out.append(f"spill {r.name!r} stored after step {s.store_step}, "
                       f"but it is produced at step {r.start}")
        reloads = tuple(s.reload_steps)
        if list(reloads) != sorted(set(reloads)):
            out.append(f"spill {r.name!r} reload steps {reloads} not strictly increasing")
        bad = [u for u in reloads if not r.start < u <= r.end]
        if bad:
            out.append(f"spill {r.name!r} reloads at {bad}, outside ({r.start}, {r.end}]")
        missing = [u for u in r.use_steps if u > r.start and u not in reloads]
        if missing:
            out.append(f"spill {r.name!r} is never reloaded for its uses at steps {missing}")
        for step in sorted({r.start, *reloads}):
            pname = piece_name(r.name, step)
            expected.add(pname)
            p = placed.get(pname)
            if p is None:
                out.append(f"spilled {r.name!r} has no resident piece {pname!r} at step {step}")
            elif (p.start, p.end, p.size_bytes) != (step, step, r.size_bytes):
                out.append(f"piece {pname!r} placed as steps [{p.start}, {p.end}] size "
                           f"{p.size_bytes}, expected [{step}, {step}] size {r.size_bytes}")
        if s.dram_write_bytes != s.size_bytes:
            out.append(f"spill {r.name!r} writes {s.dram_write_bytes} B to DRAM, "
                       f"expected {s.size_bytes}")
        if s.dram_read_bytes != s.size_bytes * len(reloads):
            out.append(f"spill {r.name!r} reads {s.dram_read_bytes} B from DRAM, expected "
                       f"{s.size_bytes} x {len(reloads)} reloads = {s.size_bytes * len(reloads)}")
    for name in spills:
        if name not in by_name:
            out.append(f"spill {name!r} matches no buffer")
    for name in placed:
        if name not in expected:
            out.append(f"placement {name!r} matches no buffer or spill piece")

    # Each placement on its own.
    good: list[Placement] = []
    for p in placed.values():
        if p.size_bytes <= 0 or p.end < p.start:
            out.append(f"placement {p.name!r} has size {p.size_bytes} and steps "
                       f"[{p.start}, {p.end}]")
            continue
        if p.offset_bytes < 0:
            out.append(f"{p.name!r} at negative offset {p.offset_bytes}")
        if p.offset_bytes % a:
            out.append(f"{p.name!r} at offset {p.offset_bytes}, not a multiple of {a}")
        good.append(p)

    # No two buffers live at a common step share a byte (sweep over start steps).
    active: list[Placement] = []
    for p in sorted(good, key=lambda p: (p.start, p.offset_bytes, p.name)):
        active = [q for q in active if q.end >= p.start]
        for q in active:
            if p.offset_bytes < q.top(a) and q.offset_bytes < p.top(a):
                lo, hi = max(p.start, q.start), min(p.end, q.end)
                out.append(f"{q.name!r} [{q.offset_bytes}, {q.top(a)}) and {p.name!r} "
                           f"[{p.offset_bytes}, {p.top(a)}) overlap at steps {lo}..{hi}")
        active.append(p)

    # The numbers the plan claims.
    top = max((p.top(a) for p in good), default=0)
    if plan.arena_bytes != top:
        out.append(f"arena_bytes {plan.arena_bytes} != highest placement top {top}")
    lb = _aligned_lower_bound(ranges, a)
    if plan.lower_bound_bytes != lb:
        out.append(f"lower_bound_bytes {plan.lower_bound_bytes} != {lb} (max live bytes)")
    cap = plan.capacity_bytes
    if cap is not None:
        if plan.fits and max(top, plan.arena_bytes) > cap:
            out.append(f"plan claims to fit in {cap} B but its placements reach {top} B")
        if not plan.fits and not plan.excess_bytes == plan.arena_bytes - cap > 0:
            out.append(f"plan does not fit but excess_bytes {plan.excess_bytes} != arena "
                       f"{plan.arena_bytes} - capacity {cap}")
    elif not plan.fits:
        out.append("plan has no capacity but claims not to fit")
    sums = {
        "spilled_bytes": sum(s.size_bytes for s in plan.spills),
        "dram_write_bytes": sum(s.dram_write_bytes for s in plan.spills),
        "dram_read_bytes": sum(s.dram_read_bytes for s in plan.spills),
    }
    sums["dram_traffic_bytes"] = sums["dram_write_bytes"] + sums["dram_read_bytes"]
    for attr, total in sums.items():
        if getattr(plan, attr) != total:
            out.append(f"{attr} {getattr(plan, attr)} != sum over spills {total}")
    return out


def verify_plan(plan: Plan, ranges: Sequence[LiveRange]) -> None:
    """Raise :class:`PlanError` listing the first violations if ``plan`` is invalid."""
    problems = check_plan(plan, ranges)
    if problems:
        more = len(problems) - MAX_REPORTED
        msg = "; ".join(problems[:MAX_REPORTED]) + (f"; and {more} more" if more > 0 else "")
        raise PlanError(f"invalid SRAM plan: {msg}")
