"""Row arithmetic of H-tiles, without any model."""

import pytest

from tvm_memflat.transform.tiling import ELEMENTWISE, RowSpan, Window, input_rows, split_rows


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
