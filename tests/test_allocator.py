"""SRAM offset allocator and plan checker, on hand-made live ranges (no model, no TVM)."""

import dataclasses
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_memflat.errors import MemflatError
from tvm_memflat.planner import allocator
from tvm_memflat.planner.allocator import (
    LiveRange,
    Placement,
    Plan,
    Spill,
    align_up,
    allocate,
    greedy_by_size,
    live_bytes_per_step,
    lower_bound,
    no_reuse_arena,
)
from tvm_memflat.planner.check import PlanError, check_plan, verify_plan

R = LiveRange


def arena_of(offsets, ranges, alignment=1):
    return max(offsets[r.name] + align_up(r.size_bytes, alignment) for r in ranges)


def resident_ranges(plan):
    return [R(p.name, p.start, p.end, p.size_bytes) for p in plan.placements]


# --------------------------------------------------------------------------- helpers


def test_align_up():
    assert [align_up(n, 16) for n in (0, 1, 15, 16, 17, 33)] == [0, 16, 16, 16, 32, 48]
    assert align_up(7, 1) == 7


def test_lower_bound_live_bytes_and_no_reuse():
    ranges = [R("a", 0, 1, 10), R("b", 1, 2, 20), R("c", 2, 2, 5), R("d", 4, 4, 1)]
    assert live_bytes_per_step(ranges) == {0: 10, 1: 30, 2: 25, 3: 0, 4: 1}
    assert lower_bound(ranges) == 30
    assert live_bytes_per_step(ranges, 16) == {0: 16, 1: 48, 2: 48, 3: 0, 4: 16}
    assert lower_bound(ranges, 16) == 48
    assert no_reuse_arena(ranges) == 36
    assert no_reuse_arena(ranges, 16) == 80
    assert lower_bound([]) == 0 and live_bytes_per_step([]) == {}


def test_use_steps_always_hold_start_and_end():
    assert R("a", 2, 7, 1).use_steps == (2, 7)
    assert R("a", 2, 7, 1, uses=(5, 3, 5)).uses == (3, 5)
    assert R("a", 2, 7, 1, uses=(5, 3)).use_steps == (2, 3, 5, 7)
    assert R("a", np.int64(1), np.int64(2), np.int64(3)).start == 1  # numpy ints accepted


@pytest.mark.parametrize("make, match", [
    (lambda: R("a", 3, 2, 10), "end 2 < start 3"),
    (lambda: R("a", 0, 2, 0), "size_bytes must be > 0"),
    (lambda: R("a", 0, 2, -5), "size_bytes must be > 0"),
    (lambda: R("", 0, 2, 5), "non-empty"),
    (lambda: R("a", 1, 2, 5, uses=(0,)), "outside"),
    (lambda: allocate([R("a", 0, 1, 5), R("a", 2, 3, 5)]), "duplicate live range name 'a'"),
    (lambda: allocate([R("a", 0, 1, 5)], alignment_bytes=3), "power of two"),
    (lambda: allocate([R("a", 0, 1, 5)], alignment_bytes=0), "power of two"),
    (lambda: lower_bound([R("a", 0, 1, 5)], alignment_bytes=-4), "power of two"),
    (lambda: greedy_by_size([R("a", 0, 1, 5)], alignment_bytes=12), "power of two"),
    (lambda: greedy_by_size([R("a", 0, 1, 5), R("b", 0, 1, 5)], order=["a"]), "exactly once"),
    (lambda: allocate([R("a", 0, 1, 5)], capacity_bytes=-1), "capacity_bytes"),
])
def test_invalid_input_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------- placement


def test_chain_reuses_the_first_buffers_offset():
    ranges = [R("A", 0, 1, 100), R("B", 1, 2, 50), R("C", 2, 3, 100)]
    plan = allocate(ranges)
    assert plan.arena_bytes == plan.lower_bound_bytes == 150
    assert plan.offsets() == {"A": 0, "B": 100, "C": 0}  # C takes A's bytes once A is dead
    assert plan.overhead_pct == 0.0 and plan.fits and plan.spills == ()
    assert plan.algorithm == "greedy_by_size" and plan.iterations == 0
    assert check_plan(plan, ranges) == []


