"""DepthwiseInPlace: a depthwise convolution writes its output over its dying input.

Runs on lowered Relax (destination-passing kernel calls on ``R.builtin.alloc_tensor``),
after :mod:`.concat_in_place` and :mod:`.input_in_arena`. Channel ``c`` of a depthwise
convolution (groups = channels, one filter per channel) reads channel ``c`` of its
input and nothing else, and so does its fused epilogue (bias add, clip, relu). When
the output has the input's shape and dtype (stride 1, "same" padding) and the input
is read by nothing after the call, the output can take the input's storage, as in
TinyEngine: per channel, the kernel computes the whole output channel into a
one-channel temporary, then copies it over input channel ``c``. The design counts
that storage once (design.md: an op whose output aliases its input counts it once);
the temporary is the kernel's own scratch and is counted as such.

The in-place kernel is made from the fused PrimFunc by TIR scheduling
(:func:`in_place_kernel`): ``cache_write`` of the block that writes the output gives
a temporary and a copy block; ``reverse_compute_at`` moves the copy under the
channel loop, after the channel's computation, so TVM's buffer compaction shrinks
the temporary to one channel (H x W); any other producer left at the root is moved
under that loop with ``compute_at``. The schedule keeps every reduction's order, so
results are bit-exact. Before the output buffer is replaced by the input buffer the
scheduled kernel is checked: every read of the input and every write of the output
under iteration (n, c) must be at batch n and channel c, and the copy must come
last, so no read can see a channel already overwritten.

In Relax, ``kernel(x, w, b, out)`` with ``out = alloc_tensor(...)`` becomes
``kernel_in_place(w, b, x)`` followed by ``out = x``: the output allocation goes,
and every later use of ``out`` reads ``x``'s storage through that alias, which the
live ranges (:mod:`tvm_memflat.planner.live_ranges`) follow like any other, so the
planner sees one buffer whose lifetime runs to the output's last use. The in-place
PrimFunc carries the attribute :data:`IN_PLACE_ATTR`: its last parameter is read and
written (the live ranges count it as both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax, s_tir, sym, tirx

from ..analysis.tir_stats import tensor_bytes
from .concat_in_place import copy_module, flat_bindings, is_alloc_tensor, is_kernel_call, rebuild
from .cpu_schedule import serial_loops
from .tir_views import buffer_shape

LOG = logging.getLogger(__name__)

#: PrimFunc attribute of an in-place kernel: its last parameter is read and written.
IN_PLACE_ATTR = "memflat.in_place"

#: Suffix of the in-place variant of a kernel.
IN_PLACE_SUFFIX = "_in_place"

_LOAD = tvm.ir.TensorLoad


def is_in_place_kernel(func) -> bool:
    """Whether ``func`` is an in-place kernel made here (its last parameter is read too)."""
    attrs = getattr(func, "attrs", None)
    return bool(attrs is not None and IN_PLACE_ATTR in attrs and int(attrs[IN_PLACE_ATTR]))


# --------------------------------------------------------------------------- TIR


def _blocks(stmt) -> list:
    """Every SBlock under ``stmt`` (the root block included), in program order."""
    found: list = []
    tvm_ffi.structural_walk(stmt, [(s_tir.SBlock, found.append)], order="pre")
    return found


def _realizes(stmt) -> dict:
    """Block name -> its SBlockRealize (for the iteration bindings)."""
    found: dict = {}

    def on_realize(realize):
        found.setdefault(realize.block.name_hint, realize)

    tvm_ffi.structural_walk(stmt, [(s_tir.SBlockRealize, on_realize)], order="pre")
    return found


def is_depthwise(func: tirx.PrimFunc, data_index: int = 0) -> bool:
    """``func`` has a multiply-accumulate block reading a (C, 1, kh, kw) filter, C being
    the channels of parameter ``data_index`` (a depthwise conv, channel multiplier 1)."""
    params = list(func.params)
    data = params[data_index]
    if len(data.shape) != 4:
        return False
    channels = int(data.shape[1])
    filters = [p for p in params if len(p.shape) == 4 and int(p.shape[0]) == channels
               and int(p.shape[1]) == 1 and p is not data]
    if not filters:
        return False
    for block in _blocks(func.body):
        if not any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in block.iter_vars):
            continue
        if not isinstance(block.body, tirx.BufferStore):
            continue
        loads: list = []
        tvm_ffi.structural_walk(block.body.value, [(_LOAD, loads.append)], order="post")
        if any(ld.source.same_as(f) for ld in loads for f in filters):
            return True
    return False


def _accesses(stmt, buffers) -> list:
    """Index lists of every load from and store to ``buffers`` in ``stmt``."""
    found: list = []
    if stmt is None:
        return found

    def on_load(ld):
        if any(ld.source.same_as(b) for b in buffers):
            found.append(ld.indices)

    def on_store(st):
        if any(st.buffer.same_as(b) for b in buffers):
            found.append(st.indices)

    tvm_ffi.structural_walk(stmt, [(_LOAD, on_load), (tirx.BufferStore, on_store)],
                            order="post")
    return found


def _channel_local(func: tirx.PrimFunc, data, out, n_var, c_var, copy_name: str) -> bool:
    """Every read of ``data`` and write of ``out`` in ``func`` is at (``n_var``, ``c_var``),
    every block sits under the ``c_var`` loop, and the copy block ``copy_name`` is the last."""
    realizes = _realizes(func.body)
    blocks = [b for b in _blocks(func.body) if b.name_hint != "root"]
    if not blocks or blocks[-1].name_hint != copy_name:
        return False
    # loop context of each block: walk the loops, remembering the stack
    contexts: dict = {}

    def walk(stmt, loops):
        if isinstance(stmt, tirx.For):
            walk(stmt.body, [*loops, stmt])
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, loops)
        elif isinstance(stmt, s_tir.SBlockRealize):
            contexts[stmt.block.name_hint] = loops
            walk(stmt.block.body, loops)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, loops)
            if stmt.else_case is not None:
                walk(stmt.else_case, loops)
        elif isinstance(stmt, tirx.LetStmt | tirx.AllocBuffer | tirx.DeclBuffer):
            body = getattr(stmt, "body", None)
            if body is not None:
                walk(body, loops)

    walk(func.body, [])
    for block in blocks:
        loops = contexts.get(block.name_hint)
        realize = realizes.get(block.name_hint)
        if loops is None or realize is None or not any(f.loop_var.same_as(c_var) for f in loops):
            return False
        analyzer = sym.Analyzer()
        for f in loops:
            analyzer.bind(f.loop_var, tvm.ir.Range.from_min_extent(f.min, f.extent))
        for iv, value in zip(block.iter_vars, realize.iter_values, strict=True):
            analyzer.bind(iv.var, value)
        accesses = [*_accesses(block.body, (data, out)), *_accesses(block.init, (data, out))]
        for indices in accesses:
            if not (analyzer.can_prove_equal(indices[0], n_var)
                    and analyzer.can_prove_equal(indices[1], c_var)):
                return False
    return True


def in_place_kernel(func: tirx.PrimFunc, data_index: int = 0) -> tirx.PrimFunc | None:
    """The in-place variant of depthwise kernel ``func`` (``None``: not possible).

    ``func(..., data, ..., out)`` becomes ``func'(..., ..., data)``: the other
    parameters in their order, then ``data``, which the kernel reads and overwrites
    with the output, channel by channel through a one-channel temporary.
    """
    params = list(func.params)
    if data_index >= len(params) - 1:
        return None
    data, out = params[data_index], params[-1]
    try:
        if (len(data.shape) != 4 or buffer_shape(data) != buffer_shape(out)
                or str(data.dtype) != str(out.dtype) or not is_depthwise(func, data_index)):
            return None
    except (TypeError, ValueError):   # a symbolic shape
        return None
    # the default CPU schedule may run the channel loop in parallel; the one-channel
    # temporary is shared by its iterations, so they run one after the other here
    func = serial_loops(func)
    sch = s_tir.Schedule(func)
    try:
        names = [b.name_hint for b in _blocks(func.body) if b.name_hint != "root"]
        if any(any(r.source.same_as(out) for r in b.reads) for b in _blocks(func.body)):
            return None
        writers = [n for n in names
                   if any(w.source.same_as(out) for w in sch.get(sch.get_sblock(n)).writes)]
        if len(writers) != 1:
            return None
        final = sch.get_sblock(writers[0])
        write_index = [i for i, w in enumerate(sch.get(final).writes)
                       if w.source.same_as(out)][0]
        copy = sch.cache_write(final, write_index, "global")
        loops = sch.get_loops(final)
        if len(loops) < 2:
            return None
        n_loop, c_loop = loops[0], loops[1]
        sch.reverse_compute_at(copy, c_loop)
        # anything still outside the channel loop (a producer the fusion left at the
        # root, e.g. pad_temp without shrink_scratch) goes under it, last producer first
        c_stmt = sch.get(c_loop)
        for name in reversed(names):
            block = sch.get_sblock(name)
            if any(sch.get(lp).same_as(c_stmt) for lp in sch.get_loops(block)):
                continue
            sch.compute_at(block, c_loop)
            c_stmt = sch.get(c_loop)
        scheduled = sch.mod["main"]
        n_var, c_var = sch.get(n_loop).loop_var, sch.get(c_loop).loop_var
        copy_name = sch.get(copy).name_hint
    except (s_tir.ScheduleError, RuntimeError) as err:
        LOG.debug("no in-place variant: %s", err)
        return None
    if not _channel_local(scheduled, data, out, n_var, c_var, copy_name):
        LOG.debug("no in-place variant: not channel-local")
        return None
    # TIR buffers are variables in 0.27: the output becomes the input everywhere.
    body = tvm_ffi.structural_map(
        scheduled.body, [(tvm.ir.expr.Var, lambda v: data if v.same_as(out) else v)])
    new_params = [p for i, p in enumerate(params[:-1]) if i != data_index] + [data]
    new = tirx.PrimFunc(new_params, body, scheduled.ret_type, scheduled.attrs)
    return new.with_attr(IN_PLACE_ATTR, True)


# --------------------------------------------------------------------------- Relax


class _Roots:
    """Each variable's storage root (through aliases, views, tuples) and its users."""

    def __init__(self, func: relax.Function, mod: tvm.IRModule, bindings: list):
        self.root: dict = {p: p for p in func.params}
        self.allocs: dict = {}     # alloc var -> binding index
        self.users: dict = {}      # root -> binding indices reading it (len: the body)
        for i, b in enumerate(bindings):
            value = b.value
            if is_alloc_tensor(value):
                self.root[b.var] = b.var
                self.allocs[b.var] = i
                continue
            found = [self.of(v) for v in relax.analysis.free_vars(value)]
            for r in found:
                self.users.setdefault(r, []).append(i)
            if not is_kernel_call(mod, value) and found:
                self.root[b.var] = found[0]
        for v in relax.analysis.free_vars(func.body.body):
            self.users.setdefault(self.of(v), []).append(len(bindings))

    def of(self, var):
        return self.root.get(var, var)


