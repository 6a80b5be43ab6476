"""Activation memory profile: schedule, lifetimes, live bytes per layer, peak, MACs.

Definitions (``shared/docs/design.md`` §2): a tensor is live from the layer that
produces it (network inputs: from the first layer) up to and including its last
consumer; the network outputs stay live to the end. Inputs and output of the
executing layer both count. Weights and constants are not activations. Views
(reshapes that TVM turns into ``R.memory.view``) share their source's storage and
are counted once. A layer is a fused operator group (see :mod:`.fusion`).

The profile is pure analysis: it lowers a *copy* of the module and never rewrites
the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..frontend.canonicalize import num_inputs
from .device_bytes import DeviceBytes
from .fusion import FusedModules, Step, fuse, steps_of
from .tir_stats import dtype_bytes
from .tvm_allocation import TVMAllocation, tvm_allocation

#: Activation views: ``None`` keeps each tensor's own dtype; ``"int8"`` counts one
#: byte per element, the view used for accelerator reasoning.
ACTIVATION_DTYPES = ("float32", "int8")


@dataclass(frozen=True)
class TensorLife:
    """One activation tensor and its lifetime over the schedule (layer indices)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    producer: int  # layer index; -1 for a network input
    producer_name: str
    first: int
    last: int
    is_input: bool = False
    is_output: bool = False
    view_of: str | None = None  # storage shared with this tensor (bytes counted there)
    #: computed at run time from weights and constants only (a batch norm's scale on
    #: weights kept as parameters): allocated with the activations, reported apart
    weight_only: bool = False


@dataclass(frozen=True)
class LayerRow:
    """One fused layer of the schedule."""

    index: int
    name: str
    op: str
    shape: tuple[int, ...]
    output_bytes: int
    live_bytes: int
    macs: int
    scratch_bytes: int
    inputs: tuple[str, ...]
    is_view: bool = False
    #: Relax vars of the profiled module this layer computes (for rewrites; not reported)
    members: tuple = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class MemoryProfile:
    """Per-layer activation memory of a module, and what TVM really allocates for it.

    Attributes
    ----------
    peak_bytes
        Maximum over layers of live activation bytes (the seed paper's "active memory").
    macs
        Multiply-accumulates per image (conv and dense only).
    layers
        One :class:`LayerRow` per fused layer, in schedule order.
    tvm
        Stock TVM's allocation for the same module with operator fusion
        (``None`` for the int8 view, which TVM does not execute).
    """

    model: str
    activation_dtype: str
    layers: tuple[LayerRow, ...]
    tensors: tuple[TensorLife, ...]
    peak_bytes: int
    peak_step: int
    macs: int
    input_bytes: int
    output_bytes: int
    tvm: TVMAllocation | None = field(default=None, compare=False)
    #: device bytes predicted from our build's lowered schedule and offset plan
    #: (:func:`tvm_memflat.workflows.profile`; None from this analysis alone)
    device: DeviceBytes | None = field(default=None, compare=False)
    #: what the live bytes leave out as streamed (``"input"``, ``"output"``)
    stream: tuple[str, ...] = ()

    def counted(self, t) -> bool:
        """Whether tensor ``t`` takes memory in this profile's live bytes (not a view,
        not a streamed network input or output)."""
        return _counted(t, self.stream)

    @property
    def peak_layer(self) -> LayerRow:
        """The layer executing when live memory peaks (the first such, on ties)."""
        return self.layers[self.peak_step]

    @property
    def live_bytes(self) -> tuple[int, ...]:
        """Live activation bytes at every step."""
        return tuple(row.live_bytes for row in self.layers)

    @property
    def tvm_allocated_bytes(self) -> int | None:
        """Planned storage + output + the largest kernel scratch, as stock TVM builds it."""
        return self.tvm.total_bytes if self.tvm is not None else None

    def live_at(self, step: int) -> list[TensorLife]:
        """Tensors holding their own storage at ``step`` (streamed ones left out),
        largest first."""
        live = [t for t in self.tensors if self.counted(t) and t.first <= step <= t.last]
        return sorted(live, key=lambda t: (-t.bytes, t.name))

    def live_at_peak(self) -> list[TensorLife]:
        """Tensors live at the peak, largest first."""
        return self.live_at(self.peak_step)

    @property
    def weight_only_bytes(self) -> int:
        """Bytes of tensors computed at run time from weights only (their transforms
        when the weights are parameters): counted in the live bytes, reported apart."""
        return sum(t.bytes for t in self.tensors if t.weight_only and t.view_of is None)

    def top_layers(self, k: int = 5) -> list[LayerRow]:
        """The ``k`` layers with most live bytes, highest first."""
        return sorted(self.layers, key=lambda r: (-r.live_bytes, r.index))[:k]

    def to_dict(self) -> dict:
        """JSON-ready report; ``peak_bytes`` and ``macs`` are contract keys."""
        peak = self.peak_layer
        return {
            "model": self.model,
            "activation_dtype": self.activation_dtype,
            "peak_bytes": self.peak_bytes,
            "macs": self.macs,
            "peak_step": self.peak_step,
            "peak_layer": peak.name,
            "peak_op": peak.op,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "weight_only_bytes": self.weight_only_bytes,
            "num_layers": len(self.layers),
            "tvm_allocated_bytes": self.tvm_allocated_bytes,
            "tvm_allocation": self.tvm.to_dict() if self.tvm is not None else None,
            "predicted_device_bytes": self.device.total_bytes if self.device else None,
            "device": self.device.to_dict() if self.device is not None else None,
            "live_at_peak": [
                {"name": t.name, "bytes": t.bytes, "shape": list(t.shape),
                 "producer": t.producer_name, "weight_only": t.weight_only}
                for t in self.live_at_peak()
            ],
            "layers": [
                {"index": r.index, "name": r.name, "op": r.op, "shape": list(r.shape),
                 "output_bytes": r.output_bytes, "live_bytes": r.live_bytes,
                 "live_pct_of_peak": round(100.0 * r.live_bytes / max(self.peak_bytes, 1), 2),
                 "macs": r.macs, "scratch_bytes": r.scratch_bytes, "inputs": list(r.inputs)}
                for r in self.layers
            ],
        }


