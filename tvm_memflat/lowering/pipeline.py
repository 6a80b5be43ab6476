"""tvm_memflat's Relax build pipeline: TVM's CPU pipeline with our memory planning.

Stock (``relax.get_default_pipeline(llvm)``)::

    dispatch, LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR,
    RewriteDataflowReshape, ToNonDataflow, RemovePurityChecking, CallTIRRewrite,
    StaticPlanBlockMemory, LowerAllocTensor, KillAfterLastUse, ... AttachGlobalSymbol

Ours differs in four places, each because of a measured effect (design.md,
"Making the saving real in TVM"):

1. after AnnotateTIROpPattern, concatenations are marked opaque so FuseOps keeps
   them as their own kernel (fused into a following add or relu they could not
   be removed), and so are the running sums of channel splits (fused, they would
   take the first slice's conv along and keep its input alive to the last slice);
2. after CallTIRRewrite, :func:`~tvm_memflat.lowering.concat_in_place.concat_in_place`
   makes producers write straight into their slice of each concatenation;
3. ``StaticPlanBlockMemory`` (block reuse by size) is replaced by our offset plan:
   one arena, every intermediate tensor at its planned offset;
4. after FuseTIR, :mod:`~tvm_memflat.lowering.shrink_scratch` schedules away the
   kernels' own scratch (``pad_temp`` copies, whole conv results inside fused kernels).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import tvm
from tvm import relax, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu

from ..analysis.legalize_cache import cached_legalize_ops
from .concat_in_place import CONCAT_KERNEL_PREFIX, concat_in_place
from .shrink_scratch import shrink_kernel_scratch
from .tir_views import accept_byte_offsets

LOG = logging.getLogger(__name__)

#: FuseOps' pattern kinds (include/tvm/relax/op_attr_types.h): kOpaque never fuses.
_OPAQUE = 8


@tvm.transform.module_pass(opt_level=0, name="MarkConcatOpaque")
def mark_concat_opaque(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Keep every concatenate kernel out of FuseOps' groups."""
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith(CONCAT_KERNEL_PREFIX):
            mod[gv] = func.with_attr("op_pattern", _OPAQUE)
    return mod


#: Suffix of the bindings :mod:`tvm_memflat.transform.split_channels` emits for running sums.
SPLIT_SUM_MARK = "_chsum"
_SPLIT_SUM = re.compile(re.escape(SPLIT_SUM_MARK) + r"\d*$")


@relax.expr_functor.mutator
class _SplitSumMarker(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.mod, self.opaque = mod, {}

    def visit_var_binding_(self, binding):
        value = binding.value
        if (_SPLIT_SUM.search(binding.var.name) and isinstance(value, relax.Call)
                and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
            gv = value.args[0]
            if gv not in self.opaque:
                func = self.mod[gv].with_attr("op_pattern", _OPAQUE)
                self.opaque[gv] = self.builder_.add_func(func, f"{gv.name_hint}_split_sum")
            args = [self.visit_expr(a) for a in value.args[1:]]
            new = relax.Call(value.op, [self.opaque[gv], *args], value.attrs, value.ty_args)
            emit = (self.builder_.emit if isinstance(binding.var, relax.DataflowVar)
                    else self.builder_.emit_output)
            self.set_var_remap(binding.var, emit(new, binding.var.name))
            return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="MarkSplitSumsOpaque")
def mark_split_sums_opaque(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Keep the running sums of channel splits (bindings named ``*_chsum<g>``) out of
    FuseOps' groups: fused with them, the first slice's conv would run only at the
    last sum, and its input would stay live across every other slice."""
    if not any(_SPLIT_SUM.search(b.var.name) for block in mod["main"].body.blocks
               for b in block.bindings):
        return mod
    marker = _SplitSumMarker(mod)
    func = marker.visit_expr(mod["main"])
    marker.builder_.update_func(mod.get_global_var("main"), func)
    return marker.builder_.get()


def with_concat_opaque(passes: list) -> list:
    """``passes`` with :func:`mark_concat_opaque` and :func:`mark_split_sums_opaque`
    right after AnnotateTIROpPattern (so FuseOps sees the marking)."""
    i = next(i for i, p in enumerate(passes) if p.info.name == "AnnotateTIROpPattern")
    return [*passes[:i + 1], mark_concat_opaque, mark_split_sums_opaque, *passes[i + 1:]]


@dataclass
class BuildRecord:
    """What the pipeline decided, filled in while it runs (for reports and tests)."""

    concats_removed: int = 0
    plan: object = None        # planner.allocator.Plan of the intermediates
    schedule: object = None    # planner.live_ranges.LoweredSchedule


def lowering_passes(target: tvm.target.Target, *, shrink_scratch: bool = True) -> list:
    """Legalize, fuse and lower to destination-passing Relax (no memory planning yet)."""
    # LegalizeOps memoised per operator signature: the same module, built faster
    # (tiled modules repeat a few signatures many times).
    legalize = [cached_legalize_ops() if p.info.name == "LegalizeOps" else p
                for p in cpu.legalize_passes(target)]
    legalize = with_concat_opaque(legalize)
    if shrink_scratch:
        legalize.append(shrink_kernel_scratch)
    return cpu.library_dispatch_passes(target) + legalize + cpu.dataflow_lower_passes(target)


def finalize_passes(target: tvm.target.Target) -> list:
    """TVM's CPU finalisation without ``StaticPlanBlockMemory``."""
    return [p for p in cpu.finalize_passes(target) if p.info.name != "StaticPlanBlockMemory"]


def lower(mod: tvm.IRModule, target: tvm.target.Target, *, in_place_concat: bool = True,
          shrink_scratch: bool = True, record: BuildRecord | None = None) -> tvm.IRModule:
    """``mod`` legalized, fused, in DPS form, with concatenations done in place."""
    with target:
        lowered = tvm.transform.Sequential(
            lowering_passes(target, shrink_scratch=shrink_scratch))(mod)
    if in_place_concat:
        lowered, removed = concat_in_place(lowered)
        if record is not None:
            record.concats_removed = removed
    return lowered


def memflat_pipeline(target: tvm.target.Target, *, in_place_concat: bool = True,
                     shrink_scratch: bool = True,
                     record: BuildRecord | None = None) -> tvm.transform.Pass:
    """The whole Relax pipeline as one pass, for ``tvm.compile(..., relax_pipeline=...)``."""
    from ..planner.apply_arena import plan_and_apply

    @tvm.transform.module_pass(opt_level=0, name="MemflatPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        lowered = lower(mod, target, in_place_concat=in_place_concat,
                        shrink_scratch=shrink_scratch, record=record)
        planned, plan, schedule = plan_and_apply(lowered)
        for gv, func in list(planned.functions_items()):
            if isinstance(func, tirx.PrimFunc):
                planned[gv] = accept_byte_offsets(func)
        if record is not None:
            record.plan, record.schedule = plan, schedule
        with target:
            return tvm.transform.Sequential(finalize_passes(target))(planned)

    return _pipeline
