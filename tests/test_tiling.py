"""Row arithmetic of H- and W-tiles, without any model (the Relax calls below are only
read for their attributes)."""

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from tvm_memflat.transform.tiling import (
    ELEMENTWISE,
    RowNode,
    RowSpan,
    TilingRefused,
    Window,
    input_rows,
    plan_tiles,
    split_rows,
)

CONV3 = Window(kernel=3, stride=1, dilation=1, pad_top=1, pad_bottom=1)


def test_split_rows_covers_exactly():
    assert split_rows(10, 3) == [(0, 2), (3, 5), (6, 9)]
    assert split_rows(3, 8) == [(0, 0), (1, 1), (2, 2)]
    for h in range(1, 30):
        for t in range(1, 9):
            spans = split_rows(h, t)
            assert spans[0][0] == 0 and spans[-1][1] == h - 1
            assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))


def test_elementwise_reads_the_same_rows():
    assert input_rows(ELEMENTWISE, 3, 7, 10) == RowSpan(3, 7, 0, 0)


def test_conv3x3_pad1_halo_and_border_padding():
    w = Window(kernel=3, stride=1, dilation=1, pad_top=1, pad_bottom=1)
    assert input_rows(w, 0, 3, 8) == RowSpan(0, 4, 1, 0)   # top tile keeps top padding
    assert input_rows(w, 4, 7, 8) == RowSpan(3, 7, 0, 1)   # bottom tile keeps bottom padding
    assert input_rows(w, 2, 5, 8) == RowSpan(1, 6, 0, 0)   # interior tile: halo, no padding


def test_strided_dilated_window():
    w = Window(kernel=3, stride=2, dilation=2, pad_top=2, pad_bottom=1)
    # output row o reads rows 2o-2, 2o, 2o+2
    assert input_rows(w, 0, 0, 9) == RowSpan(0, 2, 2, 0)
    assert input_rows(w, 2, 3, 9) == RowSpan(2, 8, 0, 0)
    assert input_rows(w, 4, 4, 9) == RowSpan(6, 8, 0, 2)


@pytest.mark.parametrize("k,s,d,pt,pb,h", [(3, 1, 1, 1, 1, 11), (5, 2, 1, 2, 0, 13),
                                           (2, 2, 1, 0, 0, 8), (3, 3, 2, 0, 3, 17)])
def test_tile_extent_reproduces_the_output_rows(k, s, d, pt, pb, h):
    """A tile's rows plus its padding yield exactly the requested output rows."""
    w = Window(k, s, d, pt, pb)
    h_out = (h + pt + pb - d * (k - 1) - 1) // s + 1
    for lo, hi in split_rows(h_out, 3):
        span = input_rows(w, lo, hi, h)
        produced = (span.rows + span.pad_top + span.pad_bottom - d * (k - 1) - 1) // s + 1
        assert produced == hi - lo + 1
        assert 0 <= span.lo <= span.hi < h


# ---------------------------------------------------------------- tile plans

def _two_convs(h=8):
    """source -> conv3x3 -> conv3x3, all ``h`` rows."""
    return [RowNode(h, ((-1, CONV3),)), RowNode(h, ((0, CONV3),))]


def test_recompute_plan_overlaps_at_the_halo():
    plan = plan_tiles(_two_convs(), 8, 2, "recompute")
    # the sink's tiles are rows 0-3 and 4-7; each reads one row of the other's band
    assert plan.compute == (((0, 4), (0, 3)), ((3, 7), (4, 7)))
    assert plan.keep_from == ((None, None), (None, None))


def test_cache_plan_computes_each_row_once_and_keeps_the_halo():
    plan = plan_tiles(_two_convs(), 8, 2, "cache")
    assert plan.compute == (((0, 4), (0, 3)), ((5, 7), (4, 7)))
    # tile 1 reads rows 3-7 of the first conv: rows 3-4 come from tile 0
    assert plan.keep_from[0] == (3, None)
    spans = plan.reads(_two_convs(), 1, 1)
    assert spans == [RowSpan(3, 7, 0, 1)]


def test_join_reads_both_branches_in_step():
    """source -> a=conv3x3 -> add(a, source): a residual block."""
    nodes = [RowNode(8, ((-1, CONV3),)), RowNode(8, ((0, ELEMENTWISE), (-1, ELEMENTWISE)))]
    plan = plan_tiles(nodes, 8, 4, "cache")
    assert [c[1] for c in plan.compute] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [c[0] for c in plan.compute] == [(0, 1), (2, 3), (4, 5), (6, 7)]


