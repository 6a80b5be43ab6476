"""The memoised LegalizeOps gives exactly the module TVM's own LegalizeOps gives."""

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from tvm_memflat.analysis.fusion import fuse
from tvm_memflat.fusion_passes.legalize_cache import cache_stats

from . import graphs


def _scalar_consts():
    """Same shapes, different scalar constants: the memo must tell them apart."""
    def body(bb, x, rng):
        a = bb.emit(relax.op.clip(x, 0.0, 6.0), "a")
        b = bb.emit(relax.op.clip(a, 1.0, 2.0), "b")
        c = bb.emit(relax.op.add(b, relax.const(np.float32(0.5))), "c")
        d = bb.emit(relax.op.add(c, relax.const(np.float32(-0.25))), "d")
        return bb.emit(relax.op.concat([c, d], axis=1), "cat")
    return graphs._net(body)


def _fresh(mod):
    """A new module object with ``mod``'s functions: ``fuse`` keeps its last results by
    module identity, so fusing it legalizes again (through the legalize memo)."""
    return tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)


def test_cached_fusion_is_structurally_equal_to_tvm():
    for make in (graphs.chain, graphs.residual, graphs.branches, _scalar_consts):
        mod = make()
        ref = fuse(mod, cached=False)
        for _ in range(2):  # second round is served from the memo
            got = fuse(_fresh(mod))
            for a, b in ((ref.legalized, got.legalized), (ref.grouped, got.grouped),
                         (ref.kernels, got.kernels)):
                assert tvm_ffi.structural_equal(a, b)
    assert cache_stats()["hits"] > 0


def test_hash_collisions_are_not_memo_hits():
    """On TVM 0.27 these two tensor types have the same structural hash; a memo keyed
    on the hash alone handed one's kernel to the other (found on InceptionV3 after
    MobileNetV2 in one process)."""
    a, b = relax.TensorType((1, 32, 43, 147), "float32"), relax.TensorType((1, 32, 37, 112),
                                                                            "float32")
    assert tvm_ffi.structural_hash(a) == tvm_ffi.structural_hash(b)  # the premise
    for shape in ((1, 32, 43, 147), (1, 32, 37, 112)):
        def body(bb, x, rng):
            return bb.emit(relax.op.add(x, relax.const(np.ones((1, 32, 1, 1), "float32"))), "y")
        mod = graphs._net(body, in_shape=shape)
        got = fuse(mod).legalized
        ref = fuse(mod, cached=False).legalized
        assert tvm_ffi.structural_equal(got, ref)


def _slices_and_joins():
    """Tuple arguments: row slices of one shape at different begins (folded into their
    kernels, so they must not share one), joins of two tensors and of one tensor twice."""
    def body(bb, x, rng):
        s1 = bb.emit(relax.op.strided_slice(x, axes=[2], begin=[0], end=[4]), "s1")
        s2 = bb.emit(relax.op.strided_slice(x, axes=[2], begin=[3], end=[7]), "s2")
        j = bb.emit(relax.op.concat([s1, s2], axis=2), "j")
        k = bb.emit(relax.op.concat([s2, s2], axis=2), "k")
        d = bb.emit(relax.op.add(j, k), "d")
        return bb.emit(relax.op.concat([d, j], axis=1), "cat")
    return graphs._net(body)


def test_tuple_arguments_are_memoised_and_stay_exact():
    mod = _slices_and_joins()
    ref = fuse(mod, cached=False).legalized
    fuse(mod)
    before = cache_stats()
    got = fuse(_fresh(mod)).legalized  # every slice and join again: all six from the memo
    after = cache_stats()
    assert tvm_ffi.structural_equal(got, ref)
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (6, 0)
    kernels = {b.value.args[0].name_hint for b in got["main"].body.blocks[0].bindings
               if isinstance(b.value, relax.Call) and "slice" in b.value.args[0].name_hint}
    assert len(kernels) == 2  # begins 0 and 3: two kernels, not one


def test_a_call_reading_one_tensor_twice_is_not_memoised():
    """Its kernel's arguments cannot be told apart: ``concat((s, s))`` memoised would
    hand ``concat((a, b))`` of the same types the kernel on ``(a, a)``."""
    def body(bb, x, rng):
        s = bb.emit(relax.op.strided_slice(x, axes=[2], begin=[1], end=[5]), "s")
        return bb.emit(relax.op.concat([s, s], axis=2), "k")
    mod = graphs._net(body, in_shape=(1, 3, 9, 7))
    fuse(mod)
    before = cache_stats()
    got = fuse(_fresh(mod)).legalized
    after = cache_stats()
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 1)
    assert tvm_ffi.structural_equal(got, fuse(mod, cached=False).legalized)


def test_function_names_do_not_depend_on_what_the_memo_saw_before():
    """A PrimFunc memoised as ``relu1`` (the second relu of an earlier module) is
    named ``relu`` in a module where it is the first, as TVM names it there (found
    when the suite ran test_fusion first)."""
    def two(bb, x, rng):
        a = bb.emit(relax.op.nn.relu(x), "a")
        b = bb.emit(relax.op.strided_slice(a, axes=[2], begin=[0], end=[3]), "b")
        return bb.emit(relax.op.nn.relu(b), "c")

    def one(bb, x, rng):
        return bb.emit(relax.op.nn.relu(x), "c")

    fuse(graphs._net(two, in_shape=(1, 3, 5, 6)))  # memoises relu (5 rows) and relu1 (3)
    mod = graphs._net(one, in_shape=(1, 3, 3, 6))  # only the 3-row relu: TVM's "relu"
    got, ref = fuse(mod).legalized, fuse(mod, cached=False).legalized
    assert sorted(gv.name_hint for gv in got.get_global_vars()) == \
        sorted(gv.name_hint for gv in ref.get_global_vars())
    assert tvm_ffi.structural_equal(got, ref)


def test_lower_kernels_takes_the_kernels_of_the_module_just_fused():
    """A search profiles a candidate, then predicts its build: both fuse the very same
    module, once. The build's kernels equal those of TVM's passes run afresh."""
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.frontend.canonicalize import canonical_form, marked_canonical
    from tvm_memflat.lowering.pipeline import lower_kernels, lowering_passes

    target = tvm.target.Target("llvm")
    for make in (graphs.branches, graphs.residual):
        mod = marked_canonical(make())
        with target:
            ref = [tvm.transform.Sequential(lowering_passes(target, cpu_schedule=c))(
                canonical_form(mod)) for c in (True, False)]
        profile(mod, with_tvm=False)
        fused = fuse(mod, target)
        assert fuse(mod) is fused  # the profile's own fusion, not a second one
        assert fuse(_fresh(mod)) is not fused  # another module object: fused again
        assert tvm_ffi.structural_equal(lower_kernels(mod, target), ref[0])
        assert tvm_ffi.structural_equal(lower_kernels(mod, target, cpu_schedule=False), ref[1])
