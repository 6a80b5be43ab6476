"""ConcatInPlace: producers write straight into their slice of a concatenation.

Runs on lowered Relax (after ``CallTIRRewrite``), where every kernel call is a
destination-passing call ``kernel(inputs..., out)`` on an ``R.builtin.alloc_tensor``.
For ``concatenate(a, b, ..., cat)`` whose inputs are each written by exactly one
kernel and read by nothing but the concat, each producer is redirected to a
:func:`~tvm_memflat.lowering.tir_views.write_into_slice` variant that writes its
slice of ``cat``; the input tensors and the concat copy disappear. Nested
concatenations compose (an inner concat's producers write into the outer one).

This is what makes a tiled region cheap: its tiles no longer stay live until a
trailing concat, and a fire/inception module no longer holds its branches *and*
their concatenation at the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import tvm
from tvm import relax, tirx

from ..naming import is_concat_kernel
from .tir_views import SliceVariants, buffer_shape, copy_kernel

LOG = logging.getLogger(__name__)

_ALLOC_TENSOR = tvm.ir.Op.get("relax.builtin.alloc_tensor")

#: the kernels copying a concatenation's input into its slice (``copied``)
COPY_KERNEL = "memflat_concat_copy"


def is_kernel_call(mod: tvm.IRModule, value) -> bool:
    """A direct call of a PrimFunc of ``mod`` (lowered destination-passing form)."""
    return (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar)
            and isinstance(mod[value.op], tirx.PrimFunc))


def is_alloc_tensor(value) -> bool:
    return isinstance(value, relax.Call) and value.op.same_as(_ALLOC_TENSOR)


def flat_bindings(func: relax.Function) -> list:
    """All bindings of ``func``'s body, in order (lowered Relax has no dataflow blocks)."""
    return [b for block in func.body.blocks for b in block.bindings]


def shape_of(var: relax.Var) -> tuple[int, ...]:
    """The static shape of a lowered tensor variable."""
    return tuple(int(d) for d in var.ty.shape.values)


def copy_module(mod: tvm.IRModule) -> tvm.IRModule:
    """A new module with the same functions and attributes (passes must not mutate input)."""
    return tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)


def rebuild(func: relax.Function, bindings: list) -> relax.Function:
    """``func`` with its body's bindings replaced by ``bindings`` (one block)."""
    body = relax.SeqExpr([relax.BindingBlock(bindings)], func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)


@dataclass
class _Uses:
    """Who defines and who uses each variable of a flat binding list."""

    alias_root: dict = field(default_factory=dict)   # var -> root var (through `a = b`)
    users: dict = field(default_factory=dict)        # root var -> binding indices using it
    index_of: dict = field(default_factory=dict)     # var -> defining binding index
    aliases: dict = field(default_factory=dict)      # root var -> indices of `a = b` bindings

    @classmethod
    def of(cls, bindings: list, body) -> _Uses:
        uses = cls()
        for i, b in enumerate(bindings):
            uses.index_of[b.var] = i
            if isinstance(b.value, relax.Var):
                root = uses.alias_root[b.var] = uses.root(b.value)
                uses.aliases.setdefault(root, []).append(i)
                continue
            for v in relax.analysis.free_vars(b.value):
                uses.users.setdefault(uses.root(v), []).append(i)
        for v in relax.analysis.free_vars(body):
            uses.users.setdefault(uses.root(v), []).append(len(bindings))
        return uses

    def root(self, var):
        return self.alias_root.get(var, var)