def test_greedy_by_size_beats_first_fit_in_schedule_order():
    ranges = [R("X", 0, 1, 10), R("Y", 1, 2, 100), R("Z", 2, 3, 100)]
    # In schedule order the small X goes low, Y above it, and Z can't reuse X's 10 bytes.
    in_order = greedy_by_size(ranges, order=["X", "Y", "Z"])
    assert in_order == {"X": 0, "Y": 10, "Z": 110}
    assert arena_of(in_order, ranges) == 210
    # By size, Y and Z stack and X slides into Z's slot (dead before Z is born).
    by_size = greedy_by_size(ranges)
    assert by_size == {"Y": 0, "Z": 100, "X": 100}
    assert arena_of(by_size, ranges) == lower_bound(ranges) == 200


def test_gap_filling_reuses_the_hole_of_a_dead_buffer():
    # In this order a, b, c stack up at step 0; b dies after step 0 and leaves the hole
    # [40, 70) under c, which d fits exactly at step 1. One byte more and it goes on top.
    ranges = [R("a", 0, 1, 40), R("b", 0, 0, 30), R("c", 0, 1, 50), R("d", 1, 1, 30)]
    order = ["a", "b", "c", "d"]
    assert greedy_by_size(ranges, order=order) == {"a": 0, "b": 40, "c": 70, "d": 40}
    ranges[3] = R("d", 1, 1, 31)
    assert greedy_by_size(ranges, order=order) == {"a": 0, "b": 40, "c": 70, "d": 120}


def test_alignment_rounds_sizes_and_offsets():
    ranges = [R("A", 0, 0, 10), R("B", 0, 1, 20), R("C", 1, 1, 5)]
    plan = allocate(ranges, alignment_bytes=16)
    # B (20 -> 32) first at 0; A (10 -> 16) and C (5 -> 16) at 32, never at 20 or 10.
    assert plan.offsets() == {"A": 32, "B": 0, "C": 32}
    assert plan.arena_bytes == plan.lower_bound_bytes == 48
    assert allocate(ranges).arena_bytes == 30  # unaligned: 20 + 10
    assert check_plan(plan, ranges) == []


# Found by brute force over 4-buffer problems: greedy-by-size is 10 bytes over the lower
# bound and one reordering reaches it.
HILL = [R("C", 0, 0, 50), R("D", 0, 1, 30), R("B", 1, 1, 40), R("A", 1, 1, 20)]

# Found by brute force too: greedy-by-size and the most-urgent-first and long-lived-first
# orders are 20 bytes over the lower bound; the timeline and area orders reach it.
TIMELINE = [R("A", 2, 2, 50), R("B", 1, 2, 40), R("C", 0, 1, 20), R("D", 0, 0, 50)]

# Found by brute force over the same space: every starting order is 20 bytes over the
# lower bound; the climb reaches it.
CLIMB = [R("A", 2, 2, 50), R("B", 1, 1, 30), R("C", 0, 1, 30), R("D", 1, 2, 30)]


def test_the_long_lived_first_start_reaches_the_lower_bound_where_greedy_does_not():
    assert lower_bound(HILL) == 90  # step 1: D + B + A
    greedy = greedy_by_size(HILL)
    # C at 0; B at 0 too (C is dead at step 1); D above both at 50; A (20) does not fit
    # in the 10-byte gap [40, 50) between B and D at step 1, so it goes on top at 80.
    assert greedy == {"C": 0, "B": 0, "D": 50, "A": 80}
    assert arena_of(greedy, HILL) == 100
    # D lives over both steps: placed first, at 0, it leaves C its own room above it at
    # step 0 and B + A theirs at step 1, with no climb.
    plan = allocate(HILL, max_iterations=0)
    assert plan.arena_bytes == 90 and plan.offsets()["D"] == 0
    assert check_plan(plan, HILL) == []


