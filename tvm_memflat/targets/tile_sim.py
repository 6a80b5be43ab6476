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
* every output tile is **stored** once its input-channel blocks are done;
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

from ..analysis.tir_stats import dtype_bytes
from ..errors import ScheduleViolation
from ..hardware.call_tiling import (
    CallShape,
    CallTiling,
    operand_memories,
    tiling_space,
)
from ..hardware.gemm import vector_width
from ..spec import AcceleratorSpec


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

    @property
    def traffic_bytes(self) -> int:
        return self.read_bytes + self.write_bytes


def _ranges(total: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(total, s + tile)) for s in range(0, total, tile)]


@functools.lru_cache(maxsize=65536)
def _rows_read(lo_out: int, hi_out: int, stride: int, span: int, pad: int,
               size: int) -> tuple[int, int]:
    """(rows held on chip, rows read from DRAM) for output rows ``[lo_out, hi_out)``:
    the set of input rows the windows touch, with and without the padding rows."""
    touched = set()
    for o in range(lo_out, hi_out):
        touched.update(range(o * stride - pad, o * stride - pad + span))
    return len(touched), sum(1 for r in touched if 0 <= r < size)


def _group_blocks(groups: int, kc: int, n: int, spec: AcceleratorSpec) -> int:
    bi, bo = spec.compute.gemm_block_in, spec.compute.gemm_block_out
    if groups > 1 and kc < bi and n < bo:
        return math.ceil(groups / min(bi // kc, bo // n))
    return groups * math.ceil(kc / bi) * math.ceil(n / bo)


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
    slots: dict[str, int] = {}           # operand -> bytes allocated for its tile
    resident: dict[str, object] = {}     # operand -> which tile is in its slot
    high = {m: 0 for m in set(home.values())}
    stats = {"read": 0, "write": 0, "transfers": 0, "compute": 0, "dram": 0, "tile_dram": 0}
    block_cycles = c.gemm_batch * c.gemm_block_in * c.gemm_block_out / c.macs_per_cycle

    def occupy(operand: str, nbytes: int) -> None:
        slots[operand] = nbytes
        memory = home[operand]
        used = sum(n * (2 if mems[memory].double_buffered else 1)
                   for op, n in slots.items() if home[op] == memory)
        high[memory] = max(high[memory], used)
        if used > mems[memory].size_bytes:
            raise ScheduleViolation(f"{where}{memory} holds {used} B > "
                                    f"{mems[memory].size_bytes} B ({operand} tile)")

    def transfer(nbytes: int, *, write: bool) -> None:
        stats["write" if write else "read"] += nbytes
        if budget is not None and stats["read"] + stats["write"] > budget:
            raise _OverBudget
        stats["transfers"] += 1
        stats["tile_dram"] += (math.ceil(nbytes / spec.dram.bandwidth_bytes_per_cycle)
                               + spec.dram.latency_cycles)

    overlap = all(mems[m].double_buffered for m in home.values())

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
        """Load the input tile ``key`` unless it is the one in the slot."""
        if resident.get("input") != key:
            in_rows, real_rows = _rows_read(*rr, w.stride_h, w.span_h, w.pad_top, w.in_h)
            in_cols, real_cols = _rows_read(*cc, w.stride_w, w.span_w, w.pad_left, w.in_w)
            scale = acc if shape.kind == "vector" else act
            occupy("input", shape.operands * in_rows * in_cols * pad_channels * scale)
            resident["input"] = key
            real = real_rows * real_cols
            for _ in range(shape.operands):
                transfer(real * channels * act, write=False)

    def output_tile(rr, cc, channels: int, pad_channels: int) -> None:
        px = (rr[1] - rr[0]) * (cc[1] - cc[0])
        occupy("accumulator", px * pad_channels * acc)
        return px

    if shape.kind == "vector" or shape.groups > 1:
        bi, bo = c.gemm_block_in, c.gemm_block_out
        for g0, g1 in _ranges(shape.groups, tiling.group_block):
            g = g1 - g0
            cin, cout = g * shape.in_channels, g * shape.out_channels
            if shape.kind == "gemm" and resident.get("weight") != (g0, g1):
                blocks = _group_blocks(g, shape.in_channels, shape.out_channels, spec)
                occupy("weight", blocks * bi * bo * shape.taps * wgt)
                resident["weight"] = (g0, g1)
                transfer(g * shape.in_channels * shape.out_channels * shape.taps * wgt,
                         write=False)
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
                transfer(px * cout * act, write=True)
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
                if resident.get("weight") != (o0, i0):
                    occupy("weight", math.ceil(cin / bi) * math.ceil(cout / bo) * bi * bo
                           * shape.taps * wgt)
                    resident["weight"] = (o0, i0)
                    transfer(cout * cin * shape.taps * wgt, write=False)
                compute += (math.ceil(px / c.gemm_batch) * shape.taps * math.ceil(cin / bi)
                            * math.ceil(cout / bo) * block_cycles)
            transfer(px * cout * act, write=True)
            end_tile(compute + _epilogue(px * cout, shape, spec))
    overhead = spec.dram.latency_cycles
    return CallReplay(stats["read"], stats["write"], stats["transfers"], stats["compute"],
                      stats["dram"], stats.get("cycles_body", 0) + overhead, high)


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
