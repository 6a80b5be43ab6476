"""The buffered target's tiling written in TIR: the llvm build runs the tiled kernels,
bit-exact, and the simulator reads them and agrees with the closed form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from tvm_memflat.errors import ScheduleViolation
from tvm_memflat.hardware.call_tiling import (
    CallTiling,
    TilingError,
    plan_buffered,
    plan_call,
    resident_bytes,
)
from tvm_memflat.host import host_target
from tvm_memflat.lowering.cpu_schedule import schedule_kernel
from tvm_memflat.lowering.pipeline import lower
from tvm_memflat.planner.live_ranges import lowered_schedule
from tvm_memflat.spec import load_spec
from tvm_memflat.targets.build import build
from tvm_memflat.targets.tile_sim import replay_call, replay_kernel
from tvm_memflat.targets.tile_tir import OPERAND_ATTR, _pixel_block, tile_kernel
from tvm_memflat.tuner.inputs import random_inputs

from . import graphs
from .test_call_tiling import SMALL

#: SMALL with vta_like_fused's path: accumulator tiles move to the input buffer
SMALL_FUSED = dataclasses.replace(SMALL, name="small_fused",
                                  onchip_paths=load_spec("vta_like_fused").onchip_paths)

EXAMPLES = 24


def _kernels(mod, spec=SMALL):
    """The kernels as the buffered build starts from them, and the plan on ``spec``."""
    low = lower(mod, host_target(), shrink_scratch=False, cpu_schedule=False,
                in_place_depthwise=False)
    schedule = lowered_schedule(low)
    funcs = {gv.name_hint: f for gv, f in low.functions_items() if isinstance(f, tirx.PrimFunc)}
    return funcs, plan_buffered(schedule, spec)


def _run(func, args):
    exe = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      host_target())
    tensors = [tvm.runtime.tensor(a) for a in args]
    exe["main"](*tensors)
    return tensors[-1].numpy()


def _random_layer(rng):
    """A random layer (conv plain/strided/dilated/grouped/depthwise, pool, dense),
    sometimes with a residual add, on a small input."""
    kind = rng.choice(["conv", "conv", "grouped", "depthwise", "pool", "dense", "residual"])
    cin = int(rng.choice([3, 8, 16, 24]))
    size = int(rng.integers(5, 17))

    def layer(bb, x, r):
        if kind == "dense":
            flat = bb.emit(relax.op.reshape(x, (1, cin * size * size)))
            w = graphs._w(r, (int(rng.integers(8, 40)), cin * size * size))
            return bb.emit(relax.op.nn.relu(relax.op.linear(flat, w)))
        if kind == "pool":
            k, s = int(rng.choice([2, 3])), int(rng.choice([1, 2]))
            op = relax.op.nn.max_pool2d if rng.random() < 0.5 else relax.op.nn.avg_pool2d
            return bb.emit(op(x, pool_size=k, strides=s, padding=int(rng.integers(0, 2))))
        k = int(rng.choice([1, 3, 5]))
        stride, dil = int(rng.choice([1, 2])), int(rng.choice([1, 1, 2]))
        groups = {"grouped": next(g for g in (4, 2, 1) if cin % g == 0),
                  "depthwise": cin}.get(kind, 1)
        cout = cin if kind in ("depthwise", "residual") else \
            groups * int(rng.integers(1, 6)) * (1 if groups > 1 else 8)
        if kind == "residual":
            stride, dil = 1, 1
        pad = (k // 2) * dil
        w = graphs._w(r, (cout, cin // groups, k, k))
        y = bb.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=pad, dilation=dil,
                                       groups=groups))
        b = graphs._w(r, (1, cout, 1, 1))
        y = bb.emit(relax.op.add(y, b))
        if kind == "residual":
            y = bb.emit(relax.op.add(y, x))
        return bb.emit(relax.op.nn.relu(y))

    return kind, graphs._net(layer, (1, cin, size, size), seed=int(rng.integers(1 << 30)))


def test_tiled_kernels_are_bit_exact_and_the_simulator_reads_them():
    """Property: on random layers tiled for a small VTA (so that they must be split),
    every tiled kernel computes the untiled kernel's output bit for bit, and the
    simulator, reading only the tiled TIR, moves exactly the closed form's bytes and
    transfers, and its cycles are within 5 %. A kernel left untiled is counted and
    reported; only elementwise kernels (a reshape) may be."""
    rng = np.random.default_rng(7)
    tiled, untiled, split = 0, [], 0
    for _ in range(EXAMPLES):
        kind, mod = _random_layer(rng)
        funcs, plan = _kernels(mod)
        for call in plan.calls:
            func = funcs[call.kernel]
            done = tile_kernel(func, call)
            if not done.tiled:
                untiled.append((kind, call.kernel, done.reason))
                continue
            tiled += 1
            split += call.reason != "whole call fits"
            args = [np.random.default_rng(1).standard_normal(
                [int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
            np.testing.assert_array_equal(_run(done.func, args), _run(func, args),
                                          err_msg=f"{kind} {call.describe()}")
            got = replay_kernel(done.func, SMALL)
            assert (got.traffic_bytes, got.transfers) == \
                (call.cost.traffic_bytes, call.cost.transfers), (kind, call.describe())
            assert got.compute_cycles == pytest.approx(call.cost.compute_cycles, rel=0.05)
            assert got.cycles == pytest.approx(call.cost.cycles, rel=0.05)
            assert got.high_water_bytes == {m: n for m, n in call.footprint_bytes.items()}
    print(f"tiled {tiled} kernels ({split} split), left {len(untiled)}: {untiled}")
    assert all("reshape" in k for _, k, _ in untiled), untiled
    assert tiled >= EXAMPLES and split >= EXAMPLES // 2


def test_the_simulator_catches_a_hand_broken_tir_schedule():
    funcs, plan = _kernels(graphs._net(
        lambda bb, x, rng: graphs.conv(bb, x, rng, 32), (1, 16, 16, 16)))
    (call,) = plan.calls
    assert call.reason != "whole call fits"
    # Break it: tile the kernel as if the whole output were one tile. Its first copy,
    # the input window (18x18 px x 16 channels x 1 B = 5184 B), overflows the 2 KiB
    # input buffer (and its accumulators, 16x16 px x 32 x 4 B, the 4 KiB one).
    w = call.shape.window
    broken = dataclasses.replace(call, tiling=CallTiling(
        w.out_h, w.out_w, out_block=32, in_block=16, order=call.tiling.order))
    done = tile_kernel(funcs[call.kernel], broken)
    assert done.tiled
    with pytest.raises(ScheduleViolation,
                       match=r"^step 0: input_buffer holds 5184 B > 2048 B \(input tile\)$"):
        replay_kernel(done.func, SMALL, where="step 0: ")
    # the record of the same tiling places the accumulator tile first
    with pytest.raises(ScheduleViolation, match="accumulator_buffer holds 32768 B"):
        replay_call(broken.shape, broken.tiling, SMALL)


def test_the_tiles_are_staged_at_the_loops_the_plan_reloads_them():
    """weights_outer with whole input channels: the weights are loaded once per
    output-channel block, outside the pixel tiles; the input once per pixel tile."""
    funcs, plan = _kernels(graphs._net(
        lambda bb, x, rng: graphs.conv(bb, x, rng, 64, k=1), (1, 16, 16, 16)))
    (call,) = plan.calls
    done = tile_kernel(funcs[call.kernel], call)
    depth: dict = {}

    def walk(stmt, loops):
        if isinstance(stmt, tirx.For):
            walk(stmt.body, loops + [stmt.loop_var.name])
        elif hasattr(stmt, "block"):
            b = stmt.block
            if OPERAND_ATTR in b.annotations:
                depth.setdefault(str(b.annotations[OPERAND_ATTR]), len(loops))
            walk(b.body, loops)
        elif hasattr(stmt, "seq"):
            for s in stmt.seq:
                walk(s, loops)
        elif getattr(stmt, "body", None) is not None:
            walk(stmt.body, loops)

    walk(done.func.body, [])
    t = call.tiling
    got = replay_kernel(done.func, SMALL)
    assert got.traffic_bytes == call.cost.traffic_bytes
    if t.order == "weights_outer" and t.in_block == 16 and t.out_block < 64:
        assert depth["weight"] < depth["input"]


def test_buffered_build_runs_the_tiled_kernels_bit_exact():
    """The vta_like build of a net with a residual, a concatenation and a pool runs
    its tiled kernels; its outputs equal the llvm build's bit for bit; the report
    says which layers were read from TIR."""
    for mod in (graphs.residual(), graphs.branches()):
        result = build(mod, target="vta_like", spec=SMALL)
        inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=5)]
        ours = result.vm()["main"](*inputs).numpy()
        ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
        np.testing.assert_array_equal(ours, ref)
        report = result.report
        assert report.layers_from_tir == len(report.layers)
        assert report.dram_traffic_bytes == result.plan.traffic_bytes
        assert all(k.tiled for k in result.record.kernels.values())


@pytest.mark.parametrize("name", ["squeezenet1_1", "mobilenet_v2"])
def test_int8_buffered_build_is_bit_identical_to_llvm(name):
    """Real int8 (QDQ, integer kernels): the vta_like build runs every GEMM and pool
    tiled, input-channel blocks included, and equals the llvm build bit for bit."""
    from .test_int8 import _loaded

    mod = _loaded(name, 32)
    result = build(mod, target="vta_like")
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=2)]
    ours = result.vm()["main"](*inputs).numpy()
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(ours, ref)
    untiled = {k: v.reason for k, v in result.record.kernels.items() if not v.tiled}
    gemm_kernels = {c.kernel for c in result.plan.calls if c.shape.kind == "gemm"}
    assert not gemm_kernels & set(untiled), untiled
    assert result.report.dram_traffic_bytes == result.plan.traffic_bytes


def _exact_and_replayed(func, done, ours, seed: int):
    """``done`` (``func`` tiled for the call plan ``ours`` on SMALL_FUSED) computes
    ``func``'s output bit for bit on random arguments, and the simulator reads from its
    TIR the closed form's bytes and transfers exactly, its cycles within 5 % and its
    high-water marks. Returns the replay."""
    args = [np.random.default_rng(seed).standard_normal(
        [int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
    np.testing.assert_array_equal(_run(done.func, args), _run(func, args))
    got = replay_kernel(done.func, SMALL_FUSED)
    assert (got.traffic_bytes, got.transfers) == \
        (ours.cost.traffic_bytes, ours.cost.transfers), ours.describe()
    assert got.cycles == pytest.approx(ours.cost.cycles, rel=0.05)
    assert got.high_water_bytes == dict(ours.footprint_bytes)
    return got


def test_tiles_kept_on_chip_are_exact_and_the_simulator_reads_them():
    """Property: the random layers again, on a small VTA with an on-chip path, each
    call's input kept on chip (GEMMs), its output moved over the path, or both, with
    the resident bytes reserved: the tiled kernel stays bit-exact, and the simulator,
    reading the on-chip marks from the TIR, moves exactly the closed form's DRAM bytes
    (no input loads, no output stores) and holds the reservation. Calls whose
    reservation leaves no tile that fits are counted and reported."""
    import types

    rng = np.random.default_rng(11)
    checked, no_fit, untiled = 0, 0, 0
    for _ in range(2 * EXAMPLES):  # a third do not fit the 2 KiB input buffer
        kind, mod = _random_layer(rng)
        funcs, plan = _kernels(mod)
        for call in plan.calls:
            keep_in = call.shape.kind == "gemm" and rng.random() < 0.6
            keep_out = rng.random() < 0.6 or not keep_in
            reserved = int(rng.integers(0, 512))
            if keep_in:  # the whole input is in the reservation
                w = call.shape.window
                reserved += resident_bytes((call.shape.batch, w.channels, w.in_h, w.in_w),
                                           SMALL_FUSED)
            shape = dataclasses.replace(call.shape, input_on_chip=keep_in,
                                        output_on_chip=keep_out, reserved_bytes=reserved)
            try:
                ours = plan_call(types.SimpleNamespace(step=call.step, kernel=call.kernel),
                                 shape, SMALL_FUSED)
            except TilingError:
                no_fit += 1
                continue
            func = funcs[call.kernel]
            done = tile_kernel(func, ours)
            if not done.tiled:
                untiled += 1
                continue
            checked += 1
            got = _exact_and_replayed(func, done, ours, seed=1)
            if keep_out:
                assert ours.cost.output_traffic_bytes == 0
            if keep_in:
                assert ours.cost.input_traffic_bytes == 0 or call.shape.residuals
            plan_replay = replay_call(ours.shape, ours.tiling, SMALL_FUSED)
            assert plan_replay.traffic_bytes == got.traffic_bytes
    print(f"checked {checked} calls kept on chip; {no_fit} did not fit beside their "
          f"reservation, {untiled} untiled")
    assert checked >= EXAMPLES


def _random_elementwise(rng):
    """A random one-operand elementwise layer (a slice, an activation, a requantize-like
    scale and clip) on a small input."""
    kind = rng.choice(["slice", "relu", "scale_clip", "slice"])
    c, h, w = int(rng.integers(1, 9)), int(rng.integers(3, 20)), int(rng.integers(3, 20))

    def layer(bb, x, r):
        if kind == "slice":
            h0, w0 = int(r.integers(0, h - 1)), int(r.integers(0, w - 1))
            h1, w1 = int(r.integers(h0 + 1, h + 1)), int(r.integers(w0 + 1, w + 1))
            return bb.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[h0, w0],
                                                  end=[h1, w1]))
        if kind == "relu":
            return bb.emit(relax.op.nn.relu(x))
        scaled = bb.emit(relax.op.multiply(x, relax.const(np.float32(0.37))))
        return bb.emit(relax.op.clip(relax.op.round(scaled), -8.0, 7.0))

    return kind, graphs._net(layer, (1, c, h, w), seed=int(rng.integers(0, 1000)))


def test_elementwise_calls_are_tiled_exactly_and_replayed():
    """Property: a one-operand elementwise call (a fused region's slices, the int8
    requantize kernels) is written in TIR per tile (its input staged, computed,
    stored; the tiles are boxes of the output), bit-exact, and the simulator reads
    from it exactly the closed form's bytes and transfers (cycles within 5 %) and
    high-water marks, with random on-chip marks and reservations on a spec with a
    path. Calls in one tile and in several are counted and reported."""
    import types

    rng = np.random.default_rng(23)
    checked = several = 0
    for _ in range(3 * EXAMPLES):
        kind, mod = _random_elementwise(rng)
        funcs, plan = _kernels(mod)
        (call,) = [c for c in plan.calls if c.shape.kind == "vector"]
        shape = dataclasses.replace(call.shape, output_on_chip=bool(rng.integers(0, 2)),
                                    reserved_bytes=int(rng.integers(0, 256)))
        ours = plan_call(types.SimpleNamespace(step=call.step, kernel=call.kernel), shape,
                         SMALL_FUSED)
        func = funcs[call.kernel]
        done = tile_kernel(func, ours)
        assert done.tiled, (kind, done.reason)
        several += ours.tiling.rows < shape.window.out_h
        checked += 1
        _exact_and_replayed(func, done, ours, seed=2)
    print(f"checked {checked} elementwise calls, {several} of them in several tiles")
    assert checked >= EXAMPLES and several >= 5


def test_a_fused_spec_keeps_intermediates_on_chip_exactly(tmp_path):
    """On a spec with an on-chip path, a chain's intermediates stay in the input
    buffer: less DRAM traffic than the same spec without the path, outputs still
    equal to the llvm build's. The two later convs share one kernel but not their
    on-chip marks (the last one's output goes to DRAM): the build runs a copy of the
    kernel per tiling, and every layer is simulated from its tiled TIR."""
    mod = graphs.chain()  # 8x8x8 intermediates: 1 KiB each, channels padded to 16
    fused = build(mod, target="vta_like", spec=SMALL_FUSED)
    plain = build(mod, target="vta_like", spec=SMALL)
    assert fused.plan.kept_on_chip and not plain.plan.kept_on_chip
    assert fused.report.dram_traffic_bytes == fused.plan.traffic_bytes
    assert fused.report.activation_traffic_bytes == fused.plan.activation_traffic_bytes
    assert fused.plan.activation_traffic_bytes < plain.plan.activation_traffic_bytes
    assert fused.report.layers_from_tir == len(fused.report.layers)
    assert len({c.kernel for c in fused.plan.calls}) == 4, fused.plan.calls
    ends = ("out:chip", "in+out:chip", "in:chip", "px g8/8")
    assert all(layer.tiling.endswith(end) for layer, end in zip(fused.report.layers, ends,
                                                                 strict=True)), \
        [layer.tiling for layer in fused.report.layers]
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=4)]
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(fused.vm()["main"](*inputs).numpy(), ref)
    # the occupancy plot draws the reservation under the tiles
    from tvm_memflat.reports.occupancy import plot_occupancy

    assert plot_occupancy(fused.plan, tmp_path / "tiles.png").stat().st_size > 0


def test_a_conv_result_a_pool_reads_stays_in_the_accumulator_memory_exactly():
    """conv -> maxpool on vta_like itself (no on-chip path): the conv's result stays in
    the accumulator buffer, where it was accumulated and where the pool's vector
    unit reads it: no store, no load, the whole tensor reserved there. The simulator
    reads that from the tiled TIR; the outputs equal the llvm build's."""
    def conv_pool(bb, x, rng):
        y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(
            x, graphs._w(rng, (32, 16, 3, 3)), padding=1))))
        return bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2))

    mod = graphs._net(conv_pool, (1, 16, 16, 16))
    spec = load_spec("vta_like")
    built = build(mod, target="vta_like", spec=spec)
    (name,) = built.plan.kept_on_chip
    conv, pool = built.plan.calls
    assert conv.shape.output_in_accumulator and pool.shape.input_on_chip
    assert conv.cost.output_traffic_bytes == 0 and pool.cost.input_traffic_bytes == 0
    kept = 32 * 16 * 16 * 4  # int32 accumulators, 32 channels (two 16-channel blocks)
    assert conv.shape.acc_reserved_bytes == pool.shape.acc_reserved_bytes == kept
    assert built.report.layers_from_tir == 2
    assert built.report.dram_traffic_bytes == built.plan.traffic_bytes
    # activations cross from DRAM only as the conv's input and the pool's output
    assert built.plan.activation_traffic_bytes == conv.cost.input_traffic_bytes + 32 * 8 * 8
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=6)]
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(built.vm()["main"](*inputs).numpy(), ref)