def _tensor_type_facts(ty) -> tuple[tuple[int, ...], str, int, int]:
    shape = tuple(int(d) for d in ty.shape.values)
    dtype = str(ty.dtype)
    return shape, dtype, int(np.prod(shape)) if shape else 1, dtype_bytes(dtype)


def profile(
    mod: tvm.IRModule,
    *,
    activation_dtype: str | None = None,
    model: str = "model",
    target=None,
    with_tvm: bool = True,
    fused: FusedModules | None = None,
    in_place_concat: bool = False,
    stream: tuple[str, ...] = (),
) -> MemoryProfile:
    """Profile the activation memory of ``mod``'s ``main`` layer by layer.

    Parameters
    ----------
    mod
        A Relax IRModule with static shapes (e.g. from :func:`tvm_memflat.frontend.load_model`).
    activation_dtype
        ``None``/``"float32"``: each tensor's own dtype. ``"int8"``: one byte per element.
    model
        Name used in reports.
    target
        Target whose fusion defines the layers (default: llvm).
    with_tvm
        Also work out what stock TVM allocates (``MemoryProfile.tvm``).
    fused
        Reuse an already fused module (saves lowering twice).
    in_place_concat
        Model our build's in-place layouts: concatenation (:func:`_concats_in_place`):
        the inputs of a concat that the build writes in place are counted inside its
        output, which is live from the first of them; and depthwise convolution
        (:func:`_depthwise_in_place`): a stride-1 depthwise conv whose input dies
        there writes its output over its input. Off by default (the seed paper's
        definition of live memory); the search ranks its candidates with it. With it
        too, a slice read in place where its source lives on anyway
        (:func:`_slices_in_place`).
    stream
        ``"input"`` and/or ``"output"``: the network input (outputs) streamed from
        (to) outside, so they take no memory in the live bytes (the counting
        convention; the search ranks its candidates under the convention it is
        judged on).
    """
    if activation_dtype not in (None, *ACTIVATION_DTYPES):
        raise ValueError(f"activation_dtype must be one of {ACTIVATION_DTYPES}")
    fused = fused or fuse(mod, target)
    steps = steps_of(fused)
    depthwise = _depthwise_vars(mod["main"]) if in_place_concat else frozenset()
    stream = tuple(sorted(set(stream)))
    if set(stream) - {"input", "output"}:
        raise ValueError(f"stream must name 'input' and/or 'output', got {stream}")
    layers, tensors = _lifetimes(fused.kernels["main"], steps, activation_dtype == "int8",
                                 in_place_concat, depthwise, "input" in stream)
    live = [0] * len(layers)
    for t in tensors:
        if _counted(t, stream):
            for i in range(t.first, t.last + 1):
                live[i] += t.bytes
    if not layers:
        raise ValueError("main has no operators to profile")
    peak_step = int(np.argmax(live))
    rows = tuple(
        LayerRow(r.index, r.name, r.op, r.shape, r.output_bytes, live[r.index], r.macs,
                 r.scratch_bytes, r.inputs, r.is_view, r.members)
        for r in layers
    )
    tvm_alloc = None
    if with_tvm and activation_dtype != "int8":
        tvm_alloc = tvm_allocation(fused)
    return MemoryProfile(
        model=model,
        activation_dtype=activation_dtype or "native",
        layers=rows,
        tensors=tuple(tensors),
        peak_bytes=live[peak_step],
        peak_step=peak_step,
        macs=sum(r.macs for r in rows),
        input_bytes=sum(t.bytes for t in tensors if t.is_input),
        output_bytes=sum(t.bytes for t in tensors if t.is_output and t.view_of is None),
        tvm=tvm_alloc,
        stream=stream,
    )


