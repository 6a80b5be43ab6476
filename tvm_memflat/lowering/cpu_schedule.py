"""Default CPU schedules: every fused kernel tiled, vectorised and run in parallel.

TVM 0.27 ships no CPU schedule for convolution or pooling: legalization emits plain
loop nests, one output element at a time, on one thread. :func:`schedule_kernel`
rewrites one fused PrimFunc with ``s_tir.Schedule`` primitives. It is a pure function
of the PrimFunc (the same on every llvm target: only LLVM's instruction selection
depends on the CPU), and it takes the place of
:func:`~tvm_memflat.lowering.shrink_scratch.shrink_scratch`, doing what that did and
more, so it keeps our memory guarantees:

* injective intermediates (``pad_temp``, bias adds) are inlined into their consumer,
  as before; nothing new is materialised;
* the one reduction (conv, pool, matmul, mean) is computed per *output tile*
  (``compute_at`` under the tile loop of the block that writes the output), so its
  intermediate shrinks to one tile, the accumulator. That is the kernel's scratch
  and is counted as such (:func:`~.shrink_scratch.lowered_scratch_bytes`): usually
  8 channels x 16 columns (512 B in fp32 or int32), at most
  :data:`MAX_TILE_ELEMENTS` for a convolution or :data:`MAX_LANES` for a window op.
  It is a small constant allocation inside the parallel loop, which TVM puts on each
  worker's stack; a staged padding window (below) adds a few rows of one channel;
* inside the tile the reduction loops come first, in their original order, then the
  tile's spatial loops: each output element is summed in the original order, so
  results are bit-exact (TVM's LLVM code generator neither reassociates nor
  contracts floating-point sums);
* the innermost output axis (width, or a matmul's columns) is vectorised; a
  convolution's output channels are unrolled inside the tile (:data:`TILE_CHANNELS`
  of them share each input vector); kernel windows up to :data:`MAX_UNROLL_TAPS` are
  unrolled;
* the outer loops run in parallel on TVM's thread pool
  (:func:`tvm_memflat.targets.threads.set_threads`).

A depthwise convolution or pool (no reduction over channels) keeps its batch and
channel loops outermost, so :mod:`.inplace_depthwise` can still write it over its
input channel by channel (and makes that channel loop serial again, since its
one-channel temporary is shared).

A kernel no rule fits is scheduled as :func:`shrink_scratch` did (``"shrink"``).
:class:`ScheduledKernel` says which rule ran; the PrimFunc carries it in the attribute
:data:`RULE_ATTR`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from .shrink_scratch import shrink_scratch

LOG = logging.getLogger(__name__)

#: Output channels per convolution tile, most preferred first (unrolled: each input
#: vector is reused this often).
TILE_CHANNELS = (8, 4, 2)
#: Lengths of the vectorised innermost axis, most preferred first (divisors only: a
#: ragged split would leave a predicate in the vector loop).
TILE_WIDTHS = (16, 8, 14, 12, 7, 6, 5, 4)
#: Longest vector loop made from a width no preferred size divides.
MAX_LANES = 128
#: Largest accumulator tile (output channels x width) the default schedule picks.
MAX_TILE_ELEMENTS = 320
#: Reduction loops up to this extent (a kernel window's taps) are unrolled.
MAX_UNROLL_TAPS = 7
#: An injective kernel whose rows are at least this long, and which the fused
#: vector would cross, is vectorised row by row.
MIN_ROW_LANES = 4
#: An injective kernel with at least this many elements runs in parallel.
MIN_PARALLEL_ELEMENTS = 16384
#: A reduction kernel runs in parallel from this many multiply-accumulates (output
#: elements x reduction extent): below it, a tile of a tiled region, waking the
#: thread pool costs more than it saves.
MIN_PARALLEL_WORK = 1 << 18
#: Block annotation on the blocks a schedule adds or keeps only to stage data (the
#: padding window, the accumulator's copy-out): not operations of the network, so
#: the cost models (``planner.live_ranges.kernel_work``) skip them.
STAGING_ATTR = "memflat.staging"
#: PrimFunc attribute: the rule that scheduled the kernel.
RULE_ATTR = "memflat.schedule"
#: Rules, for reports: what each one does.
RULES = {
    "conv": "output tile of channels x width; reductions outside, width vectorised, "
            "channels unrolled; parallel over (batch, channel tiles, rows)",
    "window": "per-channel window (depthwise conv, pool, mean): width vectorised, taps "
              "unrolled; parallel over (batch, channels)",
    "matmul": "output tile of columns; reduction outside, columns vectorised; parallel "
              "over column tiles",
    "injective": "loops fused and vectorised, or row by row where the fused vector would "
                 "cross rows; parallel when large",
    "shrink": "no rule fits: the reduction moved under its consumer (shrink_scratch)",
    "tuned": "a tiling rule with the tile sizes MetaSchedule measured fastest (cpu_tune)",
}


@dataclass(frozen=True)
class ScheduledKernel:
    """One kernel after :func:`schedule_kernel`."""

    func: tirx.PrimFunc
    rule: str   # a key of RULES


# --------------------------------------------------------------------------- helpers


def _block_names(func: tirx.PrimFunc) -> list[str]:
    found: list = []
    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, lambda b: found.append(b.name_hint))],
                            order="pre")
    return [n for n in found if n != "root"]


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _writes_param(sch: s_tir.Schedule, block) -> bool:
    params = list(sch.mod["main"].params)
    return any(any(w.source.same_as(p) for p in params) for w in sch.get(block).writes)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _divisor(n: int, prefs) -> int:
    """The first of ``prefs`` that divides ``n`` (1 if none does)."""
    return _divisors(n, prefs)[0]


def _divisors(n: int, prefs) -> list[int]:
    """Those of ``prefs`` that divide ``n``, in order; if none does, the divisors of
    ``n`` from 8 to :data:`MAX_LANES`, smallest first, else ``n`` itself (71 -> [71];
    13 -> [13]): a width no preferred size divides is still one vector loop rather
    than a loop of 1. (Measured on InceptionV3: odd vectors longer than a preferred
    divisor are slower, 147 in 21s against 7s; a prime width of 71 in one vector is
    2x faster than vectorising the channels.)"""
    fits = [p for p in prefs if p <= n and n % p == 0]
    if fits:
        return fits
    extra = [d for d in range(8, min(n, MAX_LANES) + 1) if n % d == 0]
    return extra or ([n] if n <= MAX_LANES else [1])


@dataclass(frozen=True)
class Space:
    """Where a rule's tile sizes come from: the candidates, most preferred first, and
    ``choose(sch, candidates)``, which returns one of them (an int, or a sampled
    ``ExprRV`` when tuning: :mod:`.cpu_tune`). The default schedule takes the first."""

    widths: tuple[int, ...] = TILE_WIDTHS
    channels: tuple[int, ...] = TILE_CHANNELS
    choose: object = None

    def pick(self, sch: s_tir.Schedule, candidates: list[int]):
        if self.choose is None or len(candidates) == 1:
            return candidates[0]
        return self.choose(sch, candidates)


DEFAULT_SPACE = Space()


def _uses(expr, var) -> bool:
    hit: list = []
    tvm_ffi.structural_walk(expr, [(tirx.Var, lambda v: hit.append(v.same_as(var)))],
                            order="pre")
    return any(hit)


def _loop_kinds(sch: s_tir.Schedule, block, loops) -> list[str]:
    """For each of ``loops`` (ancestors of ``block``): ``"R"`` if it drives a reduction
    iteration variable of ``block``, else ``"S"``."""
    target = sch.get(block)
    found: list = []
    tvm_ffi.structural_walk(
        sch.mod["main"].body,
        [(s_tir.SBlockRealize, lambda r: found.append(r) if r.block.same_as(target) else None)],
        order="pre")
    realize = found[0]
    kinds = []
    for loop in loops:
        var = sch.get(loop).loop_var
        kind = "S"
        for iv, value in zip(realize.block.iter_vars, realize.iter_values, strict=True):
            if int(iv.iter_type) == tirx.IterVar.CommReduce and _uses(value, var):
                kind = "R"
        kinds.append(kind)
    return kinds


def _loops_under(sch: s_tir.Schedule, block, loop) -> tuple[list, list]:
    """``block``'s loops under ``loop`` (one of its ancestors), split into spatial and
    reduction loops (:func:`_loop_kinds`), each in their order."""
    anchor = sch.get(loop)
    loops = sch.get_loops(block)
    at = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(anchor))
    under = loops[at + 1:]
    kinds = _loop_kinds(sch, block, under)
    return ([lp for lp, k in zip(under, kinds, strict=True) if k == "S"],
            [lp for lp, k in zip(under, kinds, strict=True) if k == "R"])


def unroll_taps(sch: s_tir.Schedule, taps) -> None:
    """Unroll those of ``taps`` (a kernel window's reduction loops) up to
    :data:`MAX_UNROLL_TAPS` long; of a large window, its rows' taps only (code size)."""
    taps = [lp for lp in taps if (_extent(sch, lp) or 0) <= MAX_UNROLL_TAPS]
    if math.prod(_extent(sch, lp) for lp in taps) > MAX_UNROLL_TAPS * 2:
        taps = taps[-1:]
    for lp in taps:
        sch.unroll(lp)


def _reduces_channels(sch: s_tir.Schedule, block, out_channels: int) -> bool:
    """``block`` reads a 4-D parameter shaped (out_channels, C_in/groups > 1, kh, kw):
    a convolution whose outputs sum over several input channels."""
    params = list(sch.mod["main"].params)
    for region in sch.get(block).reads:
        for p in params:
            if region.source.same_as(p) and len(p.shape) == 4:
                dims = [int(d) if isinstance(d, tirx.IntImm) else None for d in p.shape]
                if dims[0] == out_channels and dims[1] is not None and dims[1] > 1:
                    return True
    return False


# --------------------------------------------------------------------------- rules


def _inline_injective(sch: s_tir.Schedule) -> list[str]:
    """Inline every injective block that writes the kernel's own scratch, except the
    staging blocks: those that read a kernel parameter and feed the reduction directly
    (a convolution's or pool's padding). Their names are returned, to be staged per
    tile (:func:`_stage`); inlined, their bounds test would sit in the vector loop and
    keep it scalar."""
    staged = []
    for name in _block_names(sch.mod["main"]):
        block = sch.get_sblock(name)
        if _is_reduction(sch, block) or _writes_param(sch, block):
            continue
        if _reads_param(sch, block) and _has_bounds_test(sch, block) and \
                any(_is_reduction(sch, c) for c in sch.get_consumers(block)):
            staged.append(name)
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass
    return staged


def _has_bounds_test(sch: s_tir.Schedule, block) -> bool:
    """The block's value has an ``if_then_else`` (padding; a zero-padding copy has not)."""
    hit: list = []
    tvm_ffi.structural_walk(sch.get(block).body, [(
        tvm.ir.Call, lambda c: hit.append(getattr(c.op, "name", "") == "prim.if_then_else"))],
        order="pre")
    return any(hit)


def _reads_param(sch: s_tir.Schedule, block) -> bool:
    params = list(sch.mod["main"].params)
    return any(any(r.source.same_as(p) for p in params) for r in sch.get(block).reads)


def _stage(sch: s_tir.Schedule, staged: list[str], loop) -> None:
    """Compute each staging block under ``loop`` (so it holds one tile's window: a few
    rows of one channel), or inline it if that is not possible."""
    for name in staged:
        block = sch.get_sblock(name)
        try:
            sch.compute_at(block, loop, preserve_unit_loops=False)
            sch.annotate(block, STAGING_ATTR, 1)
        except s_tir.ScheduleError:
            sch.compute_inline(block)


def _injective(sch: s_tir.Schedule, out) -> str | None:
    """All loops fused and vectorised, when the vector never crosses a row; else each
    row is one vector (a concatenation along rows, a slice, a tile's halo join: their
    source index is not affine in the fused index, so vectors across rows would
    gather element by element and test the concatenation's bound per lane)."""
    loops = sch.get_loops(out)
    extents = [_extent(sch, lp) for lp in loops]
    if not loops or None in extents:
        return None
    total = math.prod(extents)
    lanes = _divisor(total, (16, 8, 4))
    row = extents[-1]
    if len(loops) > 1 and row % lanes and MIN_ROW_LANES <= row <= MAX_LANES:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.vectorize(loops[-1])
    else:
        outer = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if lanes > 1:
            outer, inner = sch.split(outer, [None, lanes])
            sch.vectorize(inner)
    if total >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(outer)
    return "injective"


def _tiled_reduction(sch: s_tir.Schedule, reduction, out, staged: list[str],
                     space: Space) -> str | None:
    """The conv / window / matmul rules: ``out`` (the block writing the kernel's output)
    tiled, ``reduction`` computed per tile with its reduction loops outermost."""
    loops = sch.get_loops(out)
    extents = [_extent(sch, lp) for lp in loops]
    if None in extents or len(loops) not in (2, 4):
        return None
    work = math.prod(extents) * math.prod(
        int(iv.dom.extent) for iv in sch.get(reduction).iter_vars
        if int(iv.iter_type) == tirx.IterVar.CommReduce)
    width = space.pick(sch, _divisors(extents[-1], space.widths))
    if len(loops) == 4:
        n, c, h, w = loops
        w_outer, w_inner = sch.split(w, [None, width])
        if _reduces_channels(sch, reduction, extents[1]):
            rule = "conv"
            candidates = _divisors(extents[1], space.channels)
            if isinstance(width, int):   # the default: keep the tile in registers
                candidates = [c for c in candidates if c * width <= MAX_TILE_ELEMENTS] \
                    or candidates[-1:]
            channels = space.pick(sch, candidates)
            c_outer, c_inner = sch.split(c, [None, channels])
            sch.reorder(c_outer, h, w_outer, c_inner, w_inner)
            parallel = [n, c_outer, h]
        else:
            rule = "window"
            parallel = [c]     # n and c stay apart and outermost (in-place depthwise)
    else:
        rule = "matmul"
        n, w = loops
        w_outer, w_inner = sch.split(w, [None, width])
        parallel = [n, w_outer]
    sch.compute_at(reduction, w_outer)
    # the reduction's loops under the tile: reductions first (original order), then
    # the tile's spatial loops (vectorised innermost, the rest unrolled)
    spatial, reductions = _loops_under(sch, reduction, w_outer)
    if spatial and reductions:
        sch.reorder(*reductions, *spatial)
    if spatial:
        sch.vectorize(spatial[-1])
        for lp in spatial[:-1]:
            sch.unroll(lp)
    # padding staged per tile: under the first reduction loop (one input channel's
    # window) for a convolution, under the tile loop for a window op
    if staged:
        _stage(sch, staged, reductions[0] if rule == "conv" and reductions else w_outer)
    unroll_taps(sch, reductions[1:])
    out_loops = sch.get_loops(out)
    sch.vectorize(out_loops[-1])
    if rule == "conv":
        sch.unroll(out_loops[-2])
    if work >= MIN_PARALLEL_WORK:   # else waking the thread pool costs more than it saves
        sch.parallel(sch.fuse(*parallel) if len(parallel) > 1 else parallel[0])
    return rule


def _schedule(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, str] | None:
    sch = s_tir.Schedule(func)
    rule = apply_rules(sch)
    return None if rule is None else (sch.mod["main"], rule)


def apply_rules(sch: s_tir.Schedule, space: Space = DEFAULT_SPACE) -> str | None:
    """Schedule ``sch`` (one kernel, as legalized and fused) with the rule that fits;
    returns the rule's name, or ``None`` if none does (``sch`` may then be half done:
    start again from the PrimFunc)."""
    staged = _inline_injective(sch)
    names = [n for n in _block_names(sch.mod["main"]) if n not in staged]
    blocks = [sch.get_sblock(n) for n in names]
    reductions = [b for b in blocks if _is_reduction(sch, b)]
    outputs = [b for b in blocks if _writes_param(sch, b)]
    if len(outputs) != 1 or len(reductions) > 1 or len(blocks) > 2:
        return None
    out = outputs[0]
    if not reductions:
        if staged:
            return None
        rule = _injective(sch, out)
    else:
        reduction = reductions[0]
        if sch.get(reduction).same_as(sch.get(out)):
            out = sch.cache_write(reduction, 0, "global")
            sch.annotate(out, STAGING_ATTR, 1)
        elif len(blocks) != 2:
            return None
        rule = _tiled_reduction(sch, reduction, out, staged, space)
    return rule


def schedule_kernel(func: tirx.PrimFunc) -> ScheduledKernel:
    """``func`` with the default CPU schedule (a rule of :data:`RULES`)."""
    if RULE_ATTR in (func.attrs or {}):
        return ScheduledKernel(func, str(func.attrs[RULE_ATTR]))
    try:
        done = _schedule(func)
    except (s_tir.ScheduleError, RuntimeError, ValueError) as err:
        LOG.debug("no CPU rule fits: %s", err)
        done = None
    if done is None:
        shrunk, _ = shrink_scratch(func)
        return ScheduledKernel(shrunk.with_attr(RULE_ATTR, "shrink"), "shrink")
    scheduled, rule = done
    return ScheduledKernel(scheduled.with_attr(RULE_ATTR, rule), rule)


# --------------------------------------------------------------------------- the pass

#: schedule_kernel memo: a tiled module repeats a few kernels many times. Structural
#: hashes can collide, so a hit is confirmed with structural equality.
_memo: OrderedDict = OrderedDict()
_MAX_ENTRIES = 4096


def scheduled(func: tirx.PrimFunc) -> ScheduledKernel:
    """:func:`schedule_kernel`, memoised on the PrimFunc's structure."""
    key = tvm_ffi.structural_hash(func)
    for source, result in _memo.get(key, ()):
        if tvm_ffi.structural_equal(source, func):
            _memo.move_to_end(key)
            return result
    result = schedule_kernel(func)
    _memo.setdefault(key, []).append((func, result))
    _memo.move_to_end(key)
    while len(_memo) > _MAX_ENTRIES:
        _memo.popitem(last=False)
    return result


@tvm.transform.module_pass(opt_level=0, name="ScheduleCpuKernels")
def schedule_cpu_kernels(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Apply :func:`schedule_kernel` to every PrimFunc of ``mod``; inside
    ``with cpu_tune.tuned(database):`` a kernel the database holds gets its tuned tile
    sizes instead (rule ``"tuned"``)."""
    database = current_database()
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        tuned = database.schedule(func) if database is not None else None
        out[gv] = tuned.with_attr(RULE_ATTR, "tuned") if tuned is not None \
            else scheduled(func).func
    return out


_tuned_stack: list = []


@contextlib.contextmanager
def tuned(database):
    """Within the block, :func:`schedule_cpu_kernels` asks ``database`` (a
    :class:`~.cpu_tune.TuneDatabase`, or ``None``: no tuning) for each kernel's tuned
    schedule (``database.schedule(func)``) before using the default rule."""
    if database is None:
        yield
        return
    _tuned_stack.append(database)
    try:
        yield
    finally:
        _tuned_stack.pop()


def current_database():
    """The database of the innermost :func:`tuned` block (``None`` outside one)."""
    return _tuned_stack[-1] if _tuned_stack else None


def rule_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many of ``mod``'s PrimFuncs each rule scheduled (``"none"``: unscheduled)."""
    counts: dict[str, int] = {}
    for _, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            rule = str(func.attrs[RULE_ATTR]) if func.attrs and RULE_ATTR in func.attrs \
                else "none"
            counts[rule] = counts.get(rule, 0) + 1
    return counts


def serial_loops(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every parallel loop made serial (for a kernel that shares a
    temporary across iterations of a loop a schedule had parallelised)."""

    def on_for(loop):
        if loop.kind != tirx.ForKind.PARALLEL:
            return loop
        return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body,
                        loop.thread_binding, loop.annotations)

    body = tvm_ffi.structural_map(func.body, [(tirx.For, on_for)])
    return tirx.PrimFunc(func.params, body, func.ret_type, func.attrs)
