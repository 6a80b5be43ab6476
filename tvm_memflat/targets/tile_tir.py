"""A call's tiling written into its kernel: tile loops and staging blocks in TIR.

:func:`tile_kernel` applies a :class:`~tvm_memflat.hardware.call_tiling.CallPlan` to
the fused PrimFunc of the call with ``s_tir.Schedule`` primitives, so that the
program the llvm build runs is the tiled program the accelerator would run:

* the block writing the kernel's output (the fused epilogue, or a copy-out of the
  accumulator) is split into **tile loops**: ``rows x cols`` output pixels and a
  block of output channels (a plain GEMM), of groups (grouped and depthwise convs)
  or of channels (pools), in the plan's loop order (``weights_outer``: channel
  blocks outside the pixel tiles; ``input_outer``: inside);
* the reduction (conv, dense, pool) is computed per output tile (``compute_at``):
  its intermediate is the **accumulator tile**; a plain GEMM's input-channel loop
  is split into blocks of ``in_block``, the block loop first, the rest in their
  original order, so every output element is still summed in the original order
  (results are bit-exact against the untiled kernel, fp32 and int8 alike);
* the input window (the padding block, which zero-fills the halo as VTA's LOAD
  does, or a ``cache_read`` of the input) and the weights (``cache_read``) are
  **staged** per tile: computed at the innermost tile loop whose index changes
  their region (a loop that does not is not a reason to load again); so a tile
  stays on chip exactly while its loop has not moved on, as the plan's reload
  factors say;
* a tensor the epilogue reads besides the accumulator (a residual) is staged per
  output tile;
* inside the tiles, a CPU schedule for the llvm build that changes no sum's order and
  nothing the simulator reads (:func:`_schedule_tile`): a plain GEMM vectorised over
  its output channels (weights staged channels-last, the accumulator tile
  channels-last) with a few pixels summed side by side, or a pointwise one over its
  columns; any other reduction over its columns; taps unrolled; the tiles in
  parallel (each thread stages its own), or a single tile's channels or rows.

Each staging, reduction and output block is annotated with the operand it holds
(:data:`OPERAND_ATTR`) and the spec memory it lives in (:data:`MEMORY_ATTR`); the
output block with the ALU operations per element of its epilogue
(:data:`ALU_ATTR`), the weight staging with its layout (:data:`LAYOUT_ATTR`). The
simulator (:func:`tvm_memflat.targets.tile_sim.replay_kernel`) reads the loops,
those blocks and their regions, and nothing else.

A kernel no tiling rule fits (several reductions, an elementwise kernel, a plan
whose shape does not match the loops) is left as it is: :class:`TiledKernel` says
why, and the simulator replays its call from the plan instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

from ..hardware.call_tiling import CallPlan
from ..lowering.cpu_schedule import (
    MAX_LANES,
    MAX_TILE_ELEMENTS,
    MIN_PARALLEL_ELEMENTS,
    MIN_PARALLEL_WORK,
    TILE_CHANNELS,
    TILE_WIDTHS,
    _block_names,
    _divisor,
    _extent,
    _inline_injective,
    _is_reduction,
    _loop_kinds,
    _loops_under,
    _uses,
    _writes_param,
    unroll_taps,
)

#: Block annotation: the operand a block's tile is ("input", "weight", "residual",
#: "accumulator", "output").
OPERAND_ATTR = "memflat.operand"
#: Block annotation: the spec memory the block's tile lives in.
MEMORY_ATTR = "memflat.memory"
#: Reduction block annotation: "gemm" (the GEMM core) or "vector" (the ALU).
COMPUTE_ATTR = "memflat.compute"
#: Output block annotation: ALU operations per output element of the fused epilogue.
ALU_ATTR = "memflat.alu_ops"
#: Weight staging annotation: which dims are output and input channels (``"oi"``,
#: ``"io"``; ``"i..o"``: input channels first, output channels last, the taps between)
#: and, for grouped convs, ``"g<output channels per group>"`` after it. On the
#: reduction block, ``"nhwc"``: the accumulator tile is laid out channels-last.
LAYOUT_ATTR = "memflat.layout"
#: Input staging and output block annotation (1): the tensor is on chip, not in DRAM
#: (a spec with an on-chip path): the input is read where it is resident, the
#: output tiles move over the path. On an output block, 2: the tiles stay in the
#: accumulator memory, where a vector call reads them (``output_in_accumulator``).
ON_CHIP_ATTR = "memflat.on_chip"
#: Reduction block annotation: activation-memory bytes that tensors kept on chip
#: hold during the call.
RESERVED_ATTR = "memflat.reserved_bytes"
#: Reduction block annotation: accumulator-memory bytes that tensors kept there hold
#: during the call.
ACC_RESERVED_ATTR = "memflat.acc_reserved_bytes"
#: Weight staging annotation (1): the weights are resident in the weight memory
#: across the calls that share them; 2: ... and this call loads them there, once,
#: whole (``CallShape.weight_preload``).
WEIGHT_ON_CHIP_ATTR = "memflat.weight_on_chip"
#: Reduction block annotation: weight-memory bytes that resident weights hold during
#: the call.
WEIGHT_RESERVED_ATTR = "memflat.weight_reserved_bytes"
#: What a call keeps on chip across calls, one reservation per memory: (the
#: annotation on its reduction block, the ``CallShape`` field of its bytes, the spec
#: role of its memory)
RESERVATIONS = ((RESERVED_ATTR, "reserved_bytes", "activations"),
                (WEIGHT_RESERVED_ATTR, "weight_reserved_bytes", "weights"),
                (ACC_RESERVED_ATTR, "acc_reserved_bytes", "accumulators"))
#: Output channels per vector in a plain GEMM's tile, most preferred first.
CHANNEL_LANES = (16, 8)
#: Columns whose channel vectors a plain GEMM's tile sums side by side: all of a
#: tile's columns up to twice this, else the largest divisor up to this.
PIXEL_BLOCK = 8
#: PrimFunc attribute: the tiling the kernel carries (``CallPlan.describe()``).
TILED_ATTR = "memflat.tiled"


class _Unsupported(Exception):
    """The kernel's structure is not one the tiling rules handle."""


