"""target="vta_like": llvm-exact outputs plus a simulation checked against hand numbers."""

import dataclasses
import json

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat.errors import MemflatError
from tvm_memflat.lowering.pipeline import BuildRecord
from tvm_memflat.spec import load_spec
from tvm_memflat.targets.build import build
from tvm_memflat.targets.vta_like import VtaLikeExecutable, simulate
from tvm_memflat.tuner.cost_model import lowered
from tvm_memflat.tuner.inputs import random_inputs

from . import graphs

VTA = load_spec("vta_like")


def _single_conv():
    """x (1,20,8,8) -> conv 3x3 pad 1, 20 -> 20 channels, no relu (one kernel)."""
    return graphs._net(lambda bb, x, rng: graphs.conv(bb, x, rng, 20, relu=False, name="c"),
                       (1, 20, 8, 8))


@pytest.fixture(scope="module")
def conv_build():
    return build(_single_conv(), target="vta_like", spec="vta_like")


def _with_memory(spec, name, **changes):
    mems = tuple(dataclasses.replace(m, **changes) if m.name == name else m
                 for m in spec.memories)
    return dataclasses.replace(spec, memories=mems)


def test_single_conv_cycles_and_traffic_by_hand(conv_build):
    report = conv_build.report
    # vta_like is a buffered machine: the call streams tiles through the buffers. The
    # whole call fits in one tile, so it is one: input 10x10 px (with the pad) x 32
    # channels (20 padded to the 16-channel vector) = 3200 B of 32 KiB; weights
    # ceil(20/16)^2 = 4 blocks x 256 B x 9 taps = 9216 B; accumulators 64 px x 32 x 4 B
    # = 8192 B.
    # Compute: 64 output pixels x 9 taps x 4 blocks of 16x16, one block per cycle ->
    # 2304 cycles (utilisation 400/1024).
    # DRAM at int8: input 20*64 = 1280 B and weights 20*20*9 = 3600 B read, output
    # 1280 B written: 6160 B / 8 B per cycle = 770 cycles + 3 transfers * 64 cycles
    # latency = 962. No double buffering: load, compute and store run one after the
    # other: 2304 + 962 + 64 cycles call overhead = 3330.
    (layer,) = report.layers
    assert (layer.compute_cycles, layer.dram_cycles, layer.overhead_cycles) == (2304, 962, 64)
    assert layer.cycles == report.total_cycles == 3330
    assert layer.utilisation == 400 / 1024 and layer.passes == 1
    assert (report.dram_read_bytes, report.dram_write_bytes) == (1280 + 3600, 1280)
    assert report.latency_ms == pytest.approx(3330 / 100e6 * 1e3)
    assert report.high_water_bytes == {"input_buffer": 3200, "weight_buffer": 9216,
                                       "accumulator_buffer": 8192, "micro_op_buffer": 0}
    assert report.fits and report.violations == ()
    assert layer.tiling == "gemm 8x8px oc20/20 ic20/20 weights_outer"
    assert json.loads(json.dumps(report.to_dict()))["total_cycles"] == 3330
    table = report.table()
    assert "3330 cycles" in table and "conv2d" in table and "9216/262144" in table


def test_a_small_accumulator_splits_the_call_by_hand(conv_build):
    schedule = conv_build.record.schedule
    # A 4 KiB accumulator holds px x padded output channels x 4 B <= 4096. Splitting
    # the pixels (r*c <= 32: two tiles of 4x8) re-reads a halo row per tile: 1600 B of
    # input instead of 1280. Splitting the output channels into blocks of 16 and 4
    # (64 px x 16 x 4 B = 4096 B) keeps one input tile, loaded once and used by both
    # blocks; each weight block loads once: 1280 + 3600 B read, 1280 B written, the
    # per-layer minimum. 6160 B / 8 = 770 + 5 transfers (1 input, 2 weight, 2 output
    # tiles) x 64 = 1090 DRAM cycles; 2304 + 1090 + 64 = 3458.
    small_acc = _with_memory(VTA, "accumulator_buffer", size_bytes=4096)
    report = simulate(schedule, small_acc)
    (layer,) = report.layers
    assert layer.tiling == "gemm 8x8px oc16/20 ic20/20 weights_outer"
    assert report.dram_read_bytes == 1280 + 3600 and report.dram_write_bytes == 1280
    assert (layer.dram_cycles, layer.cycles) == (1090, 3458)
    assert report.high_water_bytes["accumulator_buffer"] == 4096
    assert report.high_water_bytes["input_buffer"] == 10 * 10 * 32
    # A 1 KiB weight buffer cannot hold one 16x16 block x 9 taps (2304 B): no tiling
    # fits, which is bad input (the CLI exits 2), not a violation.
    with pytest.raises(MemflatError, match="smallest tile .* weight_buffer needs 2304 B"):
        simulate(schedule, _with_memory(VTA, "weight_buffer", size_bytes=1024))