def test_the_timeline_start_reaches_the_lower_bound_where_the_first_three_do_not():
    assert lower_bound(TIMELINE) == 90  # step 2: A + B
    greedy = greedy_by_size(TIMELINE)
    # A and D (50 each) at 0, never live together; B above A at 50; C, live with D at
    # step 0 and with B at step 1, finds no gap below 90.
    assert greedy == {"A": 0, "D": 0, "B": 50, "C": 90}
    assert arena_of(greedy, TIMELINE) == 110
    for order in (["A", "B", "D", "C"], ["B", "C", "D", "A"]):  # most urgent, long-lived
        assert arena_of(greedy_by_size(TIMELINE, order=order), TIMELINE) == 110
    # B (urgency 90, first live at step 1) before A (urgency 90, step 2): B at 0, A on
    # it at 40, D under A at 0 (step 0 only), C between D and A at step 1.
    assert greedy_by_size(TIMELINE, order=["B", "A", "D", "C"]) == {
        "B": 0, "A": 40, "D": 0, "C": 50}
    plan = allocate(TIMELINE, max_iterations=0)
    assert plan.arena_bytes == 90 and plan.iterations == 0
    assert check_plan(plan, TIMELINE) == []


def test_hill_climbing_reaches_the_lower_bound_where_no_start_does():
    assert lower_bound(CLIMB) == 90  # step 1: B + C + D
    greedy = greedy_by_size(CLIMB)
    # A at 0; C at 0 (dead before A); D (live with A and C) at 50; B, live with C and
    # D at step 1, finds only the 20-byte gap [30, 50) and goes on top at 80.
    assert greedy == {"A": 0, "C": 0, "D": 50, "B": 80}
    assert arena_of(greedy, CLIMB) == 110
    assert allocate(CLIMB, max_iterations=0).arena_bytes == 110
    plan = allocate(CLIMB)
    assert plan.arena_bytes == 90
    assert plan.algorithm == "greedy_by_size+hill_climb" and 0 < plan.iterations <= 200
    assert check_plan(plan, CLIMB) == []


def test_allocate_is_deterministic_and_keeps_the_global_rng_alone():
    rng = random.Random(7)
    ranges = []
    for i in range(120):
        s = rng.randrange(40)
        ranges.append(R(f"t{i}", s, s + rng.randrange(6), rng.randrange(1, 9000)))
    random.seed(1)
    before = random.random()
    random.seed(1)
    a = allocate(ranges, alignment_bytes=16)
    assert random.random() == before  # no draw from the global generator
    b = allocate(list(reversed(ranges)), alignment_bytes=16)
    assert a == b  # input order does not matter either
    assert check_plan(a, ranges) == []
    assert a.arena_bytes <= arena_of(greedy_by_size(ranges, 16), ranges, 16)


def test_numpy_and_python_fits_agree(monkeypatch):
    """Buffers with many neighbours are fitted with numpy: same offsets as the Python loop."""
    rng = random.Random(3)
    ranges = []
    for i in range(300):  # ~150 buffers live at every step: every fit takes the numpy path
        s = rng.randrange(12)
        ranges.append(R(f"t{i}", s, rng.randrange(s, 12), rng.randrange(1, 4000)))
    plans = {}
    for degree in (0, 10**9):
        monkeypatch.setattr(allocator._Packer, "NUMPY_DEGREE", degree)
        monkeypatch.setattr(allocator._Packer, "NUMPY_TOUCH_DEGREE", degree)
        plans[degree] = (greedy_by_size(ranges, 4),
                         allocate(ranges, alignment_bytes=4, max_iterations=40))
    assert plans[0] == plans[10**9]
    assert check_plan(plans[0][1], ranges) == []


@pytest.mark.parametrize("degree", [0, 10**9])  # numpy and Python fits
def test_incremental_refit_equals_placing_from_scratch(monkeypatch, degree):
    """The climb re-places only the buffers a move can disturb; the result must be what
    greedy placement of the new order from scratch gives (offsets and what each rests on)."""
    monkeypatch.setattr(allocator._Packer, "NUMPY_DEGREE", degree)
    monkeypatch.setattr(allocator._Packer, "NUMPY_TOUCH_DEGREE", degree)
    rng = random.Random(11)
    for _ in range(30):
        n = rng.randrange(2, 60)
        starts = [rng.randrange(20) for _ in range(n)]
        ends = [s + rng.randrange(8) for s in starts]
        packer = allocator._Packer(starts, ends, [rng.randrange(1, 50) for _ in range(n)])
        st = packer.place(rng.sample(range(n), n))
        for _ in range(20):
            q, last = sorted(rng.sample(range(n), 2))
            order = st.order[:]
            if rng.random() < 0.5:
                order[q], order[last] = order[last], order[q]
                moved = (order[q], order[last])
            else:
                order.insert(q, order.pop(last))
                moved = (order[q],)
            new = packer.replace(st, order, q, last, moved, limit=10**9)
            fresh = packer.place(order)
            assert (new.offsets, new.pred, new.pos) == (fresh.offsets, fresh.pred, fresh.pos)
            assert new.off_np.tolist() == new.offsets and new.pos_np.tolist() == new.pos
            st = new


