"""Cost models: hand-worked cycle arithmetic, GEMM shapes read from TIR, llvm calibration."""

import dataclasses
import math

import numpy as np
from tvm import relax

from tvm_memflat.hardware.cost_model import (
    SpecCostModel,
    compute_cycles,
    dram_cycles,
    step_cycles,
    utilisation,
)
from tvm_memflat.planner.live_ranges import GemmShape, KernelStep
from tvm_memflat.planner.sram_plan import StepTraffic
from tvm_memflat.spec import load_spec
from tvm_memflat.tuner.cost_model import calibrate_llvm, lowered, nnls_relative

from . import graphs

VTA = load_spec("vta_like")   # 1x16x16 blocks, 256 MACs/cycle, DRAM 8 B/cycle + 64 cycles
MCU = load_spec("mcu_256k")   # no blocks, 2 MACs/cycle

# conv 3x3, 20 -> 20 channels, 8x8 output: M = 64 pixels, K = 20*9, N = 20.
CONV20 = GemmShape(m=64, k=180, n=20, groups=1, taps=9)


def _step(gemms=(), macs=None, vector_ops=0, weight_bytes=0):
    macs = sum(g.macs for g in gemms) if macs is None else macs
    return KernelStep(0, "k", ("x",), ("y",), weight_bytes, macs, 0, tuple(gemms), vector_ops)


def test_conv_utilisation_and_compute_cycles_by_hand():
    # 20 channels need ceil(20/16) = 2 blocks of 16 on each side: 2*2 = 4 blocks of
    # 16x16 = 1024 MAC slots for 20*20 = 400 MACs per pixel and tap.
    assert utilisation([CONV20], VTA.compute) == 400 / 1024
    # 64 pixels * 9 taps * 4 blocks, one block per cycle: 2304 cycles
    # (= 230400 MACs / (256 MACs/cycle * 400/1024)).
    assert CONV20.macs == 230400
    assert compute_cycles(_step([CONV20]), VTA.compute) == 2304
    # Channels that fill the blocks: 32 -> 32 is 4 blocks of 4 full ones.
    assert utilisation([GemmShape(64, 288, 32, taps=9)], VTA.compute) == 1.0


def test_depthwise_is_packed_on_the_block_diagonal():
    # 32 channels, 1 per group: 16 groups per 16x16 block -> 2 blocks per pixel and tap.
    dw = GemmShape(m=64, k=9, n=1, groups=32, taps=9)
    assert compute_cycles(_step([dw]), VTA.compute) == 64 * 9 * 2
    assert utilisation([dw], VTA.compute) == 1 / 16
    # Grouped conv with 16 channels per group: no packing, 4 groups x 1 block.
    grouped = GemmShape(m=64, k=16 * 9, n=16, groups=4, taps=9)
    assert compute_cycles(_step([grouped]), VTA.compute) == 64 * 9 * 4


def test_specs_without_blocks_use_all_their_macs():
    assert utilisation([CONV20], MCU.compute) == 1.0
    assert compute_cycles(_step([CONV20]), MCU.compute) == 230400 // 2
    dw = GemmShape(m=64, k=9, n=1, groups=32, taps=9)
    assert utilisation([dw], MCU.compute) == 1.0
    # MACs without a GEMM shape (hand-made steps) run at utilisation 1.
    assert compute_cycles(_step(macs=1000), VTA.compute) == math.ceil(1000 / 256)


def test_vector_work_runs_one_block_wide_vector_per_cycle():
    # vta_like: 16 elements per cycle; edge_npu_1m (no blocks): macs_per_cycle = 256.
    assert compute_cycles(_step(vector_ops=1000), VTA.compute) == 63
    assert compute_cycles(_step(vector_ops=1000), load_spec("edge_npu_1m").compute) == 4
    assert compute_cycles(_step([CONV20], vector_ops=1280), VTA.compute) == 2304 + 80


def test_dram_cycles_and_the_overlap_rule():
    # 6160 B at 8 B/cycle = 770 cycles, plus 3 transfers * 64 cycles latency = 962.
    assert dram_cycles(6160, 3, VTA.dram) == 962
    assert dram_cycles(1, 0, VTA.dram) == 1
    assert step_cycles(2304, 962, 64) == 2368    # compute-bound: DMA hidden
    assert step_cycles(100, 962, 64) == 1026     # DMA-bound
    # One call with that traffic: input 1280 + weights 3600 read (1 chunk), output
    # 1280 written, 2 non-weight transfers + 1 weight chunk; overhead = DRAM latency.
    model = SpecCostModel(VTA)
    traffic = StepTraffic(0, "k", 3600, 1, 1280, 1280)
    cost = model.step_cost(_step([CONV20], weight_bytes=14400), traffic, transfers=2)
    assert (cost.compute_cycles, cost.dram_cycles, cost.overhead_cycles) == (2304, 962, 64)
    assert cost.cycles == 2368 and cost.passes == 1 and cost.transfers == 3
    assert (cost.dram_read_bytes, cost.dram_write_bytes) == (4880, 1280)
    # A slow port (1 B/cycle) makes the same call DMA-bound: 6160 + 3*64 + 64.
    slow = dataclasses.replace(VTA, dram=dataclasses.replace(VTA.dram,
                                                             bandwidth_bytes_per_cycle=1))
    assert SpecCostModel(slow).step_cost(_step([CONV20]), traffic, 2).cycles == 6160 + 192 + 64


