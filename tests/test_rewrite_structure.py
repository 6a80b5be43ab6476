"""Rewrites checked by their shape, as TVM tests its own passes: a hand-written Before
module, the rewrite applied to it, and a hand-written Expected module compared with
``tvm.ir.assert_structural_equal``.

Weights are parameters in the TVMScript and bound to the same constants in Before
and Expected (``BindParams``): the rewrites only tile or split convs whose weights
are constants, and a channel split's Expected takes the weight slices it should
hold as parameters of their own, bound to slices of the same arrays.

Structural equality ignores binding names, and in this package they carry meaning
(``tvm_memflat.naming``: channel-group families, fusion marks and the in-place
concatenation read them back), so every test also compares the names, binding by
binding. And each After is run against its Before on a random input, built with
``tvm_memflat.build``.
"""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_memflat.transform.regions import find_regions
from tvm_memflat.transform.split_channels import group_families, split_channels
from tvm_memflat.transform.tile_region import tile_region

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((4, 4, 3, 3)).astype("float32") * 0.3  # c1: 4 -> 4 channels
W2 = RNG.standard_normal((4, 4, 3, 3)).astype("float32") * 0.3  # c2: 4 -> 4 channels
WIDE1 = RNG.standard_normal((8, 4, 3, 3)).astype("float32") * 0.3  # c1: 4 -> 8 channels
WIDE2 = RNG.standard_normal((4, 8, 3, 3)).astype("float32") * 0.3  # c2: 8 -> 4 channels


def _bind(mod, **weights):
    return relax.transform.BindParams("main", weights)(mod)


def _names(mod):
    return [b.var.name for block in mod["main"].body.blocks for b in block.bindings]


def _assert_rewritten_as(after, expected):
    """Same structure (constants compared by value) and the same binding names."""
    tvm.ir.assert_structural_equal(after, expected)
    assert _names(after) == _names(expected)
    assert relax.analysis.check_well_formed(after)


def _assert_same_function(before, after, rtol=1e-5):
    """``after`` computes ``before``'s output on a random input (both built by
    ``tvm_memflat.build`` for llvm, run on the Relax VM)."""
    from tvm_memflat import build

    shape = [int(d) for d in before["main"].params[0].ty.shape.values]
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    out = []
    for mod in (before, after):
        vm = relax.VirtualMachine(build(mod, "llvm"), tvm.cpu())
        out.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    ref, got = out
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def _whole_region(mod):
    """The region from the input ``x`` to the output: every op of the module."""
    x = mod["main"].params[0]
    [region] = [r for r in find_regions(mod["main"]) if r.source.same_as(x)]
    return region


# ----------------------------------------------------------------- H-tiles


@I.ir_module
class ConvReluConv:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 3, 3), "float32"),
             w2: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1, padding=(1, 1))
            r1 = R.nn.relu(c1)
            c2 = R.nn.conv2d(r1, w2, padding=(1, 1))
            R.output(c2)
        return c2


@I.ir_module
class ConvReluConvRecomputed:
    # Two H-tiles of c2's 8 rows, rows a 3x3/pad 1 conv reads: o-1 .. o+1 (clipped).
    # Tile 0, c2 rows 0-3 <- r1 rows 0-4 (row -1 is c2's top padding: pad (1, 0))
    #                     <- c1 rows 0-4 <- x rows 0-5 (row -1 is c1's top padding).
    # Tile 1, c2 rows 4-7 <- r1 rows 3-7 (row 8 is c2's bottom padding: pad (0, 1))
    #                     <- c1 rows 3-7 <- x rows 2-7 (row 8 is c1's bottom padding).
    # r1/c1 rows 3-4 are computed by both tiles (the recomputed halo); W padding is kept.
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 3, 3), "float32"),
             w2: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
        with R.dataflow():
            c2_t0_in = R.strided_slice(x, axes=[2], begin=[0], end=[6])  # x rows 0-5
            c2_t0_0 = R.nn.conv2d(c2_t0_in, w1, padding=(1, 1, 0, 1))  # c1 rows 0-4
            c2_t0_1 = R.nn.relu(c2_t0_0)  # r1 rows 0-4
            c2_t0_2 = R.nn.conv2d(c2_t0_1, w2, padding=(1, 1, 0, 1))  # c2 rows 0-3
            c2_t1_in = R.strided_slice(x, axes=[2], begin=[2], end=[8])  # x rows 2-7
            c2_t1_0 = R.nn.conv2d(c2_t1_in, w1, padding=(0, 1, 1, 1))  # c1 rows 3-7
            c2_t1_1 = R.nn.relu(c2_t1_0)  # r1 rows 3-7
            c2_t1_2 = R.nn.conv2d(c2_t1_1, w2, padding=(0, 1, 1, 1))  # c2 rows 4-7
            c2 = R.concat((c2_t0_2, c2_t1_2), axis=2)
            R.output(c2)
        return c2