def test_a_residual_read_through_a_slice_is_counted_and_tiled():
    """conv + bias + a slice of a larger tensor added (a tile's residual, as a region's
    tiles read it): legalization copies the slice into a buffer of the kernel, as it
    copies a conv's unpadded input. The plan counts it as the residual it is (read
    once per output tile), so the kernel is tiled in TIR, and the simulator reading
    that TIR moves the plan's bytes; the outputs equal the llvm build's."""
    def sliced_residual(bb, x, rng):
        y = bb.emit(relax.op.strided_slice(bb.emit(relax.op.nn.relu(x)), axes=[2, 3],
                                           begin=[0, 0], end=[4, 4]))
        c = bb.emit(relax.op.nn.conv2d(bb.emit(relax.op.nn.relu(y)),
                                       graphs._w(rng, (8, 8, 1, 1))))
        c = bb.emit(relax.op.add(c, relax.const(
            rng.standard_normal((1, 8, 1, 1)).astype("float32"))))
        s = bb.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[0, 0], end=[4, 4]))
        return bb.emit(relax.op.add(c, s))

    mod = graphs._net(sliced_residual, (1, 8, 8, 8))
    built = build(mod, target="vta_like", spec="vta_like")
    conv = next(c for c in built.plan.calls if c.shape.kind == "gemm")
    assert conv.shape.residuals == 1
    assert built.report.layers_from_tir == len(built.report.layers) == 2
    assert built.report.dram_traffic_bytes == built.plan.traffic_bytes
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=7)]
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(built.vm()["main"](*inputs).numpy(), ref)


