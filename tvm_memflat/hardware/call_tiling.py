"""Per-call tiling on a buffered machine: which tiles each kernel call streams on chip.

On a buffered accelerator (design.md §6, ``[machine] kind = "buffered"``: VTA)
activations live in DRAM between layers. Every kernel call loads tiles of its
input and weights into the on-chip buffers, accumulates an output tile, and
stores it. This module chooses, per call, the tiling with the least DRAM traffic
among those whose tiles fit their buffers (then the fewest cycles), and states
its cost in closed form. The simulator
(:func:`tvm_memflat.targets.vta_like.simulate`) replays the same tiling copy by
copy with its own arithmetic; the tests hold the two to each other, and to an
exhaustive search (:func:`tvm_memflat.targets.tile_sim.exhaustive_tiling`).

**What a call is** (:class:`CallShape`, from the step's
:class:`~tvm_memflat.planner.live_ranges.GemmShape` and
:class:`~tvm_memflat.planner.live_ranges.Window`):

* ``gemm``: a conv or dense layer on the GEMM core: ``groups`` groups of
  ``in_channels → out_channels`` over a sliding window (dense: a window of ``m``
  rows, one column, kernel 1);
* ``vector``: pools, means and elementwise kernels on the vector unit. VTA's ALU
  works in the accumulator buffer, so their tiles sit there at the accumulator
  dtype (an elementwise kernel is a window of its elements, one column).

**A tiling** (:class:`CallTiling`): an output tile of ``rows × cols`` pixels, a
block of ``group_block`` groups (grouped and depthwise convs, vector kernels:
their channels) or of ``out_block`` output channels and ``in_block`` input channels
(plain convs; multiples of the GEMM block), and a loop order:

* ``weights_outer``: output-channel blocks outside the pixel tiles; a weight tile
  stays on chip while the pixel tiles stream past it;
* ``input_outer``: pixel tiles outside the output-channel blocks; an input tile
  stays on chip while the weight tiles stream past it.

Input-channel blocks are innermost (the accumulator tile holds the partial sums).
A tile stays on chip only while its loop has not moved on: with input-channel
blocking both the input and the weight tiles are loaded again per outer
iteration. Grouped and vector calls loop over group blocks outside pixel tiles:
every byte is loaded once, plus the halo.

**Tile bytes** (what each buffer must hold; twice that in a double-buffered
memory): the input tile with its halo, ``((rows-1)·stride + span) ×
((cols-1)·stride + span)`` pixels (one box: when the stride exceeds the window, as
in a 1×1 stride-2 conv, the rows and columns between windows come along) of the
tile's input channels (padded to the GEMM
block: VTA stores 16-channel vectors); the weight tile, its 16×16 blocks; the
accumulator tile, ``rows × cols`` of its output channels (padded) at the
accumulator dtype, and as much again for each residual the epilogue adds (VTA's
ALU adds in the accumulator buffer; a residual tile is read from DRAM once, as the
output is written). Vector calls hold ``operands`` input tiles and the output tile
in the accumulator memory. Padding pixels are zero-filled on load (VTA's LOAD
pads) and never read from DRAM.

**Kept across calls** (:func:`keep_on_chip`, :func:`keep_weights_on_chip`): a
tensor in the activation memory (read over an on-chip path) or in the accumulator
memory (a conv's result that a pool reads), and a weight that several calls share
(a region's tiles), reserved whole from their first call to their last; a call
neither loads nor stores what is kept, and tiles in what its reservations leave.

**Traffic** (closed form, at the spec's dtypes, unpadded channels): the input,
summed over pixel tiles with the halo rows and columns clipped to the tensor,
times the times it is loaded; the weights times the times they are loaded; the
output once. **Cycles**: the GEMM blocks (:func:`gemm_blocks`, the same for any
tiling of a batch-1 layer) or vector elements per cycle, plus the DRAM time
(bytes / bandwidth + latency per transfer: one per tile load or store), overlapped
when every memory the call uses is double-buffered, serial otherwise, plus one
call overhead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from ..analysis.tir_stats import dtype_bytes
from ..errors import MemflatError
from ..planner.live_ranges import (
    GemmShape,
    KernelStep,
    LoweredSchedule,
    Window,
    weight_identity,
)
from ..spec import AcceleratorSpec, Memory
from .gemm import block_macs, gemm_blocks, vector_width

ORDERS = ("weights_outer", "input_outer")


class TilingError(MemflatError):
    """No tiling of a call fits the spec's buffers (bad input: the spec is too small)."""