@dataclass(frozen=True)
class Candidate:
    """A kernel call of ``main`` that may write its output over its input."""

    index: int          # binding index of the call in ``flat_bindings(main)``
    step: int           # its kernel step (count of kernel calls before it)
    data_arg: int       # which argument is the input it overwrites
    alloc_index: int    # binding index of the output's ``alloc_tensor``
    kernel: str
    temp_bytes: int     # the kernel's one-channel temporary (H x W of the output dtype)


def _candidate(mod, bindings, roots: _Roots, i: int, depthwise: dict) -> tuple[int, int] | None:
    """(data argument index, output alloc binding index) if call ``i`` can go in place."""
    call = bindings[i].value
    kernel = mod[call.op]
    if is_in_place_kernel(kernel) or len(call.args) != len(kernel.params) or len(call.args) < 2:
        return None
    out = call.args[-1]
    if not isinstance(out, relax.Var) or out not in roots.allocs:
        return None
    out_users = roots.users.get(out, [])
    if min(out_users) < i or len(bindings) in out_users:
        return None   # written before, or a result of main (kept outside the arena)
    for k, arg in enumerate(call.args[:-1]):
        if not isinstance(arg, relax.Var):
            continue
        root = roots.of(arg)
        if root not in roots.allocs:
            continue   # a parameter of main (the caller's tensor) or unknown
        if root.same_as(out):
            continue
        if max(roots.users.get(root, [i])) > i:
            continue   # read after this call
        others = [a for j, a in enumerate(call.args) if j != k and isinstance(a, relax.Var)]
        if any(roots.of(a).same_as(root) for a in others):
            continue   # passed twice
        key = (call.op.name_hint, k)
        if key not in depthwise:
            params = list(kernel.params)
            try:
                depthwise[key] = (len(params[k].shape) == 4
                                  and buffer_shape(params[k]) == buffer_shape(params[-1])
                                  and str(params[k].dtype) == str(params[-1].dtype)
                                  and is_depthwise(kernel, k))
            except (TypeError, ValueError):   # a symbolic shape
                depthwise[key] = False
        if depthwise[key]:
            return k, roots.allocs[out]
    return None


