"""The memoised LegalizeOps gives exactly the module TVM's own LegalizeOps gives."""

import numpy as np
import tvm_ffi
from tvm import relax

from tvm_memflat.analysis.fusion import fuse
from tvm_memflat.analysis.legalize_cache import cache_stats

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
