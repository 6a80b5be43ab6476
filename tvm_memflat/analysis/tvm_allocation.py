"""What stock TVM really allocates for a module's activations.

Two measurements of the same pipeline, ``relax.get_default_pipeline(Target("llvm"))``
(legalize + FuseOps + FuseTIR, then ``StaticPlanBlockMemory``):

* **static**: the ``R.memory.alloc_storage`` blocks ``StaticPlanBlockMemory``
  plans, the output ``R.builtin.alloc_tensor`` it leaves unplanned, and the
  largest set of scratch buffers a single kernel allocates for itself
  (``pad_temp``, fused intermediates);
* **runtime**: the bytes passed to ``vm.builtin.alloc_storage`` while the
  compiled module runs once, recorded by wrapping that builtin. Building and
  running are not analysis: the stock build is
  :func:`tvm_memflat.targets.stock.build_stock`, the recording
  :func:`tvm_memflat.targets.runtime.measure_runtime_storage`.

``tvm_allocated_bytes = planned storage + output + max kernel scratch``. The
runtime total must equal planned storage + output (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

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