@I.ir_module
class ConvReluConvCached:
    # Two H-tiles, halos cached: tile 0 is tile 0 above (x rows 0-5 -> c1/r1 rows 0-4
    # -> c2 rows 0-3). Tile 1 needs r1 rows 3-7 but computes only rows 5-7, which no
    # earlier tile did: c1 rows 5-7 <- x rows 4-7 (4-1 .. 7+1, row 8 is padding: pad
    # (0, 1)). r1 rows 3-4, which tile 0 computed, are carried over as a 2-row slice
    # of tile 0's r1 (rows 3-4 of its rows 0-4) and joined with rows 5-7 in front of c2.
    # c1 keeps nothing (no later tile reads its rows 0-4). No row is computed twice.
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 3, 3), "float32"),
             w2: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
        with R.dataflow():
            c2_t0_in = R.strided_slice(x, axes=[2], begin=[0], end=[6])  # x rows 0-5
            c2_t0_0 = R.nn.conv2d(c2_t0_in, w1, padding=(1, 1, 0, 1))  # c1 rows 0-4
            c2_t0_1 = R.nn.relu(c2_t0_0)  # r1 rows 0-4
            c2_t0_halo1 = R.strided_slice(c2_t0_1, axes=[2], begin=[3], end=[5])  # r1 rows 3-4
            c2_t0_2 = R.nn.conv2d(c2_t0_1, w2, padding=(1, 1, 0, 1))  # c2 rows 0-3
            c2_t1_in = R.strided_slice(x, axes=[2], begin=[4], end=[8])  # x rows 4-7
            c2_t1_0 = R.nn.conv2d(c2_t1_in, w1, padding=(0, 1, 1, 1))  # c1 rows 5-7
            c2_t1_1 = R.nn.relu(c2_t1_0)  # r1 rows 5-7
            # r1 rows 3-7: the BlockBuilder numbers the second "c2_t1_in" of tile 1
            c2_t1_in1 = R.concat((c2_t0_halo1, c2_t1_1), axis=2)
            c2_t1_2 = R.nn.conv2d(c2_t1_in1, w2, padding=(0, 1, 1, 1))  # c2 rows 4-7
            c2 = R.concat((c2_t0_2, c2_t1_2), axis=2)
            R.output(c2)
        return c2


@pytest.mark.parametrize("halo, expected", [("recompute", ConvReluConvRecomputed),
                                            ("cache", ConvReluConvCached)])
def test_two_h_tiles_of_conv_relu_conv(halo, expected):
    before = _bind(ConvReluConv, w1=W1, w2=W2)
    after = tile_region(before, _whole_region(before), 2, halo, 2)
    _assert_rewritten_as(after, _bind(expected, w1=W1, w2=W2))
    _assert_same_function(before, after)


# ----------------------------------------------------------------- W-tiles


@I.ir_module
class StridedW:
    # 1x4x4x9: conv 3x3 stride (1, 2) pad 1 -> 1x4x4x5, relu, max pool 1x2 / (1, 2)
    # with right padding 1 (so 5 columns pool to 3).
    @R.function
    def main(x: R.Tensor((1, 4, 4, 9), "float32"),
             w1: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 4, 3), "float32"):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1, strides=(1, 2), padding=(1, 1))
            r1 = R.nn.relu(c1)
            p = R.nn.max_pool2d(r1, pool_size=(1, 2), strides=(1, 2), padding=(0, 0, 0, 1))
            R.output(p)
        return p


