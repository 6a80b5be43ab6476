"""The lowered schedule: kernel calls in order, and the live range of every buffer.

Read from lowered Relax (after ``CallTIRRewrite``, and after
:mod:`~tvm_memflat.lowering.concat_in_place`), where each step is one kernel call
``kernel(inputs..., out)`` and every activation is an ``R.builtin.alloc_tensor``.
A buffer is live from the first to the last step that touches it, through
aliases (``lv = alloc``, reshapes, tuples). Kernel scratch (``pad_temp``, fused
intermediates) lives for its kernel's step only. An in-place kernel
(:mod:`~tvm_memflat.lowering.inplace_depthwise`) reads and writes its last argument,
and its output is an alias of that input (``out = x``), so the two are one buffer
live to the output's last use.

Each step also carries the GEMM shape of its multiply-accumulate blocks
(:class:`GemmShape`, read from the kernel's TIR by :func:`kernel_work`) and the
element operations of its other blocks, for the cost models in
:mod:`tvm_memflat.hardware.cost_model` and :mod:`tvm_memflat.tuner.cost_model`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

from ..analysis.structural_memo import StructuralMemo
from ..analysis.tir_stats import kernel_stats, tensor_bytes
from ..frontend.canonicalize import num_inputs
from ..lowering.concat_in_place import flat_bindings, is_alloc_tensor, is_kernel_call
from ..lowering.cpu_schedule import STAGING_ATTR
from ..lowering.inplace_depthwise import is_in_place_kernel
from ..lowering.input_in_arena import static_tensor_type
from ..lowering.shrink_scratch import lowered_scratch_bytes
from ..lowering.tir_views import written_shape
from .allocator import LiveRange

# Relax constants are ``tvm.ir.expr.Constant`` in 0.27 (their tensor is ``.value``).
_CONSTANT = tvm.ir.expr.Constant
# In TVM 0.27 ``tirx.BufferLoad`` builds an ``ir.TensorLoad``; TIR variables are ``ir.Var``.
_LOAD = tvm.ir.TensorLoad
_VAR = tirx.Var


@dataclass(frozen=True)
class Window:
    """The 2-D sliding window of a reduction block (a conv or a pool), NCHW order.

    Read off the block's data load (:func:`_window`): ``out_h``/``out_w`` are the
    extents of the two innermost pixel variables, ``kernel_*`` the extents of the
    reduction variables that index the same data axes, ``stride_*`` and
    ``dilation_*`` their coefficients there, and ``pad_*`` minus the index at the
    origin (TVM inlines the padding into the load's ``if_then_else``). ``in_*`` and
    ``channels`` are the unpadded data tensor's. A dense layer has no window.
    """

    channels: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    pad_top: int = 0
    pad_left: int = 0

    @property
    def span_h(self) -> int:
        """Input rows one output row needs (the dilated kernel height)."""
        return (self.kernel_h - 1) * self.dilation_h + 1

    @property
    def span_w(self) -> int:
        return (self.kernel_w - 1) * self.dilation_w + 1


@dataclass(frozen=True)
class GemmShape:
    """One multiply-accumulate block of a kernel seen as ``groups`` independent GEMMs.

    ``out[m, n] += in[m, k] * w[k, n]`` per group: a conv has ``m`` = output pixels
    (batch·Hout·Wout), ``k`` = Cin/groups·Kh·Kw (of which ``taps`` = Kh·Kw) and
    ``n`` = Cout/groups; a dense layer has ``m`` = batch rows, ``k`` = In, ``n`` = Out,
    ``taps`` = 1; a depthwise conv has ``groups`` = channels, ``k`` = Kh·Kw, ``n`` = 1.
    """

    m: int
    k: int
    n: int
    groups: int = 1
    taps: int = 1
    #: the conv's sliding window (None: a dense layer, or not read)
    window: Window | None = field(default=None, compare=False)

    @property
    def k_channels(self) -> int:
        """Reduction channels per group and kernel tap (Cin/groups; dense: In)."""
        return self.k // self.taps

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.groups


@dataclass(frozen=True)
class KernelStep:
    """One kernel call of the lowered ``main``."""

    step: int
    kernel: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    weight_bytes: int
    macs: int
    scratch_bytes: int  # what the kernel allocates for itself after TVM's TIR lowering
    #: the kernel's multiply-accumulate blocks as GEMMs (empty: no MACs)
    gemms: tuple[GemmShape, ...] = ()
    #: iterations of the kernel's other blocks (pooling windows, elementwise, copies)
    vector_ops: int = 0
    #: elements of the weights (``weight_bytes`` is at the module's own dtypes; a spec
    #: stores them at its weight dtype)
    weight_elements: int = 0
    #: the weight operands themselves (Relax constants, or ``main``'s weight
    #: parameters): the tiles of a region call kernels on the same weights, which a
    #: memory holding every weight keeps once (:func:`weight_identity`)
    weight_refs: tuple = field(default=(), compare=False, repr=False)
    #: the sliding windows of its reductions that are not MACs (pools, means)
    windows: tuple[Window, ...] = ()
    #: activations the fused epilogue reads besides the GEMM's result (a residual add)
    residuals: int = 0
    #: the shape it writes (its output's, or its slice's when it writes a slice of a
    #: concatenation in place; empty: unknown)
    out_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ActivationBuffer:
    """A tensor ``main`` passes between kernels (or its input/output)."""

    name: str          # unique key: the Relax variable's name (``alloc3``)
    label: str         # what a person calls it: the ONNX/graph tensor name when known
    shape: tuple[int, ...]
    dtype: str
    size_bytes: int
    start: int
    end: int
    role: str          # "input", "intermediate" or "output"
    uses: tuple[int, ...]


@dataclass(frozen=True)
class LoweredSchedule:
    """Kernel steps and buffer lifetimes of one lowered module."""

    steps: tuple[KernelStep, ...]
    buffers: tuple[ActivationBuffer, ...]
    #: buffer name -> the Relax variable holding it (for rewrites of the same module)
    variables: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def output_bytes(self) -> int:
        """Bytes of ``main``'s outputs (allocated outside the arena: the caller keeps them)."""
        return sum(b.size_bytes for b in self.buffers if b.role == "output")

    @property
    def max_scratch_bytes(self) -> int:
        """The largest scratch one kernel allocates for itself."""
        return max((s.scratch_bytes for s in self.steps), default=0)

    def live_ranges(self) -> list[LiveRange]:
        """Live ranges of the intermediate tensors (what the arena holds)."""
        return [LiveRange(b.name, b.start, b.end, b.size_bytes, b.uses)
                for b in self.buffers if b.role == "intermediate"]


def _vars_in(expr) -> set:
    found: list = []
    tvm_ffi.structural_walk(expr, [(_VAR, found.append)], order="post")
    return set(found)


def _eval_index(expr, env: dict) -> int:
    """Value of an integer index expression with every variable given in ``env``."""
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, _VAR):
        return env.get(expr, 0)
    if isinstance(expr, tirx.Cast):
        return _eval_index(expr.value, env)
    ops = {tirx.Add: lambda a, b: a + b, tirx.Sub: lambda a, b: a - b,
           tirx.Mul: lambda a, b: a * b, tirx.FloorDiv: lambda a, b: a // b,
           tirx.FloorMod: lambda a, b: a % b, tirx.Div: lambda a, b: int(a / b),
           tirx.Mod: lambda a, b: a - b * int(a / b), tirx.Min: min, tirx.Max: max}
    for kind, fn in ops.items():
        if isinstance(expr, kind):
            return fn(_eval_index(expr.a, env), _eval_index(expr.b, env))
    raise ValueError(f"cannot evaluate index {expr}")


