"""Small Relax graphs with hand-computable memory, shared by the tests."""

from __future__ import annotations

import numpy as np
from tvm import relax


def _w(rng, shape, scale=0.3):
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def _net(builder_fn, in_shape=(1, 4, 8, 8), seed=0):
    bb, rng = relax.BlockBuilder(), np.random.default_rng(seed)
    x = relax.Var("x", relax.TensorType(in_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = builder_fn(bb, x, rng)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.get()


def conv(bb, x, rng, cout, k=3, stride=1, pad=None, relu=True, name=None):
    cin = int(x.ty.shape[1])
    pad = k // 2 if pad is None else pad
    y = bb.emit(relax.op.nn.conv2d(x, _w(rng, (cout, cin, k, k)), strides=stride, padding=pad),
                name or "conv")
    return bb.emit(relax.op.nn.relu(y), (name or "conv") + "_relu") if relu else y


def chain(cout=8, in_shape=(1, 4, 8, 8)):
    """x(1,4,8,8) -> conv3x3 8 -> conv3x3 8 -> conv3x3 8 -> maxpool 2x2.

    (The figures below are for the defaults; ``cout`` and ``in_shape`` make taller or
    heavier chains of the same shape.)

    Tensors: x 1024 B, c1/c2/c3 2048 B each, y (1,8,4,4) 512 B.
    Live per layer: L0 x+c1 = 3072, L1 c1+c2 = 4096, L2 c2+c3 = 4096, L3 c3+y = 2560.
    StaticPlanBlockMemory: c1 -> block A (2048); c2 -> block B (A still live);
    c3 -> reuses A (released after L1); y is the output (unplanned alloc_tensor).
    Planned 4096 + output 512.
    """
    def body(bb, x, rng):
        h = conv(bb, x, rng, cout, name="c1")
        h = conv(bb, h, rng, cout, name="c2")
        h = conv(bb, h, rng, cout, name="c3")
        return bb.emit(relax.op.nn.max_pool2d(h, pool_size=2, strides=2), "pool")
    return _net(body, in_shape)


def residual():
    """x(1,4,8,8) -> a=conv1x1 8 -> b=conv3x3 16 -> y=conv3x3 8 + a.

    Tensors: x 1024, a 2048, b 4096, y 2048 (the add fuses into y's conv).
    Live: L0 x+a = 3072, L1 a+b = 6144, L2 a+b+y = 8192 (a is kept for the add).
    StaticPlanBlockMemory: a -> 2048, b -> 4096 (a live); y output 2048.
    """
    def body(bb, x, rng):
        a = conv(bb, x, rng, 8, k=1, name="a")
        b = conv(bb, a, rng, 16, name="b")
        c = conv(bb, b, rng, 8, relu=False, name="c")
        return bb.emit(relax.op.add(c, a), "y")
    return _net(body)


def branches():
    """x(1,4,8,8) -> b1=conv1x1 8, b2=conv3x3 4 (both from x) -> concat (1,12,8,8).

    Tensors: x 1024, b1 2048, b2 1024, y 3072.
    Live: L0 x+b1 = 3072, L1 x+b1+b2 = 4096, L2 b1+b2+y = 6144.
    StaticPlanBlockMemory: b1 -> 2048, b2 -> 1024 (b1 live); y output 3072.
    """
    def body(bb, x, rng):
        b1 = conv(bb, x, rng, 8, k=1, name="b1")
        b2 = conv(bb, x, rng, 4, name="b2")
        return bb.emit(relax.op.concat([b1, b2], axis=1), "cat")
    return _net(body)


def stem(cout=16, in_shape=(1, 3, 64, 16)):
    """x -> conv3x3 ``cout`` -> maxpool 3x3/2 (pad 1) -> conv3x3 -> conv3x3 stride 2: a
    ResNet stem in small. Tiled with cached halos, each tile's pool input is the conv
    rows it carries from the tile before joined to its own."""
    def body(bb, x, rng):
        h = conv(bb, x, rng, cout, name="c1")
        h = bb.emit(relax.op.nn.max_pool2d(h, pool_size=3, strides=2, padding=1), "pool")
        h = conv(bb, h, rng, cout, name="c2")
        return conv(bb, h, rng, cout, stride=2, name="c3")
    return _net(body, in_shape)
