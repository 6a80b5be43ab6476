"""Spec plans on hand-made schedules: mapping to memories, int8 sizes, traffic, plots."""

import pytest

from tvm_memflat.planner.check import check_plan
from tvm_memflat.planner.live_ranges import ActivationBuffer, KernelStep, LoweredSchedule
from tvm_memflat.planner.sram_plan import plan_for_spec
from tvm_memflat.reports.occupancy import plot_occupancy
from tvm_memflat.reports.planner_report import plan_csv_rows, plan_summary
from tvm_memflat.spec import parse_spec


def _spec(act_bytes=4096, wgt_bytes=1024, acc=True, dram_writable=True):
    memories = [{"name": "act", "size_bytes": act_bytes, "holds": ["activations"],
                 "alignment_bytes": 16},
                {"name": "wgt", "size_bytes": wgt_bytes, "holds": ["weights"]}]
    if acc:
        memories.append({"name": "acc", "size_bytes": 1024, "holds": ["accumulators"],
                         "alignment_bytes": 4})
    return parse_spec({
        "name": "toy", "description": "toy", "source": "test",
        "compute": {"kind": "gemm", "macs_per_cycle": 16, "clock_hz": 1000,
                    "activation_dtype": "int8", "weight_dtype": "int8",
                    "accumulator_dtype": "int32"},
        "dram": {"bandwidth_bytes_per_cycle": 8, "latency_cycles": 0,
                 "writable": dram_writable},
        "memory": memories})


def _schedule():
    """x -> k0 -> a -> k1 -> b -> k2 -> y (fp32 sizes; int8 is a quarter).

    fp32 bytes: x 4000, a 8000, b 2000, y 400. int8: 1000, 2000, 500, 100.
    Weights fp32 800 / 6000 / 0 -> int8 200 / 1500 / 0. k1 has 64 B fp32 scratch.
    """
    steps = (KernelStep(0, "k0", ("x",), ("a",), 800, 10, 0),
             KernelStep(1, "k1", ("a",), ("b",), 6000, 20, 64),
             KernelStep(2, "k2", ("b",), ("y",), 0, 0, 0))
    buffers = (
        ActivationBuffer("x", "input", (1000,), "float32", 4000, 0, 0, "input", (0,)),
        ActivationBuffer("a", "conv_a", (2000,), "float32", 8000, 0, 1, "intermediate",
                         (0, 1)),
        ActivationBuffer("b", "conv_b", (500,), "float32", 2000, 1, 2, "intermediate", (1, 2)),
        ActivationBuffer("y", "output", (100,), "float32", 400, 2, 2, "output", (2,)),
    )
    return LoweredSchedule(steps, buffers)


def test_activations_are_planned_at_the_spec_dtype():
    plan = plan_for_spec(_schedule(), _spec())
    act = plan.activation
    # int8, aligned to 16: x 1008 + a 2000 at step 0; a 2000 + b 512 at step 1 -> 3008
    assert act.plan.lower_bound_bytes == 3008
    assert plan.arena_bytes == 3008 and plan.fits
    assert check_plan(act.plan, []) != []  # the checker needs the ranges it was given ...
    from tvm_memflat.planner.sram_plan import activation_ranges

    assert check_plan(act.plan, activation_ranges(_schedule(), "int8")) == []  # ... and passes


def test_weights_stream_in_chunks_and_traffic_adds_up():
    plan = plan_for_spec(_schedule(), _spec())
    per_step = {t.step: t for t in plan.traffic}
    assert [per_step[s].weight_read_bytes for s in range(3)] == [200, 1500, 0]
    assert [per_step[s].weight_chunks for s in range(3)] == [1, 2, 0]  # 1500 B > 1024 B
    assert per_step[0].activation_read_bytes == 1000    # the input is loaded
    assert per_step[2].activation_write_bytes == 100    # the output is stored
    assert plan.dram_traffic_bytes == 200 + 1500 + 1000 + 100
    wgt = next(m for m in plan.memories if m.memory == "wgt")
    assert wgt.plan.arena_bytes == 1024  # the streamed layer takes the whole buffer


def test_scratch_goes_to_the_accumulators_or_else_to_activations():
    with_acc = plan_for_spec(_schedule(), _spec())
    acc = next(m for m in with_acc.memories if m.memory == "acc")
    assert acc.plan.arena_bytes == 64  # 16 int32 elements
    without = plan_for_spec(_schedule(), _spec(acc=False))
    names = [p.name for p in without.activation.plan.placements]
    assert "k1@1/scratch" in names  # a 2000 + b 512 + scratch 64 at step 1 < step 0's 3008
    assert without.activation.plan.lower_bound_bytes == 3008


def test_over_capacity_spills_and_reports_the_excess():
    plan = plan_for_spec(_schedule(), _spec(act_bytes=2560))
    act = plan.activation
    assert not plan.fits and act.plan.excess_bytes > 0 or act.plan.spills
    summary = plan_summary(plan, _schedule())
    assert ("does NOT fit toy" in summary) == (not plan.fits)
    assert "required" in summary.splitlines()[0]


