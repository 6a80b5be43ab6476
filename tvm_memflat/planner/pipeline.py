"""The whole build pipeline as one Relax pass: lower, plan the arena, finalise.

:func:`memflat_pipeline` is what ``tvm_memflat.build`` hands to
``tvm.compile(..., relax_pipeline=...)``: :func:`~tvm_memflat.lowering.pipeline.lower`
(TVM's legalization and fusion with our marks, kernel scratch scheduled away,
concatenations in place), then our offset plan in place of
``StaticPlanBlockMemory`` (:func:`~tvm_memflat.planner.apply_arena.plan_and_apply`:
one arena, every intermediate at its planned offset), then TVM's finalisation
without ``StaticPlanBlockMemory`` (:func:`~tvm_memflat.lowering.pipeline.finalize_passes`).

It lives at the planner level because it applies the planner's plan; lowering
knows nothing of the planner. :func:`compile_llvm` compiles with it for llvm.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from ..lowering.pipeline import BuildRecord, finalize_passes, lower
from ..lowering.tir_views import accept_byte_offsets
from .apply_arena import plan_and_apply

__all__ = ["BuildRecord", "compile_llvm", "memflat_pipeline"]


def memflat_pipeline(target: tvm.target.Target, *, in_place_concat: bool = True,
                     shrink_scratch: bool = True, input_in_arena: bool = False,
                     record: BuildRecord | None = None) -> tvm.transform.Pass:
    """The whole Relax pipeline as one pass, for ``tvm.compile(..., relax_pipeline=...)``."""

    @tvm.transform.module_pass(opt_level=0, name="MemflatPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        lowered = lower(mod, target, in_place_concat=in_place_concat,
                        shrink_scratch=shrink_scratch, input_in_arena=input_in_arena,
                        record=record)
        planned, plan, schedule = plan_and_apply(lowered)
        for gv, func in list(planned.functions_items()):
            if isinstance(func, tirx.PrimFunc):
                planned[gv] = accept_byte_offsets(func)
        if record is not None:
            record.plan, record.schedule = plan, schedule
        with target:
            return tvm.transform.Sequential(finalize_passes(target))(planned)

    return _pipeline


def compile_llvm(mod: tvm.IRModule, target=None, *, in_place_concat: bool = True,
                 shrink_scratch: bool = True, input_in_arena: bool = False,
                 record: BuildRecord | None = None) -> relax.VMExecutable:
    """``mod`` compiled for llvm with :func:`memflat_pipeline` (what
    ``tvm_memflat.build(mod, "llvm")`` does once its options are resolved)."""
    if not isinstance(target, tvm.target.Target):
        target = tvm.target.Target(target or "llvm")
    return tvm.compile(mod, target,
                       relax_pipeline=memflat_pipeline(target, in_place_concat=in_place_concat,
                                                       shrink_scratch=shrink_scratch,
                                                       input_in_arena=input_in_arena,
                                                       record=record))