def _counted(t: TensorLife, stream: tuple[str, ...]) -> bool:
    """``t`` takes memory in the live bytes: not a view, not a streamed end."""
    return t.view_of is None and not (t.is_input and "input" in stream) and \
        not (t.is_output and "output" in stream)


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    producer: int
    producer_name: str
    root: int  # index of the tensor owning the storage (itself unless a view)
    is_input: bool = False
    is_output: bool = False
    last: int = -1
    weight_only: bool = False


def _depthwise_vars(main: relax.Function) -> frozenset:
    """The bindings of ``main`` that are depthwise convs (channel multiplier 1)."""
    out = set()
    for block in main.body.blocks:
        for b in block.bindings:
            call = b.value
            if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op)
                    and call.op.name == "relax.nn.conv2d"):
                continue
            wty = getattr(call.args[1], "ty", None)
            if not isinstance(wty, relax.TensorType) or wty.shape is None:
                continue
            w = [int(d) for d in wty.shape.values]
            if int(call.attrs.groups) == w[0] > 1 and w[1] == 1:
                out.add(b.var)
    return frozenset(out)


def _lifetimes(main: relax.Function, steps: list[Step], one_byte: bool,
               in_place_concat: bool = False, depthwise: frozenset = frozenset(),
               input_streamed: bool = False):
    tensors: list[_Tensor] = []
    values: dict = {}  # relax var -> tensor index, or tuple of those (nested)

    def new_tensor(name, ty, producer, producer_name, root=None, **kw) -> int:
        shape, dtype, elems, itemsize = _tensor_type_facts(ty)
        nbytes = elems * (1 if one_byte else itemsize)
        idx = len(tensors)
        tensors.append(_Tensor(name, shape, dtype, nbytes, producer, producer_name,
                               idx if root is None else root, **kw))
        return idx

    def make(name, ty, producer, producer_name):
        if isinstance(ty, relax.TupleType):
            return tuple(make(f"{name}.{i}", f, producer, producer_name)
                         for i, f in enumerate(ty.fields))
        return new_tensor(name, ty, producer, producer_name)

    def flat(struct):
        if isinstance(struct, tuple):
            for s in struct:
                yield from flat(s)
        elif struct is not None:
            yield struct

    def use(expr, step):
        for idx in flat(values.get(expr)):
            root = tensors[idx].root
            tensors[root].last = max(tensors[root].last, step)

    # weights an importer kept as parameters (after num_input) are no activations
    for param in main.params[:num_inputs(main)]:
        if isinstance(param.ty, relax.TensorType):
            values[param] = new_tensor(param.name, param.ty, -1, "(input)", is_input=True)
            tensors[values[param]].last = 0

    layers = []
    layer_io: list = []  # per layer: (root tensors read, tensors written, is_view, op)
    for step in steps:
        if step.kernel is None:  # tuple plumbing: no kernel, no storage
            if step.tuple_index is not None:
                values[step.var] = values.get(step.alias_of, ())[step.tuple_index]
            elif step.op == "tuple":
                values[step.var] = tuple(values.get(a) for a in step.args)
            else:
                values[step.var] = values.get(step.alias_of)
            continue
        index = len(layers)
        for arg in step.args:
            use(arg, index)
        if step.is_view:
            src = next(flat(values.get(step.args[0])), None)
            root = tensors[src].root if src is not None else None
            values[step.var] = new_tensor(step.name, step.var.ty, index, step.name, root=root)
        else:
            values[step.var] = make(step.name, step.var.ty, index, step.name)
        out_ids = list(flat(values[step.var]))
        # no activation read: the step transforms weights (or constants) only
        weight_only = not step.is_view and all(
            tensors[i].weight_only for a in step.args for i in flat(values.get(a)))
        for idx in out_ids:
            root = tensors[idx].root
            tensors[root].last = max(tensors[root].last, index)
            tensors[idx].weight_only = weight_only
        shape = tensors[out_ids[0]].shape if len(out_ids) == 1 else ()
        out_bytes = 0 if step.is_view else sum(tensors[i].bytes for i in out_ids)
        inputs = tuple(tensors[i].name for a in step.args for i in flat(values.get(a)))
        layers.append(LayerRow(index, step.name, step.op, shape, out_bytes, 0, step.stats.macs,
                               step.stats.scratch_bytes, inputs, step.is_view, step.members))
        layer_io.append(([r for a in step.args for r in (tensors[i].root
                                                          for i in flat(values.get(a)))],
                         out_ids, step.is_view, step.op))

    n = len(layers)
    for idx in flat(values.get(main.body.body)):
        root = tensors[idx].root
        tensors[root].is_output = tensors[idx].is_output = True
        tensors[root].last = n - 1
    if depthwise:
        _depthwise_in_place(tensors, layer_io, [
            any(m in depthwise for m in step.members)
            for step in steps if step.kernel is not None])
    starts = _concats_in_place(tensors, layer_io) if in_place_concat else {}
    if in_place_concat:
        _slices_in_place(tensors, layer_io, input_streamed)
    lives = []
    for i, t in enumerate(tensors):
        first = starts.get(i, max(t.producer, 0))
        view_of = tensors[t.root].name if t.root != i else None
        lives.append(TensorLife(t.name, t.shape, t.dtype, t.bytes, t.producer, t.producer_name,
                                first, max(t.last, first), t.is_input, t.is_output, view_of,
                                t.weight_only))
    return layers, lives


