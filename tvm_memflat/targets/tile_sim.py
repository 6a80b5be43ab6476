"""Replay a call's tiling copy by copy: the buffered machine's simulator.

:func:`replay_call` walks the loop nest a :class:`~tvm_memflat.hardware.call_tiling.CallTiling`
describes, tile by tile, as the accelerator would run it:

* every **load** is one DMA transfer of the real bytes of a tile: the input rows
  and columns the output tile's window reads, clipped to the tensor (padding is
  zero-filled on chip, not read), of the block's real channels; the weight block;
* a tile already in its buffer (the same input or weight tile as the one just
  used) is not loaded again;
* at every load the operand's buffer slot is (re)allocated at the tile's on-chip
  size (padded channels, the window's full rows and columns), and every memory's
  resident bytes (twice a slot in a double-buffered memory) are checked against
  its size: a tile that does not fit raises
  :class:`~tvm_memflat.errors.ScheduleViolation`;
* what a call's shape keeps on chip across calls is held for the whole call, once
  (never double-buffered): tensors in the activation memory (``reserved_bytes``)
  or the accumulator memory (``acc_reserved_bytes``), weights in the weight memory
  (``weight_reserved_bytes``); a resident input or weight is not loaded, except
  resident weights by the call that loads them (once, whole);
* every output tile is **stored** once its input-channel blocks are done, unless
  it stays on chip (over the path, or in the accumulator memory);
* **cycles**: per tile, GEMM blocks (one per pixel, tap and 16×16 channel block,
  block-diagonal for small groups) or vector elements, and per transfer
  ``ceil(bytes / bandwidth) + latency``; overlapped per tile when every memory the
  call uses is double-buffered, serial otherwise; one call overhead.

Nothing here calls the closed-form cost of :mod:`tvm_memflat.hardware.call_tiling`;
only its shape, tile sizes (what a slot must hold) and loop counts are shared. The
tests hold :func:`replay_call` to :func:`~tvm_memflat.hardware.call_tiling.tiling_cost`
(bytes exactly, cycles within 5 %), and :func:`exhaustive_tiling` (every tiling of
the space, replayed) to :func:`~tvm_memflat.hardware.call_tiling.choose_tiling`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir, tirx

from ..analysis.tir_stats import dtype_bytes
from ..errors import ScheduleViolation
from ..hardware.call_tiling import (
    CallShape,
    CallTiling,
    memory_for,
    onchip_path,
    operand_memories,
    tiling_space,
)
from ..hardware.gemm import vector_width
from ..spec import AcceleratorSpec
from .tile_tir import (
    ALU_ATTR,
    COMPUTE_ATTR,
    LAYOUT_ATTR,
    MEMORY_ATTR,
    ON_CHIP_ATTR,
    OPERAND_ATTR,
    RESERVATIONS,
    WEIGHT_ON_CHIP_ATTR,
)


@dataclass(frozen=True)
class CallReplay:
    """What replaying one call moved and took."""

    read_bytes: int
    write_bytes: int
    transfers: int
    compute_cycles: int
    dram_cycles: int
    cycles: int
    #: memory name -> the most bytes resident at once
    high_water_bytes: dict
    #: of ``read_bytes``: the weights
    weight_bytes: int = 0

    @property
    def traffic_bytes(self) -> int:
        return self.read_bytes + self.write_bytes


def _ranges(total: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(total, s + tile)) for s in range(0, total, tile)]


@functools.lru_cache(maxsize=65536)
def _rows_read(lo_out: int, hi_out: int, stride: int, span: int, pad: int,
               size: int) -> tuple[int, int]:
    """(rows held on chip, rows read from DRAM) for output rows ``[lo_out, hi_out)``:
    the box of input rows from the first window's first row to the last window's
    last, with and without the padding rows."""
    touched = range(lo_out * stride - pad, (hi_out - 1) * stride - pad + span)
    return len(touched), sum(1 for r in touched if 0 <= r < size)


def _group_blocks(groups: int, kc: int, n: int, spec: AcceleratorSpec) -> int:
    bi, bo = spec.compute.gemm_block_in, spec.compute.gemm_block_out
    if groups > 1 and kc < bi and n < bo:
        return math.ceil(groups / min(bi // kc, bo // n))
    return groups * math.ceil(kc / bi) * math.ceil(n / bo)


#: the slot of the tensors kept on chip across calls (``CallShape.reserved_bytes``)
RESIDENT = "resident"
#: the slot of the weights kept in the weight memory across calls
#: (``CallShape.weight_reserved_bytes``)
RESIDENT_WEIGHTS = "resident weights"
#: the slot of the tensors kept in the accumulator memory across calls
#: (``CallShape.acc_reserved_bytes``)
RESIDENT_ACC = "resident accumulators"
#: slots held for a whole call: never double-buffered
_RESIDENT = (RESIDENT, RESIDENT_WEIGHTS, RESIDENT_ACC)
#: the slot of each reservation (:data:`~.tile_tir.RESERVATIONS`), by its memory's role
_SLOTS = {"activations": RESIDENT, "weights": RESIDENT_WEIGHTS, "accumulators": RESIDENT_ACC}


def _occupy(slots: dict, high: dict, mems: dict, where: str, operand: str, memory: str,
            nbytes: int) -> None:
    """(Re)allocate ``operand``'s tile slot in ``memory`` and check residency: the
    memory's slots (twice each in a double-buffered memory; the ``resident`` slot of
    tensors kept on chip once) must fit its size."""
    slots[operand] = (memory, nbytes)
    used = sum(n * (2 if mems[m].double_buffered and op not in _RESIDENT else 1)
               for op, (m, n) in slots.items() if m == memory)
    high[memory] = max(high.get(memory, 0), used)
    if used > mems[memory].size_bytes:
        raise ScheduleViolation(f"{where}{memory} holds {used} B > "
                                f"{mems[memory].size_bytes} B ({operand} tile)")


def _path_cycles(nbytes: int, spec: AcceleratorSpec) -> int:
    """Cycles of one output tile moved over the on-chip path (no DRAM latency)."""
    path = onchip_path(spec)
    if path is None:
        raise ScheduleViolation(f"spec {spec.name!r} has no on-chip path for an output "
                                "kept on chip")
    return math.ceil(nbytes / path.bandwidth_bytes_per_cycle)


class _OverBudget(Exception):
    """The replay moved more bytes than ``budget``: the exhaustive search's bound."""


