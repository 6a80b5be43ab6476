"""Predict a module's device bytes from the build's own lowered schedule.

:func:`predict_device_bytes` runs exactly what ``tvm_memflat.build`` runs up to
code generation (:func:`~tvm_memflat.planner.pipeline.lower_and_plan`: our lowering,
with the input placed in the arena under the ``sram`` convention and the in-place
depthwise convolutions that pay, then the offset plan of the intermediates, checked by
:func:`~tvm_memflat.planner.check.verify_plan`) and adds the parts up as
:class:`~tvm_memflat.analysis.device_bytes.DeviceBytes`. Because the build applies
the same plan, the prediction equals what the built module allocates at run time;
the tests and ``bench_paper`` measure both and compare.
"""

from __future__ import annotations

import tvm

from ..analysis.device_bytes import Accounting, DeviceBytes
from .allocator import Plan
from .live_ranges import LoweredSchedule
from .pipeline import lower_and_plan


def predict_device_bytes(mod: tvm.IRModule, *, input: str = "sram", output: str = "sram",
                         target=None, in_place_depthwise: bool | str = True,
                         concat_copies: bool = True) -> DeviceBytes:
    """Device bytes of ``mod`` built by ``tvm_memflat.build`` (llvm), without building it
    (with the same ``in_place_depthwise`` as the build; ``concat_copies=False`` writes
    every concatenation input in place, as builds before the copies did)."""
    accounting = Accounting(input, output)
    target = tvm.target.Target(target or "llvm")
    _, plan, schedule = lower_and_plan(mod, target, input_in_arena=accounting.input_in_arena,
                                       in_place_depthwise=in_place_depthwise,
                                       concat_copies=concat_copies)
    return device_bytes_of(plan, schedule, accounting)


def device_bytes_of(plan: Plan, schedule: LoweredSchedule, accounting: Accounting,
                    runtime_alloc_storage_bytes: int | None = None) -> DeviceBytes:
    """The parts of device bytes of a build whose arena follows ``plan`` for ``schedule``;
    with ``runtime_alloc_storage_bytes`` (recorded when the built module ran) the
    alloc_storage part is the measured one, else the plan's arena + output."""
    input_bytes = sum(b.size_bytes for b in schedule.buffers if b.role == "input")
    return DeviceBytes(arena_bytes=plan.arena_bytes, output_bytes=schedule.output_bytes,
                       scratch_bytes=schedule.max_scratch_bytes, input_bytes=input_bytes,
                       input_in_arena=accounting.input_in_arena, accounting=accounting,
                       runtime_alloc_storage_bytes=runtime_alloc_storage_bytes)
