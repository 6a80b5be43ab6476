"""Rewrite one region into H- or W-tiles: exact, with recomputed or cached halos.

Each tile computes a band of the sink's output rows (along W: columns; every
name below that says "rows" means positions along the tiled axis). Every member computes the
rows the tile needs (:func:`.tiling.plan_tiles`): with ``recompute`` a tile
slices the source rows it needs and computes everything from them, so rows in
the overlap of two tiles are computed twice; with ``cache`` a tile computes only
rows no earlier tile did, and the rows a later tile reads again are carried over
as a small slice (the cached halo), so nothing is computed twice. Border tiles
keep the op's own padding, interior tiles read real rows instead, so the result
is exactly the original's. The sink's tiles are concatenated along the axis into
the sink's tensor; :mod:`tvm_memflat.lowering.concat_in_place` later makes each tile
write straight into its slice of it.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .. import naming
from ._typed_emit import emit as typed_emit
from .regions import Region
from .tiling import (
    H_AXIS,
    W_AXIS,
    RowNode,
    TilePlan,
    TilingRefused,
    axis_name,
    height,
    plan_tiles,
    row_inputs,
    with_inputs,
)


def _slice(expr, spans: dict[int, tuple[int, int]]):
    """``expr`` cut to positions ``[lo, hi]`` along each NCHW axis of ``spans``
    (relative to its first position); ``expr`` itself when nothing is cut."""
    cut = {a: (lo, hi) for a, (lo, hi) in spans.items()
           if (lo, hi) != (0, height(expr, a) - 1)}
    if not cut:
        return expr
    axes = sorted(cut)
    return relax.op.strided_slice(expr, axes=axes, begin=[cut[a][0] for a in axes],
                                  end=[cut[a][1] + 1 for a in axes])


def _slice_rows(expr, lo: int, hi: int, axis: int = H_AXIS):
    """Rows ``[lo, hi]`` along ``axis`` of ``expr`` (relative to its first row)."""
    return relax.op.strided_slice(expr, axes=[axis], begin=[lo], end=[hi + 1])


def row_nodes(region: Region, axis: int = H_AXIS) -> list[RowNode]:
    """The region as :class:`RowNode` records (inputs by member index, -1 = source).

    Raises :class:`.tiling.TilingRefused` for a member that cannot be tiled along
    ``axis`` (a concat along it)."""
    index = {v: j for j, v in enumerate(region.vars)}
    nodes = []
    for var, call in zip(region.vars, region.calls, strict=True):
        ins = []
        reads = row_inputs(call, axis)
        if reads is None:
            raise TilingRefused(f"{var.name} cannot be tiled along {axis_name(axis)}")
        for expr, window in reads:
            if expr.same_as(region.source):
                ins.append((-1, window))
            else:
                ins.append((index[expr], window))
        nodes.append(RowNode(height(var, axis), tuple(ins)))
    return nodes


def region_plan(region: Region, tiles: int, halo: str = "recompute",
                axis: int = H_AXIS) -> TilePlan:
    """The tile plan of ``region`` along ``axis`` (raises :class:`.tiling.TilingRefused`)."""
    return plan_tiles(row_nodes(region, axis), height(region.source, axis), tiles, halo)


def strip_axis(axis: int) -> int:
    """The axis a patch grid cuts into strips when its tiles run along ``axis``."""
    return W_AXIS if axis == H_AXIS else H_AXIS


class _Emitter:
    """Emits the tiles of one region into a BlockBuilder: ``plan``'s tiles along
    ``axis`` inside each of ``strips``' strips along the other axis (a patch grid;
    one strip spanning the whole axis when ``strips`` is None)."""

    def __init__(self, bb, region: Region, source, plan: TilePlan, axis: int,
                 strips: TilePlan | None = None):
        self.bb, self.region, self.source, self.plan, self.axis = bb, region, source, plan, axis
        self.nodes = row_nodes(region, axis)
        self.sink, self.axis_name = region.sink.name, axis_name(axis)  # names: tvm_memflat.naming
        self.strips = strips
        if strips is not None:
            self.saxis = strip_axis(axis)
            self.snodes = row_nodes(region, self.saxis)
        # pieces[j]: (lo, hi, expr) row bands of member j available to the current tile
        # (inside the current strip: every piece spans the strip's columns of j)
        self.pieces: list[list] = [[] for _ in self.nodes]

    def _rows(self, j: int, lo: int, hi: int, cols, label: str):
        """Rows ``[lo, hi]`` of member ``j`` (-1: the source) as one tensor, cut to the
        strip-axis span ``cols`` (a RowSpan of absolute positions; None: no strips)."""
        if j < 0:
            cut = _slice_rows(self.source, lo, hi, self.axis)
            if cols is not None and (cols.lo, cols.hi) != (0, height(self.source, self.saxis) - 1):
                cut = _slice(self.source, {self.axis: (lo, hi), self.saxis: (cols.lo, cols.hi)})
            return self.bb.emit(cut, label)
        across = {}
        if cols is not None:  # the columns of j this strip holds start at c0
            c0 = self.strips.compute[self.strip][j][0]
            across = {self.saxis: (cols.lo - c0, cols.hi - c0)}
        parts = []
        for p_lo, p_hi, expr in self.pieces[j]:
            a, b = max(lo, p_lo), min(hi, p_hi)
            if a > b:
                continue
            cut = _slice(expr, {self.axis: (a - p_lo, b - p_lo), **across})
            parts.append(cut if cut is expr else self.bb.emit(cut, label))
        covered = sum(height(p, self.axis) for p in parts)
        assert covered == hi - lo + 1, "tile plan left rows uncomputed"  # plan invariant
        if len(parts) == 1:
            return parts[0]
        return self.bb.emit(relax.op.concat(parts, axis=self.axis), label)

    def emit(self):
        if self.strips is None:
            self.strip = None
            return self._emit_strip(self.sink)
        outs = []
        for s in range(len(self.strips.compute)):
            self.strip, self.pieces = s, [[] for _ in self.nodes]
            name = naming.tile_strip(self.sink, axis_name(self.saxis), s)
            outs.append(self.bb.emit(self._emit_strip(name), name))
        return relax.op.concat(outs, axis=self.saxis)

    def _emit_strip(self, name: str):
        """The tiles of the current strip (named after ``name``) and their concat."""
        outs = []
        plan, nodes, sink = self.plan, self.nodes, len(self.nodes) - 1
        for t, comp in enumerate(plan.compute):
            # carried[j]: the rows of j later tiles read again (cached halos), cut as soon
            # as j's piece of this tile exists so that the piece itself can die early
            carried: list = [None] * len(nodes)
            for j, (call, rows) in enumerate(zip(self.region.calls, comp, strict=True)):
                if rows is None:
                    continue
                spans = plan.reads(nodes, t, j)
                cols = (self.strips.reads(self.snodes, self.strip, j) if self.strips is not None
                        else [None] * len(spans))
                label = naming.tile_input(name, self.axis_name, t)
                ins = [self._rows(p, s.lo, s.hi, c, label)
                       for (p, _), s, c in zip(nodes[j].inputs, spans, cols, strict=True)]
                pads = {}
                if len(spans) == 1:  # a windowed op: the tile's own padding
                    pads[self.axis] = (spans[0].pad_top, spans[0].pad_bottom)
                    if cols[0] is not None:
                        pads[self.saxis] = (cols[0].pad_top, cols[0].pad_bottom)
                new = with_inputs(call, ins, pads)
                out = typed_emit(self.bb, new, naming.tile_member(name, self.axis_name, t, j))
                self.pieces[j].append((rows[0], rows[1], out))
                if j == sink:
                    outs.append(out)
                elif plan.halo == "cache":
                    carried[j] = self._halo(t, j, name)
            for j in range(sink):
                if plan.halo == "recompute":
                    self.pieces[j] = []
                else:
                    self.pieces[j] = (carried[j] if carried[j] is not None
                                      else self._halo(t, j, name))
        return outs[0] if len(outs) == 1 else relax.op.concat(outs, axis=self.axis)

    def _halo(self, t: int, j: int, name: str) -> list:
        """The pieces of member ``j`` cut down to the rows tiles after ``t`` read."""
        keep = self.plan.keep_from[t][j]
        kept = []
        for lo, hi, expr in self.pieces[j] if keep is not None else ():
            if hi < keep:
                continue
            if lo < keep:
                expr = self.bb.emit(_slice_rows(expr, keep - lo, hi - lo, self.axis),
                                    naming.tile_halo(name, self.axis_name, t, j))
                lo = keep
            kept.append((lo, hi, expr))
        return kept


@relax.expr_functor.mutator
class _RegionTiler(relax.PyExprMutator):
    """Replace the sink's call by the concat of its tiles."""

    def __init__(self, mod, region: Region, plan: TilePlan, axis: int,
                 strips: TilePlan | None = None):
        super().__init__(mod)
        self.region, self.plan, self.axis, self.strips = region, plan, axis, strips

    def visit_call_(self, call):
        if call.same_as(self.region.calls[-1]):
            source = self.visit_expr(self.region.source)
            return _Emitter(self.builder_, self.region, source, self.plan, self.axis,
                            self.strips).emit()
        return super().visit_call_(call)