def _depthwise_in_place(tensors: list[_Tensor], layer_io: list, is_dw: list[bool]) -> None:
    """Model our build's in-place depthwise conv (:mod:`tvm_memflat.lowering.inplace_depthwise`).

    A depthwise layer that reads one activation tensor of its output's shape and
    dtype, which nothing reads after it and which is no input or output of the
    network, writes its output over that input: the output becomes a view of the
    input, which stays live as long as the output does. (The build keeps only the
    in-place calls that lower its device bytes, and counts each one's one-channel
    temporary; for ranking, every eligible layer is taken in place.)
    """
    for layer, (reads, outs, is_view, _) in enumerate(layer_io):
        if not is_dw[layer] or is_view or len(outs) != 1:
            continue
        acts = {r for r in reads if not tensors[r].weight_only}
        o = outs[0]
        if len(acts) != 1 or tensors[o].root != o:
            continue
        r = tensors[next(iter(acts))].root
        src, dst = tensors[r], tensors[o]
        if (src.is_input or src.is_output or dst.is_output or src.last != layer
                or (src.shape, src.dtype) != (dst.shape, dst.dtype)):
            continue
        dst.root = r
        src.last = max(src.last, dst.last)
        for t in tensors:  # later views of the output now share the input's storage
            if t.root == o:
                t.root = r