def _mac_operands(block) -> tuple | None:
    """The two loads multiplied in a reduction block ``C = C + f(A[...]) * g(B[...])``."""
    if not isinstance(block.body, tirx.BufferStore):
        return None
    out = block.body.buffer
    found: list = []

    def on_mul(node):
        if found:
            return
        loads: list = []
        tvm_ffi.structural_walk(node, [(_LOAD, loads.append)], order="post")
        distinct = []
        for ld in loads:
            if not ld.source.same_as(out) and not any(ld.source.same_as(d.source)
                                                      for d in distinct):
                distinct.append(ld)
        if len(distinct) >= 2:
            found.append(distinct[:2])

    tvm_ffi.structural_walk(block.body.value, [(tirx.Mul, on_mul)], order="pre")
    return tuple(found[0]) if found else None


def _gemm_shape(block, operands, weight_buffers, pads=()) -> GemmShape:
    """Read M, K, N, groups and taps off one MAC block's iteration variables.

    The weight operand is the load of a weight buffer (a constant argument of the
    call); failing that, the operand indexed by fewer spatial variables. Spatial
    variables that index the weight are output channels (N); the others are output
    pixels (M). Reduction variables that share a data index with a pixel variable
    are kernel taps. Groups: how many distinct data elements the output-channel
    variables select (1 for a plain conv or dense, Cout/N for grouped convs).
    """
    extent = {iv.var: int(iv.dom.extent) for iv in block.iter_vars}
    spatial = [iv.var for iv in block.iter_vars if int(iv.iter_type) == tirx.IterVar.DataPar]
    reduce = [iv.var for iv in block.iter_vars if int(iv.iter_type) == tirx.IterVar.CommReduce]
    a, b = operands
    used = {ld: set().union(*[_vars_in(i) for i in ld.indices]) for ld in (a, b)}
    is_weight = [any(ld.source.same_as(w) for w in weight_buffers) for ld in (a, b)]
    if is_weight[0] != is_weight[1]:
        weight, data = (a, b) if is_weight[0] else (b, a)
    else:  # no (or two) constant operands: the one with fewer spatial variables
        weight, data = (a, b) if len(used[a] & set(spatial)) < len(used[b] & set(spatial)) \
            else (b, a)
    channel = [v for v in spatial if v in used[weight]]
    pixel = [v for v in spatial if v not in used[weight]]
    taps = [r for r in reduce
            if any(r in vs and vs & set(pixel) for vs in (_vars_in(i) for i in data.indices))]
    prod = lambda vs: int(np.prod([extent[v] for v in vs], dtype=np.int64))  # noqa: E731
    n_total, shared = prod(channel), [v for v in channel if v in used[data]]
    groups = 1
    if shared and prod(shared) <= 65536:
        seen = set()
        for values in np.ndindex(*[extent[v] for v in shared]):
            env = dict(zip(shared, values, strict=True))
            try:
                seen.add(tuple(_eval_index(i, env) for i in data.indices))
            except ValueError:
                seen = {()}
                break
        groups = max(1, len(seen))
    if n_total % groups:
        groups = 1
    return GemmShape(m=prod(pixel), k=prod(reduce), n=n_total // groups, groups=groups,
                     taps=prod(taps), window=_window(block, data, pixel, reduce, pads))