def test_window_entirely_in_padding_is_refused():
    # a 1x1 conv with 2 rows of top padding: output rows 0-1 read padding only
    nodes = [RowNode(6, ((-1, Window(1, 1, 1, 2, 0)),))]
    with pytest.raises(TilingRefused):
        plan_tiles(nodes, 4, 3, "recompute")


def test_bad_halo_mode():
    with pytest.raises(ValueError, match="halo"):
        plan_tiles(_two_convs(), 8, 2, "sometimes")


_windows = st.builds(lambda k, s, d, pt, pb: Window(k, s, d, min(pt, k - 1), min(pb, k - 1)),
                     st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 2]),
                     st.sampled_from([1, 2]), st.integers(0, 4), st.integers(0, 4))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(6, 40), st.lists(_windows, min_size=1, max_size=6), st.integers(1, 9),
       st.data())
def test_plans_cover_every_row_recompute_only_adds(h, windows, tiles, data):
    """Random DAG-shaped plans: the sink's rows are covered exactly once; with cached
    halos each member computes disjoint, contiguous bands (no row twice, never
    more rows than the original computes); recompute never computes fewer bands."""
    nodes, heights = [], [h]
    for w in windows:
        src = data.draw(st.integers(-1, len(nodes) - 1))
        h_in = heights[src + 1]
        h_out = (h_in + w.pad_top + w.pad_bottom - w.dilation * (w.kernel - 1) - 1) // w.stride + 1
        if h_out < 1:
            break
        nodes.append(RowNode(h_out, ((src, w),)))
        heights.append(h_out)
    if not nodes:
        event("skip: the first window is larger than the input")
        assume(False)
    try:
        cache = plan_tiles(nodes, h, tiles, "cache")
        recompute = plan_tiles(nodes, h, tiles, "recompute")
    except TilingRefused:
        event("skip: tiling refused")
        assume(False)
    sink = len(nodes) - 1
    assert [c[sink] for c in cache.compute] == split_rows(nodes[sink].height, tiles)
    for j in range(len(nodes)):
        rows = [r for c in cache.compute if (r := c[j]) is not None]
        if not rows:  # not an ancestor of the sink (regions hold none such)
            continue
        assert all(b[0] == a[1] + 1 for a, b in zip(rows, rows[1:], strict=False))
        assert rows[0][0] == 0 and sum(hi - lo + 1 for lo, hi in rows) <= heights[j + 1]
        assert sum(1 for c in recompute.compute if c[j] is not None) >= len(rows)


def _call(make, shape=(1, 4, 10, 12)):
    from tvm import relax

    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("f", [x]):
        y = bb.emit(make(x))
        bb.emit_func_output(y)
    return bb.get()["f"].body.blocks[0].bindings[0].value


def test_windows_are_read_per_axis():
    import numpy as np
    from tvm import relax

    from tvm_memflat.transform.tiling import H_AXIS, W_AXIS, same_along_h_and_w, window_of

    w17 = relax.const(np.zeros((4, 4, 1, 7), "float32"))
    conv = _call(lambda x: relax.op.nn.conv2d(x, w17, strides=(1, 2), padding=(0, 3, 0, 2),
                                              dilation=(1, 2)))
    assert window_of(conv, H_AXIS)[0] == Window(1, 1, 1, 0, 0)
    assert window_of(conv, W_AXIS)[0] == Window(7, 2, 2, 3, 2)
    pool = _call(lambda x: relax.op.nn.max_pool2d(x, pool_size=(2, 3), strides=(2, 1),
                                                  padding=(1, 0, 0, 1)))
    assert window_of(pool, H_AXIS)[0] == Window(2, 2, 1, 1, 0)
    assert window_of(pool, W_AXIS)[0] == Window(3, 1, 1, 0, 1)
    assert not same_along_h_and_w(conv) and not same_along_h_and_w(pool)
    w33 = relax.const(np.zeros((4, 4, 3, 3), "float32"))
    square = _call(lambda x: relax.op.nn.conv2d(x, w33, padding=1), shape=(1, 4, 9, 9))
    assert same_along_h_and_w(square)


def test_a_concat_along_the_tiled_axis_is_refused():
    from tvm import relax

    from tvm_memflat.transform.tiling import H_AXIS, W_AXIS, row_inputs

    def cat(axis):
        def make(x):
            return relax.op.concat([x, x], axis=axis)
        return make

    along_w = _call(cat(3))
    assert row_inputs(along_w, W_AXIS) is None and len(row_inputs(along_w, H_AXIS)) == 2
    along_h = _call(cat(2))
    assert row_inputs(along_h, H_AXIS) is None and len(row_inputs(along_h, W_AXIS)) == 2