def _mod(body, in_shape):
    return graphs._net(body, in_shape)


def test_gemm_shapes_are_read_from_the_lowered_kernels():
    def body(bb, x, rng):                           # x (1, 8, 8, 8)
        c = bb.emit(relax.op.nn.conv2d(x, graphs._w(rng, (16, 8, 3, 3)), strides=2,
                                       padding=1), "conv")                      # 16x4x4
        d = bb.emit(relax.op.nn.conv2d(c, graphs._w(rng, (16, 1, 3, 3)), padding=1,
                                       groups=16), "dw")
        g = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(
            d, graphs._w(rng, (12, 4, 1, 1)), groups=4), "grouped")))            # 12x4x4
        f = bb.emit(relax.op.reshape(g, (1, 192)))
        return bb.emit(relax.op.linear(f, graphs._w(rng, (10, 192))), "fc")
    steps = [s for s in lowered(_mod(body, (1, 8, 8, 8))).steps if s.macs]
    assert [s.gemms for s in steps] == [
        (GemmShape(m=16, k=8 * 9, n=16, groups=1, taps=9),),    # conv 3x3/2, 8 -> 16
        (GemmShape(m=16, k=9, n=1, groups=16, taps=9),),        # depthwise 3x3
        (GemmShape(m=16, k=4, n=3, groups=4, taps=1),),         # 1x1, 16 -> 12 in 4 groups
        (GemmShape(m=1, k=192, n=10, groups=1, taps=1),),       # dense 192 -> 10
    ]
    assert all(sum(g.macs for g in s.gemms) == s.macs for s in steps)
    assert steps[2].vector_ops == 12 * 16  # the fused relu


def test_spec_estimate_of_a_lowered_chain_adds_up():
    schedule = lowered(graphs.chain())
    est = SpecCostModel("vta_like").estimate(schedule)
    assert est.model == "spec:vta_like" and est.clock_hz == 100_000_000
    assert est.total_cycles == sum(s.cycles for s in est.steps)
    # conv 4 -> 8 with relu: 64 px * 9 taps * 1 block + 512 relu / 16 = 608 cycles.
    assert est.steps[0].compute_cycles == 608 and est.steps[0].utilisation == 32 / 256
    assert est.steps[-1].kernel == "max_pool2d" and est.steps[-1].utilisation == 0.0
    assert est.to_dict()["latency_ms"] == est.latency_ms == 1000 * est.total_cycles / 1e8


def test_nnls_is_non_negative_and_exact_on_consistent_data():
    x = np.array([[1, 2, 1], [3, 1, 1], [5, 7, 1], [2, 2, 1]], float)
    assert np.allclose(nnls_relative(x, x @ np.array([0.5, 0.0, 2.0])), [0.5, 0.0, 2.0])
    coef = nnls_relative(x, x @ np.array([1.0, -1.0, 10.0]))   # best fit wants b < 0
    assert np.all(coef >= 0)


def _heavy_chain():
    return graphs.chain(24, (1, 8, 16, 16))


def test_llvm_calibration_fits_and_ranks_a_heavier_module_slower():
    light, heavy = graphs.chain(), _heavy_chain()
    model = calibrate_llvm(light, repeat=3, seed=0)
    assert all(c >= 0 for c in model.coefficients.values())
    assert sorted(r.kernel for r in model.rows) == sorted({s.kernel for s in lowered(light).steps})
    assert np.isfinite(model.fit_error_pct) and model.fit_error_pct >= 0
    assert all(r.measured_ms > 0 for r in model.rows)
    s_light, s_heavy = lowered(light), lowered(heavy)
    assert sum(s.macs for s in s_heavy.steps) > 30 * sum(s.macs for s in s_light.steps)
    e_light, e_heavy = model.estimate(s_light), model.estimate(s_heavy)
    assert e_light.clock_hz == 1_000_000_000 and e_light.model == "llvm"
    assert e_heavy.total_cycles > 3 * e_light.total_cycles
    assert set(model.to_dict()) >= {"coefficients", "fit_error_pct", "rows"}
    assert len(calibrate_llvm(light, repeat=1, max_kernels=2).rows) == 2