@dataclass(frozen=True)
class CallShape:
    """One kernel call as the tiler sees it (see the module doc)."""

    kind: str            # "gemm" or "vector"
    window: Window
    groups: int = 1
    in_channels: int = 1     # per group
    out_channels: int = 1    # per group
    batch: int = 1
    operands: int = 1        # vector: input tensors read per output element
    #: gemm: vector operations per output element of the fused epilogue (bias, relu)
    epilogue: int = 0
    #: gemm: output-shaped tensors the epilogue reads (a residual add), loaded per
    #: output tile into the accumulator memory (where VTA's ALU adds)
    residuals: int = 0
    #: on a spec with an on-chip path (:func:`onchip_path`): the call's input is
    #: resident in the activation memory for the whole call (no loads, no input slot)
    input_on_chip: bool = False
    #: ... and its output tiles move over the path into the activation memory (no stores)
    output_on_chip: bool = False
    #: its output stays in the accumulator memory, in ``acc_reserved_bytes``, where the
    #: vector unit of the calls that read it works (no stores, no path; needs none).
    #: A vector call's ``input_on_chip`` then reads it there.
    output_in_accumulator: bool = False
    #: activation-memory bytes that resident tensors hold during the call (its own
    #: resident input and output included): what its tiles cannot use
    reserved_bytes: int = 0
    #: accumulator-memory bytes that tensors kept there hold during the call
    acc_reserved_bytes: int = 0
    #: gemm: the call's weights are resident in the weight memory across the calls
    #: that share them (:func:`keep_weights_on_chip`): no weight tile slot, no loads
    weight_on_chip: bool = False
    #: ... except this call, the first of them, which loads them once, whole, before
    #: its tiles
    weight_preload: bool = False
    #: weight-memory bytes that resident weights hold during the call (its own
    #: included): what its weight tiles cannot use
    weight_reserved_bytes: int = 0
    #: an elementwise call: the dims of the tensor it writes. Its tiles are then runs
    #: of elements that are boxes of that tensor (:func:`box_tile_sizes`), as a
    #: staging copy in TIR is; empty: any run
    dims: tuple[int, ...] = ()

    @property
    def taps(self) -> int:
        return self.window.kernel_h * self.window.kernel_w

    def weight_bytes(self, wgt: int) -> int:
        if self.kind != "gemm":
            return 0
        return self.groups * self.out_channels * self.in_channels * self.taps * wgt

    def output_bytes(self, act: int) -> int:
        w = self.window
        return self.batch * self.groups * self.out_channels * w.out_h * w.out_w * act

    def gemm(self) -> GemmShape:
        w = self.window
        return GemmShape(m=self.batch * w.out_h * w.out_w, k=self.in_channels * self.taps,
                         n=self.out_channels, groups=self.groups, taps=self.taps)


@dataclass(frozen=True)
class CallTiling:
    """One tiling of a call (see the module doc)."""

    rows: int
    cols: int
    group_block: int = 1
    out_block: int = 1
    in_block: int = 1
    order: str = "weights_outer"


@dataclass(frozen=True)
class TileBytes:
    """What one tile of each operand takes on chip (before double buffering)."""

    input: int
    weight: int
    accumulator: int


@dataclass(frozen=True)
class TilingCost:
    """The closed-form cost of a tiling."""

    input_traffic_bytes: int
    weight_traffic_bytes: int
    output_traffic_bytes: int
    transfers: int
    compute_cycles: int
    #: DRAM time, and the on-chip path's for an output kept on chip
    dram_cycles: int
    overhead_cycles: int
    cycles: int

    @property
    def traffic_bytes(self) -> int:
        return self.input_traffic_bytes + self.weight_traffic_bytes + self.output_traffic_bytes


@dataclass(frozen=True)
class CallPlan:
    """The chosen tiling of one kernel call, with where its tiles go and why."""

    step: int
    kernel: str
    shape: CallShape
    tiling: CallTiling
    tiles: TileBytes
    #: operand ("input", "weight", "accumulator") -> the memory holding its tiles
    memories: dict
    #: memory -> the bytes one tile of every operand takes there (double buffering x2)
    footprint_bytes: dict
    cost: TilingCost
    #: the per-layer minimum of this call: input (no halo), weights and output once
    min_traffic_bytes: int
    #: why the tiling is not the whole call: the memory that forced the split
    reason: str

    def describe(self) -> str:
        """One line: the call's tile and loop order (``gemm 14x28px oc64/64 ic64/64
        weights_outer``)."""
        t, shape = self.tiling, self.shape
        if shape.kind == "vector" or shape.groups > 1:
            what = f"{t.rows}x{t.cols}px g{t.group_block}/{shape.groups}"
        else:
            what = (f"{t.rows}x{t.cols}px oc{t.out_block}/{shape.out_channels} "
                    f"ic{t.in_block}/{shape.in_channels} {t.order}")
        chip = [k for k, on in (("in", shape.input_on_chip), ("out", shape.output_on_chip),
                                ("acc", shape.output_in_accumulator),
                                ("w", shape.weight_on_chip)) if on]
        return f"{shape.kind} {what}" + (f" {'+'.join(chip)}:chip" if chip else "")

    def to_dict(self) -> dict:
        return {"step": self.step, "kernel": self.kernel, "kind": self.shape.kind,
                "tiling": asdict(self.tiling), "tile_bytes": asdict(self.tiles),
                "memories": dict(self.memories), "traffic_bytes": self.cost.traffic_bytes,
                "footprint_bytes": dict(self.footprint_bytes),
                "min_traffic_bytes": self.min_traffic_bytes, "cycles": self.cost.cycles,
                "compute_cycles": self.cost.compute_cycles, "reason": self.reason,
                "input_on_chip": self.shape.input_on_chip,
                "output_on_chip": self.shape.output_on_chip,
                "output_in_accumulator": self.shape.output_in_accumulator,
                "reserved_bytes": self.shape.reserved_bytes,
                "acc_reserved_bytes": self.shape.acc_reserved_bytes,
                "weight_on_chip": self.shape.weight_on_chip,
                "weight_preload": self.shape.weight_preload,
                "weight_reserved_bytes": self.shape.weight_reserved_bytes}


# --------------------------------------------------------------------------- shapes