def test_weights_kept_across_calls_are_read_from_the_tir_and_exact():
    """Three convs on one weight (as a region's tiles call one layer's): the plan keeps
    the weight in the weight buffer, the first call loads it whole and the others
    not at all. The simulator reads that from the tiled TIR (each layer replayed from
    its kernel) and moves the plan's bytes; the outputs equal the llvm build's."""
    def thrice(bb, x, rng):
        w = graphs._w(rng, (16, 16, 3, 3))
        for _ in range(3):
            x = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(x, w, padding=1))))
        return x

    mod = graphs._net(thrice, (1, 16, 16, 16))
    built = build(mod, target="vta_like", spec=SMALL)
    (kept,) = built.plan.weights_kept
    assert kept.calls == 3
    weights = [c.cost.weight_traffic_bytes for c in built.plan.calls if c.shape.kind == "gemm"]
    assert weights == [16 * 16 * 9, 0, 0]
    assert built.report.layers_from_tir == len(built.report.layers)
    assert built.report.dram_traffic_bytes == built.plan.traffic_bytes
    assert all("w:chip" in layer.tiling for layer in built.report.layers)
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=5)]
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(built.vm()["main"](*inputs).numpy(), ref)


@pytest.mark.parametrize("cin,size,cout,k,stride,pad", [
    (64, 56, 64, 3, 1, 1),     # the hand-worked layer (test_call_tiling)
    (3, 224, 64, 3, 2, 0),     # SqueezeNet's first: 111 columns, ragged tiles
    (256, 14, 512, 3, 2, 1),   # input-channel blocks: sums carried across them
    (256, 28, 512, 3, 1, 1),   # channel tiles that do not divide the output (112/512)
    (16, 112, 96, 1, 1, 0),    # MobileNetV2's pointwise: column vectors, ragged rows
    (384, 14, 64, 1, 1, 0),    # pointwise with input-channel blocks
])
def test_vta_like_tiles_of_real_layers_are_exact_and_replayed(cin, size, cout, k, stride, pad):
    """Layers of zoo size on vta_like itself: the tiled kernel, CPU schedule inside its
    tiles and all, computes the untiled kernel's output bit for bit (the reference
    is the untiled kernel with the default CPU schedule, itself bit-exact against the
    unscheduled one: test_cpu_schedule; it is faster to run), and the simulator
    reads from it exactly the closed form's bytes, transfers and buffer high-water
    marks."""
    spec = load_spec("vta_like")
    mod = graphs._net(lambda bb, x, rng: graphs.conv(bb, x, rng, cout, k=k, stride=stride,
                                                     pad=pad), (1, cin, size, size))
    funcs, plan = _kernels(mod, spec)
    (call,) = plan.calls
    assert call.reason != "whole call fits"
    done = tile_kernel(funcs[call.kernel], call)
    assert done.tiled, done.reason
    script = done.func.script()
    # channel vectors (weights staged channels-last), or a pointwise conv's columns
    layout = '"memflat.layout": "oi"' if (k, stride) == (1, 1) else '"memflat.layout": "i..o"'
    assert layout in script and "T.vectorized" in script
    assert "T.parallel" in script   # the tiles (or, of one tile, its channels)
    args = [np.random.default_rng(3).standard_normal([int(d) for d in p.shape])
            .astype(str(p.dtype)) for p in done.func.params]
    np.testing.assert_array_equal(_run(done.func, args),
                                  _run(schedule_kernel(funcs[call.kernel]).func, args))
    got = replay_kernel(done.func, spec)
    assert (got.traffic_bytes, got.transfers) == (call.cost.traffic_bytes, call.cost.transfers)
    assert got.high_water_bytes == dict(call.footprint_bytes)