def _coefficient(index, var) -> int:
    """The coefficient of ``var`` in an index expression affine in it."""
    return _eval_index(index, {var: 1}) - _eval_index(index, {})


def _padding_copies(prim_func) -> list:
    """(buffer, parameter, offsets) of each block that copies a kernel parameter into a
    zero-padded buffer of the kernel (``pad_temp[..] = if_then_else(.., x[i - p], 0)``,
    or a plain copy for a padding of zero, when legalization's padding is not inlined
    into the reduction): a window over the buffer is a window over the parameter,
    padded by ``offsets``; the copy is staging, not an operation of the network."""
    params = list(prim_func.params)
    found: list = []

    def on_block(block):
        store = block.body
        if not isinstance(store, tirx.BufferStore) or any(
                int(iv.iter_type) == tirx.IterVar.CommReduce for iv in block.iter_vars):
            return
        value = store.value
        if isinstance(value, _LOAD):   # a padding of zero rows: a plain copy
            loads = [value]
        elif isinstance(value, tvm.ir.Call) and \
                getattr(value.op, "name", "") == "prim.if_then_else":
            loads = [a for a in value.args[1:] if isinstance(a, _LOAD)]
        else:
            return
        if len(loads) != 1 or not any(loads[0].source.same_as(p) for p in params) or \
                any(store.buffer.same_as(p) for p in params):
            return
        load = loads[0]
        if len(load.indices) != len(store.indices):
            return
        try:
            offsets = [_eval_index(a, {}) - _eval_index(b, {})
                       for a, b in zip(store.indices, load.indices, strict=True)]
        except ValueError:
            return
        found.append((store.buffer, load.source, offsets))

    tvm_ffi.structural_walk(prim_func.body, [(s_tir.SBlock, on_block)], order="post")
    return found


