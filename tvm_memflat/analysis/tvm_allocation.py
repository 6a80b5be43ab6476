"""What stock TVM really allocates for a module's activations.

Two measurements of the same pipeline, ``relax.get_default_pipeline(Target("llvm"))``
(legalize + FuseOps + FuseTIR, then ``StaticPlanBlockMemory``):

* **static**: the ``R.memory.alloc_storage`` blocks ``StaticPlanBlockMemory``
  plans, the output ``R.builtin.alloc_tensor`` it leaves unplanned, and the
  largest set of scratch buffers a single kernel allocates for itself
  (``pad_temp``, fused intermediates);
* **runtime**: the bytes passed to ``vm.builtin.alloc_storage`` while the
  compiled module runs once, recorded by wrapping that builtin.

``tvm_allocated_bytes = planned storage + output + max kernel scratch``. The
runtime total must equal planned storage + output (tested).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

PIPELINE_NAME = (
    "relax.get_default_pipeline(llvm): LegalizeOps+FuseOps+FuseTIR+StaticPlanBlockMemory"
)

_ALLOC_STORAGE = tvm.ir.Op.get("relax.memory.alloc_storage")
_ALLOC_TENSOR = tvm.ir.Op.get("relax.builtin.alloc_tensor")
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


@dataclass(frozen=True)
class TVMAllocation:
    """Bytes stock TVM allocates for activations, by where they live."""

    pipeline: str
    storage_blocks: tuple[int, ...]
    output_bytes: int
    max_scratch_bytes: int
    max_scratch_kernel: str | None
    runtime_storage_bytes: int | None = None

    @property
    def planned_storage_bytes(self) -> int:
        """Sum of the storage blocks ``StaticPlanBlockMemory`` allocates."""
        return sum(self.storage_blocks)

    @property
    def total_bytes(self) -> int:
        """``tvm_allocated_bytes``: planned storage + output + largest kernel scratch."""
        return self.planned_storage_bytes + self.output_bytes + self.max_scratch_bytes

    def to_dict(self) -> dict:
        return {
            "pipeline": self.pipeline,
            "total_bytes": self.total_bytes,
            "planned_storage_bytes": self.planned_storage_bytes,
            "storage_blocks": list(self.storage_blocks),
            "output_bytes": self.output_bytes,
            "max_scratch_bytes": self.max_scratch_bytes,
            "max_scratch_kernel": self.max_scratch_kernel,
            "runtime_storage_bytes": self.runtime_storage_bytes,
        }


def _is_call(expr, op) -> bool:
    return isinstance(expr, relax.Call) and expr.op.same_as(op)


def storage_blocks(main: relax.Function) -> list[int]:
    """Sizes of the ``R.memory.alloc_storage`` blocks a memory-planned ``main`` allocates."""
    blocks = []

    def visit(expr):
        if _is_call(expr, _ALLOC_STORAGE):
            blocks.append(int(expr.args[0].values[0]))

    relax.analysis.post_order_visit(main, visit)
    return blocks


def tvm_allocation(fused) -> TVMAllocation:
    """Static count of what TVM allocates, from an already fused module.

    ``fused`` is a :class:`~tvm_memflat.analysis.fusion.FusedModules`.
    """
    from .tir_stats import kernel_stats, tensor_bytes

    passes = cpu_pipeline.dataflow_lower_passes(fused.target) + [
        relax.transform.StaticPlanBlockMemory()
    ]
    with fused.target:
        planned = tvm.transform.Sequential(passes)(fused.kernels)
    outputs, scratch = [0], {}

    def visit(expr):
        if _is_call(expr, _ALLOC_TENSOR):
            outputs[0] += tensor_bytes(expr.args[0].values, str(expr.args[1].value))
        elif isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            func = planned[expr.op]
            if isinstance(func, tvm.tirx.PrimFunc) and expr.op.name_hint not in scratch:
                scratch[expr.op.name_hint] = kernel_stats(func).scratch_bytes

    relax.analysis.post_order_visit(planned["main"], visit)
    kernel = max(scratch, key=lambda k: (scratch[k], k), default=None)
    return TVMAllocation(PIPELINE_NAME, tuple(storage_blocks(planned["main"])), outputs[0],
                         scratch.get(kernel, 0) if kernel else 0, kernel)


@contextlib.contextmanager
def record_alloc_storage():
    """Record the byte size of every ``vm.builtin.alloc_storage`` call in the block.

    Yields the list the sizes are appended to. The original builtin is restored
    on exit, also when the block raises.
    """
    original = tvm.get_global_func("vm.builtin.alloc_storage")
    sizes: list[int] = []

    def hook(vm, shape, *rest):
        sizes.append(int(shape[0]))
        return original(vm, shape, *rest)

    tvm.register_global_func("vm.builtin.alloc_storage", hook, override=True)
    try:
        yield sizes
    finally:
        tvm.register_global_func("vm.builtin.alloc_storage", original, override=True)


def random_inputs(func: relax.Function, seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal arrays for every tensor parameter of ``func``."""
    rng = np.random.default_rng(seed)
    arrays = []
    for p in func.params:
        shape = tuple(int(d) for d in p.ty.shape.values)
        dtype = str(p.ty.dtype)
        if dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(rng.integers(-3, 4, size=shape).astype(dtype))
    return arrays


def build_stock(mod: tvm.IRModule, target=None):
    """Compile with stock TVM's fusing llvm pipeline (our baseline)."""
    target = target or tvm.target.Target("llvm")
    return tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))


def measure_runtime_storage(executable, inputs: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    """Run ``executable`` once; return the bytes ``alloc_storage`` got, and the outputs."""
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    with record_alloc_storage() as sizes:
        # The VM looks builtins up when it is created: wrap first, then create it.
        vm = relax.VirtualMachine(executable, dev)
        out = vm["main"](*args)
    return sum(sizes), _to_numpy(out)


def measure_latency_ms(executable, inputs: list[np.ndarray], repeat: int = 3) -> float:
    """Median wall time of ``main`` over ``repeat`` runs after one warm-up, in ms."""
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    vm["main"](*args)
    result = vm.time_evaluator("main", dev, number=1, repeat=repeat)(*args)
    return 1000.0 * float(np.median(result.results))


def _to_numpy(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]