def _idle_schedule():
    """int8: a (2000 B) is written at step 0 and read again at step 3; b (2000 B) lives
    through steps 1-2 while a is idle. 2560 B hold one of them at a time."""
    steps = (KernelStep(0, "k0", ("x",), ("a",), 0, 1, 0),
             KernelStep(1, "k1", (), ("b",), 0, 1, 0),
             KernelStep(2, "k2", ("b",), (), 0, 1, 0),
             KernelStep(3, "k3", ("a",), ("y",), 0, 1, 0))
    buffers = (
        ActivationBuffer("x", "input", (100,), "float32", 400, 0, 0, "input", (0,)),
        ActivationBuffer("a", "a", (2000,), "float32", 8000, 0, 3, "intermediate", (0, 3)),
        ActivationBuffer("b", "b", (2000,), "float32", 8000, 1, 2, "intermediate", (1, 2)),
        ActivationBuffer("y", "output", (100,), "float32", 400, 3, 3, "output", (3,)))
    return LoweredSchedule(steps, buffers)


def test_spills_go_only_to_writable_memory():
    # Writable DRAM: the planner spills a around b, and that is a fit.
    schedule = _idle_schedule()
    writable = plan_for_spec(schedule, _spec(act_bytes=2560, dram_writable=True))
    assert writable.spilled_bytes > 0 and writable.fits and writable.why == ()
    # A scratchpad machine has nowhere to spill: no spill, no fit, and the reason.
    readonly = plan_for_spec(schedule, _spec(act_bytes=2560, dram_writable=False))
    assert readonly.spilled_bytes == 0 and not readonly.fits
    assert readonly.activation.plan.arena_bytes == 4000  # a + b (2000 B each), no spill
    assert readonly.why and "no memory writable at run time" in readonly.why[0]
    assert "act" in readonly.why[0] and "1440 B over" in readonly.why[0]
    summary = plan_summary(readonly, schedule)
    assert "does NOT fit toy" in summary and "1440 B over" in summary
    assert readonly.to_dict()["fits"] is False and readonly.to_dict()["why"] == list(readonly.why)


def _weight_spec(location, sizes=(4096, 2048), shared=False):
    memories = [{"name": "sram", "size_bytes": sizes[0], "alignment_bytes": 4,
                 "holds": ["activations", "accumulators"] + (["weights"] if shared else [])}]
    if not shared:
        memories.append({"name": "flash", "size_bytes": sizes[1], "holds": ["weights"],
                         "writable": False})
    return parse_spec({
        "name": "mcu", "description": "toy", "source": "test",
        "machine": {"kind": "scratchpad"},
        "compute": {"kind": "cpu_simd", "macs_per_cycle": 2, "clock_hz": 1000,
                    "activation_dtype": "int8", "weight_dtype": "int8",
                    "accumulator_dtype": "int32"},
        "dram": {"bandwidth_bytes_per_cycle": 4, "latency_cycles": 0, "writable": False},
        "memory": memories,
        "weights": {"location": location, "memory": "sram" if shared else "flash"}})


def _weighted_schedule():
    """Two convs of 16 output channels; int8 weights 1200 B and 1600 B."""
    from tvm_memflat.planner.live_ranges import GemmShape

    steps = (KernelStep(0, "k0", ("x",), ("a",), 4800, 10, 0, (GemmShape(100, 75, 16),), 0,
                        1200),
             KernelStep(1, "k1", ("a",), ("y",), 6400, 10, 0, (GemmShape(100, 100, 16),), 0,
                        1600))
    buffers = (
        ActivationBuffer("x", "input", (1000,), "int8", 1000, 0, 0, "input", (0,)),
        ActivationBuffer("a", "a", (1000,), "int8", 1000, 0, 1, "intermediate", (0, 1)),
        ActivationBuffer("y", "output", (100,), "int8", 100, 1, 1, "output", (1,)))
    return LoweredSchedule(steps, buffers)


def test_resident_weights_must_fit_their_memory_together():
    fits = plan_for_spec(_weighted_schedule(), _weight_spec("resident", (4096, 4096)))
    flash = next(m for m in fits.memories if m.memory == "flash")
    assert flash.plan.arena_bytes == 2800 and fits.fits  # both layers, whole run
    assert not fits.activation_view  # int8 tensors: real bytes, not a view
    short = plan_for_spec(_weighted_schedule(), _weight_spec("resident", (4096, 2048)))
    assert not short.fits and short.spilled_bytes == 0
    assert short.why == ("flash (resident weights) needs 2800 B and has 2048 B: 752 B over",)


def test_streamed_weight_chunks_are_chosen_beside_the_activations():
    # Shared 2300 B SRAM: step 0 holds x + a (2000 B), so k0's 1200 B of weights come in
    # chunks of whole output channels (75 B each, 76 aligned) in the 300 B left: 3
    # channels per chunk, 16 channels in 6 chunks.
    plan = plan_for_spec(_weighted_schedule(), _weight_spec("streamed", (2300, 0), True))
    per_step = {t.step: t for t in plan.traffic}
    assert per_step[0].weight_chunks == 6 and per_step[0].weight_read_bytes == 1200
    # step 1: a + y = 1100 B live, 1200 B free, k1's 1600 B at 100 B per channel: 12 per chunk
    assert per_step[1].weight_chunks == 2
    assert plan.fits and plan.arena_bytes <= 2300
    # One channel that cannot fit beside the activations: no fit, and why.
    tight = plan_for_spec(_weighted_schedule(), _weight_spec("streamed", (2040, 0), True))
    assert not tight.fits and "sram" in tight.why[0]


