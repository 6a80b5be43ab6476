"""tvm_memflat's Relax build pipeline: TVM's CPU pipeline with our memory planning.

Stock (``relax.get_default_pipeline(llvm)``)::

    dispatch, LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR,
    RewriteDataflowReshape, ToNonDataflow, RemovePurityChecking, CallTIRRewrite,
    StaticPlanBlockMemory, LowerAllocTensor, KillAfterLastUse, ... AttachGlobalSymbol

Ours differs in five places, each because of a measured effect (design.md,
"Making the saving real in TVM"):

1. after AnnotateTIROpPattern, concatenations are marked opaque so FuseOps keeps
   them as their own kernel (fused into a following add or relu they could not
   be removed), and so are the running sums of channel splits (fused, they would
   take the first slice's conv along and keep its input alive to the last slice):
   :mod:`tvm_memflat.fusion_passes.opaque_marks`, shared with the profiler;
2. after CallTIRRewrite, :func:`~tvm_memflat.lowering.concat_in_place.concat_in_place`
   makes producers write straight into their slice of each concatenation (or copies
   an input there, where the planner finds that needs less memory);
3. ``StaticPlanBlockMemory`` (block reuse by size) is replaced by our offset plan:
   one arena, every intermediate tensor at its planned offset. That step is the
   planner's: :func:`tvm_memflat.planner.pipeline.memflat_pipeline` runs
   :func:`lower_kernels` and :func:`finish_lowering` (the latter once per choice of
   concat copies it weighs), plans and applies the arena, then :func:`finalize_passes`;
4. after FuseTIR, every kernel is scheduled for the CPU
   (:mod:`~tvm_memflat.lowering.cpu_schedule`: tiled, vectorised, parallel, bit-exact,
   its scratch shrunk to one output tile; with ``cpu_schedule=False``
   :mod:`~tvm_memflat.lowering.shrink_scratch` only schedules the scratch away);
5. last, :func:`~tvm_memflat.lowering.inplace_depthwise.depthwise_in_place` lets a
   stride-1 depthwise convolution whose input dies there write its output over that
   input (channel by channel through a one-channel temporary), so the two share one
   storage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu

from ..analysis.fusion import fuse, fusion_passes
from ..frontend.canonicalize import canonical_form
from .concat_in_place import concat_in_place
from .cpu_schedule import schedule_cpu_kernels
from .inplace_depthwise import depthwise_in_place
from .input_in_arena import input_into_arena
from .shrink_scratch import shrink_kernel_scratch
from .slice_views import slice_views as read_slices_in_place

LOG = logging.getLogger(__name__)


@dataclass
class BuildRecord:
    """What the pipeline decided, filled in while it runs (for reports and tests):
    :func:`lower` fills ``concats_removed``, the planner's
    :func:`~tvm_memflat.planner.pipeline.memflat_pipeline` the plan and schedule."""

    concats_removed: int = 0
    concat_inputs_copied: int = 0  # concat inputs copied into their slice, not written there
    #: concat inputs other kernels read too written in place (those read their slice)
    concat_shared_inputs: bool = False
    depthwise_in_place: int = 0   # depthwise convs writing over their input
    slices_viewed: int = 0        # slice copies whose readers read the source in place
    plan: object = None        # planner.allocator.Plan of the intermediates
    schedule: object = None    # planner.live_ranges.LoweredSchedule
    tuning: object = None      # lowering.cpu_tune.TuneSummary, when build tuned
    #: buffered targets: kernel name -> targets.tile_tir.TiledKernel
    kernels: dict = field(default_factory=dict)
    #: buffered targets: the per-call tiling the build ran (hardware.call_tiling.BufferedPlan),
    #: its calls naming the kernels as built (shared kernels split per tiling)
    buffered_plan: object = None


#: How a buffered machine's build lowers (``targets.vta_like.build_vta_like``) and
#: what anything that plans for it must lower the same way (``tuner.fusion``): the
#: kernels as legalization wrote them, to be tiled for the spec's buffers (no CPU
#: schedule, no scratch shrinking, no in-place depthwise), and the network input
#: read from DRAM by the first layer (no copy into an on-chip slot).
BUFFERED_LOWERING = {"shrink_scratch": False, "input_in_arena": False,
                     "in_place_depthwise": False, "cpu_schedule": False,
                     "slice_views": False}


def lowering_passes(target: tvm.target.Target, *, shrink_scratch: bool = True,
                    cpu_schedule: bool = True) -> list:
    """Legalize, fuse and lower to destination-passing Relax (no memory planning yet).

    With ``shrink_scratch`` every fused kernel's scratch is scheduled away: by the
    default CPU schedules (:mod:`.cpu_schedule`, which shrink it to one output tile)
    when ``cpu_schedule``, else by :mod:`.shrink_scratch` alone (loops left as TVM's
    legalization wrote them, one thread)."""
    # fusion_passes: LegalizeOps memoised per operator signature, the same module built
    # faster (tiled modules repeat a few signatures many times), and our opaque marks
    return (fusion_passes(target) + _scheduling(shrink_scratch, cpu_schedule)
            + cpu.dataflow_lower_passes(target))


def _scheduling(shrink_scratch: bool, cpu_schedule: bool) -> list:
    """The pass that schedules the fused kernels (see :func:`lowering_passes`), if any."""
    if not shrink_scratch:
        return []
    return [schedule_cpu_kernels if cpu_schedule else shrink_kernel_scratch]


def fused_kernels(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """``mod`` in canonical form, legalized, fused and in DPS form, its kernels as the
    schedule pass receives them (unscheduled): what tuning measures
    (:mod:`.cpu_tune`)."""
    mod = canonical_form(mod)
    with target:
        return tvm.transform.Sequential(lowering_passes(target, shrink_scratch=False))(mod)


def finalize_passes(target: tvm.target.Target) -> list:
    """TVM's CPU finalisation without ``StaticPlanBlockMemory``."""
    return [p for p in cpu.finalize_passes(target) if p.info.name != "StaticPlanBlockMemory"]


