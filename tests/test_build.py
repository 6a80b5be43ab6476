"""tvm_memflat.build: concat in place + one offset-planned arena, exact on llvm."""

import numpy as np
import pytest
import tvm
from tvm import relax, te

from tvm_memflat import FlattenMemoryPeaks
from tvm_memflat.errors import MemflatError
from tvm_memflat.frontend import load_model
from tvm_memflat.lowering.pipeline import BuildRecord, lower
from tvm_memflat.lowering.tir_views import accept_byte_offsets, write_into_slice
from tvm_memflat.planner.check import check_plan
from tvm_memflat.targets.build import build
from tvm_memflat.targets.runtime import measure_runtime_storage
from tvm_memflat.targets.stock import build_stock
from tvm_memflat.tuner.inputs import random_inputs

from . import graphs


def _build_and_compare(mod, seed=0, input="stream"):
    """Build ours and stock; outputs equal; runtime allocation == arena + output.

    ``input="stream"`` (the default here) leaves the network input outside the arena,
    so the hand-computed arenas below count the intermediates alone."""
    record = BuildRecord()
    inputs = random_inputs(mod["main"], seed)
    ours_bytes, ours = measure_runtime_storage(build(mod, record=record, input=input), inputs)
    stock_bytes, ref = measure_runtime_storage(build_stock(mod), inputs)
    for got, want in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(got, want)  # same kernels, same order: bit-exact
    assert ours_bytes == record.plan.arena_bytes + record.schedule.output_bytes
    assert check_plan(record.plan, record.schedule.live_ranges()) == []
    return record, ours_bytes, stock_bytes


def test_write_into_slice_writes_only_its_slice():
    a = te.placeholder((1, 4, 3, 5), "float32", name="A")
    b = te.compute(a.shape, lambda *i: a(*i) * 2.0 + 1.0, name="B")
    func = accept_byte_offsets(write_into_slice(te.create_prim_func([a, b]), [1, 4, 8, 5],
                                                [0, 0, 2, 0]))
    lib = tvm.compile(tvm.IRModule({"main": func}), "llvm")
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 5)).astype("float32")
    out = tvm.runtime.tensor(np.full((1, 4, 8, 5), 7.0, "float32"))
    lib["main"](tvm.runtime.tensor(x), out)
    want = np.full((1, 4, 8, 5), 7.0, "float32")
    want[:, :, 2:5] = x * 2 + 1
    np.testing.assert_array_equal(out.numpy(), want)


def test_write_into_slice_rejects_a_slice_that_does_not_fit():
    a = te.placeholder((1, 4, 3, 5), "float32", name="A")
    func = te.create_prim_func([a, te.compute(a.shape, lambda *i: a(*i), name="B")])
    with pytest.raises(ValueError, match="does not fit"):
        write_into_slice(func, [1, 4, 4, 5], [0, 0, 2, 0])


def test_chain_arena_is_the_hand_computed_lower_bound():
    # graphs.chain: c1/c2/c3 2048 B each, c1+c2 and c2+c3 live together -> 4096.
    record, ours, stock = _build_and_compare(graphs.chain())
    assert record.plan.arena_bytes == record.plan.lower_bound_bytes == 4096
    assert ours == 4096 + 512 and stock == 4096 + 512


def test_residual_arena_keeps_the_skip_tensor():
    record, ours, _ = _build_and_compare(graphs.residual())
    assert record.plan.arena_bytes == 2048 + 4096  # a (skip) and b live together
    assert ours == 6144 + 2048


def test_concat_of_branches_is_written_in_place():
    # Both branch kernels write straight into the output: no intermediate at all.
    record, ours, stock = _build_and_compare(graphs.branches())
    assert record.concats_removed == 1
    assert record.plan.arena_bytes == 0
    assert ours == 3072 and stock == 2048 + 1024 + 3072
    # with the input counted in SRAM it gets the arena's only slot (x, 1024 B, read by
    # both branches), copied there by the first kernel
    record, ours, _ = _build_and_compare(graphs.branches(), input="sram")
    assert record.plan.arena_bytes == 1024 and ours == 1024 + 3072


def _concat_net(nested=False, reuse=False):
    def body(bb, x, rng):
        b1 = graphs.conv(bb, x, rng, 8, k=1, name="b1")
        b2 = graphs.conv(bb, x, rng, 4, name="b2")
        cat = bb.emit(relax.op.concat([b1, b2], axis=1), "cat")
        if nested:
            b3 = graphs.conv(bb, x, rng, 2, name="b3")
            cat = bb.emit(relax.op.concat([b3, cat], axis=1), "outer")
        if reuse:  # b1 is also read by an add: it cannot live inside cat
            cat = bb.emit(relax.op.add(cat, graphs.conv(bb, b1, rng, 12, k=1, name="side")))
        return graphs.conv(bb, cat, rng, 4, name="after")
    return graphs._net(body)


def test_nested_concats_compose_their_slices():
    record, ours, stock = _build_and_compare(_concat_net(nested=True))
    assert record.concats_removed == 2
    # only the (1,14,8,8) outer concat remains as an intermediate
    assert record.plan.arena_bytes == 14 * 64 * 4
    assert ours < stock


def test_concat_with_a_shared_input_is_kept_and_still_exact():
    record, _, _ = _build_and_compare(_concat_net(reuse=True))
    lowered = lower(_concat_net(reuse=True), tvm.target.Target("llvm"))
    kernels = [gv.name_hint for gv, _ in lowered.functions_items()]
    assert any(k.startswith("concatenate") for k in kernels)


def test_tiled_region_is_joined_in_place_and_allocates_less():
    def body(bb, x, rng):
        y = graphs.conv(bb, x, rng, 16, name="c1")
        y = graphs.conv(bb, y, rng, 16, name="c2")
        return bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2), "pool")
    mod = graphs._net(body, in_shape=(1, 3, 64, 64))
    tiled = FlattenMemoryPeaks()(mod)
    _, before, _ = _build_and_compare(mod)
    record, after, stock_after = _build_and_compare(tiled)
    assert record.concats_removed >= 1
    assert after < 0.3 * before and after < stock_after


def test_unknown_target_is_a_clear_error():
    with pytest.raises(MemflatError, match="unknown target"):
        build(graphs.chain(), "vulkan")


def test_squeezenet_builds_exactly_below_stock():
    record, ours, stock = _build_and_compare(load_model("squeezenet1_1"))
    assert record.concats_removed == 8  # every fire module's expand concat
    assert record.plan.arena_bytes == record.plan.lower_bound_bytes
    assert ours < 0.7 * stock
