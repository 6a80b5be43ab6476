"""Which Relax bindings can be tiled along H or W, and the exact row arithmetic of a tile.

Pure functions over small records: nothing here rewrites a module.

A *window* describes how an op maps input rows to output rows along the tiled
axis: output row ``o`` reads input rows ``o*stride - pad_top + dilation*r`` for
``r < kernel``. Elementwise ops are the window (1, 1, 1, 0, 0). Padding outside
the tile is exact because only the tiles touching the top/bottom border keep
that border's padding; interior tiles read real rows instead (the halo).

Every function takes the NCHW ``axis`` it tiles (2 = H, the default, or 3 = W);
along W, "rows" are columns and "top/bottom" are left/right. Kernels, strides,
dilations and paddings are read per axis, so a 1x7 conv has a window of 1 along
H and 7 along W.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

_CONV = "relax.nn.conv2d"
_POOLS = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
_UNARY = {"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu",
          "relax.nn.gelu", "relax.negative", "relax.abs", "relax.nn.leakyrelu",
          "relax.nn.relu6", "relax.exp", "relax.sqrt", "relax.round", "relax.astype"}
_BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.maximum",
           "relax.minimum"}
#: NCHW axis of each tiling direction.
AXES = {"H": 2, "W": 3}
H_AXIS, W_AXIS = AXES["H"], AXES["W"]


def axis_name(axis: int) -> str:
    """``"H"`` or ``"W"`` for an NCHW axis."""
    return next(k for k, v in AXES.items() if v == axis)


@dataclass(frozen=True)
class Window:
    """How one op maps rows along the tiled axis (see module docstring)."""

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
    """A tensor that broadcasts over H and W (bias, scale, scalar bound, SE gate)."""
    ty = getattr(const, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return False
    shape = _ints(ty.shape.values)
    pad = [1] * (out_ndim - len(shape)) + shape
    return len(pad) == out_ndim == 4 and pad[2] == 1 and pad[3] == 1


def _side_operand(expr) -> bool:
    """An operand read whole by every tile (never sliced by rows): a constant, or a
    tensor broadcast over H and W (a bias kept as a parameter, an SE block's gate)."""
    return _is_const(expr) or (isinstance(expr, relax.Var) and _channel_broadcast(expr, 4))


def _channel_index_op(call, name: str) -> bool:
    """A per-pixel op over channels: ``take(x, idx, axis=1)`` with constant indices (a
    channel shuffle) or ``strided_slice`` of the channels only (a channel split)."""
    if name == "relax.take":
        return (int(call.attrs.axis) % 4 == 1 and _is_const(call.args[1])
                and len(call.args[1].ty.shape.values) == 1)
    if name == "relax.strided_slice" and len(call.args) >= 4:
        axes = call.args[1]
        fields = axes.fields if isinstance(axes, relax.Tuple) else ()
        return [int(getattr(a, "value", -1)) for a in fields] == [1]
    return False


#: window_of's answers by call object (the entry holds the call, so its id is not reused)
_WINDOWS: dict[tuple[int, int], tuple] = {}
_MAX_WINDOWS = 1 << 15


def window_of(call, axis: int = H_AXIS) -> tuple[Window, int] | None:
    """The window along ``axis`` of a tileable call and the index of its data
    argument, else None (see :func:`_window_of`; memoised: a tiling asks it of each
    region call once per tile)."""
    key = (id(call), axis)
    hit = _WINDOWS.get(key)
    if hit is not None and hit[0] is call:
        return hit[1]
    out = _window_of(call, axis)
    if len(_WINDOWS) >= _MAX_WINDOWS:
        _WINDOWS.clear()
    _WINDOWS[key] = (call, out)
    return out


def _window_of(call, axis: int) -> tuple[Window, int] | None:
    """The window along ``axis`` of a tileable call and the index of its data
    argument, else None.

    Tileable: NCHW conv2d (any kernel, stride, dilation, padding, groups; the
    weight a constant or a parameter), NCHW max pooling, avg pooling without ceil
    mode, unary elementwise ops, binary elementwise ops whose other operand is
    broadcast over H and W (a constant, a bias parameter, an SE gate: read whole by
    every tile), and per-pixel channel gathers (:func:`_channel_index_op`).
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
        weight_ty = getattr(call.args[1], "ty", None)  # a constant, or a weight parameter
        if not isinstance(weight_ty, relax.TensorType) or weight_ty.shape is None:
            return None
        k = int(call.args[1].ty.shape.values[axis])  # OIHW: the kernel's H, W are 2, 3
        lo, hi = _pads(attrs, axis)
        return Window(k, int(attrs.strides[axis - 2]), int(attrs.dilation[axis - 2]), lo, hi), 0
    if name in _POOLS:
        if attrs.layout != "NCHW" or attrs.out_layout != "NCHW":
            return None
        # ceil_mode only adds a partial last window. A tile's rows span exactly
        # (rows_out - 1) * stride + kernel, so ceil adds nothing inside it, and the
        # overhang of the bottom tile is explicit padding: -inf for max pooling.
        # For average pooling the divisor of that window would change: refuse.
        if bool(attrs.ceil_mode) and name != "relax.nn.max_pool2d":
            return None
        lo, hi = _pads(attrs, axis)
        return Window(int(attrs.pool_size[axis - 2]), int(attrs.strides[axis - 2]),
                      int(attrs.dilation[axis - 2]), lo, hi), 0
    if name in _UNARY and len(call.args) >= 1 and not _is_const(call.args[0]):
        if all(_is_const(a) or not isinstance(a, relax.Expr) for a in call.args[1:]):
            return ELEMENTWISE, 0
        return None
    if name in _BINARY and len(call.args) == 2:
        a, b = call.args
        out = _ints(ty.shape.values)
        if _side_operand(b) and not _is_const(a) and _channel_broadcast(b, 4):
            if _ints(a.ty.shape.values) == out and _ints(b.ty.shape.values) != out:
                return ELEMENTWISE, 0
        if _side_operand(a) and not _is_const(b) and _channel_broadcast(a, 4):
            if _ints(b.ty.shape.values) == out and _ints(a.ty.shape.values) != out:
                return ELEMENTWISE, 1
    if _channel_index_op(call, name) and isinstance(call.args[0], relax.Var):
        x_shape = _ints(call.args[0].ty.shape.values)
        if len(x_shape) == 4 and x_shape[2:] == _ints(ty.shape.values)[2:]:
            return ELEMENTWISE, 0
    return None


def _pads(attrs, axis: int) -> tuple[int, int]:
    """(before, after) padding along ``axis`` of a 2-D op's (top, left, bottom, right)."""
    pad = _ints(attrs.padding)
    return pad[axis - 2], pad[axis]


def is_elementwise(call) -> bool:
    """A tileable single-input op that maps each row to itself and is no conv or pool
    (bias, activation): a region should end after it, not between it and its producer."""
    return (window_of(call) is not None and call.op.name != _CONV
            and call.op.name not in _POOLS)


def row_inputs(call, axis: int = H_AXIS) -> list[tuple[relax.Expr, Window]] | None:
    """The tensors a tileable call reads along ``axis``, each with its window, else None.

    Besides the single-input ops of :func:`window_of` this accepts the joins a
    DAG region holds: elementwise binary ops on two same-shape tensors (a
    residual add) and concatenation along any axis but H (a fire or inception
    module's concat). Their windows are elementwise.
    """
    info = window_of(call, axis)
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
        parts = list(call.args[0].fields)
        if int(call.attrs.axis) % 4 == axis or not parts:
            return None
        if all(isinstance(a, relax.Var) and isinstance(a.ty, relax.TensorType)
               and a.ty.ndim == 4 and _ints(a.ty.shape.values)[axis] == shape[axis]
               for a in parts):
            return [(a, ELEMENTWISE) for a in parts]
    return None


def same_along_h_and_w(call) -> bool:
    """``call`` maps W exactly as it maps H (square output, same windows along both):
    then W-tiles of a region of such calls on a square source mirror its H-tiles."""
    shape = _ints(call.ty.shape.values)
    return shape[2] == shape[3] and row_inputs(call, H_AXIS) == row_inputs(call, W_AXIS)


def with_inputs(call, inputs, pads: dict[int, tuple[int, int]] | None = None):
    """``call`` on new ``inputs`` (in :func:`row_inputs` order), with the tile's own
    padding ``pads`` (NCHW axis -> (before, after)) when given (single-input
    windowed ops only)."""
    if window_of(call) is not None:
        if not pads:
            return _on_data(call, inputs[0])
        return with_padding(call, inputs[0], pads)
    if call.op.name == "relax.concat":
        return relax.op.concat(list(inputs), axis=int(call.attrs.axis))
    return relax.Call(call.op, list(inputs), call.attrs)


def _out_dtype(attrs):
    dtype = attrs.out_dtype
    return None if dtype is None or str(dtype) in ("", "void") else str(dtype)


def with_padding(call, data, pads: dict[int, tuple[int, int]]):
    """The same op on ``data`` (a tile) with the tile's own padding ``pads`` (NCHW
    axis -> (before, after); axes not named keep the op's padding)."""
    name, attrs = call.op.name, call.attrs
    if name not in (_CONV, *_POOLS):
        return _on_data(call, data)
    pad = _ints(attrs.padding)
    for axis, (lo, hi) in pads.items():
        pad[axis - 2], pad[axis] = lo, hi
    if name == _CONV:
        return relax.op.nn.conv2d(
            data, call.args[1], strides=_ints(attrs.strides),
            padding=tuple(pad), dilation=_ints(attrs.dilation),
            groups=int(attrs.groups), data_layout="NCHW", kernel_layout="OIHW",
            out_layout="NCHW", out_dtype=_out_dtype(attrs))
    kw = dict(pool_size=_ints(attrs.pool_size), strides=_ints(attrs.strides),
              padding=tuple(pad), dilation=_ints(attrs.dilation),
              ceil_mode=bool(attrs.ceil_mode), layout="NCHW", out_layout="NCHW")
    if name == "relax.nn.avg_pool2d":
        return relax.op.nn.avg_pool2d(data, count_include_pad=bool(attrs.count_include_pad),
                                      **kw)
    return relax.op.nn.max_pool2d(data, **kw)


def _on_data(call, data):
    """``call`` with its data argument (see :func:`window_of`) replaced by ``data``."""
    _, index = window_of(call)
    args = list(call.args)
    args[index] = data
    return relax.Call(call.op, args, call.attrs)


def height(expr, axis: int = H_AXIS) -> int:
    """Rows along ``axis`` (default H) of an NCHW tensor expression."""
    return int(expr.ty.shape.values[axis])


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