def call_shapes(step: KernelStep, schedule: LoweredSchedule) -> tuple[CallShape, ...]:
    """The tiled calls of one kernel step: one per GEMM, or one vector call.

    A GEMM without a window (a dense layer, or a window the reader did not
    recognise) is a window of ``m`` rows and one column. A kernel without GEMMs is a
    vector call: over its reduction window when it has one (a pool, a mean),
    otherwise over its output elements, reading each activation operand once.
    """
    if step.gemms:
        out = []
        for g in step.gemms:
            w = g.window or Window(channels=g.k_channels * g.groups, in_h=g.m, in_w=1,
                                   out_h=g.m, out_w=1)
            batch = max(1, g.m // (w.out_h * w.out_w))
            out.append(CallShape("gemm", w, g.groups, g.k_channels, g.n, batch))
        # the kernel's other blocks (bias, activation) run on each output element
        outputs = sum(g.m * g.n * g.groups for g in step.gemms)
        epilogue = math.ceil(step.vector_ops / outputs) if outputs else 0
        residuals = step.residuals if len(step.gemms) == 1 else 0
        out[-1] = replace(out[-1], epilogue=epilogue, residuals=residuals)
        return tuple(out)
    sizes = {b.name: b for b in schedule.buffers}
    reads = [sizes[n] for n in step.reads if n in sizes]
    if step.windows:
        w = step.windows[0]
        outs = [sizes[n] for n in step.writes if n in sizes]
        # what the kernel writes: its slice, when it writes one of a concatenation
        out_elems = (_elements(step.out_shape) if step.out_shape else
                     _elements(outs[0].shape) if outs else w.channels * w.out_h * w.out_w)
        batch = max(1, out_elems // (w.channels * w.out_h * w.out_w))
        return (CallShape("vector", w, w.channels, 1, 1, batch),)
    writes = [sizes[n] for n in step.writes if n in sizes]
    largest = max(writes, key=lambda b: _elements(b.shape), default=None)
    dims = tuple(int(d) for d in largest.shape) if largest is not None else ()
    if step.out_shape and writes:
        dims = tuple(step.out_shape)   # its slice, when it writes one in place
    elements = _elements(dims) if dims else 1
    w = Window(channels=1, in_h=elements, in_w=1, out_h=elements, out_w=1)
    return (CallShape("vector", w, operands=max(1, len(reads)), dims=dims),)


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)


# --------------------------------------------------------------------------- arithmetic


def window_extent(n: int, stride: int, span: int) -> int:
    """Input rows (or columns) ``n`` output rows read, padding included: the box from
    the first window's first row to the last window's last (a tile is one 2-D box,
    as a staging block in TIR and a VTA load are; when the stride exceeds the
    window, the rows between windows come along)."""
    return (n - 1) * stride + span


def tile_spans(out: int, tile: int, stride: int, span: int, pad: int, size: int) -> list[int]:
    """Input rows (or columns) each output tile of ``tile`` loads, clipped to ``size``.
    The last tile, when ``tile`` does not divide ``out``, loads the box of a whole
    tile clipped to the tensor, as its TIR staging block does (the copy's region is
    the full tile's; the ragged tile's predicate does not narrow it)."""
    def clipped(lo: int, hi: int) -> int:
        return max(0, min(size - 1, hi) - max(0, lo) + 1)

    spans = []
    for start in range(0, out, tile):
        spans.append(clipped(start * stride - pad, (start + tile - 1) * stride + span - 1 - pad))
    return spans


def _sizes(total: int, tile: int) -> list[tuple[int, int]]:
    """(tile size, how many tiles of it) when ``total`` is cut into tiles of ``tile``."""
    full, last = divmod(total, tile)
    return [(size, n) for size, n in ((tile, full), (last, 1)) if size and n]


def _blocks(total: int, block: int) -> int:
    return math.ceil(total / block)


def _padded(channels: int, block: int) -> int:
    return _blocks(channels, block) * block


def memory_for(spec: AcceleratorSpec, role: str) -> Memory:
    """The first memory of the spec that holds ``role`` tiles."""
    found = next((m for m in spec.memories if role in m.holds), None)
    if found is None:
        raise TilingError(f"spec {spec.name!r} has no memory that holds {role}")
    return found


def operand_memories(shape: CallShape, spec: AcceleratorSpec) -> dict[str, str]:
    """Operand -> the memory its tiles go to (vector calls: all in the accumulator memory)."""
    if shape.kind == "vector":
        acc = next((m for m in spec.memories if "accumulators" in m.holds), None)
        home = acc or memory_for(spec, "activations")
        return {"input": home.name, "accumulator": home.name}
    return {"input": memory_for(spec, "activations").name,
            "weight": memory_for(spec, "weights").name,
            "accumulator": memory_for(spec, "accumulators").name}


def tile_bytes(shape: CallShape, tiling: CallTiling, spec: AcceleratorSpec) -> TileBytes:
    """On-chip bytes of one tile of each operand (see the module doc)."""
    c, w = spec.compute, shape.window
    act, acc = dtype_bytes(c.activation_dtype), dtype_bytes(c.accumulator_dtype)
    in_px = (window_extent(tiling.rows, w.stride_h, w.span_h)
             * window_extent(tiling.cols, w.stride_w, w.span_w))
    out_px = tiling.rows * tiling.cols
    if shape.kind == "vector":
        ch = tiling.group_block
        # a resident input is read where it is (in the accumulator memory's reservation)
        return TileBytes(0 if shape.input_on_chip else shape.operands * in_px * ch * acc, 0,
                         out_px * ch * acc)
    bi, bo = c.gemm_block_in, c.gemm_block_out
    if shape.groups > 1:
        g = tiling.group_block
        cin, cout = g * shape.in_channels, g * shape.out_channels
        blocks = gemm_blocks(GemmShape(1, shape.in_channels, shape.out_channels, g, 1), c)
    else:
        cin, cout = tiling.in_block, tiling.out_block
        blocks = _blocks(cin, bi) * _blocks(cout, bo)
    # resident weights (and a resident input) are read where they are: their bytes
    # are in ``weight_reserved_bytes`` (``reserved_bytes``)
    weight = 0 if shape.weight_on_chip else blocks * bi * bo * shape.taps * dtype_bytes(
        c.weight_dtype)
    return TileBytes(0 if shape.input_on_chip else in_px * _padded(cin, bi) * act, weight,
                     (1 + shape.residuals) * out_px * _padded(cout, bo) * acc)


def footprint(shape: CallShape, tiles: TileBytes, spec: AcceleratorSpec) -> dict[str, int]:
    """Bytes each memory must hold for one tile of every operand (double buffering x2)."""
    used: dict[str, int] = {}
    mems = {m.name: m for m in spec.memories}
    if shape.reserved_bytes:
        used[memory_for(spec, "activations").name] = shape.reserved_bytes
    if shape.weight_reserved_bytes:
        name = memory_for(spec, "weights").name
        used[name] = used.get(name, 0) + shape.weight_reserved_bytes
    if shape.acc_reserved_bytes:
        name = memory_for(spec, "accumulators").name
        used[name] = used.get(name, 0) + shape.acc_reserved_bytes
    for operand, memory in operand_memories(shape, spec).items():
        nbytes = getattr(tiles, operand)
        factor = 2 if mems[memory].double_buffered else 1
        used[memory] = used.get(memory, 0) + factor * nbytes
    return used


def overflows(shape: CallShape, tiling: CallTiling,
              spec: AcceleratorSpec) -> list[tuple[str, int, int]]:
    """(memory, bytes needed, size) of every memory one tile set of ``tiling`` overflows."""
    sizes = {m.name: m.size_bytes for m in spec.memories}
    return [(m, n, sizes[m]) for m, n in
            footprint(shape, tile_bytes(shape, tiling, spec), spec).items() if n > sizes[m]]


def fits(shape: CallShape, tiling: CallTiling, spec: AcceleratorSpec) -> bool:
    return not overflows(shape, tiling, spec)


def loop_counts(shape: CallShape, tiling: CallTiling) -> tuple[int, int, int, int]:
    """(pixel tiles, group or output-channel blocks, input-channel blocks, group blocks)."""
    w = shape.window
    pixels = shape.batch * _blocks(w.out_h, tiling.rows) * _blocks(w.out_w, tiling.cols)
    if shape.kind == "vector" or shape.groups > 1:
        return pixels, 1, 1, _blocks(shape.groups, tiling.group_block)
    return (pixels, _blocks(shape.out_channels, tiling.out_block),
            _blocks(shape.in_channels, tiling.in_block), 1)


def reload_factors(shape: CallShape, tiling: CallTiling) -> tuple[int, int]:
    """How many times the input and the weights are loaded (see the module doc)."""
    pixels, n_out, n_in, _ = loop_counts(shape, tiling)
    if shape.kind == "vector" or shape.groups > 1:
        return 1, 1
    whole_in = n_in == 1
    # a tile is loaded once when it is the only one of its operand, when its loop
    # is the outer one (with no input-channel blocks in between), or when the other
    # operand has one tile
    f_in = 1 if (n_out == 1 or pixels * n_in == 1
                 or (whole_in and tiling.order == "input_outer")) else n_out
    f_w = 1 if (pixels == 1 or n_out * n_in == 1
                or (whole_in and tiling.order == "weights_outer")) else pixels
    return f_in, f_w


def _double_buffered(shape: CallShape, spec: AcceleratorSpec) -> bool:
    mems = {m.name: m for m in spec.memories}
    return all(mems[m].double_buffered for m in operand_memories(shape, spec).values())


def tiling_cost(shape: CallShape, tiling: CallTiling, spec: AcceleratorSpec) -> TilingCost:
    """The closed-form traffic and cycles of ``tiling`` (see the module doc)."""
    c, w = spec.compute, shape.window
    act, wgt = dtype_bytes(c.activation_dtype), dtype_bytes(c.weight_dtype)
    rows = tile_spans(w.out_h, tiling.rows, w.stride_h, w.span_h, w.pad_top, w.in_h)
    cols = tile_spans(w.out_w, tiling.cols, w.stride_w, w.span_w, w.pad_left, w.in_w)
    channels = shape.operands * shape.groups * shape.in_channels
    halo_input = 0 if shape.input_on_chip else (
        shape.batch * channels * sum(rows) * sum(cols) * act)
    f_in, f_w = reload_factors(shape, tiling)
    pixels, n_out, n_in, n_groups = loop_counts(shape, tiling)
    in_traffic = f_in * halo_input
    # resident weights: loaded once, whole, by the first call that shares them
    w_traffic = (shape.weight_bytes(wgt) * shape.weight_preload if shape.weight_on_chip
                 else f_w * shape.weight_bytes(wgt))
    out_traffic = 0 if _kept(shape) else shape.output_bytes(act)
    in_traffic += shape.residuals * shape.output_bytes(act)  # residuals: read once
    tiles = _output_tiles(shape, tiling)
    # transfers: one per input tile load, weight tile load and output tile store
    # (none for a resident input; an output kept on chip moves over the path)
    stores = 0 if _kept(shape) else 1
    if shape.kind == "vector":
        loads = 0 if shape.input_on_chip else shape.operands
        transfers = (loads + stores) * pixels * n_groups
        # per tile, ceil(elements / width): over the (at most 2) sizes of each loop
        compute = sum(n * math.ceil(e * shape.operands * shape.taps / vector_width(c))
                      for e, n in tiles)
    else:
        in_loads = 0 if shape.input_on_chip else (
            pixels * n_in * (n_out if f_in > 1 else 1) * n_groups)
        w_loads = (int(shape.weight_preload) if shape.weight_on_chip
                   else n_out * n_in * (pixels if f_w > 1 else 1) * n_groups)
        transfers = in_loads + w_loads + (stores + shape.residuals) * pixels * n_out * n_groups
        g = shape.gemm()
        if shape.groups > 1:  # per group block: block-diagonal packing restarts in each
            blocks = sum(count * gemm_blocks(GemmShape(g.m, g.k, g.n, size, g.taps), c)
                         for size, count in _sizes(shape.groups, tiling.group_block))
        else:
            blocks = gemm_blocks(g, c)
        compute = math.ceil(blocks * block_macs(c) / c.macs_per_cycle)
        # the epilogue, per output tile: ceil(elements x ops / width)
        compute += sum(n * math.ceil(e * shape.epilogue / vector_width(c)) for e, n in tiles)
    traffic = in_traffic + w_traffic + out_traffic
    dram = math.ceil(traffic / spec.dram.bandwidth_bytes_per_cycle) + \
        transfers * spec.dram.latency_cycles
    if shape.output_on_chip:  # each output tile over the path, no DRAM latency
        bandwidth = _path_bandwidth(spec)
        dram += sum(n * math.ceil(e * act / bandwidth) for e, n in tiles)
    overhead = spec.dram.latency_cycles
    total = (max(compute, dram) if _double_buffered(shape, spec) else compute + dram) + overhead
    return TilingCost(in_traffic, w_traffic, out_traffic, transfers, compute, dram, overhead,
                      total)


def _kept(shape: CallShape) -> bool:
    """The call's output stays on chip (moved over the path, or in the accumulator
    memory): it is not stored."""
    return shape.output_on_chip or shape.output_in_accumulator


def _output_tiles(shape: CallShape, tiling: CallTiling) -> list[tuple[int, int]]:
    """(elements of an output tile, how many tiles of that size): over the (at most
    2) sizes of the row, column and channel loops."""
    w = shape.window
    channels = (_sizes(shape.out_channels, tiling.out_block)
                if shape.kind == "gemm" and shape.groups == 1 else
                [(g * shape.out_channels, n) for g, n in _sizes(shape.groups, tiling.group_block)])
    return [(r * cc * ch, shape.batch * nr * nc * nch)
            for r, nr in _sizes(w.out_h, tiling.rows) for cc, nc in _sizes(w.out_w, tiling.cols)
            for ch, nch in channels]


def onchip_path(spec: AcceleratorSpec):
    """The spec's on-chip path from the accumulator memory to the memory holding
    activation tiles (design.md §6 ``[[onchip_path]]``), or None: where results can
    stay on chip as the next layer's input."""
    acc = next((m for m in spec.memories if "accumulators" in m.holds), None)
    act = memory_for(spec, "activations")
    return next((p for p in spec.onchip_paths
                 if acc is not None and p.source == acc.name and p.dest == act.name), None)


def _path_bandwidth(spec: AcceleratorSpec) -> int:
    path = onchip_path(spec)
    if path is None:
        raise MemflatError(f"spec {spec.name!r} has no on-chip path from the accumulator "
                           "memory to the activation memory: no output can stay on chip")
    return path.bandwidth_bytes_per_cycle


def _touched(out: int, stride: int, span: int, pad: int, size: int) -> int:
    """Input rows (or columns) of ``size`` that ``out`` windows read, each once."""
    if span >= stride:
        return max(0, min(size - 1, (out - 1) * stride + span - 1 - pad) - max(0, -pad) + 1)
    return len({r for o in range(out) for r in range(o * stride - pad, o * stride - pad + span)
                if 0 <= r < size})


def min_traffic(shape: CallShape, spec: AcceleratorSpec) -> int:
    """The call's per-layer minimum: the input its windows read (each pixel once: no
    halo twice, none of the pixels between windows that a box would load), the
    weights and the output (and residuals), once each."""
    c, w = spec.compute, shape.window
    act, wgt = dtype_bytes(c.activation_dtype), dtype_bytes(c.weight_dtype)
    rows = _touched(w.out_h, w.stride_h, w.span_h, w.pad_top, w.in_h)
    cols = _touched(w.out_w, w.stride_w, w.span_w, w.pad_left, w.in_w)
    read = shape.batch * shape.operands * shape.groups * shape.in_channels * rows * cols * act
    return read + shape.weight_bytes(wgt) + (1 + shape.residuals) * shape.output_bytes(act)


# --------------------------------------------------------------------------- the space


def _tile_counts(n: int) -> list[int]:
    """Distinct tile sizes ``ceil(n/t)`` (every other size has a smaller equal-count one)."""
    return sorted({math.ceil(n / t) for t in range(1, n + 1)})


def _channel_blocks(n: int, block: int) -> list[int]:
    """Channel blocks: multiples of the GEMM block, one per distinct block count."""
    units = _blocks(n, block)
    return sorted({min(n, block * math.ceil(units / t)) for t in range(1, units + 1)})


def box_tile_sizes(dims: tuple[int, ...]) -> list[int]:
    """Tile sizes (in elements) whose tiles, cut in order from the start of a
    row-major tensor of ``dims``, are boxes of it: ``d`` times the elements of the
    dims after one dim, for every divisor ``d`` of that dim (a tile never crosses
    that dim's end)."""
    sizes: set = set()
    inner = 1
    for n in reversed(dims):
        sizes.update(d * inner for d in range(1, n + 1) if n % d == 0)
        inner *= n
    return sorted(sizes)


def tiling_space(shape: CallShape, spec: AcceleratorSpec):
    """Every tiling the chooser and the exhaustive reference consider, pixel sizes
    outermost: yields ``(channel part, rows list, cols list)``, the channel part as
    ``(group_block, out_block, in_block, order)``. An elementwise call with ``dims``
    has box tiles only (:func:`box_tile_sizes`)."""
    c, w = spec.compute, shape.window
    rows, cols = _tile_counts(w.out_h), _tile_counts(w.out_w)
    if shape.dims and math.prod(shape.dims) == w.out_h:
        rows = box_tile_sizes(shape.dims)
    if shape.kind == "vector" or shape.groups > 1:
        for g in _tile_counts(shape.groups):
            yield (g, 1, 1, "weights_outer"), rows, cols
        return
    for ob in _channel_blocks(shape.out_channels, c.gemm_block_out):
        for ib in _channel_blocks(shape.in_channels, c.gemm_block_in):
            for order in ORDERS:
                yield (1, ob, ib, order), rows, cols


def _key(cost: TilingCost) -> tuple[int, int]:
    return cost.traffic_bytes, cost.cycles


def choose_tiling(shape: CallShape, spec: AcceleratorSpec) -> CallTiling:
    """The tiling with the least traffic, then the fewest cycles, whose tiles fit.

    For each channel part and tile height, the widest tile that fits is the only
    candidate: fit is monotone in the width, and a wider tile never loads more
    (fewer halos, fewer weight reloads, fewer transfers), unless the windows have
    gaps between them (then every fitting width is tried). Raises :class:`TilingError`
    when not even a one-pixel tile of the smallest channel block fits.
    """
    best, best_key = None, None
    w = shape.window
    # windows with gaps between them (a 1x1 stride-2 conv): a wider box loads the
    # columns between windows too, so every fitting width is a candidate
    gaps = w.span_h < w.stride_h or w.span_w < w.stride_w
    for (g, ob, ib, order), rows, cols in tiling_space(shape, spec):
        for r in rows:
            lo, hi = 0, len(cols) - 1
            if not fits(shape, CallTiling(r, cols[0], g, ob, ib, order), spec):
                break  # taller tiles do not fit either
            while lo < hi:  # the widest fitting column count
                mid = (lo + hi + 1) // 2
                if fits(shape, CallTiling(r, cols[mid], g, ob, ib, order), spec):
                    lo = mid
                else:
                    hi = mid - 1
            for col in (cols[:lo + 1] if gaps else cols[lo:lo + 1]):
                tiling = CallTiling(r, col, g, ob, ib, order)
                key = _key(tiling_cost(shape, tiling, spec))
                if best_key is None or key < best_key:
                    best, best_key = tiling, key
    if best is None:
        raise TilingError(_no_fit_message(shape, spec))
    return best


def _no_fit_message(shape: CallShape, spec: AcceleratorSpec) -> str:
    over = [f"{m} needs {n} B > {size} B"
            for m, n, size in overflows(shape, smallest_tiling(shape, spec), spec)]
    return (f"spec {spec.name!r}: the smallest tile of a {shape.kind} call "
            f"({shape.groups}x{shape.in_channels}->{shape.out_channels} channels, "
            f"{shape.window.kernel_h}x{shape.window.kernel_w} window) does not fit: "
            + "; ".join(over))


def _reason(shape: CallShape, tiling: CallTiling, spec: AcceleratorSpec) -> str:
    """Why the chosen tiling splits the call: what the whole call would overflow."""
    w = shape.window
    whole = CallTiling(w.out_h, w.out_w, shape.groups, shape.out_channels,
                       shape.in_channels, tiling.order)
    over = [f"{m} {n} B > {size} B" for m, n, size in overflows(shape, whole, spec)]
    return "whole call fits" if not over else "whole call needs " + ", ".join(over)


def plan_call(step: KernelStep, shape: CallShape, spec: AcceleratorSpec) -> CallPlan:
    """The chosen tiling of one call of ``step``, with its tiles, memories and cost."""
    tiling = choose_tiling(shape, spec)
    tiles = tile_bytes(shape, tiling, spec)
    return CallPlan(step.step, step.kernel, shape, tiling, tiles,
                    operand_memories(shape, spec), footprint(shape, tiles, spec),
                    tiling_cost(shape, tiling, spec), min_traffic(shape, spec),
                    _reason(shape, tiling, spec))


@dataclass(frozen=True)
class BufferedPlan:
    """Every call of a schedule tiled for a buffered spec."""

    spec: str
    calls: tuple[CallPlan, ...]
    #: the memory that holds activation tiles (the input buffer)
    activation_memory: str = ""
    #: memory name -> size
    capacity_bytes: dict = field(default_factory=dict)
    #: the least the activation memory can be: the largest footprint there of any
    #: call's smallest tiling (one pixel, the smallest channel blocks)
    lower_bound_bytes: int = 0
    #: the activations kept on chip between their producers and readers (a spec
    #: with an on-chip path: :func:`keep_on_chip`), by buffer name
    kept_on_chip: tuple[str, ...] = ()
    #: the weights kept in the weight memory across the calls that share them (the
    #: tiles of a region: :func:`keep_weights_on_chip`), as :class:`KeptWeight`
    weights_kept: tuple = ()

    @property
    def high_water_bytes(self) -> dict:
        """Memory -> the largest tile footprint any call puts there."""
        out: dict = {}
        for c in self.calls:
            for m, n in c.footprint_bytes.items():
                out[m] = max(out.get(m, 0), n)
        return out

    @property
    def activation_high_water_bytes(self) -> int:
        return self.high_water_bytes.get(self.activation_memory, 0)

    @property
    def traffic_bytes(self) -> int:
        return sum(c.cost.traffic_bytes for c in self.calls)

    @property
    def activation_traffic_bytes(self) -> int:
        """DRAM traffic of activations: all but the weights."""
        return sum(c.cost.input_traffic_bytes + c.cost.output_traffic_bytes
                   for c in self.calls)

    @property
    def min_traffic_bytes(self) -> int:
        return sum(c.min_traffic_bytes for c in self.calls)

    @property
    def cycles(self) -> int:
        return sum(c.cost.cycles for c in self.calls)

    def to_dict(self) -> dict:
        return {"spec": self.spec, "traffic_bytes": self.traffic_bytes,
                "activation_traffic_bytes": self.activation_traffic_bytes,
                "kept_on_chip": list(self.kept_on_chip),
                "weights_kept": [asdict(k) for k in self.weights_kept],
                "per_layer_min_traffic_bytes": self.min_traffic_bytes,
                "cycles": self.cycles, "high_water_bytes": self.high_water_bytes,
                "capacity_bytes": dict(self.capacity_bytes),
                "lower_bound_bytes": self.lower_bound_bytes,
                "calls": [c.to_dict() for c in self.calls]}


def plan_buffered(schedule: LoweredSchedule, spec: AcceleratorSpec,
                  progress=None) -> BufferedPlan:
    """Tile every call of ``schedule`` for the buffered ``spec``. Identical calls are
    tiled once. The activations :func:`keep_on_chip` chooses stay on chip, and the
    weights :func:`keep_weights_on_chip` chooses stay in the weight memory."""
    if spec.machine_kind != "buffered":
        raise MemflatError(f"spec {spec.name!r} is a {spec.machine_kind} machine, "
                           "not buffered: its plan places whole tensors (plan_for_spec)")
    shapes = {step.step: call_shapes(step, schedule) for step in schedule.steps}
    shapes, kept = keep_on_chip(schedule, spec, shapes)
    shapes, weights = keep_weights_on_chip(schedule, spec, shapes)
    memo: dict = {}
    calls = []
    for i, step in enumerate(schedule.steps):
        for shape in shapes[step.step]:
            if shape not in memo:
                memo[shape] = plan_call(step, shape, spec)
            calls.append(_at(memo[shape], step))
        if progress is not None and (i + 1) % 50 == 0:
            progress(f"tiled {i + 1}/{len(schedule.steps)} calls")
    act = memory_for(spec, "activations").name
    lower = max((footprint(c.shape, tile_bytes(c.shape, smallest_tiling(c.shape, spec), spec),
                           spec).get(act, 0) for c in memo.values()), default=0)
    return BufferedPlan(spec.name, tuple(calls), act,
                        {m.name: m.size_bytes for m in spec.memories}, lower, kept, weights)


def resident_bytes(shape: tuple, spec: AcceleratorSpec) -> int:
    """On-chip bytes of a whole NCHW activation kept resident: channels padded to the
    GEMM block (VTA stores 16-channel vectors), at the spec's activation dtype."""
    n, ch, h, w = (int(d) for d in shape)
    return n * _padded(ch, spec.compute.gemm_block_in) * h * w * \
        dtype_bytes(spec.compute.activation_dtype)


class _SpanCost:
    """(DRAM bytes, cycles) of a set of calls, each tiled by :func:`choose_tiling`
    (memoised by shape): what keeping a tensor on chip is judged by."""

    def __init__(self, spec: AcceleratorSpec):
        self.spec, self.memo = spec, {}

    def __call__(self, calls: dict) -> tuple[int, int]:
        costs = []
        for xs in calls.values():
            for shape in xs:
                if shape not in self.memo:
                    self.memo[shape] = tiling_cost(shape, choose_tiling(shape, self.spec),
                                                   self.spec)
                costs.append(self.memo[shape])
        return sum(c.traffic_bytes for c in costs), sum(c.cycles for c in costs)

    def saving(self, trial: dict, current: dict) -> int | None:
        """DRAM bytes the calls of ``trial`` (step -> shapes: the same steps re-shaped
        to keep something on chip) save against ``current``, when they move fewer
        bytes (then take fewer cycles) and every one still fits; else None."""
        try:
            after = self(trial)
        except TilingError:  # some call no longer fits beside the reservation
            return None
        before = self({k: current[k] for k in trial})
        return before[0] - after[0] if after < before else None


def accumulator_bytes(shape: tuple, spec: AcceleratorSpec) -> int:
    """Accumulator-memory bytes of a whole NCHW tensor kept there: channels padded to
    the GEMM block, at the accumulator dtype."""
    n, ch, h, w = (int(d) for d in shape)
    return n * _padded(ch, spec.compute.gemm_block_out) * h * w * \
        dtype_bytes(spec.compute.accumulator_dtype)


def keep_on_chip(schedule: LoweredSchedule, spec: AcceleratorSpec, shapes: dict
                 ) -> tuple[dict, tuple[str, ...]]:
    """Which activations stay on chip, and the calls' shapes that say so.

    A candidate is a 4-D intermediate tensor whose producers write only it (one call
    each), all before its first reader, and whose readers read only it, one call
    each, either

    * all GEMM calls (their input), on a spec whose accumulator memory has an
      on-chip path to the activation memory (:func:`onchip_path`): the producers'
      results move over the path instead of to DRAM, and the readers read the
      tensor where it is. Its whole (channel-padded) bytes are reserved in the
      activation memory;
    * or all vector calls of one operand (a pool reading a conv's result): VTA's
      vector unit works in the accumulator memory, where a GEMM leaves its result,
      so the producers leave it there and the readers read it there (no path
      needed). Its whole bytes (channels padded, at the accumulator dtype) are
      reserved in the accumulator memory.

    The reservation holds from the first producer to the last reader: every call in
    between tiles in what is left. Greedy in schedule order: a candidate is kept
    when the calls it spans, re-tiled with the reservation, move fewer DRAM bytes
    (then take fewer cycles) than without it, and every one still fits (else it is
    not kept). ``shapes`` is step -> its calls' :class:`CallShape`
    (:func:`call_shapes`); returns the updated map and the kept buffers' names.
    """
    total = _SpanCost(spec)
    path = onchip_path(spec) is not None
    accumulators = any("accumulators" in m.holds for m in spec.memories)
    current = dict(shapes)
    kept = []
    by_step = {s.step: s for s in schedule.steps}
    for buf in sorted(schedule.buffers, key=lambda b: (b.start, b.name)):
        if buf.role != "intermediate" or len(buf.shape) != 4:
            continue
        # the steps that use it (``uses``) are its producers and readers
        using = [by_step[k] for k in buf.uses if k in by_step]
        producers = {s.step for s in using if buf.name in s.writes}
        readers = {s.step for s in using if buf.name in s.reads}
        if not producers or not readers or max(producers) >= min(readers):
            continue
        if any(by_step[k].writes != (buf.name,) or len(current[k]) != 1 for k in producers):
            continue
        if any(by_step[k].reads != (buf.name,) or len(current[k]) != 1 for k in readers):
            continue
        kinds = {(current[k][0].kind, current[k][0].operands) for k in readers}
        if kinds == {("gemm", 1)} and path:
            size, field_, out = resident_bytes(buf.shape, spec), "reserved_bytes", \
                "output_on_chip"
        elif kinds == {("vector", 1)} and accumulators:
            size, field_, out = accumulator_bytes(buf.shape, spec), "acc_reserved_bytes", \
                "output_in_accumulator"
        else:
            continue
        span = [k for k in by_step if min(producers) <= k <= max(readers)]
        trial = {k: tuple(replace(x, **{field_: getattr(x, field_) + size,
                                        out: getattr(x, out) or k in producers},
                                  input_on_chip=x.input_on_chip or k in readers)
                          for x in current[k]) for k in span}
        if total.saving(trial, current) is not None:
            current.update(trial)
            kept.append(buf.name)
    return current, tuple(kept)


@dataclass(frozen=True)
class KeptWeight:
    """One weight kept in the weight memory across the calls that share it."""

    #: the kernel of the first call that reads it (which loads it, whole)
    kernel: str
    first_step: int
    last_step: int
    #: the calls that read it
    calls: int
    #: what it holds in the weight memory (16x16 blocks, at the spec's weight dtype)
    reserved_bytes: int
    #: DRAM bytes of weight loads saved against loading it per call
    saved_bytes: int


def resident_weight_bytes(shape: CallShape, spec: AcceleratorSpec) -> int:
    """Weight-memory bytes of a GEMM call's whole weights: its 16x16 blocks (block-
    diagonal for small groups), as one weight tile of the whole call would hold them."""
    whole = CallTiling(1, 1, shape.groups, shape.out_channels, shape.in_channels)
    return tile_bytes(replace(shape, weight_on_chip=False), whole, spec).weight


def keep_weights_on_chip(schedule: LoweredSchedule, spec: AcceleratorSpec, shapes: dict
                         ) -> tuple[dict, tuple[KeptWeight, ...]]:
    """Which weights stay in the weight memory across the calls that share them, and
    the calls' shapes that say so.

    The tiles of a region (:mod:`tvm_memflat.transform.tile_region`) call their layer's
    kernel once per tile, on the same weights
    (:func:`~tvm_memflat.planner.live_ranges.weight_identity`). Loaded per call, a
    layer's weights cross from DRAM once per tile. Kept, they are loaded once, whole,
    by the first call, and stay resident until the last: their blocks are reserved in
    the weight memory over every call in between, whose weight tiles use what is
    left. A candidate is a weight that two or more steps read, each step one GEMM
    call whose weight operands (the GEMM's, and a bias the epilogue adds) are the
    same. A bias is not counted: the closed form and the simulator load GEMM weights
    only.

    Greedy in schedule order, as :func:`keep_on_chip`: a weight is kept when the
    calls it spans, re-tiled with the reservation, move fewer DRAM bytes (then take
    fewer cycles) than without it, and every one still fits. ``shapes`` is step ->
    its calls' :class:`CallShape`; returns the updated map and what was kept.
    """
    readers: dict = {}
    kernels = {step.step: step.kernel for step in schedule.steps}
    for step in schedule.steps:
        calls = shapes[step.step]
        if step.weight_refs and len(calls) == 1 and calls[0].kind == "gemm" \
                and calls[0].weight_bytes(1):
            key = tuple(weight_identity(r) for r in step.weight_refs)
            readers.setdefault(key, []).append(step.step)
    total = _SpanCost(spec)
    current = dict(shapes)
    kept = []
    steps = sorted(current)
    for using in sorted((s for s in readers.values() if len(s) > 1), key=lambda s: s[0]):
        first, last = using[0], using[-1]
        size = resident_weight_bytes(current[first][0], spec)
        span = [k for k in steps if first <= k <= last]
        trial = {k: tuple(replace(x, weight_reserved_bytes=x.weight_reserved_bytes + size,
                                  weight_on_chip=x.weight_on_chip or k in using,
                                  weight_preload=x.weight_preload or k == first)
                          for x in current[k]) for k in span}
        saved = total.saving(trial, current)
        if saved is not None:
            current.update(trial)
            kept.append(KeptWeight(kernels[first], first, last, len(using), size, saved))
    return current, tuple(kept)


def smallest_tiling(shape: CallShape, spec: AcceleratorSpec) -> CallTiling:
    """One output pixel, the smallest channel blocks of the space."""
    c = spec.compute
    return CallTiling(1, 1, 1, min(shape.out_channels, c.gemm_block_out),
                      min(shape.in_channels, c.gemm_block_in))


def _at(plan: CallPlan, step: KernelStep) -> CallPlan:
    return replace(plan, step=step.step, kernel=step.kernel)
