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
from .tir_views import buffer_shape, write_into_slice

LOG = logging.getLogger(__name__)

_ALLOC_TENSOR = tvm.ir.Op.get("relax.builtin.alloc_tensor")


def is_kernel_call(mod: tvm.IRModule, value) -> bool:
    """A direct call of a PrimFunc of ``mod`` (lowered destination-passing form)."""
    return (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar)
            and isinstance(mod[value.op], tirx.PrimFunc))


def is_alloc_tensor(value) -> bool:
    return isinstance(value, relax.Call) and value.op.same_as(_ALLOC_TENSOR)


def flat_bindings(func: relax.Function) -> list:
    """All bindings of ``func``'s body, in order (lowered Relax has no dataflow blocks)."""
    return [b for block in func.body.blocks for b in block.bindings]


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


def concat_in_place(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Rewrite ``mod["main"]``; return the new module and how many concats were removed."""
    func = mod["main"]
    bindings = flat_bindings(func)
    uses = _Uses.of(bindings, func.body.body)
    # For each kernel binding index: (destination root var, begin) of its output slice.
    region: dict[int, tuple[relax.Var, tuple[int, ...]]] = {}
    dropped: set[int] = set()
    removed = 0
    for i in reversed(range(len(bindings))):
        value = bindings[i].value
        if not (is_kernel_call(mod, value) and is_concat_kernel(value.op.name_hint)):
            continue
        plan = _plan_concat(mod, bindings, uses, i)
        if plan is None:
            continue
        # An inner concat already redirected into an outer one writes there; else its own.
        dest, begin = region.get(i, (uses.root(value.args[-1]), (0,) * len(plan.out_shape)))
        for producer, offset in plan.producers:
            shifted = list(begin)
            shifted[plan.axis] += offset
            region[producer] = (dest, tuple(shifted))
        dropped.add(i)
        dropped.update(plan.dead_bindings)
        region.pop(i, None)
        removed += 1
    if not removed:
        return mod, 0

    variants: dict[tuple, tvm.ir.GlobalVar] = {}
    # BlockBuilder.add_func gives the new GlobalVars their function type.
    builder = relax.BlockBuilder(copy_module(mod))
    out = []
    for i, b in enumerate(bindings):
        if i in dropped:
            continue
        if i in region:
            dest, begin = region[i]
            call = b.value
            full_shape = tuple(int(d) for d in dest.ty.shape.values)
            key = (call.op.name_hint, full_shape, begin)
            if key not in variants:
                name = f"{call.op.name_hint}_into_{'x'.join(map(str, full_shape))}_at_" \
                       f"{'_'.join(map(str, begin))}"
                variants[key] = builder.add_func(
                    write_into_slice(mod[call.op], full_shape, begin), name)
            b = relax.VarBinding(b.var, relax.Call(variants[key], [*call.args[:-1], dest]))
        out.append(b)
    out = _hoist_allocs(out)
    new_mod = builder.get()
    new_mod["main"] = rebuild(func, out)
    return new_mod, removed


@dataclass
class _ConcatPlan:
    axis: int
    out_shape: tuple[int, ...]
    producers: list[tuple[int, int]]   # (binding index, offset along axis)
    dead_bindings: list[int]           # input allocs and their aliases


def _plan_concat(mod, bindings, uses: _Uses, i: int) -> _ConcatPlan | None:
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
    producers, dead, offset = [], [], 0
    for root, shape in zip(roots, in_shapes, strict=True):
        j = uses.index_of.get(root)
        if j is None or not is_alloc_tensor(bindings[j].value):
            LOG.info("concat %s kept: input %s is not allocated here", name, root.name)
            return None
        users = [u for u in uses.users.get(root, []) if u != i]
        if len(users) != 1 or users[0] >= i:
            LOG.info("concat %s kept: input %s has other readers", name, root.name)
            return None
        producer = bindings[users[0]].value
        if not (is_kernel_call(mod, producer) and isinstance(producer.args[-1], relax.Var)
                and uses.root(producer.args[-1]).same_as(root)
                and not any(isinstance(a, relax.Var) and uses.root(a).same_as(root)
                            for a in producer.args[:-1])):
            LOG.info("concat %s kept: input %s is not a kernel's sole output", name,
                     root.name)
            return None
        producers.append((users[0], offset))
        dead.append(j)
        dead.extend(uses.aliases.get(root, ()))
        offset += shape[axis]
    return _ConcatPlan(axis, out_shape, producers, dead)


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