def test_csv_rows_have_percent_of_peak(tmp_path):
    rows = plan_csv_rows(plan_for_spec(_schedule(), _spec()), _schedule())
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert max(r["pct_of_activation_peak"] for r in rows) == 100.0


def test_occupancy_plot(tmp_path):
    plan = plan_for_spec(_schedule(), _spec(act_bytes=2560))
    out = plot_occupancy(plan, tmp_path / "occ.svg")
    text = out.read_text()
    assert "act: arena" in text and "capacity" in text
    with pytest.raises(ValueError, match=".png or .svg"):
        plot_occupancy(plan, tmp_path / "occ.pdf")


# ------------------------------------------------------------------ property: honest fit

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _spec_and_schedule(draw):
    steps_n = draw(st.integers(2, 7))
    steps, buffers = [], []
    for i in range(steps_n):
        w = draw(st.sampled_from([0, 40, 400, 4000]))
        steps.append(KernelStep(i, f"k{i}", (), (), w * 4, 1, draw(st.sampled_from([0, 64])),
                                (), 0, w))
    for j in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, steps_n - 1))
        end = draw(st.integers(start, steps_n - 1))
        uses = tuple(sorted({start, end, draw(st.integers(start, end))}))
        size = draw(st.integers(1, 3000))
        role = "input" if j == 0 else "intermediate"
        buffers.append(ActivationBuffer(f"b{j}", f"b{j}", (size,), "int8", size,
                                        0 if role == "input" else start, end, role,
                                        uses))
    shared = draw(st.booleans())
    memories = [{"name": "sram", "size_bytes": draw(st.sampled_from([512, 2048, 8192])),
                 "holds": ["activations", "accumulators"] + (["weights"] if shared else []),
                 "alignment_bytes": draw(st.sampled_from([1, 4, 16]))}]
    if not shared:
        memories.append({"name": "wmem", "size_bytes": draw(st.sampled_from([1024, 16384])),
                         "holds": ["weights"], "writable": draw(st.booleans())})
    location = draw(st.sampled_from(["resident", "streamed"]))
    if location == "streamed" and not shared:
        memories[1]["writable"] = True
    spec = parse_spec({
        "name": "rand", "description": "random", "source": "test",
        "machine": {"kind": "scratchpad"},
        "compute": {"kind": "cpu_simd", "macs_per_cycle": 2, "clock_hz": 1000,
                    "activation_dtype": "int8", "weight_dtype": "int8",
                    "accumulator_dtype": "int32"},
        "dram": {"bandwidth_bytes_per_cycle": 4, "latency_cycles": 0,
                 "writable": draw(st.booleans())},
        "memory": memories,
        "weights": {"location": location, "memory": "sram" if shared else "wmem"}})
    return spec, LoweredSchedule(tuple(steps), tuple(buffers))


@settings(max_examples=150, deadline=None)
@given(_spec_and_schedule())
def test_property_no_spill_lands_in_read_only_memory(case):
    spec, schedule = case
    plan = plan_for_spec(schedule, spec)
    writable = {m.name: m.writable for m in spec.memories}
    for m in plan.memories:
        if m.plan.spills:  # spilled to DRAM, which must be writable, from a writable memory
            assert spec.dram.writable and writable[m.memory]
        if not writable[m.memory]:  # read-only memory: weights only, never written
            assert all(p.name.endswith("/weights") for p in m.plan.placements)
        if spec.weights_location == "resident" and m.memory == spec.weights_memory:
            assert not m.plan.spills
    # fits exactly when every memory holds what is placed in it, and why says otherwise
    assert plan.fits == all(m.plan.arena_bytes <= m.size_bytes for m in plan.memories)
    assert plan.fits == (plan.why == ())


def test_resident_weights_of_a_tiled_module_are_held_once():
    # The tiles of a region call kernels on the same weights: flash holds them once.
    import tvm

    from tvm_memflat import load_spec
    from tvm_memflat.planner.pipeline import lower_and_plan
    from tvm_memflat.transform.flatten_memory_peaks import flatten_peaks

    from . import graphs

    mod = graphs.chain(8, (1, 4, 32, 8))
    tiled, decisions = flatten_peaks(mod)
    assert decisions
    flash = []
    for m in (mod, tiled):
        _, _, schedule = lower_and_plan(m, tvm.target.Target("llvm"))
        plan = plan_for_spec(schedule, load_spec("mcu_256k"))
        flash.append(next(p for p in plan.memories if p.memory == "flash").plan.arena_bytes)
    assert flash[0] == flash[1] == (4 * 8 * 9 + 2 * 8 * 8 * 9) * 1  # int8 conv weights