@dataclass(frozen=True)
class TiledKernel:
    """One kernel after :func:`tile_kernel`: tiled, or left as it was and why."""

    func: tirx.PrimFunc
    tiled: bool
    reason: str = ""


def _uses_any(expr, variables) -> bool:
    return any(_uses(expr, v) for v in variables)


def _read_index(sch, block, predicate) -> int:
    """Index (in the block's reads) of the one read ``predicate(region)`` accepts."""
    regions = list(sch.get(block).reads)
    hits = [i for i, r in enumerate(regions) if predicate(r)]
    if len(hits) != 1:
        raise _Unsupported(f"{len(hits)} reads match")
    return hits[0]


def _region_uses(region, variables) -> bool:
    return any(_uses_any(r.min, variables) for r in region.region)


def _attach(sch, block, nest, deps) -> None:
    """Compute ``block`` at the innermost loop of ``nest`` ((tag, loop) pairs, outermost
    first) whose tag is in ``deps`` and whose extent is more than 1; at the outermost
    loop of ``nest`` (one load for the whole call) when there is none."""
    at = [lp for tag, lp in nest if tag in deps and (_extent(sch, lp) or 2) > 1]
    # none: at the outermost tile loop, which runs once (its region is what the call
    # reads, not the whole buffer: a padding row no window reads is not loaded)
    sch.compute_at(block, at[-1] if at else nest[0][1], preserve_unit_loops=True)


def _views(func: tirx.PrimFunc) -> list:
    """Buffers the kernel declares as views of its parameters (``match_buffer``: a
    kernel reading or writing its slice of a concatenation in place); :func:`_tile`
    lowers them onto the parameters before scheduling."""
    body = func.body
    block = body.block if isinstance(body, s_tir.SBlockRealize) else None
    return [m.buffer for m in block.match_buffers] if block is not None else []