def _epilogue(outputs: int, shape: CallShape, spec: AcceleratorSpec) -> int:
    """ALU cycles of the fused bias/activation on ``outputs`` elements."""
    return math.ceil(outputs * shape.epilogue / vector_width(spec.compute))


def replay_call(shape: CallShape, tiling: CallTiling, spec: AcceleratorSpec,
                where: str = "", budget: int | None = None) -> CallReplay:
    """Run one call's tile loops (see the module doc); raise on a tile that does not fit.

    With ``budget``, stop (raising ``_OverBudget``) once more bytes than that moved."""
    c, w = spec.compute, shape.window
    act, wgt = dtype_bytes(c.activation_dtype), dtype_bytes(c.weight_dtype)
    acc = dtype_bytes(c.accumulator_dtype)
    home = operand_memories(shape, spec)
    mems = {m.name: m for m in spec.memories}
    slots: dict[str, tuple] = {}         # operand -> (memory, bytes of its tile slot)
    resident: dict[str, object] = {}     # operand -> which tile is in its slot
    high = {m: 0 for m in set(home.values())}
    stats = {"read": 0, "write": 0, "transfers": 0, "compute": 0, "dram": 0, "tile_dram": 0,
             "weights": 0}
    block_cycles = c.gemm_batch * c.gemm_block_in * c.gemm_block_out / c.macs_per_cycle

    def occupy(operand: str, nbytes: int) -> None:
        _occupy(slots, high, mems, where, operand, home[operand], nbytes)

    def transfer(nbytes: int, *, write: bool, weight: bool = False) -> None:
        stats["write" if write else "read"] += nbytes
        stats["weights"] += nbytes if weight else 0
        if budget is not None and stats["read"] + stats["write"] > budget:
            raise _OverBudget
        stats["transfers"] += 1
        stats["tile_dram"] += (math.ceil(nbytes / spec.dram.bandwidth_bytes_per_cycle)
                               + spec.dram.latency_cycles)

    overlap = all(mems[m].double_buffered for m in home.values())
    for _, field_, role in RESERVATIONS:  # kept on chip: held for the whole call
        if getattr(shape, field_):
            _occupy(slots, high, mems, where, _SLOTS[role], memory_for(spec, role).name,
                    getattr(shape, field_))
    if shape.weight_preload:  # the first call that shares them loads them, whole
        transfer(shape.weight_bytes(wgt), write=False, weight=True)

    def store(nbytes: int) -> None:
        """An output tile: to DRAM, or over the on-chip path when it stays on chip."""
        if shape.output_on_chip:
            stats["tile_dram"] += _path_cycles(nbytes, spec)
        elif not shape.output_in_accumulator:  # (else it stays where it was accumulated)
            transfer(nbytes, write=True)

    def end_tile(compute: float) -> None:
        compute = math.ceil(compute)
        stats["compute"] += compute
        stats["dram"] += stats["tile_dram"]
        stats["cycles_body"] = stats.get("cycles_body", 0) + (
            max(compute, stats["tile_dram"]) if overlap else compute + stats["tile_dram"])
        stats["tile_dram"] = 0

    pixels = [(b, rr, cc) for b in range(shape.batch) for rr in _ranges(w.out_h, tiling.rows)
              for cc in _ranges(w.out_w, tiling.cols)]

    def input_tile(key, rr, cc, channels: int, pad_channels: int) -> None:
        """Load the input tile ``key`` unless it is the one in the slot (or the whole
        input is on chip)."""
        if resident.get("input") != key and not shape.input_on_chip:
            # a ragged last tile loads a whole tile's box, clipped to the tensor
            in_rows, real_rows = _rows_read(rr[0], rr[0] + tiling.rows, w.stride_h, w.span_h,
                                            w.pad_top, w.in_h)
            in_cols, real_cols = _rows_read(cc[0], cc[0] + tiling.cols, w.stride_w, w.span_w,
                                            w.pad_left, w.in_w)
            scale = acc if shape.kind == "vector" else act
            occupy("input", shape.operands * in_rows * in_cols * pad_channels * scale)
            resident["input"] = key
            real = real_rows * real_cols
            for _ in range(shape.operands):
                transfer(real * channels * act, write=False)

    def output_tile(rr, cc, channels: int, pad_channels: int) -> None:
        px = (rr[1] - rr[0]) * (cc[1] - cc[0])
        occupy("accumulator", (1 + shape.residuals) * px * pad_channels * acc)
        for _ in range(shape.residuals):
            transfer(px * channels * act, write=False)
        return px

    if shape.kind == "vector" or shape.groups > 1:
        bi, bo = c.gemm_block_in, c.gemm_block_out
        for g0, g1 in _ranges(shape.groups, tiling.group_block):
            g = g1 - g0
            cin, cout = g * shape.in_channels, g * shape.out_channels
            if (shape.kind == "gemm" and not shape.weight_on_chip
                    and resident.get("weight") != (g0, g1)):
                blocks = _group_blocks(g, shape.in_channels, shape.out_channels, spec)
                occupy("weight", blocks * bi * bo * shape.taps * wgt)
                resident["weight"] = (g0, g1)
                transfer(g * shape.in_channels * shape.out_channels * shape.taps * wgt,
                         write=False, weight=True)
            for b, rr, cc in pixels:
                if shape.kind == "vector":
                    input_tile((g0, b, rr, cc), rr, cc, cin, cin)
                    px = output_tile(rr, cc, cout, cout)
                    compute = math.ceil(px * g * shape.operands * shape.taps
                                        / vector_width(c))
                else:
                    input_tile((g0, b, rr, cc), rr, cc, cin, math.ceil(cin / bi) * bi)
                    px = output_tile(rr, cc, cout, math.ceil(cout / bo) * bo)
                    blocks = _group_blocks(g, shape.in_channels, shape.out_channels, spec)
                    compute = (math.ceil(px / c.gemm_batch) * shape.taps * blocks * block_cycles
                               + _epilogue(px * cout, shape, spec))
                store(px * cout * act)
                end_tile(compute)
    else:
        bi, bo = c.gemm_block_in, c.gemm_block_out
        outs = _ranges(shape.out_channels, tiling.out_block)
        ins = _ranges(shape.in_channels, tiling.in_block)
        if tiling.order == "weights_outer":
            nest = [(o, p) for o in outs for p in pixels]
        else:
            nest = [(o, p) for p in pixels for o in outs]
        for (o0, o1), (b, rr, cc) in nest:
            cout = o1 - o0
            px = output_tile(rr, cc, cout, math.ceil(cout / bo) * bo)
            compute = 0.0
            for i0, i1 in ins:
                cin = i1 - i0
                input_tile((b, rr, cc, i0), rr, cc, cin, math.ceil(cin / bi) * bi)
                if not shape.weight_on_chip and resident.get("weight") != (o0, i0):
                    occupy("weight", math.ceil(cin / bi) * math.ceil(cout / bo) * bi * bo
                           * shape.taps * wgt)
                    resident["weight"] = (o0, i0)
                    transfer(cout * cin * shape.taps * wgt, write=False, weight=True)
                compute += (math.ceil(px / c.gemm_batch) * shape.taps * math.ceil(cin / bi)
                            * math.ceil(cout / bo) * block_cycles)
            store(px * cout * act)
            end_tile(compute + _epilogue(px * cout, shape, spec))
    overhead = spec.dram.latency_cycles
    return CallReplay(stats["read"], stats["write"], stats["transfers"], stats["compute"],
                      stats["dram"], stats.get("cycles_body", 0) + overhead, high,
                      stats["weights"])


