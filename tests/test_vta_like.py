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
    # Compute: 64 output pixels x 9 taps x ceil(20/16)*ceil(20/16) = 4 blocks of 16x16,
    # one block per cycle -> 2304 cycles (utilisation 400/1024).
    # DRAM at int8: input 20*64 = 1280 B and weights 20*20*9 = 3600 B read (one chunk),
    # output 1280 B written: 6160 B / 8 B per cycle = 770 cycles + 3 transfers * 64
    # cycles latency = 962. Compute-bound: max(2304, 962) + 64 cycles call overhead.
    (layer,) = report.layers
    assert (layer.compute_cycles, layer.dram_cycles, layer.overhead_cycles) == (2304, 962, 64)
    assert layer.cycles == report.total_cycles == 2368
    assert layer.utilisation == 400 / 1024 and layer.passes == 1
    assert (report.dram_read_bytes, report.dram_write_bytes) == (1280 + 3600, 1280)
    assert report.latency_ms == pytest.approx(2368 / 100e6 * 1e3)
    # Memories: input and output live together (2 x 1280); weights 3600 B aligned to
    # 256 -> 3840; accumulators: 64 px x 20 ch x 4 B int32 = 5120 (fits 128 KiB).
    assert report.high_water_bytes == {"input_buffer": 2560, "weight_buffer": 3840,
                                       "accumulator_buffer": 5120, "micro_op_buffer": 0}
    assert report.fits and report.violations == ()
    assert json.loads(json.dumps(report.to_dict()))["total_cycles"] == 2368
    table = report.table()
    assert "2368 cycles" in table and "conv2d" in table and "3840/262144" in table


def test_accumulator_passes_and_restreamed_weights_by_hand(conv_build):
    schedule = conv_build.record.schedule
    # A 4 KiB accumulator holds 5120 B of int32 outputs in 2 passes (2560 B each):
    # the call overhead is paid twice; the weights still fit -> no extra traffic.
    small_acc = _with_memory(VTA, "accumulator_buffer", size_bytes=4096)
    report = simulate(schedule, small_acc)
    (layer,) = report.layers
    assert layer.passes == 2 and layer.cycles == 2304 + 2 * 64
    assert report.high_water_bytes["accumulator_buffer"] == 2560
    assert report.dram_read_bytes == 4880 and report.fits
    # Weights in 1 KiB: 4 chunks of 3600 B, streamed again for the 2nd pass (7200 B);
    # with a 1 B/cycle port the call is DMA-bound:
    # (7200 + 1280 + 1280) B + (8 weight + 2 tensor transfers) * 64 + 2 * 64 overhead.
    slow = dataclasses.replace(_with_memory(small_acc, "weight_buffer", size_bytes=1024),
                               dram=dataclasses.replace(VTA.dram, bandwidth_bytes_per_cycle=1))
    report = simulate(schedule, slow)
    (layer,) = report.layers
    assert report.dram_read_bytes == 7200 + 1280
    assert layer.dram_cycles == 9760 + 10 * 64
    assert layer.cycles == 9760 + 640 + 128


def test_violations_are_reported_not_raised(conv_build):
    tiny = _with_memory(VTA, "input_buffer", size_bytes=2048)
    report = simulate(conv_build.record.schedule, tiny)
    assert not report.fits
    assert any("input_buffer needs 2560 B > 2048 B" in v for v in report.violations)
    assert "violation" in report.table()


def test_vta_like_outputs_are_bit_identical_to_llvm():
    for mod in (graphs.chain(), graphs.branches()):
        result = build(mod, target="vta_like")
        assert isinstance(result, VtaLikeExecutable)
        inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=3)]
        ours = result.vm()["main"](*inputs).numpy()
        ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
        np.testing.assert_array_equal(ours, ref)
        assert result.report.fits and result.report.total_cycles > 0
        # The simulation runs the schedule the build lowered (what lowered() gives).
        assert result.record.schedule.steps == lowered(mod).steps


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