def tile_region(mod: tvm.IRModule, region: Region, tiles: int,
                halo: str = "recompute", axis: int = H_AXIS, strips: int = 1) -> tvm.IRModule:
    """``mod`` with ``region`` computed in ``tiles`` tiles along ``axis`` (exact;
    2 = H-tiles, 3 = W-tiles).

    With ``strips`` > 1 the region is computed in patches: ``strips`` strips along
    the other axis, each with recomputed halos, and ``tiles`` tiles along ``axis``
    inside each strip with ``halo`` halos (cached halos then carry only the strip's
    own columns). Strips run one after the other, so only one strip's halos and
    intermediates are live at a time (MCUNetV2's patch-based inference, with the
    halos of one direction cached).

    Raises :class:`.tiling.TilingRefused` if a tile cannot be computed exactly.
    """
    plan = region_plan(region, tiles, halo, axis)
    strip_plan = None
    if strips > 1:
        other = strip_axis(axis)
        if strips > height(region.sink, other):
            raise TilingRefused(f"{strips} strips of a sink {height(region.sink, other)} wide")
        strip_plan = region_plan(region, strips, "recompute", other)
    tiler = _RegionTiler(mod, region, plan, axis, strip_plan)
    func = tiler.visit_expr(mod["main"])
    tiler.builder_.update_func(mod.get_global_var("main"),
                               relax.analysis.remove_all_unused(func))
    return tiler.builder_.get()


def tile_chain(mod: tvm.IRModule, chain: Region, tiles: int) -> tvm.IRModule:
    """``mod`` with ``chain`` in ``tiles`` H-tiles with recomputed halos."""
    return tile_region(mod, chain, tiles, "recompute")
