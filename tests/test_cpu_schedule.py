"""Default CPU schedules (lowering/cpu_schedule.py): each rule on small kernels,
bit-exact against the unscheduled kernels; a zoo net; the arena unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from tvm_memflat import zoo
from tvm_memflat.errors import MemflatError
from tvm_memflat.frontend import load_model
from tvm_memflat.host import host_target, set_threads, threads_in_use
from tvm_memflat.lowering.cpu_schedule import (
    RULE_ATTR,
    RULES,
    TILE_CHANNELS,
    TILE_WIDTHS,
    rule_counts,
    schedule_kernel,
    serial_loops,
)
from tvm_memflat.lowering.pipeline import BuildRecord, lower
from tvm_memflat.lowering.shrink_scratch import lowered_scratch_bytes
from tvm_memflat.targets.build import build
from tvm_memflat.targets.runtime import measure_runtime_storage
from tvm_memflat.tuner.inputs import random_inputs


def _net(op, x_shape=(1, 8, 12, 12), dtype="float32", seed=0):
    """x -> op(x) -> relu, weights as constants."""
    bb, rng = relax.BlockBuilder(), np.random.default_rng(seed)
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(op(x, rng))
            gv = bb.emit_output(bb.emit(relax.op.nn.relu(y)))
        bb.emit_func_output(gv)
    return bb.get()


def _w(rng, shape):
    return relax.const((rng.standard_normal(shape) * 0.3).astype("float32"))


def _conv(cout, k, stride=1, groups=1, pad=None, bias=True):
    def op(x, rng):
        cin = int(x.ty.shape[1])
        y = relax.op.nn.conv2d(x, _w(rng, (cout, cin // groups, k, k)), strides=stride,
                               padding=k // 2 if pad is None else pad, groups=groups)
        return relax.op.add(y, _w(rng, (1, cout, 1, 1))) if bias else y
    return op


KERNELS = {
    "conv1x1": (_conv(16, 1), "conv"),
    "conv3x3": (_conv(16, 3), "conv"),
    "conv3x3_stride2": (_conv(16, 3, stride=2), "conv"),
    "conv5x5_no_bias_no_pad": (_conv(12, 5, pad=0, bias=False), "conv"),
    "grouped": (_conv(16, 3, groups=2), "conv"),
    "depthwise": (_conv(8, 3, groups=8), "window"),
    "depthwise_stride2": (_conv(8, 3, stride=2, groups=8), "window"),
    "max_pool": (lambda x, rng: relax.op.nn.max_pool2d(x, 3, 2, 1), "window"),
    "avg_pool": (lambda x, rng: relax.op.nn.avg_pool2d(x, 2, 2), "window"),
    "mean": (lambda x, rng: relax.op.mean(x, axis=[2, 3], keepdims=True), "window"),
    "dense": (lambda x, rng: relax.op.matmul(relax.op.reshape(x, (1, 8 * 12 * 12)),
                                             _w(rng, (8 * 12 * 12, 24))), "matmul"),
    "elementwise": (lambda x, rng: relax.op.multiply(x, _w(rng, (1, 8, 1, 1))), "injective"),
    # the network input cannot be written in place, so these stay copy kernels; their
    # 12- and 10-column rows are not a multiple of the fused 16-lane vector
    "concat_rows": (lambda x, rng: relax.op.concat([x, x], axis=2), "injective"),
    "slice_columns": (lambda x, rng: relax.op.strided_slice(x, axes=[3], begin=[1], end=[11]),
                      "injective"),
}


def _rules(mod) -> set[str]:
    low = lower(mod, tvm.target.Target("llvm"), in_place_depthwise=False)
    return {str(f.attrs[RULE_ATTR]) for _, f in low.functions_items()
            if isinstance(f, tirx.PrimFunc)}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_rule_is_bit_exact_against_the_unscheduled_kernel(name):
    op, rule = KERNELS[name]
    mod = _net(op)
    assert rule in _rules(mod)
    inputs = random_inputs(mod["main"], 0)
    got_bytes, (got,) = measure_runtime_storage(build(mod, schedule=True), inputs)
    want_bytes, (want,) = measure_runtime_storage(build(mod, schedule=False), inputs)
    # same summation order per element, same target: equal to the bit
    np.testing.assert_array_equal(got, want)
    assert got_bytes == want_bytes


@pytest.mark.parametrize("name, kernel, vector", [
    ("concat_rows", "concatenate", 12), ("slice_columns", "strided_slice", 10),
    ("elementwise", "multiply", 12),
    # 16 columns: a fused vector of 16 lanes never crosses a row
    ("elementwise_16", "multiply", 16)])
def test_injective_kernels_are_vectorised_by_row_where_a_fused_vector_would_cross_rows(
        name, kernel, vector):
    shape = (1, 8, 12, 16) if name == "elementwise_16" else (1, 8, 12, 12)
    low = lower(_net(KERNELS[name.removesuffix("_16")][0], shape), tvm.target.Target("llvm"))
    (func,) = [f for gv, f in low.functions_items()
               if isinstance(f, tirx.PrimFunc) and kernel in gv.name_hint]
    script = func.script()
    assert str(func.attrs[RULE_ATTR]) == "injective"
    assert f"T.vectorized(T.int64({vector}))" in script and script.count("T.vectorized") == 1
    fused = "ax0_ax1_ax2_ax3_fused" in script or "i0_i1_i2_i3_fused" in script
    assert fused == (name == "elementwise_16")


def test_every_rule_is_documented():
    rules = set().union(*(_rules(_net(op)) for op, _ in KERNELS.values()))
    assert rules <= set(RULES) and {r for _, r in KERNELS.values()} <= rules


def test_conv_tile_is_the_only_scratch():
    # 16 x 12 x 12 conv1x1: no padding to stage, so the scratch is the accumulator tile
    mod = _net(_conv(16, 1))
    low = lower(mod, tvm.target.Target("llvm"), in_place_depthwise=False)
    (conv,) = [f for _, f in low.functions_items()
               if isinstance(f, tirx.PrimFunc) and str(f.attrs[RULE_ATTR]) == "conv"]
    assert lowered_scratch_bytes(conv) == 8 * 12 * 4   # 8 channels x 12 columns, fp32
    assert 8 in TILE_CHANNELS and 12 in TILE_WIDTHS


def test_unfit_kernel_falls_back_to_shrink_and_is_exact():
    # conv then mean fused into one kernel has two reductions: no rule, shrink_scratch
    def op(x, rng):
        return relax.op.mean(relax.op.nn.conv2d(x, _w(rng, (4, 8, 1, 1))), axis=[2, 3],
                             keepdims=True)
    mod = _net(op)
    inputs = random_inputs(mod["main"], 1)
    _, (got,) = measure_runtime_storage(build(mod), inputs)
    _, (want,) = measure_runtime_storage(build(mod, schedule=False), inputs)
    np.testing.assert_array_equal(got, want)


def test_schedule_kernel_is_pure_and_idempotent():
    mod = _net(_conv(16, 3))
    low = lower(mod, tvm.target.Target("llvm"), cpu_schedule=False, in_place_depthwise=False)
    funcs = [f for _, f in low.functions_items() if isinstance(f, tirx.PrimFunc)]
    for func in funcs:
        first, second = schedule_kernel(func), schedule_kernel(func)
        tvm.ir.assert_structural_equal(first.func, second.func)
        assert schedule_kernel(first.func).func.same_as(first.func)


def test_serial_loops_removes_parallel():
    mod = _net(_conv(16, 3))
    low = lower(mod, tvm.target.Target("llvm"), in_place_depthwise=False)
    for _, func in low.functions_items():
        if isinstance(func, tirx.PrimFunc):
            assert "T.parallel" not in serial_loops(func).script()


def test_zoo_net_scheduled_matches_unscheduled_with_the_same_arena():
    mod = load_model(zoo.build("mobilenet_v2", resolution=64))
    inputs = random_inputs(mod["main"], 0)
    rec_on, rec_off = BuildRecord(), BuildRecord()
    on_bytes, (on,) = measure_runtime_storage(build(mod, record=rec_on), inputs)
    off_bytes, (off,) = measure_runtime_storage(build(mod, schedule=False, record=rec_off),
                                                inputs)
    np.testing.assert_array_equal(on, off)
    # the arena measured at run time is unchanged; the schedules' scratch is declared
    assert on_bytes == off_bytes
    assert rec_on.plan.arena_bytes == rec_off.plan.arena_bytes
    assert rec_on.schedule.max_scratch_bytes <= 4096
    counts = rule_counts(_lowered(mod))
    assert counts.get("conv", 0) > 10 and counts.get("window", 0) > 10


def _lowered(mod):
    return lower(mod, tvm.target.Target("llvm"))


def test_threads_are_settable_and_checked():
    before = threads_in_use()
    try:
        assert set_threads(1) == 1 and threads_in_use() == 1
        with pytest.raises(MemflatError, match="threads"):
            set_threads(0)
    finally:
        assert set_threads(before) == before and threads_in_use() == before


def test_llvm_means_this_cpu():
    target = host_target()
    assert target.kind.name == "llvm"
