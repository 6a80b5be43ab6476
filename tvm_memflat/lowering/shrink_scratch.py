"""ShrinkKernelScratch: schedule away the scratch buffers of unscheduled kernels.

TVM's default legalization emits kernels that materialise whole intermediates:
``pad_temp`` (a padded copy of a conv's input, even with zero padding) and, in a
fused ``conv2d + relu``, the full conv result before the relu. On a CPU these
live in the kernel's workspace and count towards what the module allocates.
Two exact TIR schedule primitives remove them:

* ``compute_inline`` folds an injective producer (padding) into its consumer;
* ``compute_at`` moves a reduction (the conv) under its consumer's innermost
  loop, so each output element is reduced and then activated; TVM's lowering
  then shrinks the intermediate to one element (``CompactBufferAllocation``).

Both keep the arithmetic order of every reduction, so results are bit-exact.
"""

from __future__ import annotations

import logging

import tvm
from tvm import s_tir, tirx

LOG = logging.getLogger(__name__)


def shrink_scratch(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, list[str]]:
    """``func`` scheduled so its intermediates shrink; returns it and what was done."""
    sch = s_tir.Schedule(func)
    done = []
    # Inline every injective intermediate first (padding, bias adds), so that a
    # reduction's only consumer is the block that writes the kernel's output...
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if _writes_scratch(sch, block):
            name = sch.get(block).name_hint
            try:
                sch.compute_inline(block)
                done.append(f"inline {name}")
            except s_tir.ScheduleError:
                pass
    # ... then move each remaining producer (a reduction) under that consumer.
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not _writes_scratch(sch, block):
            continue
        name = sch.get(block).name_hint
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            continue
        try:
            sch.compute_at(block, sch.get_loops(consumers[0])[-1])
            done.append(f"compute_at {name}")
        except s_tir.ScheduleError:
            LOG.debug("kept %s: cannot be moved under its consumer", name)
    return sch.mod["main"], done


def _writes_scratch(sch, block) -> bool:
    """The block writes a buffer the kernel allocates (not one of its parameters)."""
    params = list(sch.mod["main"].params)
    return any(not any(w.source.same_as(p) for p in params) for w in sch.get(block).writes)


@tvm.transform.module_pass(opt_level=0, name="ShrinkKernelScratch")
def shrink_kernel_scratch(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Apply :func:`shrink_scratch` to every PrimFunc of ``mod``."""
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            out[gv], _ = shrink_scratch(func)
    return out


def lowered_scratch_bytes(func: tirx.PrimFunc) -> int:
    """Bytes ``func`` allocates for itself after TVM's buffer compaction and lowering."""
    t = s_tir.transform
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    with tvm.target.Target("llvm"):
        low = tvm.transform.Sequential([
            t.CanonicalizeLoop(), t.LowerInitBlock(), t.PlanAndUpdateBufferAllocationLocation(),
            t.ConvertBlocksToOpaque(), t.CompactBufferAllocation(), t.LowerMatchBuffer(),
            t.LowerOpaqueBlock()])(mod)
    sizes = s_tir.analysis.calculate_allocated_bytes(low)
    return int(sum(int(v) for per_func in sizes.values() for v in per_func.values()))