def depthwise_candidates(mod: tvm.IRModule) -> list[Candidate]:
    """The depthwise calls of lowered ``mod["main"]`` whose output has the input's shape
    and dtype and whose input (an allocated tensor, not a parameter of ``main``) is read
    by nothing after the call. Whether TIR scheduling then succeeds is
    :func:`in_place_kernel`'s to say."""
    func = mod["main"]
    bindings = flat_bindings(func)
    roots = _Roots(func, mod, bindings)
    depthwise: dict = {}
    found, step = [], 0
    for i, b in enumerate(bindings):
        if not is_kernel_call(mod, b.value):
            continue
        hit = _candidate(mod, bindings, roots, i, depthwise)
        if hit is not None:
            k, alloc_index = hit
            out = mod[b.value.op].params[-1]
            h, w = (int(d) for d in out.shape[2:])
            found.append(Candidate(i, step, k, alloc_index, b.value.op.name_hint,
                                   tensor_bytes((h, w), str(out.dtype))))
        step += 1
    return found


def depthwise_in_place(mod: tvm.IRModule, max_temp_bytes: int | None = None,
                       candidates: list[Candidate] | None = None) -> tuple[tvm.IRModule, int]:
    """Rewrite ``mod["main"]``; return the new module and how many depthwise convolutions
    now write over their input.

    ``max_temp_bytes`` leaves out the calls whose one-channel temporary is larger
    (the build's choice among them: :func:`tvm_memflat.planner.pipeline.lower_and_plan`);
    ``candidates`` are :func:`depthwise_candidates` of ``mod`` if already known.
    """
    if candidates is None:
        candidates = depthwise_candidates(mod)
    if max_temp_bytes is not None:
        candidates = [c for c in candidates if c.temp_bytes <= max_temp_bytes]
    if not candidates:
        return mod, 0
    func = mod["main"]
    bindings = flat_bindings(func)
    builder = relax.BlockBuilder(copy_module(mod))
    variants: dict[tuple[str, int], tvm.ir.GlobalVar | None] = {}
    rewrites: dict[int, tuple[Candidate, tvm.ir.GlobalVar]] = {}
    for c in candidates:
        key = (c.kernel, c.data_arg)
        if key not in variants:
            kernel = in_place_kernel(mod[bindings[c.index].value.op], c.data_arg)
            variants[key] = (None if kernel is None else
                             builder.add_func(kernel, f"{c.kernel}{IN_PLACE_SUFFIX}"))
        if variants[key] is None:
            LOG.info("depthwise %s kept: no in-place schedule", c.kernel)
            continue
        rewrites[c.index] = (c, variants[key])
    if not rewrites:
        return mod, 0
    dropped = {c.alloc_index for c, _ in rewrites.values()}
    out = []
    for i, b in enumerate(bindings):
        if i in dropped:
            continue
        if i in rewrites:
            c, gv = rewrites[i]
            args = list(b.value.args)
            data = args[c.data_arg]
            new_args = [a for j, a in enumerate(args[:-1]) if j != c.data_arg] + [data]
            out.append(relax.VarBinding(b.var, relax.Call(gv, new_args)))
            # the output is the input's storage from here on
            out.append(relax.VarBinding(bindings[c.alloc_index].var, data))
            continue
        out.append(b)
    new_mod = builder.get()
    new_mod["main"] = rebuild(func, out)
    return new_mod, len(rewrites)