@I.ir_module
class StridedWRecomputed:
    # Two W-tiles of p's 3 columns (split 3 // 2: columns 0 and 1-2). Column o of p
    # reads r1 columns 2o .. 2o+1; column o of c1 reads x columns 2o-1 .. 2o+1.
    # Tile 0, p column 0 <- r1 columns 0-1 <- x columns 0-3 (column -1 is c1's left
    #   padding: pad left 1, right 0).
    # Tile 1, p columns 1-2 <- r1 columns 2-5, clipped to 2-4 (column 5 is p's right
    #   padding: pad right 1) <- x columns 3-8 (2*2-1 .. 2*4+1 = 9 -> column 9 is
    #   c1's right padding: pad left 0, right 1). H padding (1, 1) is kept throughout.
    @R.function
    def main(x: R.Tensor((1, 4, 4, 9), "float32"),
             w1: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 4, 3), "float32"):
        with R.dataflow():
            p_w0_in = R.strided_slice(x, axes=[3], begin=[0], end=[4])  # x columns 0-3
            p_w0_0 = R.nn.conv2d(p_w0_in, w1, strides=(1, 2), padding=(1, 1, 1, 0))  # c1 0-1
            p_w0_1 = R.nn.relu(p_w0_0)  # r1 columns 0-1
            p_w0_2 = R.nn.max_pool2d(p_w0_1, pool_size=(1, 2), strides=(1, 2),
                                     padding=(0, 0, 0, 0))  # p column 0
            p_w1_in = R.strided_slice(x, axes=[3], begin=[3], end=[9])  # x columns 3-8
            p_w1_0 = R.nn.conv2d(p_w1_in, w1, strides=(1, 2), padding=(1, 0, 1, 1))  # c1 2-4
            p_w1_1 = R.nn.relu(p_w1_0)  # r1 columns 2-4
            p_w1_2 = R.nn.max_pool2d(p_w1_1, pool_size=(1, 2), strides=(1, 2),
                                     padding=(0, 0, 0, 1))  # p columns 1-2
            p = R.concat((p_w0_2, p_w1_2), axis=3)
            R.output(p)
        return p


def test_two_w_tiles_of_a_strided_conv_and_a_padded_pool():
    before = _bind(StridedW, w1=W1)
    after = tile_region(before, _whole_region(before), 2, "recompute", 3)
    _assert_rewritten_as(after, _bind(StridedWRecomputed, w1=W1))
    _assert_same_function(before, after)


# ----------------------------------------------------------------- channel split


@I.ir_module
class Widening:
    # c1 widens 4 -> 8 channels, c2 narrows 8 -> 4: a channel group (fan-out c1,
    # per-channel relu, fan-in c2).
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((8, 4, 3, 3), "float32"),
             w2: R.Tensor((4, 8, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1, padding=(1, 1))
            r1 = R.nn.relu(c1)
            c2 = R.nn.conv2d(r1, w2, padding=(1, 1))
            R.output(c2)
        return c2


@I.ir_module
class WideningSplit:
    # Two channel slices of the 8 wide channels: 0-3 and 4-7. Slice g computes c1's
    # output channels of the slice (w1 rows of the slice: w1_c<g> = w1[4g:4g+4]), their
    # relu, and c2's partial sum over them (w2 input channels of the slice: w2_c<g> =
    # w2[:, 4g:4g+4]); the partials are added. Spatial padding is unchanged; only a
    # 1x4x8x8 slice of the 1x8x8x8 tensor is ever live.
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1_c0: R.Tensor((4, 4, 3, 3), "float32"),
             w1_c1: R.Tensor((4, 4, 3, 3), "float32"), w2_c0: R.Tensor((4, 4, 3, 3), "float32"),
             w2_c1: R.Tensor((4, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
        with R.dataflow():
            c2_c0_0 = R.nn.conv2d(x, w1_c0, padding=(1, 1))  # c1 channels 0-3
            c2_c0_1 = R.nn.relu(c2_c0_0)
            c2_c0 = R.nn.conv2d(c2_c0_1, w2_c0, padding=(1, 1))  # c2 from channels 0-3
            c2_c1_0 = R.nn.conv2d(x, w1_c1, padding=(1, 1))  # c1 channels 4-7
            c2_c1_1 = R.nn.relu(c2_c1_0)
            c2_c1 = R.nn.conv2d(c2_c1_1, w2_c1, padding=(1, 1))  # c2 from channels 4-7
            c2_chsum1 = R.add(c2_c0, c2_c1)  # the running sum after slice 1
            c2 = c2_chsum1
            R.output(c2)
        return c2


def test_two_way_channel_split_of_a_widening_pair():
    before = _bind(Widening, w1=WIDE1, w2=WIDE2)
    [family] = group_families(before["main"])
    assert [v.name for v in family.vars] == ["c1", "r1", "c2"]
    after = split_channels(before, family, 2)
    expected = _bind(WideningSplit, w1_c0=WIDE1[0:4], w1_c1=WIDE1[4:8],
                     w2_c0=np.ascontiguousarray(WIDE2[:, 0:4]),
                     w2_c1=np.ascontiguousarray(WIDE2[:, 4:8]))
    _assert_rewritten_as(after, expected)
    _assert_same_function(before, after)