def tile_kernel(func: tirx.PrimFunc, plan: CallPlan) -> TiledKernel:
    """``func`` (a fused, unscheduled kernel) with ``plan``'s tiling written in (see
    the module doc); left as it is when no rule fits."""
    try:
        return TiledKernel(_tile(func, plan).with_attr(TILED_ATTR, plan.describe()), True)
    except (_Unsupported, s_tir.ScheduleError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return TiledKernel(func, False, first[:200])


def _tile(func: tirx.PrimFunc, plan: CallPlan) -> tirx.PrimFunc:
    shape, t = plan.shape, plan.tiling
    if _views(func):
        # a kernel writing its slice of a concatenation in place: the view indexed
        # into the concatenation directly (TVM's cache_write of a match_buffer view
        # leaves the buffer undefined)
        func = s_tir.transform.LowerMatchBuffer()(tvm.IRModule({"main": func}))["main"]
    sch = s_tir.Schedule(func)
    staged = _inline_injective(sch)
    names = [n for n in _block_names(sch.mod["main"]) if n not in staged]
    blocks = [sch.get_sblock(n) for n in names]
    reductions = [b for b in blocks if _is_reduction(sch, b)]
    outputs = [b for b in blocks if _writes_param(sch, b)]
    if not reductions and len(blocks) == 1 and len(outputs) == 1:
        return _tile_elementwise(sch, outputs[0], plan)
    if len(outputs) != 1 or len(reductions) != 1 or len(blocks) > 2:
        raise _Unsupported(f"{len(blocks)} blocks, {len(reductions)} reductions")
    red, out = reductions[0], outputs[0]
    if sch.get(red).same_as(sch.get(out)):
        out = sch.cache_write(red, 0, "global")
    elif len(blocks) != 2:
        raise _Unsupported("the reduction does not feed the output")
    plain = shape.kind == "gemm" and shape.groups == 1
    loops = sch.get_loops(out)
    extents = [_extent(sch, lp) for lp in loops]
    w = shape.window
    if len(loops) == 4:
        channels = (t.out_block if plain else
                    t.group_block * shape.out_channels if shape.kind == "gemm" else t.group_block)
        total = shape.groups * shape.out_channels if shape.kind == "gemm" else shape.groups
        if extents != [shape.batch, total, w.out_h, w.out_w]:
            raise _Unsupported(f"loops {extents} do not match the call")
        n, c, h, wl = loops
        c_o, _ = sch.split(c, [None, channels])
        h_o, _ = sch.split(h, [None, t.rows])
        w_o, _ = sch.split(wl, [None, t.cols])
        tagged = {"batch": n, "out": c_o, "rows": h_o, "cols": w_o}
        order = (["batch", "out", "rows", "cols"] if t.order == "weights_outer"
                 else ["batch", "rows", "cols", "out"])
        row_dim = 2
    elif len(loops) == 2 and plain:
        if extents != [w.out_h, shape.out_channels]:
            raise _Unsupported(f"loops {extents} do not match the call")
        i, j = loops
        i_o, _ = sch.split(i, [None, t.rows])
        j_o, _ = sch.split(j, [None, t.out_block])
        tagged = {"rows": i_o, "out": j_o}
        order = ["out", "rows"] if t.order == "weights_outer" else ["rows", "out"]
        row_dim = 0
    else:
        raise _Unsupported(f"{len(loops)} output loops")
    inner = [lp for lp in sch.get_loops(out) if not any(
        sch.get(lp).same_as(sch.get(x)) for x in tagged.values())]
    sch.reorder(*[tagged[k] for k in order], *inner)
    nest = [(k, tagged[k]) for k in order]
    sch.compute_at(red, nest[-1][1], preserve_unit_loops=True)

    # the reduction under the tile: input-channel blocks first (plain GEMMs)
    anchor = sch.get(nest[-1][1])
    red_loops = sch.get_loops(red)
    at = next(k for k, lp in enumerate(red_loops) if sch.get(lp).same_as(anchor))
    under = red_loops[at + 1:]
    kinds = _loop_kinds(sch, red, under)
    if plain:
        first = kinds.index("R")
        rc_o, rc_i = sch.split(under[first], [None, t.in_block])
        rest = [lp for k, lp in enumerate(under) if k != first]
        sch.reorder(rc_o, *rest[:first], rc_i, *rest[first:])
        nest.append(("in", rc_o))

    block = sch.get(red)
    iters = list(block.iter_vars)
    spatial = [iv.var for iv in iters if int(iv.iter_type) != tirx.IterVar.CommReduce]
    if len(spatial) <= row_dim:
        raise _Unsupported("the reduction has no row axis")
    rows_var = [spatial[row_dim]]
    out_var = [spatial[1]] if len(spatial) > 1 else []
    params = list(sch.mod["main"].params)
    acc_buffer = block.writes[0].source

    def is_param(region):
        return any(region.source.same_as(p) for p in params)

    # the input: the padding block staged, or a cache of the input parameter
    staged_in = [sch.get_sblock(s) for s in staged]
    if staged_in:
        if len(staged_in) != 1:
            raise _Unsupported("several staging blocks")
        copy_in = staged_in[0]
    else:
        idx = _read_index(sch, red, lambda r: is_param(r) and (
            shape.kind == "vector" or _region_uses(r, rows_var)))
        copy_in = sch.cache_read(red, idx, "global", consumer_blocks=[red])
    deps_in = {"batch", "rows", "cols", "in"} | ({"out"} if not plain else set())
    _attach(sch, copy_in, nest, deps_in)
    memories = plan.memories
    copies = [copy_in]
    sch.annotate(copy_in, OPERAND_ATTR, "input")
    sch.annotate(copy_in, MEMORY_ATTR, memories["input"])
    if shape.input_on_chip:
        sch.annotate(copy_in, ON_CHIP_ATTR, 1)

    if shape.kind == "gemm":
        idx = _read_index(sch, red, lambda r: is_param(r) and not _region_uses(r, rows_var)
                          and not r.source.same_as(acc_buffer))
        region = sch.get(red).reads[idx]
        layout = "oi" if out_var and _uses_any(region.region[0].min, out_var) else "io"
        if shape.groups > 1:
            layout += f"g{shape.out_channels}"
        copy_w = sch.cache_read(red, idx, "global", consumer_blocks=[red])
        _attach(sch, copy_w, nest, {"out", "in"})
        copies.append(copy_w)
        sch.annotate(copy_w, OPERAND_ATTR, "weight")
        sch.annotate(copy_w, MEMORY_ATTR, memories["weight"])
        sch.annotate(copy_w, LAYOUT_ATTR, layout)
        if shape.weight_on_chip:
            sch.annotate(copy_w, WEIGHT_ON_CHIP_ATTR, 2 if shape.weight_preload else 1)

    # what the epilogue reads besides the accumulator, output-shaped: staged per tile
    out_rows = [list(sch.get(out).iter_vars)[row_dim].var]
    # a feature map (4-D, more than one pixel; a bias is indexed by channel only)
    extra = [i for i, r in enumerate(sch.get(out).reads)
             if not r.source.same_as(acc_buffer) and is_param(r)
             and _region_uses(r, out_rows) and len(r.source.shape) == 4
             and int(r.source.shape[2]) * int(r.source.shape[3]) > 1]
    if len(extra) != shape.residuals:
        raise _Unsupported(f"{len(extra)} residual reads, the plan has {shape.residuals}")
    for idx in extra:
        copy_r = sch.cache_read(out, idx, "global", consumer_blocks=[out])
        _attach(sch, copy_r, nest, {"batch", "rows", "cols", "out"})
        copies.append(copy_r)
        sch.annotate(copy_r, OPERAND_ATTR, "residual")
        sch.annotate(copy_r, MEMORY_ATTR, memories["accumulator"])

    sch.annotate(red, OPERAND_ATTR, "accumulator")
    sch.annotate(red, MEMORY_ATTR, memories["accumulator"])
    sch.annotate(red, COMPUTE_ATTR, shape.kind)
    sch.annotate(out, OPERAND_ATTR, "output")
    sch.annotate(out, ALU_ATTR, int(shape.epilogue))
    _mark_kept(sch, red, out, shape)
    _schedule_tile(sch, red, nest, copies, out, shape.out_channels if plain else 0,
                   pointwise=plain and (w.kernel_h, w.kernel_w, w.stride_h, w.stride_w)
                   == (1, 1, 1, 1))
    return sch.mod["main"]


def _tile_elementwise(sch, out, plan: CallPlan) -> tirx.PrimFunc:
    """A one-operand elementwise call (a slice, a requantize): per tile, its input
    staged into the vector unit's memory, computed there, and stored (the simulator
    reads the staging copy, the compute block as the accumulator, the copy-out as the
    output). The plan's tiles are boxes of the output (``CallShape.dims``,
    :func:`~tvm_memflat.hardware.call_tiling.box_tile_sizes`): ``d`` indices of one
    dim and all of the dims after it; the loops outside are the tile loops."""
    shape, t = plan.shape, plan.tiling
    w = shape.window
    if shape.kind != "vector" or w.channels != 1 or w.in_w != 1:
        raise _Unsupported("not an elementwise call")
    if shape.operands != 1:
        raise _Unsupported(f"an elementwise call of {shape.operands} operands")
    params = list(sch.mod["main"].params)
    reads = [i for i, r in enumerate(sch.get(out).reads)
             if any(r.source.same_as(p) for p in params)]
    if len(reads) > 1 and shape.dims:
        # the operand is the parameter of the call's size; the others are constants
        # broadcast along it (a per-channel scale), read where they are, as a GEMM's
        # bias is
        size = math.prod(shape.dims)
        reads = [i for i in reads if math.prod(
            int(d) for d in sch.get(out).reads[i].source.shape) == size]
    if len(reads) != 1:
        raise _Unsupported(f"{len(reads)} parameter reads, the plan has 1")
    memories = plan.memories
    copy_in = sch.cache_read(out, reads[0], "global", consumer_blocks=[out])
    store = sch.cache_write(out, 0, "global")
    loops = sch.get_loops(out)
    if t.rows >= w.out_h:
        # one tile: a loop of one iteration around the three blocks, so that the
        # copies hold what the tile reads and writes (at the root: the whole buffer)
        tile, _ = sch.split(loops[0], [1, None])
    else:
        extents = [_extent(sch, lp) for lp in loops]
        if not shape.dims or extents != list(shape.dims):
            raise _Unsupported(f"loops {extents} are not the call's dims {shape.dims}")
        at = next((k for k in reversed(range(len(extents)))
                   if t.rows % math.prod(extents[k + 1:]) == 0
                   and extents[k] % (t.rows // math.prod(extents[k + 1:])) == 0), None)
        if at is None:
            raise _Unsupported(f"tiles of {t.rows} elements are no box of {extents}")
        tile, _ = sch.split(loops[at], [None, t.rows // math.prod(extents[at + 1:])])
    sch.compute_at(copy_in, tile, preserve_unit_loops=True)
    sch.reverse_compute_at(store, tile, preserve_unit_loops=True)
    sch.annotate(copy_in, OPERAND_ATTR, "input")
    sch.annotate(copy_in, MEMORY_ATTR, memories["input"])
    if shape.input_on_chip:
        sch.annotate(copy_in, ON_CHIP_ATTR, 1)
    sch.annotate(out, OPERAND_ATTR, "accumulator")
    sch.annotate(out, MEMORY_ATTR, memories["accumulator"])
    sch.annotate(out, COMPUTE_ATTR, "vector")
    sch.annotate(store, OPERAND_ATTR, "output")
    sch.annotate(store, ALU_ATTR, 0)
    _mark_kept(sch, out, store, shape)
    for block in (copy_in, out, store):  # the CPU schedule: innermost loops vectorised
        loops = sch.get_loops(block)
        if loops:
            _vector_loop(sch, loops[-1])
    return sch.mod["main"]


def _mark_kept(sch, compute, store, shape) -> None:
    """What the call keeps on chip across calls: its reservations (:data:`RESERVATIONS`)
    on its compute block, and on its output block :data:`ON_CHIP_ATTR` when the output
    stays on chip (1: over the path, 2: in the accumulator memory)."""
    for attr, field_, _ in RESERVATIONS:
        if getattr(shape, field_):
            sch.annotate(compute, attr, int(getattr(shape, field_)))
    if shape.output_on_chip or shape.output_in_accumulator:
        sch.annotate(store, ON_CHIP_ATTR, 1 if shape.output_on_chip else 2)


def _vector_loop(sch, loop) -> None:
    """Vectorise ``loop`` (a block's innermost loop): whole when at most
    :data:`MAX_LANES` long, else in vectors of a preferred width that divides it; left
    serial when shorter than 4 or when no such width divides it."""
    n = _extent(sch, loop)
    if n is None or n < 4:
        return
    if n > MAX_LANES:
        lanes = _divisor(n, TILE_WIDTHS)
        if lanes < 4:
            return
        loop = sch.split(loop, [None, lanes])[1]
    sch.vectorize(loop)


def _channel_vectors(sch, red, nest, copy_w, spatial, reductions,
                     out_channels: int) -> list | None:
    """A plain GEMM's tile vectorised over its output channels: per output pixel, the
    reduction loops (in their original order) outside a vector of :data:`CHANNEL_LANES`
    channels summed in registers (a local accumulator written back per pixel, when the
    tile has one input-channel block; else the accumulator tile laid out
    channels-last, :data:`LAYOUT_ATTR` ``"nhwc"`` on the reduction); the staged
    weights laid out with the output channels innermost (so each tap's weights are one
    vector), and :data:`LAYOUT_ATTR` says so. Returns the pixel loops (batch,
    channel vectors, rows, columns), or None (nothing done) when the tile's channels
    are no multiple of a lane count."""
    channels = _extent(sch, spatial[1])
    # lanes that divide the tile's channels and the layer's, so that a ragged last
    # tile's bounds test is the same for every lane (simplified out of the vector loop)
    lanes = next((n for n in CHANNEL_LANES
                  if channels and channels % n == 0 and out_channels % n == 0), None)
    if lanes is None:
        return None
    if str(sch.get(copy_w).annotations[LAYOUT_ATTR]) == "oi":
        conv = len(sch.get(copy_w).writes[0].source.shape) == 4
        if conv:   # (o, i, kh, kw) -> (i, kh, kw, o)
            sch.transform_layout(copy_w, ("write", 0), lambda o, i, h, w: (i, h, w, o))
        else:      # a dense layer's (o, i) -> (i, o)
            sch.transform_layout(copy_w, ("write", 0), lambda o, i: (i, o))
        sch.unannotate(copy_w, LAYOUT_ATTR)
        sch.annotate(copy_w, LAYOUT_ATTR, "i..o" if conv else "io")
        # the copy's loops: input channels outermost, then output channels, then the
        # taps (a conv's): each output channel's taps are read contiguously, and the
        # stores of one input channel stay within its slice of the tile, which stays
        # cached. In the source's order they scatter across the whole tile, each to a
        # line of its own; with the output channels innermost (contiguous stores) the
        # loads gather across all of the weights' rows. Measured on ResNet-18's
        # 512-channel 7x7 conv: 5.0 ms in the source's order, 4.1-4.5 ms output
        # channels innermost, 2.0-2.5 ms this way (untiled: 2.1 ms).
        own = sch.get_loops(copy_w)[-(4 if conv else 2):]
        if all(len(sch.get_child_blocks(lp)) == 1 for lp in own):
            sch.reorder(own[1], own[0], *own[2:])
    c_o, c_i = sch.split(spatial[1], [None, lanes])
    pixels = [spatial[0], c_o, *spatial[2:]]
    # register blocking: a few pixels' vectors summed side by side, each tap's weight
    # vector loaded once for them: columns, else (columns of a prime count) rows
    # (a dense layer's tile: several channel vectors)
    dims = _output_dims(sch, red)
    if len(pixels) != 4:
        dims = [_extent(sch, lp) or 1 for lp in pixels]   # no ragged tile to match
    inner = []
    for at in (-1, -2) if len(pixels) == 4 else (-1,):
        block = _pixel_block(_extent(sch, pixels[at]) or 1, dims[at])
        if block > 1:
            pixels[at], b_i = sch.split(pixels[at], [None, block])
            inner = [b_i]
            break
    whole = nest[-1][0] == "in" and _extent(sch, nest[-1][1]) == 1
    # one input-channel block: its loop (no staging block under it) goes down beside
    # the other reduction loops, so that the local accumulator lives under the pixel
    sch.reorder(*pixels, *([nest[-1][1]] if whole else []), *reductions, *inner, c_i)
    for lp in inner:
        sch.unroll(lp)
    if whole:
        # each pixel's sums are whole in a local accumulator (the reduction writes it)
        local = sch.cache_write(red, 0, "local")
        sch.reverse_compute_at(local, pixels[-1])
    if len(spatial) == 4:
        # the accumulator tile (or its local part) laid out channels-last, so that a
        # pixel's channels are one vector
        sch.transform_layout(red, ("write", 0), lambda n, c, h, w: (n, h, w, c))
        sch.annotate(red, LAYOUT_ATTR, "nhwc")
    sch.vectorize(c_i)
    return pixels


def _output_dims(sch, red) -> list[int]:
    """The extents of the reduction's output (its spatial iteration variables): the
    whole layer's, of which the tile loops take a part."""
    return [int(iv.dom.extent) for iv in sch.get(red).iter_vars
            if int(iv.iter_type) != tirx.IterVar.CommReduce]


def _pixel_block(tile: int, total: int) -> int:
    """Pixels of a tile's column (or row) loop, ``tile`` of ``total``, to sum side by
    side in registers: all of them up to twice :data:`PIXEL_BLOCK`, else the largest
    divisor of ``tile`` up to it; and one that also divides the last tile
    (``total % tile``), so that a ragged last tile's bounds test is the same for every
    pixel of a block and is taken once for all of them (ResNet-18's 12 x 19 tiles on
    56 x 56: 2.2x faster than unblocked); 1 if none does. (Only divisors: a ragged
    split would make the simulator read a wider tile.)"""
    last = total % tile
    top = tile if tile <= 2 * PIXEL_BLOCK else PIXEL_BLOCK
    return next((d for d in range(top, 1, -1) if tile % d == 0 and last % d == 0), 1)


def _column_vectors(sch, red, nest, spatial, reductions) -> list | None:
    """A plain GEMM's tile as the default CPU schedule's ``conv`` rule runs a kernel:
    per block of :data:`TILE_CHANNELS` output channels (unrolled) x a vector of
    columns, the reduction loops (in their original order) outside; the sums in a
    local accumulator when the tile has one input-channel block, else in the
    accumulator tile. The staged weights and the accumulator keep their layout, so
    nothing is transposed. Returns the pixel loops (batch, channel blocks, rows,
    column vectors), or None (nothing done) when no vector width of at least 8 divides
    both the tile's columns and a ragged last tile's (a whole row of 8 to 16 columns
    is one vector), or no channel block divides both
    the tile's channels and a ragged last channel tile's (a bounds test would then
    sit inside the vector or the unrolled channels)."""
    dims = _output_dims(sch, red)
    n, c, h, w = spatial
    cols, chans = _extent(sch, w), _extent(sch, c)
    if not cols or not chans:
        return None
    width = next((d for d in TILE_WIDTHS
                  if d >= 8 and cols % d == 0 and dims[3] % cols % d == 0), None)
    if width is None and 8 <= cols <= 2 * PIXEL_BLOCK and dims[3] % cols == 0:
        # a whole row of a width no preferred size divides (SqueezeNet's 13), as the
        # default schedule does: one vector (SqueezeNet fp32, tiled over untiled:
        # 0.98x -> 0.93x; 7 columns measured slower than channel vectors)
        width = cols
    block = next((d for d in TILE_CHANNELS if chans % d == 0 and dims[1] % chans % d == 0
                  and d * (width or 1) <= MAX_TILE_ELEMENTS), None)
    if width is None or block is None:
        return None
    w_o, w_i = sch.split(w, [None, width])
    c_o, c_i = sch.split(c, [None, block])
    whole = nest[-1][0] == "in" and _extent(sch, nest[-1][1]) == 1
    sch.reorder(n, c_o, h, w_o, *([nest[-1][1]] if whole else []), *reductions, c_i, w_i)
    if whole:
        local = sch.cache_write(red, 0, "local")
        sch.reverse_compute_at(local, w_o)
    sch.unroll(c_i)
    sch.vectorize(w_i)
    return [n, c_o, h, w_o]


def _schedule_tile(sch, red, nest, copies, out, out_channels: int,
                   pointwise: bool = False) -> None:
    """The CPU schedule inside one tile, with nothing that changes a sum's order or
    what the simulator reads (the tile loops, the annotated blocks and their regions):

    * a plain GEMM (``out_channels``: its output channels; 0 for any other kernel)
      is vectorised over its output channels (:func:`_channel_vectors`); a
      ``pointwise`` one (1x1, stride 1) over its columns where a vector fits them
      (:func:`_column_vectors`): its sums are short, so the channel vectors'
      transposition into the NCHW accumulator tile would cost more than they save
      (measured on MobileNetV2 fp32: 1.16x the untiled build's time -> 1.06x; on
      ResNet-18's 3x3 convs, column vectors were 2.4x slower). Any other
      reduction's own loops run its channels and rows, then its reduction loops in
      their original order, then its columns, vectorised
      (:mod:`~tvm_memflat.lowering.cpu_schedule`'s order);
    * kernel taps up to :data:`MAX_UNROLL_TAPS` are unrolled;
    * from :data:`MIN_PARALLEL_WORK` multiply-accumulates in the kernel, the outermost
      tile loop of several iterations runs in parallel: each thread stages, computes
      and stores its own tiles (a staging buffer is allocated per iteration). A kernel
      of one tile runs its outermost channel or row loop in parallel instead (from
      that much work in the tile), and its large copies (from
      :data:`MIN_PARALLEL_ELEMENTS` elements) their outer loop. (Measured on
      MobileNetV2 fp32: parallel over the tiles instead of inside each one, 1.58x
      the untiled build's time -> 1.19x);
    * the innermost loops of the staging copies and of the output are vectorised.

    Every output element is still summed in its original order, so the tiled kernel
    stays bit-exact against the untiled one. (The plan's tiles are the accelerator's:
    a tile that does not divide the tensor leaves a bounds test in its loops, which
    keeps a column vector scalar; channel vectors do not have it.)"""
    spatial, reductions = _loops_under(sch, red, nest[-1][1])
    extents = [_extent(sch, lp) for lp in spatial + reductions]
    if not spatial or None in extents:
        return
    work = math.prod(extents)
    weights = [b for b in copies
               if str(sch.get(b).annotations.get(OPERAND_ATTR, "")) == "weight"]
    pixels, relaid = None, []
    if pointwise and out_channels and weights and len(spatial) == 4:
        pixels = _column_vectors(sch, red, nest, spatial, reductions)
    if pixels is None and out_channels and weights and len(spatial) > 1:
        pixels = _channel_vectors(sch, red, nest, weights[0], spatial, reductions,
                                  out_channels)
        # the weight copy a channel-vector tile lays out anew: its writes are scattered
        relaid = weights if pixels is not None else []
    if pixels is None:
        if reductions:
            sch.reorder(*spatial[:-1], *reductions, spatial[-1])
        _vector_loop(sch, spatial[-1])
        pixels = spatial[:-1]
    outer = next((lp for lp in pixels if (_extent(sch, lp) or 1) > 1), None)
    # a GEMM's first reduction loop is its input channels: not a tap
    unroll_taps(sch, reductions[1:] if len(reductions) > 2 else reductions)
    # the tiles in parallel, each thread staging its own (a staging buffer is then
    # allocated per iteration); a kernel of one tile runs its channels or rows in
    # parallel inside it
    tiles = [lp for k, lp in nest if k != "in" and (_extent(sch, lp) or 1) > 1]
    kernel_work = work * math.prod(_extent(sch, lp) or 1 for _, lp in nest)
    tile_parallel = bool(tiles) and kernel_work >= MIN_PARALLEL_WORK
    if tile_parallel:
        sch.parallel(tiles[0])
    elif outer is not None and work >= MIN_PARALLEL_WORK:
        sch.parallel(outer)
    for block in [*copies, out]:
        # its own loops (a tile loop holds other blocks too)
        own = [lp for lp in sch.get_loops(block) if len(sch.get_child_blocks(lp)) == 1]
        # a large copy outside parallel tiles: its own outer loop in parallel too
        size = math.prod(_extent(sch, lp) or 1 for lp in own)
        first = next((lp for lp in own[:-1] if (_extent(sch, lp) or 1) > 1), None)
        if not tile_parallel and first is not None and size >= MIN_PARALLEL_ELEMENTS:
            sch.parallel(first)
        if own and not any(sch.get(block).same_as(sch.get(w)) for w in relaid):
            _vector_loop(sch, own[-1])