def test_empty_input():
    plan = allocate([], capacity_bytes=0)
    assert plan.arena_bytes == plan.lower_bound_bytes == 0 and plan.fits
    assert plan.overhead_pct == 0.0 and check_plan(plan, []) == []


def test_to_dict_is_json_ready():
    plan = allocate([R("X", 0, 4, 100, uses=(1,)), R("Y", 0, 3, 100), R("P", 2, 2, 100)],
                    capacity_bytes=200)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["arena_bytes"] == plan.arena_bytes and d["fits"] is True
    assert d["spills"][0]["reload_steps"] == [1, 4]
    assert d["dram_traffic_bytes"] == 300 and len(d["placements"]) == len(plan.placements)


# --------------------------------------------------------------------------- spills


BELADY = [
    R("X", 0, 4, 100, uses=(1,)),  # used at 0, 1, 4: idle at 2 and 3, next use 4
    R("Y", 0, 3, 100),  # used at 0 and 3: idle at 1 and 2, next use 3
    R("P", 2, 2, 100),  # the peak: 300 bytes live at step 2
]


def test_spill_the_buffer_whose_next_use_is_furthest():
    plan = allocate(BELADY, capacity_bytes=200)
    assert plan.lower_bound_bytes == 300  # of the original ranges
    assert plan.spills == (Spill("X", 100, store_step=0, reload_steps=(1, 4),
                                 dram_write_bytes=100, dram_read_bytes=200),)
    assert plan.spilled_bytes == 100
    assert (plan.dram_write_bytes, plan.dram_read_bytes, plan.dram_traffic_bytes) == (100, 200, 300)
    assert plan.fits and plan.arena_bytes == 200 and plan.excess_bytes == 0
    assert {p.name: (p.start, p.end) for p in plan.placements} == {
        "Y": (0, 3), "P": (2, 2), "X@0": (0, 0), "X@1": (1, 1), "X@4": (4, 4)}
    assert lower_bound(resident_ranges(plan)) == 200
    assert plan.algorithm.endswith("+belady_spill")
    assert check_plan(plan, BELADY) == []


def test_no_spill_when_it_fits():
    free = allocate(BELADY)
    assert allocate(BELADY, capacity_bytes=300) == dataclasses.replace(free, capacity_bytes=300)
    assert allocate(BELADY, capacity_bytes=10**9).spills == ()


def test_impossible_capacity_reports_the_excess():
    # A alone is bigger than the capacity: I (idle at 1 and 2) is still spilled, which
    # makes the excess the smallest spilling can reach, and the plan says it does not fit.
    ranges = [R("I", 0, 3, 50), R("A", 1, 1, 250)]
    plan = allocate(ranges, capacity_bytes=200)
    assert not plan.fits and plan.arena_bytes == 250 and plan.excess_bytes == 50
    assert plan.spills == (Spill("I", 50, 0, (3,), 50, 50),)
    assert check_plan(plan, ranges) == []


def test_step_needing_more_than_capacity_with_nothing_to_spill():
    ranges = [R("A", 0, 1, 150), R("B", 1, 2, 150)]  # both are used at step 1
    plan = allocate(ranges, capacity_bytes=200)
    assert plan.spills == () and not plan.fits
    assert plan.arena_bytes == 300 and plan.excess_bytes == 100
    assert check_plan(plan, ranges) == []


def test_fragmentation_is_reported_not_hidden():
    # Lower bound 90 fits in 90, but the starts alone pack CLIMB into 110 and nothing is
    # idle.
    plan = allocate(CLIMB, capacity_bytes=90, max_iterations=0)
    assert plan.spills == () and not plan.fits and plan.excess_bytes == 20
    assert check_plan(plan, CLIMB) == []
    assert allocate(CLIMB, capacity_bytes=90).fits  # hill climbing packs it in 90


