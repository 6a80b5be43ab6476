"""The memoised LegalizeOps gives exactly the module TVM's own LegalizeOps gives."""

import numpy as np
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


def test_cached_fusion_is_structurally_equal_to_tvm():
    for make in (graphs.chain, graphs.residual, graphs.branches, _scalar_consts):
        mod = make()
        ref = fuse(mod, cached=False)
        for _ in range(2):  # second round is served from the memo
            got = fuse(mod)
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