def exhaustive_tiling(shape: CallShape, spec: AcceleratorSpec
                      ) -> tuple[CallTiling, CallReplay] | None:
    """The least-traffic (then fewest-cycle) tiling of the whole space, every candidate
    replayed (a replay that has moved more than the best so far stops early): the slow
    reference the chooser is tested against. None if no tiling fits."""
    best = None
    # large blocks and tiles first: the bound tightens early
    for (g, ob, ib, order), rows, cols in reversed(list(tiling_space(shape, spec))):
        for r in reversed(rows):
            for col in reversed(cols):
                tiling = CallTiling(r, col, g, ob, ib, order)
                try:
                    got = replay_call(shape, tiling, spec,
                                      budget=None if best is None else best[0][0])
                except (ScheduleViolation, _OverBudget):
                    continue
                key = (got.traffic_bytes, got.cycles)
                if best is None or key < best[0]:
                    best = (key, tiling, got)
    return None if best is None else (best[1], best[2])


# --------------------------------------------------------------------------- from TIR


def _interval(expr, env: dict) -> tuple[int, int]:
    """(least, greatest) value of an integer index expression, each variable in ``env``
    ranging over its (lo, hi); interval arithmetic, exact on the affine indices tiles
    have."""
    if isinstance(expr, tirx.IntImm):
        return int(expr.value), int(expr.value)
    if isinstance(expr, tirx.Var):
        return env[expr]
    if isinstance(expr, tirx.Cast):
        return _interval(expr.value, env)
    a_lo, a_hi = _interval(expr.a, env)
    b_lo, b_hi = _interval(expr.b, env)
    if isinstance(expr, tirx.Add):
        return a_lo + b_lo, a_hi + b_hi
    if isinstance(expr, tirx.Sub):
        return a_lo - b_hi, a_hi - b_lo
    if isinstance(expr, tirx.Mul):
        ends = [a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi]
        return min(ends), max(ends)
    if isinstance(expr, tirx.Min):
        return min(a_lo, b_lo), min(a_hi, b_hi)
    if isinstance(expr, tirx.Max):
        return max(a_lo, b_lo), max(a_hi, b_hi)
    if isinstance(expr, (tirx.FloorDiv, tirx.FloorMod)) and b_lo == b_hi and b_lo > 0:
        if isinstance(expr, tirx.FloorDiv):
            return a_lo // b_lo, a_hi // b_lo
        if a_lo // b_lo == a_hi // b_lo:
            return a_lo % b_lo, a_hi % b_lo
        return 0, b_lo - 1
    raise ScheduleViolation(f"the simulator cannot bound the index {expr}")


