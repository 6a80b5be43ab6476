"""The whole build pipeline as one Relax pass: lower, plan the arena, finalise.

:func:`memflat_pipeline` is what ``tvm_memflat.build`` hands to
``tvm.compile(..., relax_pipeline=...)``: :func:`~tvm_memflat.lowering.pipeline.lower`
(TVM's legalization and fusion with our marks, kernel scratch scheduled away,
concatenations in place), the in-place depthwise convolutions that lower device
bytes (:func:`choose_in_place_depthwise`), then our offset plan in place of
``StaticPlanBlockMemory`` (:func:`lower_and_plan`, then
:func:`~tvm_memflat.planner.apply_arena.apply_arena`: one arena, every intermediate at
its planned offset), then TVM's finalisation
without ``StaticPlanBlockMemory`` (:func:`~tvm_memflat.lowering.pipeline.finalize_passes`).

It lives at the planner level because it applies the planner's plan; lowering
knows nothing of the planner. :func:`compile_llvm` compiles with it for llvm.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from ..lowering.concat_in_place import concat_sites
from ..lowering.inplace_depthwise import depthwise_candidates, depthwise_in_place
from ..lowering.input_in_arena import input_into_arena
from ..lowering.pipeline import BuildRecord, finalize_passes, finish_lowering, lower_kernels
from ..lowering.tir_views import accept_byte_offsets
from .allocator import Plan, live_bytes_per_step
from .apply_arena import HOST_ALIGNMENT_BYTES, apply_arena, plan_intermediates
from .check import verify_plan
from .concat_choice import choose_concat_copies
from .live_ranges import LoweredSchedule, lowered_schedule

__all__ = ["BuildRecord", "compile_llvm", "lower_and_plan", "memflat_pipeline"]


def _planned(lowered: tvm.IRModule) -> tuple[Plan, LoweredSchedule, int]:
    """Plan of ``lowered``'s intermediates, its schedule, and arena + largest scratch."""
    schedule = lowered_schedule(lowered)
    plan = plan_intermediates(schedule, HOST_ALIGNMENT_BYTES)
    return plan, schedule, plan.arena_bytes + schedule.max_scratch_bytes


def choose_in_place_depthwise(lowered: tvm.IRModule, record: BuildRecord | None = None
                              ) -> tuple[tvm.IRModule, Plan, LoweredSchedule]:
    """``lowered`` with the in-place depthwise convolutions that lower its device bytes.

    Writing over the input saves the output's bytes at that kernel's step only, and
    costs a one-channel temporary as the kernel's scratch; so it pays only when the
    step is at the arena's peak, and only if the temporary does not raise the largest
    scratch by more. The live bytes of every other step are unchanged, so when the
    arena is already at its lower bound and some peak step is not a candidate, no
    choice can lower the arena, and none is made. Otherwise every threshold on the
    temporary's size (all candidates up to that size in place) is planned, and the
    cheapest (arena + largest scratch; ties: fewer in place) is kept.
    """
    plan, schedule, cost = _planned(lowered)
    best = (cost, lowered, plan, schedule, 0)
    candidates = depthwise_candidates(lowered)
    if candidates:
        live = live_bytes_per_step(schedule.live_ranges(), HOST_ALIGNMENT_BYTES)
        peak = max(live.values(), default=0)
        peak_steps = {step for step, nbytes in live.items() if nbytes == peak}
        if plan.arena_bytes > plan.lower_bound_bytes or \
                peak_steps <= {c.step for c in candidates}:
            for level in sorted({c.temp_bytes for c in candidates}):
                variant, count = depthwise_in_place(lowered, level, candidates)
                if not count:
                    continue
                plan_v, schedule_v, cost_v = _planned(variant)
                if cost_v < best[0]:
                    best = (cost_v, variant, plan_v, schedule_v, count)
    _, chosen, plan, schedule, count = best
    if record is not None:
        record.depthwise_in_place = count
    return chosen, plan, schedule


def _finished(base: tvm.IRModule, copied, shared_inputs: bool, input_in_arena: bool,
              in_place_depthwise: bool | str, record: BuildRecord | None,
              in_place_concat: bool = True, slice_views: bool = True
              ) -> tuple[tvm.IRModule, Plan, LoweredSchedule]:
    """``base`` finished (:func:`finish_lowering`), its depthwise convolutions chosen,
    and planned."""
    lowered = finish_lowering(base, in_place_concat=in_place_concat, copied=copied,
                              shared_inputs=shared_inputs, input_in_arena=input_in_arena,
                              in_place_depthwise=in_place_depthwise == "all",
                              slice_views=slice_views, record=record)
    if in_place_depthwise is True:
        return choose_in_place_depthwise(lowered, record)
    plan, schedule, _ = _planned(lowered)
    return lowered, plan, schedule