def _window(block, data, pixel, reduce, pads=()) -> Window | None:
    """The sliding window of a reduction block over its 4-D (NCHW) data load ``data``.

    The two innermost data axes indexed by a pixel variable are H and W. On each, the
    pixel variable's coefficient is the stride, a reduction variable's the dilation
    (its extent the kernel), and minus the index at the origin the padding. None when
    the data is not 4-D or an index is not affine in these variables.
    """
    source, offsets = data.source, [0, 0, 0, 0]
    for buffer, param, offs in pads:
        if source.same_as(buffer):
            source, offsets = param, offs
            break
    shape = [int(d) for d in source.shape]
    if len(shape) != 4:
        return None
    extent = {iv.var: int(iv.dom.extent) for iv in block.iter_vars}
    axes = []
    try:
        for axis in (2, 3):
            index = data.indices[axis]
            used = _vars_in(index)
            px = [v for v in pixel if v in used]
            taps = [r for r in reduce if r in used]
            if len(px) > 1 or len(taps) > 1 or not (px or taps):
                return None
            # no pixel variable: a global reduction (a mean) has one output row/column
            stride = _coefficient(index, px[0]) if px else 1
            dilation = _coefficient(index, taps[0]) if taps else 1
            origin = _eval_index(index, {}) - offsets[axis]
            axes.append((extent[px[0]] if px else 1, extent[taps[0]] if taps else 1,
                         stride, dilation, -origin))
    except ValueError:
        return None
    (oh, kh, sh, dh, ph), (ow, kw, sw, dw, pw) = axes
    if min(sh, sw, dh, dw) < 1 or ph < 0 or pw < 0:
        return None
    return Window(channels=shape[1], in_h=shape[2], in_w=shape[3], out_h=oh, out_w=ow,
                  kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh,
                  dilation_w=dw, pad_top=ph, pad_left=pw)


def _reduction_window(block, pads=()) -> Window | None:
    """The window of a reduction that is not a MAC (a pool or a mean): one data load."""
    if not isinstance(block.body, tirx.BufferStore):
        return None
    out = block.body.buffer
    loads: list = []
    tvm_ffi.structural_walk(block.body.value, [(_LOAD, loads.append)], order="post")
    data = [ld for ld in loads if not ld.source.same_as(out)]
    if len(data) != 1:
        return None
    spatial = [iv.var for iv in block.iter_vars if int(iv.iter_type) == tirx.IterVar.DataPar]
    reduce = [iv.var for iv in block.iter_vars if int(iv.iter_type) == tirx.IterVar.CommReduce]
    return _window(block, data[0], spatial, reduce, pads)


@dataclass(frozen=True)
class KernelWork:
    """What :func:`kernel_work` reads off one kernel."""

    gemms: tuple[GemmShape, ...]
    vector_ops: int
    #: windows of the reductions that are not MACs (pools, means)
    windows: tuple[Window, ...] = ()
    #: feature maps (4-D, more than one pixel) the non-MAC blocks read: a residual
    residuals: int = 0