def test_fragmentation_relieved_by_another_spill():
    ranges = [R("A", 1, 3, 30, uses=(1, 3)), R("B", 3, 4, 40), R("C", 2, 4, 50)]
    # Step 3 needs 120: C (idle there, next use 4) goes. The lower bound is then 80, but
    # greedy alone places A at 90 above C@2 and B; A, idle at step 2, goes too.
    greedy = allocate(ranges, capacity_bytes=90, max_iterations=0)
    assert [s.name for s in greedy.spills] == ["A", "C"] and greedy.fits
    assert greedy.dram_traffic_bytes == 2 * 30 + 2 * 50
    # With hill climbing C's spill is enough.
    climbed = allocate(ranges, capacity_bytes=90)
    assert [s.name for s in climbed.spills] == ["C"] and climbed.fits
    assert climbed.arena_bytes == 90 and climbed.dram_traffic_bytes == 100
    for plan in (greedy, climbed):
        assert check_plan(plan, ranges) == []


def test_piece_name_clash_is_an_error():
    ranges = [R("X", 0, 4, 100, uses=(1,)), R("X@4", 0, 3, 100), R("P", 2, 2, 100)]
    with pytest.raises(ValueError, match="piece name"):
        allocate(ranges, capacity_bytes=200)


# --------------------------------------------------------------------------- checker


CHAIN = [R("A", 0, 1, 100), R("B", 1, 2, 50), R("C", 2, 3, 100)]


def with_placement(plan, name, **changes):
    return dataclasses.replace(plan, placements=tuple(
        dataclasses.replace(p, **changes) if p.name == name else p for p in plan.placements))


def assert_reported(plan, ranges, fragment):
    problems = check_plan(plan, ranges)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(PlanError, match="invalid SRAM plan"):
        verify_plan(plan, ranges)


def test_checker_accepts_valid_plans():
    verify_plan(allocate(CHAIN), CHAIN)
    verify_plan(allocate(BELADY, capacity_bytes=200), BELADY)


def test_checker_reports_overlap():
    broken = with_placement(allocate(CHAIN), "C", offset_bytes=50)  # [50, 150) vs B at step 2
    assert_reported(broken, CHAIN, "'B' [100, 150) and 'C' [50, 150) overlap at steps 2..2")


def test_checker_reports_misaligned_and_negative_offsets():
    ranges = [R("A", 0, 0, 10), R("B", 0, 1, 20), R("C", 1, 1, 5)]
    plan = allocate(ranges, alignment_bytes=16)
    assert_reported(with_placement(plan, "A", offset_bytes=40), ranges,
                    "'A' at offset 40, not a multiple of 16")
    assert_reported(with_placement(plan, "A", offset_bytes=-16), ranges, "negative offset")


def test_checker_reports_missing_duplicate_and_unknown_buffers():
    plan = allocate(CHAIN)
    missing = dataclasses.replace(plan, placements=plan.placements[1:])
    assert_reported(missing, CHAIN, "is neither placed nor spilled")
    twice = dataclasses.replace(plan, placements=plan.placements + plan.placements[:1])
    assert_reported(twice, CHAIN, "placed more than once")
    extra = dataclasses.replace(plan, placements=plan.placements + (Placement("Q", 9, 9, 1, 0),))
    assert_reported(extra, CHAIN, "'Q' matches no buffer")
    assert_reported(with_placement(plan, "B", end=3), CHAIN, "expected [1, 2] size 50")


def test_checker_reports_wrong_arena_and_lower_bound():
    plan = allocate(CHAIN)
    assert_reported(dataclasses.replace(plan, arena_bytes=151), CHAIN,
                    "arena_bytes 151 != highest placement top 150")
    assert_reported(dataclasses.replace(plan, lower_bound_bytes=100), CHAIN,
                    "lower_bound_bytes 100 != 150")


def test_checker_reports_a_plan_that_claims_to_fit_but_does_not():
    plan = allocate(CHAIN)
    lying = dataclasses.replace(plan, capacity_bytes=120, arena_bytes=120)  # fits says True
    assert lying.fits
    assert_reported(lying, CHAIN, "claims to fit in 120 B but its placements reach 150 B")