def test_a_small_input_buffer_is_tiled_to_fit(conv_build):
    schedule = conv_build.record.schedule
    tiny = _with_memory(VTA, "input_buffer", size_bytes=2048)
    report = simulate(schedule, tiny)
    assert report.fits and report.high_water_bytes["input_buffer"] <= 2048
    assert report.dram_traffic_bytes >= conv_build.report.dram_traffic_bytes


def test_vta_like_outputs_are_bit_identical_to_llvm():
    for mod in (graphs.chain(), graphs.branches()):
        result = build(mod, target="vta_like")
        assert isinstance(result, VtaLikeExecutable)
        inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=3)]
        ours = result.vm()["main"](*inputs).numpy()
        ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
        np.testing.assert_array_equal(ours, ref)
        assert result.report.fits and result.report.total_cycles > 0
        # The simulation runs the schedule the build lowered: what lowered() gives and
        # `memflat plan` tiles, but for kernel scratch (the buffered build keeps
        # legalization's loops, to tile them; scratch is the tiles, in the buffers).
        def steps(schedule):
            return [dataclasses.replace(s, scratch_bytes=0) for s in schedule.steps]

        assert steps(result.record.schedule) == steps(lowered(mod))
        assert result.report.layers_from_tir == len(result.report.layers)


def test_spec_by_path_or_object_and_clear_errors(tmp_path):
    mod = graphs.chain()
    by_object = build(mod, target="vta_like", spec=load_spec("mcu_256k"), record=BuildRecord())
    by_path = build(mod, target="vta_like", spec=load_spec("mcu_256k").path)
    assert by_object.report.to_dict() == by_path.report.to_dict()
    assert by_object.report.spec == "mcu_256k"
    with pytest.raises(MemflatError, match="unknown target 'vta'") as err:
        build(mod, target="vta")
    assert "\n" not in str(err.value)
    with pytest.raises(MemflatError, match="unknown spec"):
        build(mod, target="vta_like", spec="no_such_spec")
    with pytest.raises(MemflatError, match="vta_like"):
        build(mod, target="llvm", spec="vta_like")


def test_plan_on_a_buffered_spec_is_the_tiling_its_build_runs():
    """``workflows.plan`` lowers a module for a buffered spec as the vta_like build does
    (BUFFERED_LOWERING: no in-place depthwise, no input copy, kernels as legalized), so
    ``memflat plan --spec vta_like`` reports the tiles the build runs, call by call."""
    from tvm_memflat.workflows import plan

    def body(bb, x, rng):
        h = graphs.conv(bb, x, rng, 16, k=1, name="expand")
        w = graphs._w(rng, (16, 1, 3, 3))
        d = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(h, w, padding=1, groups=16)), "dw")
        return graphs.conv(bb, d, rng, 8, k=1, relu=False, name="project")

    mod = graphs._net(body, (1, 8, 16, 16))
    planned = plan(mod, spec="vta_like")
    built = build(mod, target="vta_like", spec="vta_like")
    assert planned.buffered and "buffered machine" in planned.config["pipeline"]

    def tilings(p):
        return [(c.step, c.shape, c.tiling, c.cost) for c in p.calls]

    assert tilings(planned.spec_plan) == tilings(built.plan)
    assert planned.spec_plan.traffic_bytes == built.plan.traffic_bytes
    assert any(c.shape.groups > 1 for c in built.plan.calls)


def test_schedule_is_passed_on_and_what_does_not_apply_is_refused():
    """``build(target="vta_like", schedule=...)``: a fixed spec's kernels get the CPU
    schedule when asked (same outputs); a buffered spec refuses ``False`` (its tiles
    have no unscheduled form); tuning applies to llvm builds only."""
    mod = graphs.chain()
    inputs = [tvm.runtime.tensor(a) for a in random_inputs(mod["main"])]
    outs, scratch = [], []
    for schedule in (None, True):
        record = BuildRecord()
        built = build(mod, target="vta_like", spec="mcu_256k", schedule=schedule,
                      record=record)
        outs.append(relax.VirtualMachine(built.executable, tvm.cpu())["main"](*inputs).numpy())
        scratch.append(record.schedule.max_scratch_bytes)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert scratch[0] < scratch[1]   # the CPU schedules' tiles are scratch: only when asked
    with pytest.raises(MemflatError, match="schedule=False: vta_like is a buffered machine"):
        build(mod, target="vta_like", schedule=False)
    with pytest.raises(MemflatError, match="llvm builds only"):
        build(mod, target="vta_like", tune_trials=4)
