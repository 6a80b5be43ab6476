"""Place a lowered schedule's buffers in the memories of an accelerator spec.

Mapping (documented, not configurable, so reports are comparable):

* activations (network input, intermediates, outputs) go to the first memory
  that holds ``activations``, at the spec's activation dtype (an fp32 tensor of N
  elements is N bytes on an int8 accelerator);
* kernel scratch (what a kernel still allocates after TVM's lowering, e.g. a
  reduction's accumulator) goes to the first memory that holds ``accumulators``,
  or to the activation memory when there is none, at the accumulator dtype;
* each layer's weights go through the first memory that holds ``weights``: one
  buffer live for that step, read from DRAM once per step and streamed in
  ``ceil(weights / capacity)`` chunks when they do not fit. Without such a
  memory the weights are streamed from DRAM and take no SRAM.

The network input is read from DRAM before step 0 and the outputs are written
back after the last step. Over capacity, the allocator spills to DRAM (furthest
next use first); a plan never silently exceeds a memory: it reports ``fits``
and the excess.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..analysis.device_bytes import Accounting
from ..analysis.tir_stats import dtype_bytes
from ..spec import AcceleratorSpec
from .allocator import LiveRange, Plan, allocate, no_reuse_arena
from .check import verify_plan
from .live_ranges import LoweredSchedule


@dataclass(frozen=True)
class MemoryPlan:
    """The plan of one memory of the spec."""

    memory: str
    holds: tuple[str, ...]
    size_bytes: int
    alignment_bytes: int
    plan: Plan
    no_reuse_bytes: int
    labels: dict  # buffer name -> display label (compare=False semantics: informative)
    #: the live ranges the plan was made for (what the checker verifies it against)
    ranges: tuple = field(default=(), compare=False, repr=False)

    @property
    def required_bytes(self) -> int:
        """The lower bound: bytes live together at the busiest step."""
        return self.plan.lower_bound_bytes

    def to_dict(self) -> dict:
        p = self.plan
        return {"memory": self.memory, "holds": list(self.holds), "size_bytes": self.size_bytes,
                "alignment_bytes": self.alignment_bytes,
                "required_bytes": self.required_bytes, "available_bytes": self.size_bytes,
                "excess_bytes": max(0, self.required_bytes - self.size_bytes),
                "arena_bytes": p.arena_bytes, "lower_bound_bytes": p.lower_bound_bytes,
                "overhead_pct": round(p.overhead_pct, 3), "no_reuse_bytes": self.no_reuse_bytes,
                "fits": p.fits, "arena_excess_bytes": p.excess_bytes,
                "spilled_bytes": p.spilled_bytes, "dram_traffic_bytes": p.dram_traffic_bytes,
                "placements": [{**d, "label": self.labels.get(d["name"].split("@")[0],
                                                              d["name"])}
                               for d in p.to_dict()["placements"]],
                "spills": p.to_dict()["spills"]}


@dataclass(frozen=True)
class StepTraffic:
    """DRAM traffic attributed to one kernel step."""

    step: int
    kernel: str
    weight_read_bytes: int
    weight_chunks: int
    activation_read_bytes: int   # network input loads and spill reloads
    activation_write_bytes: int  # spill stores and output stores

    @property
    def total_bytes(self) -> int:
        return self.weight_read_bytes + self.activation_read_bytes + self.activation_write_bytes


@dataclass(frozen=True)
class SpecPlan:
    """Every memory of a spec planned for one lowered schedule."""

    spec: str
    activation_dtype: str
    memories: tuple[MemoryPlan, ...]
    traffic: tuple[StepTraffic, ...]
    planner_s: float
    #: whether the spec has writable memory to spill to (its DRAM); without it a
    #: plan that spills does not fit (design.md §2, honest fit)
    spill_writable: bool = True

    @property
    def activation(self) -> MemoryPlan:
        return next(m for m in self.memories if "activations" in m.holds)

    @property
    def fits(self) -> bool:
        """Every memory holds what is placed in it, and nothing spills to memory that
        is not writable at run time."""
        return all(m.plan.fits for m in self.memories) and (
            self.spill_writable or self.spilled_bytes == 0)

    @property
    def unwritable_spill(self) -> bool:
        """The plan spills, but the spec has no writable memory to spill to."""
        return not self.spill_writable and self.spilled_bytes > 0

    @property
    def arena_bytes(self) -> int:
        return self.activation.plan.arena_bytes

    @property
    def lower_bound_bytes(self) -> int:
        return self.activation.plan.lower_bound_bytes

    @property
    def spilled_bytes(self) -> int:
        return sum(m.plan.spilled_bytes for m in self.memories)

    @property
    def dram_traffic_bytes(self) -> int:
        return sum(t.total_bytes for t in self.traffic)

    def to_dict(self) -> dict:
        return {"spec": self.spec, "activation_dtype": self.activation_dtype,
                "fits": self.fits, "arena_bytes": self.arena_bytes,
                "lower_bound_bytes": self.lower_bound_bytes,
                "spilled_bytes": self.spilled_bytes,
                "dram_traffic_bytes": self.dram_traffic_bytes,
                "planner_s": round(self.planner_s, 4),
                "memories": [m.to_dict() for m in self.memories],
                "layers": [{"step": t.step, "kernel": t.kernel,
                            "weight_read_bytes": t.weight_read_bytes,
                            "weight_chunks": t.weight_chunks,
                            "activation_read_bytes": t.activation_read_bytes,
                            "activation_write_bytes": t.activation_write_bytes,
                            "dram_traffic_bytes": t.total_bytes} for t in self.traffic]}


def _scaled(nbytes: int, from_dtype: str, to_dtype: str) -> int:
    return max(1, nbytes * dtype_bytes(to_dtype) // dtype_bytes(from_dtype))


def activation_ranges(schedule: LoweredSchedule, dtype: str | None,
                      accounting: Accounting | None = None) -> list[LiveRange]:
    """Live ranges of the activation buffers at ``dtype``: intermediates, and the
    network input and outputs unless ``accounting`` streams them (``"stream"``: read
    or written row by row from outside, so they take no SRAM)."""
    accounting = accounting or Accounting()
    streamed = {"input"} if accounting.input == "stream" else set()
    streamed |= {"output"} if accounting.output == "stream" else set()
    return [LiveRange(b.name, b.start, b.end,
                      _scaled(b.size_bytes, b.dtype, dtype or b.dtype), b.uses)
            for b in schedule.buffers if b.role not in streamed]


def plan_for_spec(schedule: LoweredSchedule, spec: AcceleratorSpec, *,
                  max_iterations: int = 200, accounting: Accounting | None = None) -> SpecPlan:
    """Plan ``schedule`` on ``spec``'s memories (see the module docstring).

    ``accounting``: the counting convention (default: the spec's ``[accounting]``).
    """
    if accounting is None:
        accounting = Accounting.resolve(spec=spec)
    t0 = time.perf_counter()
    act_dtype, acc_dtype = spec.compute.activation_dtype, spec.compute.accumulator_dtype
    act_mem = spec.memories_for("activations")[0]
    acc_mems = spec.memories_for("accumulators")
    acc_mem = acc_mems[0] if acc_mems else act_mem
    wgt_mems = spec.memories_for("weights")
    wgt_mem = wgt_mems[0] if wgt_mems else None

    per_memory: dict[str, list[LiveRange]] = {m.name: [] for m in spec.memories}
    labels = {b.name: b.label for b in schedule.buffers}
    per_memory[act_mem.name] += activation_ranges(schedule, act_dtype, accounting)
    for s in schedule.steps:
        if s.scratch_bytes:
            name = f"{s.kernel}@{s.step}/scratch"
            per_memory[acc_mem.name].append(LiveRange(
                name, s.step, s.step, _scaled(s.scratch_bytes, "float32", acc_dtype), (s.step,)))
            labels[name] = f"{s.kernel} scratch"
    # Weights are fp32 constants in the module; the spec stores them at its weight dtype.
    weights = {s.step: _scaled(s.weight_bytes, "float32", spec.compute.weight_dtype)
               for s in schedule.steps if s.weight_bytes}
    chunks = {}
    if wgt_mem is not None:
        for s in schedule.steps:
            wbytes = weights.get(s.step, 0)
            if wbytes:
                chunks[s.step] = math.ceil(wbytes / wgt_mem.size_bytes)
                name = f"{s.kernel}@{s.step}/weights"
                per_memory[wgt_mem.name].append(LiveRange(
                    name, s.step, s.step, min(wbytes, wgt_mem.size_bytes), (s.step,)))
                labels[name] = f"{s.kernel} weights"

    memories = []
    for m in spec.memories:
        ranges = per_memory[m.name]
        plan = allocate(ranges, alignment_bytes=m.alignment_bytes, capacity_bytes=m.size_bytes,
                        max_iterations=max_iterations)
        verify_plan(plan, ranges)  # every plan, in production: a failure is a planner bug
        memories.append(MemoryPlan(m.name, m.holds, m.size_bytes, m.alignment_bytes, plan,
                                   no_reuse_arena(ranges, m.alignment_bytes) if ranges else 0,
                                   labels, tuple(ranges)))
    traffic = _traffic(schedule, spec, memories, weights, chunks)
    return SpecPlan(spec.name, act_dtype, tuple(memories), traffic, time.perf_counter() - t0,
                    spill_writable=bool(getattr(spec.dram, "writable", True)))


def _traffic(schedule, spec, memories, weights, chunks) -> tuple[StepTraffic, ...]:
    reads = {s.step: 0 for s in schedule.steps}
    writes = dict(reads)
    last = len(schedule.steps) - 1
    act_dtype = spec.compute.activation_dtype
    for b in schedule.buffers:
        size = _scaled(b.size_bytes, b.dtype, act_dtype)
        if b.role == "input" and schedule.steps:
            reads[0] += size
        elif b.role == "output" and schedule.steps:
            writes[last] += size
    for m in memories:
        for sp in m.plan.spills:
            writes[sp.store_step] = writes.get(sp.store_step, 0) + sp.size_bytes
            for r in sp.reload_steps:
                reads[r] = reads.get(r, 0) + sp.size_bytes
    return tuple(StepTraffic(s.step, s.kernel, weights.get(s.step, 0),
                             chunks.get(s.step, 0), reads.get(s.step, 0),
                             writes.get(s.step, 0))
                 for s in schedule.steps)