def test_checker_reports_lying_spill_traffic():
    plan = allocate(BELADY, capacity_bytes=200)
    (spill,) = plan.spills
    reads = dataclasses.replace(plan, spills=(dataclasses.replace(spill, dram_read_bytes=100),))
    assert_reported(reads, BELADY, "reads 100 B from DRAM, expected 100 x 2 reloads = 200")
    writes = dataclasses.replace(plan, spills=(dataclasses.replace(spill, dram_write_bytes=0),))
    assert_reported(writes, BELADY, "writes 0 B to DRAM, expected 100")


def test_checker_reports_broken_spills():
    plan = allocate(BELADY, capacity_bytes=200)
    (spill,) = plan.spills
    no_piece = dataclasses.replace(plan, placements=tuple(
        p for p in plan.placements if p.name != "X@4"))
    assert_reported(no_piece, BELADY, "has no resident piece 'X@4' at step 4")
    skipped = dataclasses.replace(plan, spills=(dataclasses.replace(
        spill, reload_steps=(4,), dram_read_bytes=100),))
    assert_reported(skipped, BELADY, "never reloaded for its uses at steps [1]")
    late = dataclasses.replace(plan, spills=(dataclasses.replace(spill, store_step=1),))
    assert_reported(late, BELADY, "stored after step 1, but it is produced at step 0")


def test_plan_error_is_a_bug_not_bad_input():
    assert not issubclass(PlanError, MemflatError) and issubclass(PlanError, RuntimeError)
    broken = dataclasses.replace(allocate(CHAIN), arena_bytes=0, lower_bound_bytes=0)
    with pytest.raises(PlanError) as info:
        verify_plan(broken, CHAIN)
    assert "arena_bytes 0" in str(info.value) and "lower_bound_bytes 0" in str(info.value)


# --------------------------------------------------------------------------- property


@st.composite
def problems(draw):
    n = draw(st.integers(0, 40))
    ranges = []
    for i in range(n):
        start = draw(st.integers(0, 30))
        end = draw(st.integers(start, 30))
        uses = draw(st.lists(st.integers(start, end), max_size=3))
        ranges.append(R(f"b{i}", start, end, draw(st.integers(1, 5000)), tuple(uses)))
    alignment = draw(st.sampled_from([1, 4, 16, 64]))
    top = max(1, no_reuse_arena(ranges, alignment))
    capacity = draw(st.none() | st.integers(0, top))
    return ranges, alignment, capacity


@settings(max_examples=200, deadline=None)
@given(problems())
def test_random_plans_are_valid(problem):
    ranges, alignment, capacity = problem
    plan = allocate(ranges, alignment_bytes=alignment, capacity_bytes=capacity)
    assert check_plan(plan, ranges) == []
    assert plan == allocate(ranges, alignment_bytes=alignment, capacity_bytes=capacity)
    assert plan.lower_bound_bytes == lower_bound(ranges, alignment)
    assert plan.arena_bytes >= lower_bound(resident_ranges(plan), alignment)
    assert all(p.offset_bytes % alignment == 0 for p in plan.placements)
    if capacity is None:
        assert plan.spills == () and plan.fits
    else:
        assert plan.fits == (plan.arena_bytes <= capacity)
        assert plan.fits or plan.excess_bytes == plan.arena_bytes - capacity > 0
    if not plan.spills:
        assert plan.arena_bytes >= plan.lower_bound_bytes
        if ranges:  # the climb keeps the best order: never worse than greedy-by-size
            greedy = greedy_by_size(ranges, alignment)
            assert plan.arena_bytes <= arena_of(greedy, ranges, alignment)
    if capacity is not None:
        free = allocate(ranges, alignment_bytes=alignment)
        if free.arena_bytes <= capacity:  # spill only when needed
            assert plan == dataclasses.replace(free, capacity_bytes=capacity)


def test_plan_fields():
    # The public record keeps the names the planner's callers rely on.
    names = [f.name for f in dataclasses.fields(Plan)]
    assert names[:7] == ["placements", "spills", "arena_bytes", "lower_bound_bytes",
                         "alignment_bytes", "capacity_bytes", "algorithm"]
