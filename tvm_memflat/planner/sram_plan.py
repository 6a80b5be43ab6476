"""Place a lowered schedule's buffers in the memories of an accelerator spec.

Mapping (documented, not configurable, so reports are comparable):

* activations (network input, intermediates, outputs) go to the first memory
  that holds ``activations``, at the spec's activation dtype (an fp32 tensor of N
  elements is N bytes on an int8 accelerator: a *view*, labelled so in the plan,
  used only where no quantized model is planned);
* kernel scratch (what a kernel still allocates after TVM's lowering, e.g. a
  reduction's accumulator) goes to the first memory that holds ``accumulators``,
  or to the activation memory when there is none, at the accumulator dtype;
* weights, at the spec's weight dtype, go where ``[weights]`` says:

  - ``resident``: every layer's weights sit in the weights memory for the whole
    run (flash on an MCU: executed in place), so they must all fit there together;
  - ``streamed``: each layer's weights are read from DRAM once, in chunks staged
    in the weights memory while that layer runs. On a memory the activations share,
    the chunk is chosen, not the whole memory: the largest whole number of output
    channels that fits beside what is live at that step (at least one channel).

The network input is read from DRAM before step 0 and the outputs are written
back after the last step.

Honest fit (design.md §2): over capacity, the allocator spills activations to DRAM
(furthest next use first) only when the spec's DRAM is writable at run time; a
scratchpad machine (MCU, edge NPU) has nowhere to spill, and a memory that holds
resident weights never spills. A plan never silently exceeds a memory: ``fits`` is
true only when every memory holds what is placed in it, and ``why`` says in one
line per memory what does not fit, by how much.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..analysis.device_bytes import Accounting
from ..analysis.tir_stats import dtype_bytes, tensor_bytes
from ..lowering.input_in_arena import static_tensor_type
from ..spec import AcceleratorSpec
from .allocator import LiveRange, Plan, allocate, live_bytes_per_step, no_reuse_arena
from .check import verify_plan
from .live_ranges import KernelStep, LoweredSchedule, weight_identity


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
    #: why the plan does not fit: one line per memory over capacity (empty: it fits)
    why: tuple[str, ...] = ()
    #: activations are float tensors counted at the spec's activation dtype (a view:
    #: no quantized model was planned)
    activation_view: bool = False

    @property
    def activation(self) -> MemoryPlan:
        return next(m for m in self.memories if "activations" in m.holds)

    @property
    def fits(self) -> bool:
        """Every memory holds what is placed in it, and nothing spills to memory that
        is not writable at run time."""
        return all(m.plan.fits for m in self.memories) and (
            self.spill_writable or self.spilled_bytes == 0)  # no spill where none can go

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
                "fits": self.fits, "why": list(self.why),
                "activation_view": self.activation_view, "arena_bytes": self.arena_bytes,
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


def weight_bytes_at(step: KernelStep, dtype: str) -> int:
    """``step``'s weights stored at ``dtype`` (0 without weights). Schedules made
    before :attr:`KernelStep.weight_elements` existed count fp32 weights."""
    if not step.weight_bytes:
        return 0
    if step.weight_elements:
        return step.weight_elements * dtype_bytes(dtype)
    return _scaled(step.weight_bytes, "float32", dtype)


def activation_ranges(schedule: LoweredSchedule, dtype: str | None,
                      accounting: Accounting | None = None) -> list[LiveRange]:
    """Live ranges of the activation buffers at ``dtype``: intermediates, and the
    network input and outputs unless ``accounting`` streams them (``"stream"``: read
    or written row by row from outside, so they take no SRAM)."""
    streamed = (accounting or Accounting()).streamed
    return [LiveRange(b.name, b.start, b.end,
                      _scaled(b.size_bytes, b.dtype, dtype or b.dtype), b.uses)
            for b in schedule.buffers if b.role not in streamed]


def _unseen_weights(step: KernelStep, seen: set, dtype: str) -> int:
    """Bytes at ``dtype`` of ``step``'s weights not already counted in ``seen`` (the
    tiles of a region share their weights; a resident memory holds them once)."""
    if not step.weight_refs:  # a hand-made schedule: its weights are its own
        return weight_bytes_at(step, dtype)
    total = 0
    for ref in step.weight_refs:
        key = weight_identity(ref)
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(static_tensor_type(ref.ty)[0], dtype)
    return total


def distinct_weight_bytes(schedule: LoweredSchedule, dtype: str) -> int:
    """Bytes at ``dtype`` of every weight of ``schedule``, each counted once (the tiles
    of a region share theirs)."""
    seen: set = set()
    return sum(_unseen_weights(s, seen, dtype) for s in schedule.steps)


def _output_channels(step: KernelStep, weight_bytes: int) -> int:
    """How many parts ``step``'s weights stream in at the finest: its output channels,
    or, when its TIR shows no GEMM, every byte."""
    return max((g.n * g.groups for g in step.gemms), default=weight_bytes)


def weight_chunk_bytes(weight_bytes: int, channels: int, free_bytes: int,
                       alignment: int = 1) -> int:
    """The chunk a streamed layer's weights are staged in: the largest whole number of
    output channels (of ``weight_bytes / channels`` each) that fits in ``free_bytes``,
    at least one channel, at most all of them. Pure."""
    per_channel = -(-weight_bytes // max(channels, 1))
    per_channel = -(-per_channel // alignment) * alignment
    fitting = max(1, free_bytes // per_channel)
    return min(weight_bytes, fitting * per_channel)


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
    holders = spec.memories_for("weights")
    wgt_mem = (spec.memory(spec.weights_memory) if spec.weights_memory is not None
               else holders[0] if holders else None)
    resident = spec.weights_location == "resident"
    spill_writable = spec.dram.writable

    per_memory: dict[str, list[LiveRange]] = {m.name: [] for m in spec.memories}
    labels = {b.name: b.label for b in schedule.buffers}
    activations = activation_ranges(schedule, act_dtype, accounting)
    view = any(b.dtype != act_dtype and b.dtype.startswith("float")
               for b in schedule.buffers if b.role == "intermediate")
    per_memory[act_mem.name] += activations
    for s in schedule.steps:
        if s.scratch_bytes:
            name = f"{s.kernel}@{s.step}/scratch"
            per_memory[acc_mem.name].append(LiveRange(
                name, s.step, s.step, _scaled(s.scratch_bytes, "float32", acc_dtype), (s.step,)))
            labels[name] = f"{s.kernel} scratch"
    weights = {s.step: weight_bytes_at(s, spec.compute.weight_dtype)
               for s in schedule.steps if s.weight_bytes}
    chunks: dict[int, int] = {}
    seen_weights: set = set()
    last = max(len(schedule.steps) - 1, 0)
    if wgt_mem is not None:
        shared = live_bytes_per_step(per_memory[wgt_mem.name], wgt_mem.alignment_bytes)
        for s in schedule.steps:
            wbytes = weights.get(s.step, 0)
            if not wbytes:
                continue
            name = f"{s.kernel}@{s.step}/weights"
            labels[name] = f"{s.kernel} weights"
            if resident:  # in their memory for the whole run, each weight once
                new = _unseen_weights(s, seen_weights, spec.compute.weight_dtype)
                if new:
                    per_memory[wgt_mem.name].append(LiveRange(name, 0, last, new,
                                                              tuple(range(last + 1))))
                continue
            chunk = weight_chunk_bytes(wbytes, _output_channels(s, wbytes),
                                       wgt_mem.size_bytes - shared.get(s.step, 0),
                                       wgt_mem.alignment_bytes)
            chunks[s.step] = math.ceil(wbytes / chunk)
            per_memory[wgt_mem.name].append(LiveRange(name, s.step, s.step, chunk, (s.step,)))

    memories = []
    for m in spec.memories:
        ranges = per_memory[m.name]
        may_spill = spill_writable and m.writable and not (resident and m is wgt_mem)
        plan = allocate(ranges, alignment_bytes=m.alignment_bytes, capacity_bytes=m.size_bytes,
                        max_iterations=max_iterations, spill=may_spill)
        verify_plan(plan, ranges)  # every plan, in production: a failure is a planner bug
        memories.append(MemoryPlan(m.name, m.holds, m.size_bytes, m.alignment_bytes, plan,
                                   no_reuse_arena(ranges, m.alignment_bytes) if ranges else 0,
                                   labels, tuple(ranges)))
    traffic = _traffic(schedule, spec, memories, weights, chunks)
    why = _why(memories, spec, resident, wgt_mem, spill_writable)
    return SpecPlan(spec.name, act_dtype, tuple(memories), traffic, time.perf_counter() - t0,
                    spill_writable=spill_writable, why=why, activation_view=view)


def _why(memories, spec, resident, wgt_mem, spill_writable) -> tuple[str, ...]:
    """One line per memory that does not hold what is placed in it."""
    out = []
    for m in memories:
        if m.plan.fits:
            continue
        held = "resident weights" if resident and wgt_mem is not None and \
            m.memory == wgt_mem.name else "/".join(m.holds)
        reason = (f"{m.memory} ({held}) needs {m.plan.arena_bytes} B and has "
                  f"{m.size_bytes} B: {m.plan.excess_bytes} B over")
        if m.plan.spills:
            reason += f" even after spilling {m.plan.spilled_bytes} B to DRAM"
        elif not spill_writable and "activations" in m.holds:
            reason += f" ({spec.name} has no memory writable at run time to spill to)"
        out.append(reason)
    return tuple(out)


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