def _box(region, env: dict, shape=None) -> list[int]:
    """Extent of each dim of a buffer region (clipped to ``shape`` when given)."""
    dims = []
    for k, r in enumerate(region.region):
        lo, _ = _interval(r.min, env)
        _, hi = _interval(r.min + r.extent - 1, env)
        if shape is not None:
            lo, hi = max(lo, 0), min(hi, int(shape[k]) - 1)
        dims.append(max(0, hi - lo + 1))
    return dims


def _annotated_blocks(func: tirx.PrimFunc) -> list:
    found: list = []
    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, lambda b: found.append(b)
                                         if OPERAND_ATTR in b.annotations else None)],
                            order="pre")
    return found


def replay_kernel(func: tirx.PrimFunc, spec: AcceleratorSpec,
                  where: str = "") -> CallReplay:
    """Run a tiled kernel (:func:`tvm_memflat.targets.tile_tir.tile_kernel`) on
    ``spec``, reading what to do from its TIR alone.

    A **tile loop** is a loop around two or more of the kernel's annotated blocks
    (staging copies, the reduction, the output); it is run value by value. Every
    other loop belongs to one block and gives the extent of that block's region.
    At each block instance, with the tile loops' values fixed:

    * a staging block (``input``, ``weight``, ``residual``) is one DMA load: the
      region of the kernel parameter it reads, clipped to the tensor (padding is
      zero-filled on chip), at the spec's dtype; its slot in its memory is the
      region it writes (input: channels padded to the GEMM block; weights: in
      16x16 blocks, block-diagonal for small groups; residuals at the accumulator
      dtype with channels padded);
    * the reduction (``accumulator``) holds the output tile of its region; a GEMM
      takes ``ceil(pixels / batch) x taps x blocks`` block operations, a vector
      reduction ``ceil(elements / width)`` ALU cycles;
    * the output block is one DMA store of its region, and ends a tile: its ALU
      epilogue, then the tile's cycles (compute and DRAM overlapped when every
      memory used is double-buffered, else in series).

    Residency is checked at every load: a memory whose slots (twice in a
    double-buffered memory) exceed its size raises
    :class:`~tvm_memflat.errors.ScheduleViolation`.
    """
    c = spec.compute
    act, wgt = dtype_bytes(c.activation_dtype), dtype_bytes(c.weight_dtype)
    acc = dtype_bytes(c.accumulator_dtype)
    bi, bo = c.gemm_block_in, c.gemm_block_out
    mems = {m.name: m for m in spec.memories}
    annotated = _annotated_blocks(func)
    used_memories = {str(b.annotations[MEMORY_ATTR]) for b in annotated
                     if MEMORY_ATTR in b.annotations}
    overlap = all(mems[m].double_buffered for m in used_memories)
    params = list(func.params)
    block_cycles = c.gemm_batch * bi * bo / c.macs_per_cycle
    slots: dict[str, tuple[str, int]] = {}
    high = {m: 0 for m in used_memories}
    stats = {"read": 0, "write": 0, "transfers": 0, "compute": 0.0, "dram": 0,
             "tile_dram": 0, "tile_compute": 0.0, "body": 0, "weights": 0}

    def occupy(operand: str, memory: str, nbytes: int) -> None:
        _occupy(slots, high, mems, where, operand, memory, nbytes)

    def transfer(nbytes: int, *, write: bool, weight: bool = False) -> None:
        stats["write" if write else "read"] += nbytes
        stats["weights"] += nbytes if weight else 0
        stats["transfers"] += 1
        stats["tile_dram"] += (math.ceil(nbytes / spec.dram.bandwidth_bytes_per_cycle)
                               + spec.dram.latency_cycles)

    def padded(n: int, block: int) -> int:
        return math.ceil(n / block) * block

    for attr, _, role in RESERVATIONS:  # kept on chip across calls: held for the whole call
        reserved = max((int(b.annotations[attr]) for b in annotated if attr in b.annotations),
                       default=0)
        if reserved:
            occupy(_SLOTS[role], memory_for(spec, role).name, reserved)
    preloaded: list = []  # the resident weights this call loaded (at most once)

    # per kernel, not per tile: the compute kind and the weights' layout
    vector_call = any(str(b.annotations.get(COMPUTE_ATTR, "")) == "vector" for b in annotated)
    layout = next((str(b.annotations[LAYOUT_ATTR]) for b in annotated
                   if LAYOUT_ATTR in b.annotations
                   and str(b.annotations[OPERAND_ATTR]) == "weight"), "oi")
    per_group = int(layout.split("g")[1]) if "g" in layout else 0

    def gemm_blocks(cout: int, cin: int) -> int:
        """16x16 blocks of ``cout x cin`` channels (block-diagonal for small groups)."""
        if per_group:
            return _group_blocks(max(1, cout // per_group), cin, per_group, spec)
        return math.ceil(cin / bi) * math.ceil(cout / bo)

    def event(block, realize, env: dict) -> None:
        # the block's iteration variables over this instance, clipped to their domains
        ivs = {}
        for iv, value in zip(block.iter_vars, realize.iter_values, strict=True):
            lo, hi = _interval(value, env)
            d0 = int(iv.dom.min)
            ivs[iv.var] = (max(lo, d0), min(hi, d0 + int(iv.dom.extent) - 1))
        operand = str(block.annotations[OPERAND_ATTR])
        memory = str(block.annotations.get(MEMORY_ATTR, ""))
        on_chip = int(block.annotations.get(ON_CHIP_ATTR, 0))
        written = _box(block.writes[0], ivs)
        if operand == "input" and on_chip:
            return  # the input is resident (in the reservation): read where it is
        if operand in ("input", "weight", "residual"):
            source = [r for r in block.reads if any(r.source.same_as(p) for p in params)]
            if len(source) != 1:
                raise ScheduleViolation(f"{where}a {operand} staging block reads "
                                        f"{len(source)} kernel parameters")
            real = math.prod(_box(source[0], ivs, source[0].source.shape))
            resident_w = int(block.annotations.get(WEIGHT_ON_CHIP_ATTR, 0))
            if operand == "weight" and resident_w:
                # resident: read where it is; the call that loads it does so once, whole
                if resident_w == 2 and not preloaded:
                    preloaded.append(block)
                    transfer(math.prod(int(d) for d in source[0].source.shape) * wgt,
                             write=False, weight=True)
                return
            if operand == "weight":
                o_dim, i_dim = ((0, 1) if layout.startswith("oi") else
                                (-1, 0) if layout.startswith("i..o") else (1, 0))
                cout, cin = written[o_dim], written[i_dim]
                taps = math.prod(written) // (cout * cin)
                occupy(operand, memory, gemm_blocks(cout, cin) * bi * bo * taps * wgt)
                transfer(real * wgt, write=False, weight=True)
            elif operand == "input":
                ch = written[1] if len(written) > 1 else 1
                px = math.prod(written) // ch
                occupy(operand, memory, px * (ch if vector_call else padded(ch, bi))
                       * (acc if vector_call else act))
                transfer(real * act, write=False)
            else:
                ch = written[1] if len(written) > 1 else 1
                occupy(operand, memory, math.prod(written) // ch * padded(ch, bo) * acc)
                transfer(real * act, write=False)
        elif operand == "accumulator":
            nhwc = str(block.annotations.get(LAYOUT_ATTR, "")) == "nhwc"
            ch = written[-1 if nhwc else 1] if len(written) > 1 else 1
            px = math.prod(written) // ch
            reduce = [ivs[iv.var][1] - ivs[iv.var][0] + 1 for iv in block.iter_vars
                      if int(iv.iter_type) == tirx.IterVar.CommReduce]
            if str(block.annotations[COMPUTE_ATTR]) == "gemm":
                occupy(operand, memory, px * padded(ch, bo) * acc)
                cin, taps = reduce[0], math.prod(reduce[1:])
                stats["tile_compute"] += (math.ceil(px / c.gemm_batch) * taps
                                          * gemm_blocks(ch, cin) * block_cycles)
            else:
                occupy(operand, memory, px * ch * acc)
                stats["tile_compute"] += math.ceil(px * ch * math.prod(reduce)
                                                   / vector_width(c))
        elif operand == "output":
            elements = math.prod(written)
            if on_chip == 1:  # the tile moves over the on-chip path into the activation memory
                stats["tile_dram"] += _path_cycles(elements * act, spec)
            elif on_chip != 2:  # (2: it stays in the accumulator memory, where it is)
                transfer(elements * act, write=True)
            compute = math.ceil(stats["tile_compute"] + math.ceil(
                elements * int(block.annotations.get(ALU_ATTR, 0)) / vector_width(c)))
            stats["compute"] += compute
            stats["dram"] += stats["tile_dram"]
            stats["body"] += (max(compute, stats["tile_dram"]) if overlap
                              else compute + stats["tile_dram"])
            stats["tile_dram"], stats["tile_compute"] = 0, 0.0

    # which loops are tile loops: those around two or more annotated blocks
    tile_loops: set = set()

    def count(stmt) -> int:
        if isinstance(stmt, tirx.For):
            n = count(stmt.body)
            if n >= 2:
                tile_loops.add(stmt.loop_var)
            return n
        if isinstance(stmt, s_tir.SBlockRealize):
            own = 1 if OPERAND_ATTR in stmt.block.annotations else 0
            return own + count(stmt.block.body)
        if isinstance(stmt, tirx.SeqStmt):
            return sum(count(s) for s in stmt.seq)
        body = getattr(stmt, "body", None)
        return count(body) if body is not None else 0

    def run(stmt, env: dict) -> None:
        if isinstance(stmt, tirx.For):
            lo, ext = int(stmt.min), int(stmt.extent)
            if stmt.loop_var in tile_loops:
                for v in range(lo, lo + ext):
                    run(stmt.body, {**env, stmt.loop_var: (v, v)})
            else:
                run(stmt.body, {**env, stmt.loop_var: (lo, lo + ext - 1)})
        elif isinstance(stmt, s_tir.SBlockRealize):
            if OPERAND_ATTR in stmt.block.annotations:
                event(stmt.block, stmt, env)
            else:
                run(stmt.block.body, env)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                run(s, env)
        elif getattr(stmt, "body", None) is not None:
            run(stmt.body, env)

    count(func.body)
    run(func.body, {})
    overhead = spec.dram.latency_cycles
    return CallReplay(stats["read"], stats["write"], stats["transfers"],
                      math.ceil(stats["compute"]), stats["dram"], stats["body"] + overhead,
                      high, stats["weights"])
