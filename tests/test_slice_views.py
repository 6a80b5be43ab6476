"""slice_views: kernels read their slice of a tensor that lives on anyway, in place."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, te

from tvm_memflat.host import host_target
from tvm_memflat.lowering.pipeline import (
    BUFFERED_LOWERING,
    BuildRecord,
    finish_lowering,
    lower_kernels,
)
from tvm_memflat.lowering.slice_views import slice_begin, slice_views, viewable_slices
from tvm_memflat.lowering.tir_views import copy_kernel
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.planner.pipeline import compile_llvm, lower_and_plan
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.transform.flatten_memory_peaks import replay
from tvm_memflat.transform.regions import find_regions
from tvm_memflat.transform.rewrite_step import RewriteStep

from . import graphs
from .util import run_llvm

LLVM = tvm.target.Target("llvm")
SHAPE = (1, 16, 32, 8)   # a wide input, thin layers: the input's row slices weigh


def _slice_func(shape, begin, end):
    x = te.placeholder(shape, "float32", name="x")
    y = te.compute([e - b for b, e in zip(begin, end, strict=True)],
                   lambda *i: x(*(a + b for a, b in zip(i, begin, strict=True))), name="y")
    return te.create_prim_func([x, y])


def test_slice_begin_reads_the_box_from_the_tir():
    assert slice_begin(_slice_func((1, 4, 8, 8), (0, 0, 3, 0), (1, 4, 7, 8))) == (0, 0, 3, 0)
    assert slice_begin(_slice_func((1, 4, 8, 8), (0, 1, 0, 2), (1, 3, 8, 8))) == (0, 1, 0, 2)
    assert slice_begin(copy_kernel((2, 3), "float32")) == (0, 0)
    # not a box copy: a transpose, a sum, a scaled copy
    x = te.placeholder((4, 4), "float32", name="x")
    assert slice_begin(te.create_prim_func([x, te.compute((4, 4), lambda i, j: x[j, i])])) \
        is None
    assert slice_begin(te.create_prim_func([x, te.compute((4, 4), lambda i, j: x[i, j] * 2)])) \
        is None
    k = te.reduce_axis((0, 4))
    assert slice_begin(te.create_prim_func(
        [x, te.compute((4,), lambda i: te.sum(x[i, k], axis=k))])) is None


def _tiled(parts, halo, shape=SHAPE):
    mod = graphs.chain(4, shape)
    region = max(find_regions(mod["main"]), key=lambda r: len(r.vars))
    return mod, replay(mod, [RewriteStep.tile(region.key[0], len(region.vars), parts, halo)])


@pytest.mark.parametrize("halo", ["cache", "recompute"])
def test_input_slices_are_read_in_place_and_the_build_shows_the_saving(halo):
    mod, tiled = _tiled(4, halo)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype("float32")
    _, _, ref = build_and_measure(mod, [x], input="sram")
    arenas = {}
    for views in (False, True):
        record = BuildRecord()
        _, plan, _ = lower_and_plan(tiled, LLVM, input_in_arena=True, slice_views=views,
                                    record=record)
        arenas[views] = plan.arena_bytes
        # every tile's input slice but the last (after it the input dies) is read in place
        assert record.slices_viewed == (3 if views else 0)
    assert arenas[True] < arenas[False]
    predicted = predict_device_bytes(tiled, input="sram").total_bytes
    _, alloc, got = build_and_measure(tiled, [x], input="sram")
    assert alloc.device_bytes == predicted
    np.testing.assert_array_equal(got[0], ref[0])


def test_a_streamed_input_keeps_its_patches():
    # with the input streamed its slices are the patches held in SRAM: none is viewed
    _, tiled = _tiled(4, "cache")
    lowered = finish_lowering(lower_kernels(tiled, LLVM), input_in_arena=False)
    assert viewable_slices(lowered) == []


def test_a_slice_is_not_viewed_when_that_would_keep_its_source_longer():
    # a cached halo is read by the next tile, after its source (this tile's rows) died
    _, tiled = _tiled(4, "cache")
    lowered = finish_lowering(lower_kernels(tiled, LLVM), input_in_arena=True,
                              slice_views=False)
    views = viewable_slices(lowered)
    func = lowered["main"]
    params = set(func.params)
    assert views and all(v.source not in params for v in views)
    from tvm_memflat.lowering.concat_in_place import _Uses, flat_bindings
    bindings = flat_bindings(func)
    uses = _Uses.of(bindings, func.body.body)
    for v in views:
        others = [u for u in uses.users[v.source] if u != v.index]
        assert max(others) >= max(v.readers)
    new, count = slice_views(lowered)
    assert count == len(views)
    tvm.ir.assert_structural_equal(slice_views(new)[0], new)  # nothing left to view


def test_buffered_lowering_reads_operands_whole():
    assert BUFFERED_LOWERING["slice_views"] is False


def _sliced_twice():
    """x -> relu r; s1 = r[:, :, 0:6] -> conv a; s2 = r[:, :, 2:8] -> conv b; concat
    (in that order: r lives past a for s2)."""
    bb, rng = relax.BlockBuilder(), np.random.default_rng(3)
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            r = bb.emit(relax.op.nn.relu(x))
            s1 = bb.emit(relax.op.strided_slice(r, [2], [0], [6]))
            a = graphs.conv(bb, s1, rng, 4, name="a")
            s2 = bb.emit(relax.op.strided_slice(r, [2], [2], [8]))
            b = graphs.conv(bb, s2, rng, 4, name="b")
            gv = bb.emit_output(bb.emit(relax.op.concat([a, b], axis=1)))
        bb.emit_func_output(gv)
    return bb.get()


def test_overlapping_slices_of_an_intermediate_are_exact():
    mod = _sliced_twice()
    lowered = finish_lowering(lower_kernels(mod, LLVM), slice_views=False)
    assert len(viewable_slices(lowered)) == 1   # s1: r is read later by s2's copy
    arenas = [lower_and_plan(mod, LLVM, slice_views=v)[1].arena_bytes for v in (False, True)]
    assert arenas[1] <= arenas[0]
    x = np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype("float32")
    _, alloc, got = build_and_measure(mod, [x], input="stream")
    assert alloc.device_bytes == predict_device_bytes(mod, input="stream").total_bytes
    # the same kernels reading the copy instead, for the CPU build() targets: bit-exact
    ex = compile_llvm(mod, host_target(), slice_views=False)
    ref = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got[0], ref)
    np.testing.assert_allclose(got[0], run_llvm(mod, x), rtol=1e-5, atol=1e-5)  # stock TVM


def test_the_ranking_profile_models_the_views_and_the_copied_halos():
    from tvm_memflat.analysis.memory_profile import profile

    _, tiled = _tiled(4, "cache")
    record = BuildRecord()
    lower_and_plan(tiled, LLVM, input_in_arena=True, record=record)
    for stream, viewed in (((), record.slices_viewed), (("input",), 0)):
        p = profile(tiled, with_tvm=False, in_place_concat=True, stream=stream)
        op = {t.name: p.layers[t.producer].op for t in p.tensors if t.producer >= 0}
        slices = [t for t in p.tensors if op.get(t.name, "").startswith("strided_slice")]
        assert sum(t.view_of == "x" for t in slices) == viewed == (3 if not stream else 0)
        # a cached halo is its own tensor, copied into the next tile's join: the join is
        # not live before the tile that reads it computes its new rows
        halos = {t.name: t for t in slices if "halo" in t.name}
        assert halos and all(t.view_of is None for t in halos.values())
        for t in p.tensors:
            row = p.layers[t.producer] if t.producer >= 0 else None
            if row is not None and row.op == "concatenate" and \
                    any(i in halos for i in row.inputs):
                assert t.first > max(halos[i].first for i in row.inputs if i in halos)