def kernel_work(prim_func, weight_buffers=()) -> KernelWork:
    """The GEMMs of a kernel's multiply-accumulate blocks, and its other blocks' iterations.

    A MAC block is one that reduces a product of two buffer loads (as in
    :func:`~tvm_memflat.analysis.tir_stats.kernel_stats`); its :class:`GemmShape`
    is read by :func:`_gemm_shape`. Every other block that stores a value
    (pooling, elementwise, copies, a fused activation) counts its whole iteration
    domain as vector operations, except the blocks a CPU schedule adds only to stage
    data (:data:`~tvm_memflat.lowering.cpu_schedule.STAGING_ATTR`), so the count is
    the network's, whatever the schedule. ``weight_buffers`` are the parameters bound to
    constants at the call site.
    """
    gemms: list[GemmShape] = []
    windows: list[Window] = []
    vector = [0]
    pads = _padding_copies(prim_func)
    padding = [buffer for buffer, _, _ in pads]
    inputs = [p for p in list(prim_func.params)[:-1]
              if not any(p.same_as(w) for w in weight_buffers) and len(p.shape) == 4
              and all(isinstance(d, tirx.IntImm) for d in p.shape)
              and int(p.shape[2]) * int(p.shape[3]) > 1]
    residual: list = []
    # the padding copies a reduction reads (a conv's or pool's input); a copy of a
    # parameter that only an elementwise block reads is a slice of a residual
    fed: list = []

    def reduction_reads(block) -> None:
        if any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in block.iter_vars):
            fed.extend(r.source for r in block.reads)

    tvm_ffi.structural_walk(prim_func.body, [(s_tir.SBlock, reduction_reads)], order="post")

    def add_residuals(value) -> None:
        loads: list = []
        tvm_ffi.structural_walk(value, [(_LOAD, loads.append)], order="post")
        for ld in loads:
            if any(ld.source.same_as(p) for p in inputs) and \
                    not any(ld.source.same_as(r) for r in residual):
                residual.append(ld.source)

    def on_block(block):
        iters = list(block.iter_vars)
        if not iters or not isinstance(block.body, tirx.BufferStore) or \
                STAGING_ATTR in block.annotations:
            return
        if any(block.body.buffer.same_as(b) for b in padding):
            if not any(block.body.buffer.same_as(b) for b in fed):
                add_residuals(block.body.value)  # a residual read through a slice
            return
        reduces = any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in iters)
        operands = _mac_operands(block) if reduces else None
        if operands is not None:
            gemms.append(_gemm_shape(block, operands, weight_buffers, pads))
        else:
            vector[0] += int(np.prod([int(iv.dom.extent) for iv in iters], dtype=np.int64))
            if not reduces:
                add_residuals(block.body.value)
            window = _reduction_window(block, pads) if reduces else None
            if window is not None:
                windows.append(window)

    tvm_ffi.structural_walk(prim_func.body, [(s_tir.SBlock, on_block)], order="post")
    return KernelWork(tuple(gemms), vector[0], tuple(windows), len(residual))


def weight_identity(ref) -> tuple:
    """What makes two weight operands the same stored weight: a parameter by its name,
    a constant by its dtype, shape and content (a digest of its bytes)."""
    if not isinstance(ref, _CONSTANT):
        return ("param", ref.name)
    array = ref.value.numpy()
    return ("const", str(array.dtype), array.shape,
            hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest())


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


_FACTS = StructuralMemo(1 << 14)


def _kernel_facts(kernel, constant_args: tuple) -> tuple[int, int, KernelWork]:
    """A kernel's MACs, lowered scratch bytes and :class:`KernelWork` (its parameters
    at ``constant_args`` bound to weights).

    Memoised across modules: the searches predict the device bytes of module after
    module that share most kernels, and lowering a kernel to count its scratch costs
    about a millisecond. Structural hashes collide (two tensor shapes hashed alike on
    TVM 0.27), so a hit is confirmed by structural equality."""
    def compute():
        params = list(kernel.params)
        weights = [params[i] for i in constant_args if i < len(params)]
        return (kernel_stats(kernel).macs, lowered_scratch_bytes(kernel),
                kernel_work(kernel, weights))

    return _FACTS.lookup(kernel, compute, constant_args)