def _with_concat_copies(base: tvm.IRModule, input_in_arena: bool,
                        in_place_depthwise: bool | str, record: BuildRecord | None,
                        slice_views: bool = True
                        ) -> tuple[tvm.IRModule, Plan, LoweredSchedule]:
    """The cheaper (arena + largest scratch) of two finishings of ``base``, each with the
    concat inputs :func:`~.concat_choice.choose_concat_copies` copies: inputs that other
    kernels read too left alone (their concat copied whole), or written in place as
    well. The second can hold a tile's input live past a depthwise convolution that
    would otherwise write over it, which the choice of copies does not see; so both are
    planned."""
    probe = input_into_arena(base) if input_in_arena else base
    schedule = lowered_schedule(probe)
    best, best_record = None, None
    plain = concat_sites(base)
    every = concat_sites(base, shared_inputs=True)
    # shared inputs only add sites: with none added, the second finishing is the first
    for shared, sites in [(False, plain)] + ([(True, every)] if len(every) > len(plain)
                                              else []):
        copied = choose_concat_copies(schedule, sites, HOST_ALIGNMENT_BYTES)
        rec = BuildRecord() if record is not None else None
        result = _finished(base, copied, shared, input_in_arena, in_place_depthwise, rec,
                           slice_views=slice_views)
        cost = result[1].arena_bytes + result[2].max_scratch_bytes
        if best is None or cost < best[0]:
            best, best_record = (cost, result), rec
    if record is not None:
        record.concats_removed = best_record.concats_removed
        record.concat_inputs_copied = best_record.concat_inputs_copied
        record.depthwise_in_place = best_record.depthwise_in_place
        record.concat_shared_inputs = best_record.concat_shared_inputs
        record.slices_viewed = best_record.slices_viewed
    return best[1]


def lower_and_plan(mod: tvm.IRModule, target: tvm.target.Target, *,
                   in_place_concat: bool = True, shrink_scratch: bool = True,
                   input_in_arena: bool = False, in_place_depthwise: bool | str = True,
                   cpu_schedule: bool = True, record: BuildRecord | None = None,
                   concat_copies: bool = True, slice_views: bool = True
                   ) -> tuple[tvm.IRModule, Plan, LoweredSchedule]:
    """:func:`~tvm_memflat.lowering.pipeline.lower`, the in-place depthwise convolutions
    (``in_place_depthwise``: ``True`` those that pay, :func:`choose_in_place_depthwise`;
    ``"all"`` every one possible; ``False`` none), and the offset plan, checked
    independently (:func:`~.check.verify_plan`: a failure is a bug, raised as
    ``PlanError``). What the build applies and what the prediction counts.

    ``concat_copies``: the concatenation inputs whose in-place write would hold their
    output live through a peak are copied instead (:func:`_with_concat_copies`); off for
    a buffered machine, whose planner lowers without it (``tuner.fusion``).
    ``slice_views``: slices read in place where their source lives on anyway
    (:mod:`~tvm_memflat.lowering.slice_views`); off for a buffered machine, whose
    per-call tiling reads each kernel's operands whole."""
    if in_place_depthwise not in (True, False, "all"):
        raise ValueError(f"in_place_depthwise must be True, False or 'all', "
                         f"not {in_place_depthwise!r}")
    base = lower_kernels(mod, target, shrink_scratch=shrink_scratch, cpu_schedule=cpu_schedule)
    if in_place_concat and concat_copies:
        lowered, plan, schedule = _with_concat_copies(base, input_in_arena,
                                                      in_place_depthwise, record, slice_views)
    else:
        lowered, plan, schedule = _finished(base, frozenset(), False, input_in_arena,
                                            in_place_depthwise, record, in_place_concat,
                                            slice_views)
    verify_plan(plan, schedule.live_ranges())
    return lowered, plan, schedule


def memflat_pipeline(target: tvm.target.Target, *, in_place_concat: bool = True,
                     shrink_scratch: bool = True, input_in_arena: bool = False,
                     in_place_depthwise: bool | str = True, cpu_schedule: bool = True,
                     record: BuildRecord | None = None,
                     kernel_hook=None, concat_copies: bool = True,
                     slice_views: bool = True) -> tvm.transform.Pass:
    """The whole Relax pipeline as one pass, for ``tvm.compile(..., relax_pipeline=...)``.

    ``kernel_hook(lowered, schedule)``, when given, returns ``lowered`` with kernels
    rewritten (same signatures: the plan of the tensors between kernels stands), after
    the plan and before it is applied: a target's own kernel schedules (the buffered
    machine's tiles, :mod:`tvm_memflat.targets.tile_tir`)."""

    @tvm.transform.module_pass(opt_level=0, name="MemflatPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        lowered, plan, schedule = lower_and_plan(
            mod, target, in_place_concat=in_place_concat, shrink_scratch=shrink_scratch,
            input_in_arena=input_in_arena, in_place_depthwise=in_place_depthwise,
            cpu_schedule=cpu_schedule, record=record, concat_copies=concat_copies,
            slice_views=slice_views)
        if kernel_hook is not None:
            lowered = kernel_hook(lowered, schedule)
        planned = apply_arena(lowered, schedule, plan)
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
                 in_place_depthwise: bool | str = True, cpu_schedule: bool = True,
                 record: BuildRecord | None = None, kernel_hook=None,
                 concat_copies: bool = True, slice_views: bool = True) -> relax.VMExecutable:
    """``mod`` compiled for llvm with :func:`memflat_pipeline` (what
    ``tvm_memflat.build(mod, "llvm")`` does once its options are resolved)."""
    if not isinstance(target, tvm.target.Target):
        target = tvm.target.Target(target or "llvm")
    return tvm.compile(mod, target,
                       relax_pipeline=memflat_pipeline(target, in_place_concat=in_place_concat,
                                                       shrink_scratch=shrink_scratch,
                                                       input_in_arena=input_in_arena,
                                                       in_place_depthwise=in_place_depthwise,
                                                       cpu_schedule=cpu_schedule,
                                                       record=record,
                                                       kernel_hook=kernel_hook,
                                                       concat_copies=concat_copies,
                                                       slice_views=slice_views))
