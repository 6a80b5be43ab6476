"""``transform._typed_emit.emit`` builds exactly the module plain ``emit`` builds."""

import numpy as np
import tvm_ffi
from tvm import relax

from tvm_memflat.transform import _typed_emit


def _build(emit, shapes, seed=0):
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            outs = []
            for i, x in enumerate(xs):
                c = x.ty.shape.values[1]
                w = relax.const(rng.standard_normal((8, int(c), 3, 3)).astype("float32"))
                y = emit(bb, relax.op.nn.conv2d(x, w, padding=(1, 0, 1, 2)), f"c{i}")
                y = emit(bb, relax.op.nn.max_pool2d(y, 3, 2, 1), f"p{i}")
                y = emit(bb, relax.op.nn.avg_pool2d(y, 2, 2), f"a{i}")
                outs.append(emit(bb, relax.op.nn.relu(y), f"r{i}"))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get()


def _plain(bb, call, name):
    return bb.emit(call, name)


def test_typed_emit_builds_the_module_plain_emit_builds():
    # the same shape twice (a memo hit), then two shapes whose types hash alike on
    # TVM 0.27 (a hit on the hash alone would give the second the first one's type)
    a, b = relax.TensorType((1, 32, 43, 147), "float32"), relax.TensorType((1, 32, 37, 112),
                                                                            "float32")
    collide = tvm_ffi.structural_hash(a) == tvm_ffi.structural_hash(b)
    shapes = [(1, 3, 16, 20), (1, 3, 16, 20), (1, 32, 43, 147), (1, 32, 37, 112)]
    for _ in range(2):  # the second time, every signature is in the memo
        got = _build(_typed_emit.emit, shapes)
        ref = _build(_plain, shapes)
        assert tvm_ffi.structural_equal(got, ref)
    assert collide  # the premise on TVM 0.27 (tests.test_legalize_cache checks it too)
