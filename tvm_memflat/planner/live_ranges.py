"""The lowered schedule: kernel calls in order, and the live range of every buffer.

Read from lowered Relax (after ``CallTIRRewrite``, and after
:mod:`~tvm_memflat.lowering.concat_in_place`), where each step is one kernel call
``kernel(inputs..., out)`` and every activation is an ``R.builtin.alloc_tensor``.
A buffer is live from the first to the last step that touches it, through
aliases (``lv = alloc``, reshapes, tuples). Kernel scratch (``pad_temp``, fused
intermediates) lives for its kernel's step only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

from ..analysis.tir_stats import kernel_stats, tensor_bytes
from ..lowering.concat_in_place import flat_bindings, is_alloc_tensor, is_kernel_call
from ..lowering.shrink_scratch import lowered_scratch_bytes
from .allocator import LiveRange

# Relax constants are ``tvm.ir.expr.Constant`` in 0.27 (their tensor is ``.value``).
_CONSTANT = tvm.ir.expr.Constant


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


def _tensor_shape(var) -> tuple[tuple[int, ...], str] | None:
    ty = var.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values), str(ty.dtype)
    except (TypeError, AttributeError):
        return None


def lowered_schedule(mod: tvm.IRModule) -> LoweredSchedule:
    """Kernel steps and buffer live ranges of a lowered module's ``main``."""
    func = mod["main"]
    bindings = flat_bindings(func)
    root: dict = {}
    names: dict = {}
    allocs: list = []
    for p in func.params:
        root[p] = p
    uses: dict = {}
    steps: list[KernelStep] = []
    stats_cache: dict[str, tuple] = {}

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
            if name not in stats_cache:
                kernel = mod[value.op]
                stats_cache[name] = (kernel_stats(kernel).macs, lowered_scratch_bytes(kernel))
            macs, scratch = stats_cache[name]
            weight_bytes = sum(tensor_bytes(a.value.shape, str(a.value.dtype))
                               for a in value.args if isinstance(a, _CONSTANT))
            steps.append(KernelStep(step, name,
                                    tuple(r.name for r in args[:-1] if r is not None),
                                    tuple(r.name for r in args[-1:] if r is not None),
                                    weight_bytes, macs, scratch))
            continue
        # Anything else (``lv = alloc``, reshape views, tuples) aliases what it reads.
        found = roots_in(value)
        if found:
            root[b.var] = found[0]
            if b.var.name and not b.var.name.startswith(("lv", "gv", "_")):
                names.setdefault(found[0], b.var.name)
    outputs = set(roots_in(func.body.body))
    last = max(len(steps) - 1, 0)
    buffers, variables = [], {}
    for var in [*func.params, *allocs]:
        info = _tensor_shape(var)
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