def _slices_in_place(tensors: list[_Tensor], layer_io: list, input_streamed: bool) -> None:
    """Model our build's slices read in place (:mod:`tvm_memflat.lowering.slice_views`).

    A slice whose output is its own tensor (not written into a concat), read only by
    later layers, becomes a view of its source when the source is read again at or
    after the last of them and nothing writes the source in between: the readers read
    the rows where they are. A streamed network input keeps its slices (they are the
    patches held in SRAM). Runs after :func:`_concats_in_place`, as the build does.
    """
    readers: dict[int, set[int]] = {}
    writes: dict[int, list[int]] = {}
    for layer, (reads, outs, is_view, _) in enumerate(layer_io):
        for r in reads:
            readers.setdefault(tensors[r].root, set()).add(layer)
        if not is_view:
            for o in outs:
                writes.setdefault(tensors[o].root, []).append(layer)
    for layer, (reads, outs, is_view, op) in enumerate(layer_io):
        if not op.startswith("strided_slice") or is_view or len(outs) != 1:
            continue
        acts = {tensors[r].root for r in reads if not tensors[r].weight_only}
        o = outs[0]
        if len(acts) != 1 or tensors[o].root != o or tensors[o].is_output:
            continue
        r = next(iter(acts))
        if tensors[r].is_output or (input_streamed and tensors[r].is_input):
            continue
        users = readers.get(o, set())
        if not users or min(users) <= layer:
            continue
        last = max(users)
        if max(readers.get(r, set()) - {layer}, default=-1) < last:
            continue   # the source would live longer
        if any(layer < w <= last for w in writes.get(r, ())):
            continue
        tensors[o].root = r
        for t in tensors:
            if t.root == o:
                t.root = r


def _concats_in_place(tensors: list[_Tensor], layer_io: list) -> dict[int, int]:
    """Model our build's in-place concatenation (:mod:`tvm_memflat.lowering.concat_in_place`).

    Where every input of a concatenation is a distinct tensor that one kernel writes
    alone and nothing but the concat reads, the build has those kernels write straight
    into their slice of the concat's output: the inputs never exist on their own, and
    the output is live from the first of them. Here they become views of the output
    (counted once, there), and the returned map gives the output's new first layer.
    Nested concats compose (outer ones first). Used for ranking rewrites; the number
    the pass is judged on is read from the build's own lowered schedule.
    """
    readers: dict[int, set[int]] = {}
    for layer, (reads, _, _, _) in enumerate(layer_io):
        for r in reads:
            readers.setdefault(r, set()).add(layer)
    writer = {outs[0]: layer for layer, (_, outs, is_view, _) in enumerate(layer_io)
              if len(outs) == 1 and not is_view}
    starts: dict[int, int] = {}
    for layer in reversed(range(len(layer_io))):
        reads, outs, is_view, op = layer_io[layer]
        if not op.startswith("concatenate") or is_view or len(outs) != 1:
            continue
        if len(set(reads)) != len(reads) or not reads:
            continue
        if not all(r in writer and readers.get(r) == {layer} and not tensors[r].is_input
                   and tensors[r].root == r for r in reads):
            continue
        # a cached halo (cut by a slice in the tile before) stays a tensor of its own
        # and is copied in: written in place, it would hold the whole join live from
        # the previous tile on (the build's choice of copies,
        # :func:`tvm_memflat.planner.concat_choice.choose_concat_copies`, makes it)
        copied = {r for r in reads
                  if layer_io[writer[r]][3].startswith("strided_slice") and writer[r] <
                  max(writer[q] for q in reads)}
        placed = [r for r in reads if r not in copied]
        if not placed:
            continue
        dest = tensors[outs[0]].root
        first = min(writer[r] for r in placed)
        starts[dest] = min(starts.get(dest, first), first)
        for r in placed:
            tensors[r].root = dest
    return starts
