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


def test_a_plan_that_fits_only_by_spilling_to_unwritable_memory_does_not_fit():
    # int8: a (2000 B) is written at step 0 and read again at step 3; b (2000 B) lives
    # through steps 1-2 while a is idle. 2560 B hold one of them: the planner spills a
    # around b. That is a fit only where spills can be written at run time.
    steps = (KernelStep(0, "k0", ("x",), ("a",), 0, 1, 0),
             KernelStep(1, "k1", (), ("b",), 0, 1, 0),
             KernelStep(2, "k2", ("b",), (), 0, 1, 0),
             KernelStep(3, "k3", ("a",), ("y",), 0, 1, 0))
    buffers = (
        ActivationBuffer("x", "input", (100,), "float32", 400, 0, 0, "input", (0,)),
        ActivationBuffer("a", "a", (2000,), "float32", 8000, 0, 3, "intermediate", (0, 3)),
        ActivationBuffer("b", "b", (2000,), "float32", 8000, 1, 2, "intermediate", (1, 2)),
        ActivationBuffer("y", "output", (100,), "float32", 400, 3, 3, "output", (3,)))
    schedule = LoweredSchedule(steps, buffers)
    writable = plan_for_spec(schedule, _spec(act_bytes=2560, dram_writable=True))
    assert writable.spilled_bytes > 0 and writable.fits
    readonly = plan_for_spec(schedule, _spec(act_bytes=2560, dram_writable=False))
    assert readonly.spilled_bytes > 0 and not readonly.fits and readonly.unwritable_spill
    assert "no memory that is writable at run time" in plan_summary(readonly, schedule)
    assert readonly.to_dict()["fits"] is False


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
