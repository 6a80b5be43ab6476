"""SliceViews: a kernel reads its slice of a live tensor in place instead of a copy.

Runs on lowered Relax (destination-passing kernel calls on ``R.builtin.alloc_tensor``),
after :mod:`.concat_in_place` and :mod:`.input_in_arena`, before
:mod:`.inplace_depthwise`. A tiled region cuts its input into row (or column) slices,
one per tile: ``strided_slice(src, tile_in)`` copies the rows into a tensor of their
own, which the tile's first kernel reads. When ``src`` stays live past that kernel
anyway (the next tile slices it again: a network input kept in SRAM, or a tensor an
earlier region wrote whole), the copy holds the same bytes twice. Here the kernels
that read the copy read ``src`` through a strided view of the slice instead
(:func:`~.tir_views.view_of_slice`), and the copy and its tensor disappear.

A slice is viewed only when that cannot lengthen any lifetime or change a value:

* the kernel is a plain box copy, ``out[i] = src[i + begin]`` over the whole output
  (:func:`slice_begin` reads the TIR), and ``src`` is a tensor allocated in ``main``
  (not a parameter: a streamed input's slices are its patches in SRAM);
* the copy is read only by kernels, as inputs, and is not a result of ``main``;
* ``src`` is read at or after the last of those kernels by something else (so its
  lifetime does not grow), and nothing writes ``src`` between the copy and them.

The planner's live ranges (:mod:`tvm_memflat.planner.live_ranges`) follow the new
reads like any other, so prediction and build agree on the saving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax, s_tir, sym, tirx

from .concat_in_place import (
    _Uses,
    copy_module,
    flat_bindings,
    is_alloc_tensor,
    is_kernel_call,
    rebuild,
    shape_of,
)
from .tir_views import SliceVariants, buffer_shape

LOG = logging.getLogger(__name__)

__all__ = ["SliceView", "slice_begin", "slice_views", "viewable_slices"]

_LOAD = tvm.ir.TensorLoad


def slice_begin(func: tirx.PrimFunc) -> tuple[int, ...] | None:
    """``begin`` if ``func(src, out)`` is a plain box copy ``out[i] = src[i + begin]``
    over all of ``out`` (same rank and dtype, one block, no buffers of its own), else
    None. Read from the TIR, scheduled or not."""
    if len(func.params) != 2:
        return None
    src, out = func.params
    if not all(isinstance(b.ty, tirx.BufferType) for b in (src, out)):
        return None
    try:
        src_shape, out_shape = buffer_shape(src), buffer_shape(out)
    except (TypeError, ValueError):
        return None
    if len(src_shape) != len(out_shape) or str(src.dtype) != str(out.dtype):
        return None
    body = func.body
    if not isinstance(body, s_tir.SBlockRealize):
        return None
    root = body.block
    if len(root.alloc_buffers) or len(root.match_buffers):
        return None
    blocks: list = []
    tvm_ffi.structural_walk(root.body, [(s_tir.SBlock, blocks.append)], order="pre")
    if len(blocks) != 1:
        return None
    block = blocks[0]
    store = block.body
    if len(block.alloc_buffers) or len(block.match_buffers) or block.init is not None \
            or not isinstance(store, tirx.BufferStore) or not store.buffer.same_as(out):
        return None
    ivs = list(block.iter_vars)
    if len(ivs) != len(out_shape) or len(store.indices) != len(ivs):
        return None
    for iv, idx, extent in zip(ivs, store.indices, out_shape, strict=True):
        if not idx.same_as(iv.var) or int(iv.dom.min) != 0 or int(iv.dom.extent) != extent:
            return None
    load = store.value
    if not isinstance(load, _LOAD) or not load.source.same_as(src) \
            or len(load.indices) != len(ivs):
        return None
    analyzer = sym.Analyzer()
    begin = []
    for iv, idx, extent, full in zip(ivs, load.indices, out_shape, src_shape, strict=True):
        offset = analyzer.simplify(idx - iv.var)
        if not isinstance(offset, tirx.IntImm):
            return None
        b = int(offset)
        if b < 0 or b + extent > full:
            return None
        begin.append(b)
    return tuple(begin)


@dataclass(frozen=True)
class SliceView:
    """A slice copy whose readers can read their slice of ``source`` in place."""

    index: int                       # binding index of the copy in ``flat_bindings(main)``
    source: relax.Var                # the sliced tensor (root variable)
    copy: relax.Var                  # the copy's tensor (root variable)
    begin: tuple[int, ...]
    readers: tuple[int, ...]         # binding indices of the kernels reading the copy
    dead: tuple[int, ...]            # the copy's alloc and aliases, gone with it


def viewable_slices(mod: tvm.IRModule) -> list[SliceView]:
    """The slice copies of lowered ``mod["main"]`` whose readers can read their source
    in place (module docstring), in binding order."""
    return _viewable(mod, *_scan(mod))


def _scan(mod: tvm.IRModule) -> tuple[list, _Uses]:
    """``main``'s flat bindings and their uses."""
    bindings = flat_bindings(mod["main"])
    return bindings, _Uses.of(bindings, mod["main"].body.body)


