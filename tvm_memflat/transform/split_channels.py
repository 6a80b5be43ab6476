"""Channel splits: compute a widening group of ops one channel slice at a time (exact).

A *channel group* is a run of bindings that widens a tensor to ``E`` channels
and narrows it again:

* a **fan-out**: a conv with ``groups=1`` producing the ``E`` channels (the
  expand 1x1 of an inverted residual block), or a channel concat of parts (a
  fire or inception module's output);
* then any number of **per-channel ops**, where output channel ``c`` reads only
  input channel ``c``: bias, scale, activations, depthwise convs, pooling;
* and a **fan-in**: a conv with ``groups=1`` that reads the ``E`` channels (the
  project 1x1, or the next module's squeeze conv).

A conv is a sum over its input channels, ``conv(concat_g(x_g), W) = sum_g
conv(x_g, W[:, g])``, so the group can be computed slice by slice: each slice
runs the fan-out's slice, the per-channel ops on it, and the fan-in's partial
conv, which is added into an accumulator. Only one slice of the wide tensors is
ever live. A conv fan-out is cut into near-equal slices; a concat is cut at its
parts ("split by branch"), and each part's slice is consumed right after the
part is produced, so the full concat never exists.

No MAC is added (the partial sums are additions); the result differs from the
original only in the order of a floating-point sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .. import naming
from ..frontend.canonicalize import weight_only_vars
from ._typed_emit import emit as typed_emit
from .regions import bindings, use_counts
from .tiling import _BINARY, _CONV, _POOLS, _UNARY, _ints, _is_const, _out_dtype, window_of


class SplitRefused(ValueError):
    """A channel group that cannot be split this way (never approximated)."""


@dataclass(frozen=True)
class ChannelGroup:
    """Bindings ``vars`` from the fan-out ``vars[0]`` to the fan-in ``vars[-1]``.

    ``part_bounds`` are the channel offsets of a concat fan-out's parts
    (``(0, c0, c0 + c1, ..., E)``), empty for a conv fan-out.
    """

    vars: tuple
    calls: tuple
    channels: int
    part_bounds: tuple[int, ...] = ()

    @property
    def fan_in(self) -> relax.Var:
        return self.vars[-1]

    @property
    def head(self) -> relax.Var:
        return self.vars[0]

    @property
    def key(self) -> tuple[str, int]:
        """(fan-in name, member count): names a group across rebuilds of a module."""
        return (self.fan_in.name, len(self.vars))

    @property
    def family(self) -> tuple[str, int]:
        """:attr:`key` with tile numbers wildcarded: the same group in every H- or W-tile of a
        tiled region (``x_t3_14`` and ``x_t4_14``) has one family, split as one."""
        return (naming.untiled(self.fan_in.name), len(self.vars))

    @property
    def by_branch(self) -> bool:
        return bool(self.part_bounds)


def _const_conv(call) -> bool:
    """An NCHW/OIHW conv2d with a static-shape weight (a constant or a parameter)."""
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return False
    weight_ty = getattr(call.args[1], "ty", None) if call.op.name == _CONV else None
    if not isinstance(weight_ty, relax.TensorType) or weight_ty.shape is None:
        return False
    a = call.attrs
    return (a.data_layout, a.kernel_layout, a.out_layout) == ("NCHW", "OIHW", "NCHW")


def _channels(expr) -> int:
    return int(expr.ty.shape.values[1])


def _is_fan_in(call) -> bool:
    return _const_conv(call) and int(call.attrs.groups) == 1 and _channels(call.args[0]) > 1


def _is_fan_out(call, channels: int) -> bool:
    return _const_conv(call) and int(call.attrs.groups) == 1 and _channels(call) == channels


def _concat_parts(call, channels: int) -> tuple[int, ...] | None:
    """Channel bounds of a concat along C of bound tensors, else None."""
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return None
    if call.op.name != "relax.concat" or not isinstance(call.args[0], relax.Tuple):
        return None
    if int(call.attrs.axis) % 4 != 1 or len(call.args[0].fields) < 2:
        return None
    bounds = [0]
    for part in call.args[0].fields:
        if not isinstance(part, relax.Var):
            return None
        bounds.append(bounds[-1] + _channels(part))
    return tuple(bounds) if bounds[-1] == channels else None


def _per_channel_data(call, channels: int) -> int | None:
    """Index of the data argument if output channel c of ``call`` reads input channel c only."""
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return None
    ty = call.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4 or _channels(call) != channels:
        return None
    name = call.op.name
    if name == _CONV:
        w = _ints(call.args[1].ty.shape.values) if _const_conv(call) else None
        depthwise = w is not None and int(call.attrs.groups) == channels == w[0] and w[1] == 1
        return 0 if depthwise and _channels(call.args[0]) == channels else None
    if name in _POOLS:
        return 0 if window_of(call) is not None else None
    info = window_of(call)  # elementwise: unary, or binary with a constant broadcast over H, W
    if info is None:
        return None
    if name in _UNARY:
        return info[1]
    if name not in _BINARY:  # a channel gather or slice moves channels: not per channel
        return None
    const = call.args[1 - info[1]]
    shape = _ints(const.ty.shape.values)
    chan = ([1] * (4 - len(shape)) + shape)[1]
    return info[1] if chan in (1, channels) else None


def find_channel_groups(func: relax.Function) -> list[ChannelGroup]:
    """Every channel group of ``func``, fan-in convs in binding order.

    Walking back from each fan-in conv through single-use per-channel ops, a
    group is found if the walk ends at a single-use fan-out (a ``groups=1`` conv
    or a channel concat of bound tensors) of the same width.
    """
    uses = use_counts(func)
    value = {b.var: b.value for b in bindings(func)}
    groups = []
    for b in bindings(func):
        if not _is_fan_in(b.value):
            continue
        width = _channels(b.value.args[0])
        chain = [b.var]
        cur = b.value.args[0]
        while isinstance(cur, relax.Var) and cur in value and uses.get(cur) == 1:
            call = value[cur]
            bounds = _concat_parts(call, width)
            if bounds is not None and not all(p in value for p in call.args[0].fields):
                break  # a part that is no binding (a parameter) has no place to start at
            if bounds is not None or _is_fan_out(call, width):
                chain.append(cur)
                members = tuple(reversed(chain))
                groups.append(ChannelGroup(members, tuple(value[v] for v in members), width,
                                           bounds or ()))
                break
            index = _per_channel_data(call, width)
            if index is None:
                break
            chain.append(cur)
            cur = call.args[index]
    return groups


@dataclass(frozen=True)
class GroupFamily:
    """The groups of one :attr:`ChannelGroup.family`, split together as one rewrite."""

    groups: tuple[ChannelGroup, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.groups[0].family

    # What the search and its decisions read: the same for every group of the family.
    @property
    def head(self) -> relax.Var:
        return self.groups[0].head

    @property
    def vars(self) -> tuple:
        return self.groups[0].vars

    @property
    def channels(self) -> int:
        return self.groups[0].channels

    @property
    def part_bounds(self) -> tuple[int, ...]:
        return self.groups[0].part_bounds

    @property
    def by_branch(self) -> bool:
        return self.groups[0].by_branch


def group_families(func: relax.Function) -> list[GroupFamily]:
    """The channel groups of ``func`` by family, in order of first fan-in."""
    families: dict = {}
    for group in find_channel_groups(func):
        families.setdefault(group.family, []).append(group)
    return [GroupFamily(tuple(g)) for g in families.values()]


def channel_bounds(group: ChannelGroup, parts: int) -> tuple[int, ...]:
    """Channel offsets of ``parts`` slices: a concat's own parts, else near-equal slices."""
    if group.by_branch:
        if parts != len(group.part_bounds) - 1:
            raise SplitRefused(f"{group.head.name} is split at its {len(group.part_bounds) - 1} "
                               f"parts, not into {parts}")
        return group.part_bounds
    if not 2 <= parts <= group.channels:
        raise SplitRefused(f"cannot split {group.channels} channels into {parts} slices")
    return tuple(group.channels * i // parts for i in range(parts + 1))


# ------------------------------------------------------------------ slices of calls


def _const_slice(const, axis: int, c0: int, c1: int):
    """Channels ``[c0, c1)`` along ``axis``: sliced now for a constant, by a
    ``strided_slice`` at run time for a parameter or a computed tensor."""
    if not _is_const(const):
        return relax.op.strided_slice(const, axes=[axis], begin=[c0], end=[c1])
    data = const.value.numpy()
    index = [slice(None)] * data.ndim
    index[axis] = slice(c0, c1)
    return relax.const(np.ascontiguousarray(data[tuple(index)]), str(const.ty.dtype))


def _conv(call, data, weight, groups: int):
    a = call.attrs
    return relax.op.nn.conv2d(data, weight, strides=_ints(a.strides), padding=_ints(a.padding),
                              dilation=_ints(a.dilation), groups=groups, data_layout="NCHW",
                              kernel_layout="OIHW", out_layout="NCHW", out_dtype=_out_dtype(a))


def _sliced(call, data, c0: int, c1: int, channels: int):
    """Channels ``[c0, c1)`` of per-channel op ``call``, on ``data`` (those channels)."""
    name = call.op.name
    if name == _CONV:  # depthwise
        return _conv(call, data, _const_slice(call.args[1], 0, c0, c1), c1 - c0)
    index = _per_channel_data(call, channels)
    args = list(call.args)
    args[index] = data
    if name not in _POOLS and name not in _UNARY:
        const = args[1 - index]
        shape = _ints(const.ty.shape.values)
        if len(shape) >= 3 and shape[-3] == channels and channels > 1:
            args[1 - index] = _const_slice(const, len(shape) - 3, c0, c1)
    return relax.Call(call.op, args, call.attrs)


class _Split:
    """One group being split: where its slices start, and its running sum."""

    def __init__(self, group: ChannelGroup, bounds):
        self.group, self.bounds = group, bounds
        self.pending = len(bounds) - 1
        self.acc = None
        self.total = None


@relax.expr_functor.mutator
class _ChannelSplitter(relax.PyExprMutator):
    """Emit each group's slices where their inputs appear, and its fan-in as their sum."""

    def __init__(self, mod, splits: list[_Split]):
        super().__init__(mod)
        main = mod["main"]
        self.bound = {b.var: b.value for b in bindings(main)}
        self.weight_only = weight_only_vars(main)
        self.seen: set = set()  # bindings already visited (emitted or skipped)
        self.skip: set = set()
        self.starts: dict = {}  # var -> [(split, slice index)] starting right after it
        self.fan_ins: dict = {}  # fan-in call -> split
        for split in splits:
            group = split.group
            self.skip |= set(group.vars[:-1])
            self.fan_ins[group.calls[-1]] = split
            if group.by_branch:  # slice g starts at concat part g, right after it is produced
                for g, part in enumerate(group.calls[0].args[0].fields):
                    self.starts.setdefault(part, []).append((split, g))
            else:  # every slice starts where the fan-out was
                self.starts[group.head] = [(split, g) for g in range(len(split.bounds) - 1)]

    def visit_var_binding_(self, binding):
        var = binding.var
        self.seen.add(var)
        if var not in self.skip:
            super().visit_var_binding_(binding)
        if var in self.starts:
            for split, g in self.starts.pop(var):
                self._emit_slice(split, g, var)

    def _ready(self, expr):
        """``expr`` as this point of the output may read it.

        A slice starts right after the fan-out, so a weight parameter's run-time
        transform (a batch norm's scale kept as parameters) bound later, between
        the fan-out and its use, is computed here instead (it reads weights only;
        the later binding is then unused and removed). Anything else bound later
        cannot be moved: refused.
        """
        if not isinstance(expr, relax.Var) or expr not in self.bound or expr in self.seen:
            return self.visit_expr(expr)
        if expr not in self.weight_only:
            raise SplitRefused(f"{expr.name} is read by a slice but computed after it starts")
        value = self.bound[expr]
        for v in relax.analysis.free_vars(value):
            self._ready(v)
        new = self.builder_.emit(self.visit_expr(value), expr.name)
        self.set_var_remap(expr, new)
        self.seen.add(expr)
        return new

    def _side_inputs_ready(self, call, data_index: int):
        args = list(call.args)
        for i, a in enumerate(args):
            if i != data_index and isinstance(a, relax.Var):
                args[i] = self._ready(a)
        if all(a.same_as(b) for a, b in zip(args, call.args, strict=True)):
            return call
        return self.builder_.normalize(relax.Call(call.op, args, call.attrs))

    def _emit_slice(self, split: _Split, g: int, var):
        group, name = split.group, split.group.fan_in.name
        c0, c1 = split.bounds[g], split.bounds[g + 1]
        if group.by_branch:
            x = self.visit_expr(var)
        else:
            head = group.calls[0]
            weight = _const_slice(self._ready(head.args[1]), 0, c0, c1)
            x = typed_emit(self.builder_, _conv(head, self.visit_expr(head.args[0]), weight, 1),
                           naming.split_member(name, g, 0))
        for j, call in enumerate(group.calls[1:-1], start=1):
            index = _per_channel_data(call, group.channels)
            x = self.builder_.emit(_sliced(self._side_inputs_ready(call, index), x, c0, c1,
                                           group.channels),
                                   naming.split_member(name, g, j))
        fan_in = group.calls[-1]
        partial = typed_emit(
            self.builder_,
            _conv(fan_in, x, _const_slice(self._ready(fan_in.args[1]), 1, c0, c1), 1),
            naming.split_partial(name, g))
        split.pending -= 1
        if split.acc is None:
            split.acc = partial
        else:  # a running sum: the build keeps it unfused (fusion_passes.opaque_marks)
            split.acc = self.builder_.emit(relax.op.add(split.acc, partial),
                                           naming.split_sum(name, g))
        if not split.pending:
            split.total = split.acc

    def visit_call_(self, call):
        split = self.fan_ins.get(call)
        if split is not None:
            if split.total is None:
                raise SplitRefused(f"{split.group.fan_in.name}: a slice's input comes after "
                                   "the fan-in")
            return split.total
        return super().visit_call_(call)


def split_channels(mod: tvm.IRModule, groups, parts: int) -> tvm.IRModule:
    """``mod`` with each of ``groups`` (a :class:`ChannelGroup`, several, or a
    :class:`GroupFamily`) computed in
    ``parts`` channel slices, exact up to summation order. A concat fan-out is split
    at its own parts (``parts`` must be their number).

    Raises :class:`SplitRefused` if a group cannot be split that way.
    """
    groups = groups.groups if isinstance(groups, GroupFamily) else groups
    groups = [groups] if isinstance(groups, ChannelGroup) else list(groups)
    splits = [_Split(g, channel_bounds(g, parts)) for g in groups]
    splitter = _ChannelSplitter(mod, splits)
    func = splitter.visit_expr(mod["main"])
    splitter.builder_.update_func(mod.get_global_var("main"),
                                  relax.analysis.remove_all_unused(func))
    return splitter.builder_.get()