def _concat_axis(in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> int | None:
    """The axis a concatenate kernel joins along, from its buffer shapes."""
    if len(in_shapes) < 2:
        return None
    for axis in range(len(out_shape)):
        others_equal = all(s[:axis] + s[axis + 1:] == out_shape[:axis] + out_shape[axis + 1:]
                           for s in in_shapes)
        if others_equal and sum(s[axis] for s in in_shapes) == out_shape[axis]:
            return axis
    return None


@dataclass(frozen=True)
class ConcatSite:
    """A concatenation whose producers can write straight into its slices."""

    output: relax.Var                 # the concat's output tensor (root variable)
    inputs: tuple[relax.Var, ...]     # its inputs (root variables), in order


def concat_sites(mod: tvm.IRModule, shared_inputs: bool = False) -> list[ConcatSite]:
    """Every concatenation of ``mod["main"]`` that :func:`concat_in_place` can do in
    place (with the same ``shared_inputs``), in binding order."""
    bindings = flat_bindings(mod["main"])
    uses = _Uses.of(bindings, mod["main"].body.body)
    sites = []
    for i, b in enumerate(bindings):
        if is_kernel_call(mod, b.value) and is_concat_kernel(b.value.op.name_hint):
            plan = _plan_concat(mod, bindings, uses, i, shared_inputs)
            if plan is not None:
                sites.append(ConcatSite(uses.root(b.value.args[-1]),
                                        tuple(p.root for p in plan.inputs)))
    return sites


def concat_in_place(mod: tvm.IRModule, copied=frozenset(),
                    shared_inputs: bool = False) -> tuple[tvm.IRModule, int]:
    """Rewrite ``mod["main"]``; return the new module and how many concats were removed.

    ``copied``: input tensors (root variables, see :func:`concat_sites`) that stay
    tensors of their own and are copied into their slice where the concat was. Writing
    an input in place keeps the whole output live from that input's producer on; for an
    input made long before the others (a cached halo, carried from the previous tile)
    the copy can need less memory (the planner chooses,
    :func:`tvm_memflat.planner.concat_choice.choose_concat_copies`). A concat whose
    inputs are all copied stays as it is.

    ``shared_inputs``: an input that other kernels read too (a tile's rows that the next
    tile's cached halo is sliced from) can be written in place as well: those kernels
    then read its slice of the output (:func:`~.tir_views.view_of_slice`), which stays
    live until they have. Without it such a concat is left alone (every input copied)."""
    func = mod["main"]
    bindings = flat_bindings(func)
    uses = _Uses.of(bindings, func.body.body)
    # For each kernel binding index: (destination root var, begin) of its output slice.
    region: dict[int, tuple[relax.Var, tuple[int, ...]]] = {}
    # For each removed concat with copied inputs: [(input argument, dest, begin)]
    copies: dict[int, list] = {}
    # For each kernel reading an input written in place: {argument index: (dest, begin)}
    views: dict[int, dict[int, tuple]] = {}
    dropped: set[int] = set()
    removed = 0
    for i in reversed(range(len(bindings))):
        value = bindings[i].value
        if not (is_kernel_call(mod, value) and is_concat_kernel(value.op.name_hint)):
            continue
        plan = _plan_concat(mod, bindings, uses, i, shared_inputs)
        if plan is None or all(p.root in copied for p in plan.inputs):
            continue
        # An inner concat already redirected into an outer one writes there; else its own.
        dest, begin = region.get(i, (uses.root(value.args[-1]), (0,) * len(plan.out_shape)))
        for k, p in enumerate(plan.inputs):
            shifted = list(begin)
            shifted[plan.axis] += p.offset
            if p.root in copied:
                copies.setdefault(i, []).append((value.args[k], dest, tuple(shifted)))
                continue
            region[p.producer] = (dest, tuple(shifted))
            dropped.update(p.dead_bindings)
            for u in p.readers:
                for a, arg in enumerate(bindings[u].value.args[:-1]):
                    if isinstance(arg, relax.Var) and uses.root(arg).same_as(p.root):
                        views.setdefault(u, {})[a] = (dest, tuple(shifted))
        dropped.add(i)
        region.pop(i, None)
        removed += 1
    if not removed:
        return mod, 0

    # BlockBuilder.add_func gives the new GlobalVars their function type.
    variants = SliceVariants(relax.BlockBuilder(copy_module(mod)))

    out = []
    for i, b in enumerate(bindings):
        for arg, dest, begin in copies.get(i, ()):
            shape, dtype = shape_of(arg), str(arg.ty.dtype)
            gv = variants.get(f"{COPY_KERNEL}_{'x'.join(map(str, shape))}_{dtype}",
                              lambda shape=shape, dtype=dtype: copy_kernel(shape, dtype),
                              into=(shape_of(dest), begin))
            out.append(relax.VarBinding(relax.Var("_", relax.ObjectType()),
                                        relax.Call(gv, [arg, dest])))
        if i in dropped:
            continue
        if i in region or i in views:
            call = b.value
            args = list(call.args)
            reads = []
            for a, (src, at) in sorted(views.get(i, {}).items()):
                reads.append((a, shape_of(src), at))
                args[a] = src
            into = None
            if i in region:
                dest, begin = region[i]
                into, args[-1] = (shape_of(dest), begin), dest
            gv = variants.get(call.op.name_hint, lambda call=call: mod[call.op],
                              tuple(reads), into)
            b = relax.VarBinding(b.var, relax.Call(gv, args))
        out.append(b)
    out = _hoist_allocs(out)
    new_mod = variants.builder.get()
    new_mod["main"] = rebuild(func, out)
    return new_mod, removed


@dataclass
class _ConcatInput:
    root: relax.Var
    producer: int                      # binding index of the kernel writing it
    offset: int                        # along the concat axis
    dead_bindings: list[int]           # its alloc and aliases, gone when written in place
    readers: list[int]                 # other kernels reading it (``shared_inputs``)


@dataclass
class _ConcatPlan:
    axis: int
    out_shape: tuple[int, ...]
    inputs: list[_ConcatInput]


def _plan_concat(mod, bindings, uses: _Uses, i: int,
                 shared_inputs: bool = False) -> _ConcatPlan | None:
    call = bindings[i].value
    kernel = mod[call.op]
    inputs = list(call.args[:-1])
    in_shapes = [buffer_shape(p) for p in kernel.params[:-1]]
    out_shape = buffer_shape(kernel.params[-1])
    axis = _concat_axis(in_shapes, out_shape)
    name = call.op.name_hint
    if axis is None or len(inputs) != len(in_shapes):
        LOG.info("concat %s kept: cannot tell its axis", name)
        return None
    roots = [uses.root(a) if isinstance(a, relax.Var) else None for a in inputs]
    if any(r is None for r in roots) or len(set(roots)) != len(roots):
        LOG.info("concat %s kept: an input is not a distinct tensor variable", name)
        return None
    planned, offset = [], 0
    for root, shape in zip(roots, in_shapes, strict=True):
        j = uses.index_of.get(root)
        if j is None or not is_alloc_tensor(bindings[j].value):
            LOG.info("concat %s kept: input %s is not allocated here", name, root.name)
            return None
        users = [u for u in uses.users.get(root, []) if u != i]
        writers = [u for u in users if u < i and is_kernel_call(mod, bindings[u].value)
                   and isinstance(bindings[u].value.args[-1], relax.Var)
                   and uses.root(bindings[u].value.args[-1]).same_as(root)]
        readers = [u for u in users if u not in writers]
        if len(writers) != 1 or (readers and not shared_inputs):
            LOG.info("concat %s kept: input %s has other readers", name, root.name)
            return None
        producer = bindings[writers[0]].value
        if any(isinstance(a, relax.Var) and uses.root(a).same_as(root)
               for a in producer.args[:-1]):
            LOG.info("concat %s kept: input %s is not a kernel's sole output", name,
                     root.name)
            return None
        if any(u <= writers[0] or u >= len(bindings)
               or not is_kernel_call(mod, bindings[u].value)
               or is_concat_kernel(bindings[u].value.op.name_hint)
               or uses.root(bindings[u].value.args[-1]).same_as(root) for u in readers):
            LOG.info("concat %s kept: input %s is read by more than kernels after it", name,
                     root.name)
            return None
        planned.append(_ConcatInput(root, writers[0], offset,
                                    [j, *uses.aliases.get(root, ())], readers))
        offset += shape[axis]
    return _ConcatPlan(axis, out_shape, planned)


def _hoist_allocs(bindings: list) -> list:
    """Move each ``alloc_tensor`` binding right before the first binding that uses it.

    A concatenation's output is now written by its producers, which come before
    the (removed) concat, so its allocation must come first.
    """
    allocs = {b.var: b for b in bindings if is_alloc_tensor(b.value)}
    placed: set = set()
    out = []
    for b in bindings:
        if b.var in allocs:
            continue
        for v in relax.analysis.free_vars(b.value):
            if v in allocs and v not in placed:
                out.append(allocs[v])
                placed.add(v)
        out.append(b)
    # Allocations nobody uses (cannot happen after CallTIRRewrite) keep their place at the end.
    out.extend(b for v, b in allocs.items() if v not in placed)
    return out
