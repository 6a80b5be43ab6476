"""Apply an offset plan to lowered Relax: one arena, every tensor at its offset.

Replaces ``StaticPlanBlockMemory``'s block reuse in our build pipeline. Each planned
``R.builtin.alloc_tensor`` becomes ``R.memory.alloc_tensor(arena, offset, ...)``
on a single ``R.memory.alloc_storage`` of the plan's arena size, so what the
compiled module allocates at run time is exactly the planned arena (plus the
outputs, which the caller keeps and which therefore stay outside it).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..lowering.concat_in_place import copy_module, flat_bindings, rebuild
from .allocator import Plan, allocate
from .check import verify_plan
from .live_ranges import LoweredSchedule, lowered_schedule

#: Offsets are aligned like TVM's own allocations so kernels may assume alignment.
HOST_ALIGNMENT_BYTES = 64


def plan_intermediates(schedule: LoweredSchedule, alignment_bytes: int = HOST_ALIGNMENT_BYTES,
                       max_iterations: int = 200) -> Plan:
    """Offset plan for the intermediate tensors of a lowered schedule (no capacity)."""
    return allocate(schedule.live_ranges(), alignment_bytes=alignment_bytes,
                    max_iterations=max_iterations)


def apply_arena(mod: tvm.IRModule, schedule: LoweredSchedule, plan: Plan) -> tvm.IRModule:
    """Rewrite ``mod["main"]`` so its intermediates live at ``plan``'s offsets in one arena."""
    if plan.spills:
        raise ValueError("a plan with spills cannot be applied to a host build")
    offsets = {schedule.variables[p.name]: p.offset_bytes for p in plan.placements}
    if not offsets:
        return mod
    func = mod["main"]
    storage = relax.Var("memflat_arena", relax.ObjectType())
    arena = relax.op.memory.alloc_storage(relax.ShapeExpr([plan.arena_bytes]), 0, "global",
                                          "uint8")
    out = [relax.VarBinding(storage, arena)]
    for b in flat_bindings(func):
        if b.var in offsets:
            shape, dtype = b.value.args[0], b.value.args[1]
            b = relax.VarBinding(b.var, relax.op.memory.alloc_tensor(storage, offsets[b.var],
                                                                     shape, dtype))
        out.append(b)
    new_mod = copy_module(mod)
    new_mod["main"] = rebuild(func, out)
    return new_mod


def plan_and_apply(mod: tvm.IRModule,
                   alignment_bytes: int = HOST_ALIGNMENT_BYTES) -> tuple[tvm.IRModule, Plan,
                                                                          LoweredSchedule]:
    """Plan the intermediates of lowered ``mod``, check the plan independently
    (:func:`~.check.verify_plan`: a failure is a bug, raised as ``PlanError``, never a
    silently wrong module) and apply it."""
    schedule = lowered_schedule(mod)
    plan = plan_intermediates(schedule, alignment_bytes)
    verify_plan(plan, schedule.live_ranges())
    return apply_arena(mod, schedule, plan), plan, schedule