def lower(mod: tvm.IRModule, target: tvm.target.Target, *, in_place_concat: bool = True,
          shrink_scratch: bool = True, input_in_arena: bool = False,
          in_place_depthwise: bool = True, cpu_schedule: bool = True,
          slice_views: bool = True, record: BuildRecord | None = None) -> tvm.IRModule:
    """``mod`` legalized, fused, in DPS form, with concatenations done in place, with
    ``input_in_arena`` the network inputs copied into slots of their own
    (:mod:`.input_in_arena`), so the arena planner places them with the rest, and with
    ``in_place_depthwise`` each stride-1 depthwise convolution whose input dies there
    writing over that input (:mod:`.inplace_depthwise`; an input slot counts too).
    ``cpu_schedule``: kernels get the default CPU schedules (:mod:`.cpu_schedule`).
    :func:`lower_kernels`, then :func:`finish_lowering`.

    The module is first brought to the pass's canonical form
    (:func:`~tvm_memflat.frontend.canonicalize.canonicalize`: batch norms folded into
    their convs, importer idioms normalised), so a module from any importer is built
    as the pass sees it."""
    return finish_lowering(lower_kernels(mod, target, shrink_scratch=shrink_scratch,
                                         cpu_schedule=cpu_schedule),
                           in_place_concat=in_place_concat, input_in_arena=input_in_arena,
                           in_place_depthwise=in_place_depthwise, slice_views=slice_views,
                           record=record)


def lower_kernels(mod: tvm.IRModule, target: tvm.target.Target, *,
                  shrink_scratch: bool = True, cpu_schedule: bool = True) -> tvm.IRModule:
    """``mod`` in canonical form, legalized, fused and in DPS form, its kernels
    scheduled: :func:`lower` before any rewrite of ``main``'s tensors."""
    # legalized and fused by the analysis (in canonical form, the same passes; its last
    # result reused when it fused this very module: a search profiles a candidate, then
    # predicts its build), then scheduled and lowered
    kernels = fuse(mod, target).kernels
    with target:
        return tvm.transform.Sequential(_scheduling(shrink_scratch, cpu_schedule)
                                        + cpu.dataflow_lower_passes(target))(kernels)


def finish_lowering(lowered: tvm.IRModule, *, in_place_concat: bool = True,
                    copied=frozenset(), shared_inputs: bool = False,
                    input_in_arena: bool = False, in_place_depthwise: bool = True,
                    slice_views: bool = True,
                    record: BuildRecord | None = None) -> tvm.IRModule:
    """The rewrites of :func:`lower` on ``main``'s tensors, on :func:`lower_kernels`'
    module: concatenations in place (but the ``copied`` inputs; ``shared_inputs``, see
    :func:`.concat_in_place.concat_in_place`), the input slots, with ``slice_views``
    slices read in place where their source lives on anyway
    (:mod:`.slice_views`), in-place depthwise."""
    if in_place_concat:
        lowered, removed = concat_in_place(lowered, copied, shared_inputs=shared_inputs)
        if record is not None:
            record.concats_removed = removed
            record.concat_inputs_copied = len(copied)
            record.concat_shared_inputs = shared_inputs
    if input_in_arena:
        lowered = input_into_arena(lowered)
    if slice_views:
        lowered, viewed = read_slices_in_place(lowered)
        if record is not None:
            record.slices_viewed = viewed
    if in_place_depthwise:
        lowered, count = depthwise_in_place(lowered)
        if record is not None:
            record.depthwise_in_place = count
    return lowered
