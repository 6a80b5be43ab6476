"""Which Relax bindings can be tiled along H, and the exact row arithmetic of a tile.

Pure functions over small records: nothing here rewrites a module.

A *window* describes how an op maps input rows to output rows along H: output
row ``o`` reads input rows ``o*stride - pad_top + dilation*r`` for ``r < kernel``.
Elementwise ops are the window (1, 1, 1, 0, 0). Padding outside the tile is
exact because only the tiles touching the top/bottom border keep that border's
padding; interior tiles read real rows instead (the halo).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

_CONV = "relax.nn.conv2d"
_POOLS = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
_UNARY = {"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu",
          "relax.nn.gelu", "relax.negative", "relax.abs", "relax.nn.leakyrelu",
          "relax.nn.relu6", "relax.exp", "relax.sqrt"}
_BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.maximum",
           "relax.minimum"}


@dataclass(frozen=True)
class Window:
    """How one op maps rows along H (see module docstring)."""

    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_top: int = 0
    pad_bottom: int = 0


ELEMENTWISE = Window()


@dataclass(frozen=True)
class RowSpan:
    """Input rows ``[lo, hi]`` a tile reads, and the padding it still needs."""

    lo: int
    hi: int
    pad_top: int
    pad_bottom: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo + 1


def input_rows(window: Window, out_lo: int, out_hi: int, in_height: int) -> RowSpan:
    """Input rows needed for output rows ``[out_lo, out_hi]``, clipped to the tensor.

    The part of the window outside ``[0, in_height)`` becomes the tile's own
    top/bottom padding, so a border tile pads exactly as the original op does.
    """
    lo = out_lo * window.stride - window.pad_top
    hi = out_hi * window.stride - window.pad_top + window.dilation * (window.kernel - 1)
    return RowSpan(max(lo, 0), min(hi, in_height - 1), max(-lo, 0), max(hi - in_height + 1, 0))


def split_rows(height: int, tiles: int) -> list[tuple[int, int]]:
    """``tiles`` contiguous, near-equal row ranges ``[lo, hi]`` covering ``height`` rows."""
    tiles = max(1, min(tiles, height))
    return [(height * t // tiles, height * (t + 1) // tiles - 1) for t in range(tiles)]


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


def _channel_broadcast(const, out_ndim: int) -> bool:
    """A constant that broadcasts over H and W (bias, scale, scalar bound)."""
    shape = _ints(const.ty.shape.values)
    pad = [1] * (out_ndim - len(shape)) + shape
    return len(pad) == out_ndim == 4 and pad[2] == 1 and pad[3] == 1


def window_of(call) -> tuple[Window, int] | None:
    """The H window of a tileable call and the index of its data argument, else None.

    Tileable: NCHW conv2d (any kernel, stride, dilation, padding, groups), NCHW
    max pooling, avg pooling without ceil mode, unary elementwise ops, and binary
    elementwise ops whose other operand is a constant broadcast over H and W.
    Anything else is refused, never approximated.
    """
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return None
    name, attrs = call.op.name, call.attrs
    ty = call.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4:
        return None
    if name == _CONV:
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        if not _is_const(call.args[1]):
            return None
        kh = int(call.args[1].ty.shape.values[2])
        pad = _ints(attrs.padding)
        return Window(kh, int(attrs.strides[0]), int(attrs.dilation[0]), pad[0], pad[2]), 0
    if name in _POOLS:
        if attrs.layout != "NCHW" or attrs.out_layout != "NCHW":
            return None
        # ceil_mode only adds a partial last window. A tile's rows span exactly
        # (rows_out - 1) * stride + kernel, so ceil adds nothing inside it, and the
        # overhang of the bottom tile is explicit padding: -inf for max pooling.
        # For average pooling the divisor of that window would change: refuse.
        if bool(attrs.ceil_mode) and name != "relax.nn.max_pool2d":
            return None
        pad = _ints(attrs.padding)
        return Window(int(attrs.pool_size[0]), int(attrs.strides[0]), int(attrs.dilation[0]),
                      pad[0], pad[2]), 0
    if name in _UNARY and len(call.args) >= 1 and not _is_const(call.args[0]):
        if all(_is_const(a) or not isinstance(a, relax.Expr) for a in call.args[1:]):
            return ELEMENTWISE, 0
        return None
    if name in _BINARY and len(call.args) == 2:
        a, b = call.args
        if _is_const(b) and not _is_const(a) and _channel_broadcast(b, 4):
            if _ints(a.ty.shape.values) == _ints(ty.shape.values):
                return ELEMENTWISE, 0
        if _is_const(a) and not _is_const(b) and _channel_broadcast(a, 4):
            if _ints(b.ty.shape.values) == _ints(ty.shape.values):
                return ELEMENTWISE, 1
    return None


def is_elementwise(call) -> bool:
    """A tileable single-input op that maps each row to itself and is no conv or pool
    (bias, activation): a region should end after it, not between it and its producer."""
    return (window_of(call) is not None and call.op.name != _CONV
            and call.op.name not in _POOLS)


def row_inputs(call) -> list[tuple[relax.Expr, Window]] | None:
    """The tensors a tileable call reads along H, each with its window, else None.

    Besides the single-input ops of :func:`window_of` this accepts the joins a
    DAG region holds: elementwise binary ops on two same-shape tensors (a
    residual add) and concatenation along any axis but H (a fire or inception
    module's concat). Their windows are elementwise.
    """
    info = window_of(call)
    if info is not None:
        window, index = info
        return [(call.args[index], window)]
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return None
    ty = call.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4:
        return None
    shape = _ints(ty.shape.values)
    name = call.op.name
    if name in _BINARY and len(call.args) == 2:
        if all(isinstance(a, relax.Var) and _ints(a.ty.shape.values) == shape
               for a in call.args):
            return [(a, ELEMENTWISE) for a in call.args]
        return None
    if name == "relax.concat" and isinstance(call.args[0], relax.Tuple):
        axis = int(call.attrs.axis)
        parts = list(call.args[0].fields)
        if axis % 4 == 2 or not parts:
            return None
        if all(isinstance(a, relax.Var) and isinstance(a.ty, relax.TensorType)
               and a.ty.ndim == 4 and _ints(a.ty.shape.values)[2] == shape[2] for a in parts):
            return [(a, ELEMENTWISE) for a in parts]
    return None


def with_inputs(call, inputs, pad_top: int | None = None, pad_bottom: int | None = None):
    """``call`` on new ``inputs`` (in :func:`row_inputs` order), with the tile's own
    top/bottom padding when given (single-input windowed ops only)."""
    if window_of(call) is not None:
        if pad_top is None:
            return _on_data(call, inputs[0])
        return with_h_padding(call, inputs[0], pad_top, pad_bottom)
    if call.op.name == "relax.concat":
        return relax.op.concat(list(inputs), axis=int(call.attrs.axis))
    return relax.Call(call.op, list(inputs), call.attrs)


def _out_dtype(attrs):
    dtype = attrs.out_dtype
    return None if dtype is None or str(dtype) in ("", "void") else str(dtype)


def with_h_padding(call, data, pad_top: int, pad_bottom: int):
    """The same op on ``data`` (a tile) with the tile's own top/bottom padding."""
    name, attrs = call.op.name, call.attrs
    if name == _CONV:
        pad = _ints(attrs.padding)
        return relax.op.nn.conv2d(
            data, call.args[1], strides=_ints(attrs.strides),
            padding=(pad_top, pad[1], pad_bottom, pad[3]), dilation=_ints(attrs.dilation),
            groups=int(attrs.groups), data_layout="NCHW", kernel_layout="OIHW",
            out_layout="NCHW", out_dtype=_out_dtype(attrs))
    if name in _POOLS:
        pad = _ints(attrs.padding)
        kw = dict(pool_size=_ints(attrs.pool_size), strides=_ints(attrs.strides),
                  padding=(pad_top, pad[1], pad_bottom, pad[3]), dilation=_ints(attrs.dilation),
                  ceil_mode=bool(attrs.ceil_mode), layout="NCHW", out_layout="NCHW")
        if name == "relax.nn.avg_pool2d":
            return relax.op.nn.avg_pool2d(data, count_include_pad=bool(attrs.count_include_pad),
                                          **kw)
        return relax.op.nn.max_pool2d(data, **kw)
    return _on_data(call, data)


def _on_data(call, data):
    """``call`` with its data argument (see :func:`window_of`) replaced by ``data``."""
    _, index = window_of(call)
    args = list(call.args)
    args[index] = data
    return relax.Call(call.op, args, call.attrs)


def height(expr) -> int:
    """Rows (H) of an NCHW tensor expression."""
    return int(expr.ty.shape.values[2])


# ------------------------------------------------------------------ tile plans


class TilingRefused(ValueError):
    """A region that cannot be tiled exactly this way (never approximated)."""


HALO_MODES = ("recompute", "cache")


@dataclass(frozen=True)
class RowNode:
    """One member of a region, for row planning: its output height, and per input the
    producing member (an index into the region, or -1 for the region's source) and
    the window through which it is read."""

    height: int
    inputs: tuple[tuple[int, Window], ...]


@dataclass(frozen=True)
class TilePlan:
    """Rows each member computes per tile, and rows it must keep for later tiles.

    ``compute[t][j]`` is the ``(lo, hi)`` output rows member ``j`` computes in tile
    ``t`` (None: nothing in that tile). ``keep_from[t][j]`` is the lowest row of
    ``j`` a later tile still reads (None: nothing); only cached halos keep rows.
    """

    halo: str
    source_height: int
    compute: tuple[tuple[tuple[int, int] | None, ...], ...]
    keep_from: tuple[tuple[int | None, ...], ...]

    def reads(self, nodes, t: int, j: int) -> list[RowSpan]:
        """Input spans member ``j`` reads in tile ``t``, one per input (see RowNode)."""
        lo, hi = self.compute[t][j]
        return [input_rows(w, lo, hi, nodes[p].height if p >= 0 else self.source_height)
                for p, w in nodes[j].inputs]


def plan_tiles(nodes: list[RowNode], source_height: int, tiles: int,
               halo: str = "recompute") -> TilePlan:
    """Split the last node's rows into ``tiles`` tiles and derive every member's rows.

    ``recompute``: each tile computes the rows its consumers read, so rows in the
    overlap of two tiles are computed twice. ``cache``: each tile computes only rows
    no earlier tile computed, and rows a later tile reads again are kept, so nothing
    is computed twice. Nodes must be in topological order (producers first).
    Raises :class:`TilingRefused` when a tile would read no real row at all.
    """
    if halo not in HALO_MODES:
        raise ValueError(f"halo must be one of {HALO_MODES}, got {halo!r}")
    n, sink = len(nodes), len(nodes) - 1
    consumers: list[list[tuple[int, Window]]] = [[] for _ in range(n)]
    for c, node in enumerate(nodes):
        for p, w in node.inputs:
            if p >= 0:
                consumers[p].append((c, w))

    def rows_of(p):  # output rows of member p, or of the source (-1)
        return nodes[p].height if p >= 0 else source_height

    done = [-1] * n
    compute, reads = [], []
    for o0, o1 in split_rows(nodes[sink].height, tiles):
        comp: list = [None] * n
        read: list = [None] * n
        comp[sink] = (o0, o1)
        for j in range(n - 1, -1, -1):
            if j != sink:
                spans = [input_rows(w, *comp[c], rows_of(j)) for c, w in consumers[j]
                         if comp[c] is not None]
                if spans:
                    lo, hi = min(s.lo for s in spans), max(s.hi for s in spans)
                    read[j] = lo
                    if halo == "recompute":
                        comp[j] = (lo, hi)
                    elif hi > done[j]:
                        comp[j] = (done[j] + 1, hi)
            if comp[j] is not None:
                for p, w in nodes[j].inputs:
                    if input_rows(w, *comp[j], rows_of(p)).rows <= 0:
                        raise TilingRefused("a tile's window lies entirely in padding")
                done[j] = max(done[j], comp[j][1])
        compute.append(tuple(comp))
        reads.append(read)
    keep = []
    for t in range(len(compute)):
        if halo == "recompute":
            keep.append((None,) * n)
            continue
        later = [[r[j] for r in reads[t + 1:] if r[j] is not None] for j in range(n)]
        keep.append(tuple(min(v) if v else None for v in later))
    return TilePlan(halo, source_height, tuple(compute), tuple(keep))