def test_pixels_blocked_in_registers_share_the_last_tiles_bounds_test():
    """A block of pixels summed side by side divides the tile and the ragged last tile
    (so one bounds test serves the whole block); all of a short loop, else a divisor
    up to 8; 1 where none fits (the rows are tried then)."""
    assert _pixel_block(14, 56) == 14      # whole tiles: all of a short loop
    assert _pixel_block(28, 56) == 7       # a long one: a divisor up to 8
    assert _pixel_block(12, 56) == 4       # the last tile has 8 rows: 4 divides both
    assert _pixel_block(19, 56) == 1       # 19 is prime (and the last tile 18)
    assert _pixel_block(16, 112) == 16
    assert _pixel_block(6, 7) == 1         # a last tile of one pixel


def test_kernels_writing_their_slice_of_a_concatenation_are_tiled_and_counted():
    """A pool and an elementwise kernel (a per-channel scale) that write their slices
    of a concatenation in place (as InceptionV3's do) are tiled in TIR like any
    other: exact, replayed from TIR, and the plan counts the slice each writes, not
    the whole concatenation (the pool was counted at batch 2, the scale at all 24
    channels)."""
    def body(bb, x, rng):
        a = graphs.conv(bb, x, rng, 8, name="a")
        p = bb.emit(relax.op.nn.max_pool2d(x, pool_size=3, strides=1, padding=1), "p")
        s = bb.emit(relax.op.multiply(x, graphs._w(rng, (1, 8, 1, 1))), "s")
        return bb.emit(relax.op.concat([a, p, s], axis=1), "cat")

    mod = graphs._net(body, (1, 8, 12, 12))
    result = build(mod, target="vta_like", spec=SMALL)
    slices = {c.kernel: c for c in result.plan.calls if "_into_" in c.kernel}
    assert any(c.shape.kind == "vector" and c.shape.window.kernel_h == 3
               for c in slices.values()), list(slices)     # the pool, in place
    assert any(c.shape.dims == (1, 8, 12, 12) for c in slices.values()), list(slices)
    for c in slices.values():   # each writes its 8 channels: 1 x 8 x 12 x 12 elements
        assert c.cost.output_traffic_bytes == 8 * 12 * 12 * 1, c.describe()
    assert all(result.record.kernels[k].tiled for k in slices), \
        {k: result.record.kernels[k].reason for k in slices}
    report = result.report
    assert report.layers_from_tir == len(report.layers)
    assert report.dram_traffic_bytes == result.plan.traffic_bytes
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(mod["main"], seed=2)]
    ref = relax.VirtualMachine(build(mod), tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_array_equal(result.vm()["main"](*inputs).numpy(), ref)