def lowered_schedule(mod: tvm.IRModule) -> LoweredSchedule:
    """Kernel steps and buffer live ranges of a lowered module's ``main``."""
    func = mod["main"]
    # Weights an importer kept as parameters (after ``num_input``) are weights, never
    # activations: no buffer of ours, counted in each kernel's weight bytes.
    weight_params = set(func.params[num_inputs(func):])
    bindings = flat_bindings(func)
    root: dict = {}
    names: dict = {}
    allocs: list = []
    for p in func.params:
        root[p] = p
    uses: dict = {}
    steps: list[KernelStep] = []
    stats_cache: dict[tuple, tuple] = {}

    def roots_in(expr) -> list:
        return [root.get(v, v) for v in relax.analysis.free_vars(expr)]

    for b in bindings:
        value = b.value
        if is_alloc_tensor(value):
            root[b.var] = b.var
            allocs.append(b.var)
            continue
        if is_kernel_call(mod, value):
            step = len(steps)
            args = [root.get(a, a) if isinstance(a, relax.Var) else None for a in value.args]
            for r in args:
                if r is not None:
                    uses.setdefault(r, []).append(step)
            name = value.op.name_hint
            constant_args = tuple(i for i, a in enumerate(value.args)
                                  if isinstance(a, _CONSTANT) or a in weight_params)
            if (name, constant_args) not in stats_cache:
                stats_cache[name, constant_args] = _kernel_facts(mod[value.op], constant_args)
            macs, scratch, work = stats_cache[name, constant_args]
            # an in-place kernel (inplace_depthwise) reads its last argument too
            read_args = args if is_in_place_kernel(mod[value.op]) else args[:-1]
            weight_bytes = sum(tensor_bytes(a.value.shape, str(a.value.dtype))
                               for a in value.args if isinstance(a, _CONSTANT))
            weight_bytes += sum(tensor_bytes(*static_tensor_type(a.ty))
                                for a in value.args if a in weight_params)
            weight_elements = sum(_elements(a.value.shape) for a in value.args
                                  if isinstance(a, _CONSTANT))
            weight_elements += sum(_elements(static_tensor_type(a.ty)[0])
                                   for a in value.args if a in weight_params)
            refs = tuple(a for a in value.args
                         if isinstance(a, _CONSTANT) or a in weight_params)
            steps.append(KernelStep(step, name,
                                    tuple(r.name for r in read_args if r is not None),
                                    tuple(r.name for r in args[-1:] if r is not None),
                                    weight_bytes, macs, scratch, work.gemms,
                                    work.vector_ops, weight_elements, refs,
                                    work.windows, work.residuals,
                                    written_shape(mod[value.op])))
            continue
        # Anything else (``lv = alloc``, reshape views, tuples, the output of an in-place
        # kernel bound to its input) aliases what it reads.
        found = roots_in(value)
        if found:
            root[b.var] = found[0]
            if b.var.name and not b.var.name.startswith(("lv", "gv", "_", "alloc")):
                names.setdefault(found[0], b.var.name)
    outputs = set(roots_in(func.body.body))
    last = max(len(steps) - 1, 0)
    buffers, variables = [], {}
    for var in [*func.params, *allocs]:
        info = static_tensor_type(var.ty) if var not in weight_params else None
        if info is None:
            continue
        shape, dtype = info
        steps_used = sorted(set(uses.get(var, [])))
        role = ("input" if var in func.params else
                "output" if var in outputs else "intermediate")
        if not steps_used:
            steps_used = [0 if role == "input" else last]
        start = 0 if role == "input" else steps_used[0]
        end = last if role == "output" else steps_used[-1]
        key = var.name if var.name not in variables else f"{var.name}#{len(buffers)}"
        variables[key] = var
        buffers.append(ActivationBuffer(key, names.get(var, var.name), shape, dtype,
                                        tensor_bytes(shape, dtype), start, end, role,
                                        tuple(steps_used)))
    return LoweredSchedule(tuple(steps), tuple(buffers), variables)