def _viewable(mod: tvm.IRModule, bindings: list, uses: _Uses) -> list[SliceView]:
    allocated = {b.var for b in bindings if is_alloc_tensor(b.value)}
    writes: dict = {}   # root var -> binding indices of kernels writing it
    for i, b in enumerate(bindings):
        if is_kernel_call(mod, b.value) and isinstance(b.value.args[-1], relax.Var):
            writes.setdefault(uses.root(b.value.args[-1]), []).append(i)
    begins: dict = {}
    found = []
    for i, b in enumerate(bindings):
        call = b.value
        if not is_kernel_call(mod, call) or len(call.args) != 2 \
                or not all(isinstance(a, relax.Var) for a in call.args):
            continue
        name = call.op.name_hint
        if name not in begins:
            begins[name] = slice_begin(mod[call.op])
        begin = begins[name]
        if begin is None:
            continue
        src, copy = uses.root(call.args[0]), uses.root(call.args[1])
        if src not in allocated or copy not in allocated or src.same_as(copy):
            continue
        if writes.get(copy) != [i]:
            continue   # written by more than this copy
        readers = [u for u in uses.users.get(copy, []) if u != i]
        if not readers or any(not _reads_only(mod, bindings, uses, u, copy) for u in readers):
            continue   # a result of main, or used by something other than a kernel input
        if any(u < i for u in readers):
            continue
        last = max(readers)
        others = [u for u in uses.users.get(src, []) if u != i]
        if len(bindings) in others or max(others, default=-1) < last:
            continue   # the source would live longer (or is a result of main)
        if any(i < w <= last for w in writes.get(src, [])):
            continue   # the sliced rows may change before they are read
        dead = (uses.index_of[copy], *uses.aliases.get(copy, ()))
        found.append(SliceView(i, src, copy, begin, tuple(readers), dead))
    return found


def _reads_only(mod, bindings, uses: _Uses, u: int, copy) -> bool:
    """Binding ``u`` is a kernel call that reads ``copy`` as an input, never writes it."""
    if u >= len(bindings) or not is_kernel_call(mod, bindings[u].value):
        return False
    call = bindings[u].value
    if len(call.args) != len(mod[call.op].params):
        return False
    out = call.args[-1]
    return not (isinstance(out, relax.Var) and uses.root(out).same_as(copy))


def slice_views(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Rewrite ``mod["main"]``: the kernels reading each of :func:`viewable_slices` read
    their slice of its source in place; return the new module and how many copies went."""
    bindings, uses = _scan(mod)
    views = _viewable(mod, bindings, uses)
    if not views:
        return mod, 0
    dropped: set[int] = set()
    # reader binding index -> {argument index: (source, begin)}
    reads: dict[int, dict[int, tuple]] = {}
    for v in views:
        dropped.add(v.index)
        dropped.update(v.dead)
        for u in v.readers:
            for a, arg in enumerate(bindings[u].value.args[:-1]):
                if isinstance(arg, relax.Var) and uses.root(arg).same_as(v.copy):
                    reads.setdefault(u, {})[a] = (v.source, v.begin)

    variants = SliceVariants(relax.BlockBuilder(copy_module(mod)))
    out = []
    for i, b in enumerate(bindings):
        if i in dropped:
            continue
        if i in reads:
            call = b.value
            args = list(call.args)
            spec = []
            for a, (src, begin) in sorted(reads[i].items()):
                spec.append((a, shape_of(src), begin))
                args[a] = src
            gv = variants.get(call.op.name_hint, lambda call=call: mod[call.op], tuple(spec))
            b = relax.VarBinding(b.var, relax.Call(gv, args))
        out.append(b)
    new_mod = variants.builder.get()
    new_mod["main"] = rebuild(mod["main"], out)
    LOG.info("slice_views: %d slice copies read in place", len(views))
    return new_mod, len(views)
