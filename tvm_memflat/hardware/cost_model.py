"""The hardware cycle model: cycles per kernel call of a lowered schedule on a spec.

It sits below the tuner (which ranks tilings with it) and the ``vta_like`` target
(whose simulator uses the same arithmetic): :class:`SpecCostModel`, the shared
result types :class:`StepCost` and :class:`CostEstimate`, and the accumulator
helpers. The llvm model, fitted on this machine, is the tuner's
(:mod:`tvm_memflat.tuner.cost_model`).

Per kernel call (one :class:`~tvm_memflat.planner.live_ranges.KernelStep`):

* **compute**: each multiply-accumulate block of the kernel is a GEMM
  (:class:`~tvm_memflat.planner.live_ranges.GemmShape`: ``m`` output pixels,
  ``k`` = channels·taps per group, ``n`` output channels per group, ``groups``).
  The array does one ``gemm_batch × gemm_block_in × gemm_block_out`` block per
  ``block/macs_per_cycle`` cycles. Per group of pixels (``gemm_batch`` of them)
  and per kernel tap a GEMM needs ``ceil(k_channels/BI) · ceil(n/BO)`` blocks, so a
  layer whose channels are not multiples of the block wastes part of it:
  utilisation = ``k_channels·n / (ceil(k_channels/BI)·BI · ceil(n/BO)·BO)``
  (e.g. 20→20 channels on 16×16: 400/1024).
  **Grouped and depthwise convs** are packed block-diagonally: when one group's
  ``k_channels < BI`` and ``n < BO``, ``min(BI // k_channels, BO // n)`` groups
  share a block (a depthwise conv runs 16 channels per 16×16 block on its
  diagonal: utilisation 16/256 = 1/16, not 1/256); otherwise every group takes its
  own ``ceil(k_channels/BI) · ceil(n/BO)`` blocks. Specs without GEMM blocks
  (``1×1``: ``mcu_256k``, ``edge_npu_1m``) get utilisation 1 on ``macs_per_cycle``.
  MACs that no GEMM explains (hand-made steps) run at utilisation 1.
* **vector work**: the kernel's other blocks (pooling windows, elementwise ops,
  fused activations, concat copies) cost ``ceil(vector_ops / W)`` cycles with
  ``W = gemm_block_out`` (a VTA-like ALU works on one block-wide vector per cycle),
  or ``W = macs_per_cycle`` for specs without GEMM blocks. They add to the GEMM
  cycles (one compute unit does both, one after the other).
* **accumulator passes**: on a spec with a memory dedicated to accumulators (it
  holds nothing else; VTA's accumulator buffer), the GEMM's whole output tile at
  the accumulator dtype (``m·n·groups`` elements) must sit there; when it does not
  fit, the call runs in ``ceil(tile / size)`` passes over slices of its output.
  Each pass pays the per-call overhead again, and weights that had to be streamed
  in several chunks (they did not fit their memory) are streamed again per pass.
  Other specs accumulate in the array (registers) and write outputs directly.
* **DRAM**: the bytes the SRAM plan moves at this step
  (:class:`~tvm_memflat.planner.sram_plan.StepTraffic`: network input loads,
  weight chunks, spill stores and reloads, output stores) take
  ``ceil(bytes / dram.bandwidth_bytes_per_cycle)`` cycles plus
  ``dram.latency_cycles`` per transfer (a transfer is one DMA: one weight chunk,
  one input or output tensor, one spill store or one reload).
* **overlap**: DMA and compute overlap (double buffering), so a call takes
  ``max(compute, dram) + overhead``. The per-call overhead defaults to
  ``dram.latency_cycles``: the call's instructions and micro-ops are fetched from
  DRAM once before it starts. Tiles of a restructured graph are separate calls,
  so they pay it per tile.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..analysis.tir_stats import dtype_bytes
from ..planner.live_ranges import KernelStep, LoweredSchedule
from ..planner.sram_plan import SpecPlan, StepTraffic, plan_for_spec
from ..spec import AcceleratorSpec, Compute, Dram, Memory, load_spec
from .call_tiling import plan_buffered
from .gemm import block_macs, gemm_blocks, vector_width

__all__ = ["CostEstimate", "SpecCostModel", "StepCost", "gemm_blocks", "utilisation",
           "vector_width"]

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StepCost:
    """The cost of one kernel call."""

    step: int
    kernel: str
    macs: int
    utilisation: float      # MACs / MAC slots of the blocks used (0 without MACs)
    compute_cycles: int
    dram_cycles: int
    overhead_cycles: int
    cycles: int
    passes: int = 1          # accumulator passes (spec model)
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    transfers: int = 0       # DMA transfers (each pays the DRAM latency)


@dataclass(frozen=True)
class CostEstimate:
    """Per-call costs and their total for one schedule."""

    model: str                 # "spec:<name>" or "llvm"
    steps: tuple[StepCost, ...]
    total_cycles: int
    clock_hz: int

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.total_cycles / self.clock_hz

    def to_dict(self) -> dict:
        return {"model": self.model, "total_cycles": self.total_cycles,
                "clock_hz": self.clock_hz, "latency_ms": self.latency_ms,
                "steps": [asdict(s) for s in self.steps]}


# --------------------------------------------------------------------------- arithmetic


def utilisation(gemms, compute: Compute) -> float:
    """MACs of ``gemms`` over the MAC slots of the blocks they take (1.0 on 1×1 blocks)."""
    blocks = sum(gemm_blocks(g, compute) for g in gemms)
    return sum(g.macs for g in gemms) / (blocks * block_macs(compute)) if blocks else 0.0


def compute_cycles(step: KernelStep, compute: Compute) -> int:
    """GEMM cycles of the step's MAC blocks plus its vector work (see the module doc)."""
    blocks = sum(gemm_blocks(g, compute) for g in step.gemms)
    gemm = math.ceil(blocks * block_macs(compute) / compute.macs_per_cycle)
    rest = max(0, step.macs - sum(g.macs for g in step.gemms))  # MACs no GEMM explains
    return (gemm + math.ceil(rest / compute.macs_per_cycle)
            + math.ceil(step.vector_ops / vector_width(compute)))


def dram_cycles(nbytes: int, transfers: int, dram: Dram) -> int:
    """Cycles to move ``nbytes`` in ``transfers`` DMA transfers."""
    return math.ceil(nbytes / dram.bandwidth_bytes_per_cycle) + transfers * dram.latency_cycles


def step_cycles(compute: int, dram: int, overhead: int) -> int:
    """DMA overlaps compute; the overhead does not overlap either."""
    return max(compute, dram) + overhead


def accumulator_memory(spec: AcceleratorSpec) -> Memory | None:
    """The memory dedicated to accumulators (holds nothing else), if the spec has one."""
    return next((m for m in spec.memories if m.holds == ("accumulators",)), None)


def accumulator_tile_bytes(step: KernelStep, spec: AcceleratorSpec) -> int:
    """Bytes of the step's largest GEMM output at the accumulator dtype."""
    return max((g.m * g.n * g.groups for g in step.gemms), default=0) * dtype_bytes(
        spec.compute.accumulator_dtype)


def accumulator_passes(step: KernelStep, spec: AcceleratorSpec) -> int:
    """Passes the step's GEMM needs so its output tile fits the accumulator memory."""
    acc = accumulator_memory(spec)
    if acc is None or not step.gemms:
        return 1
    return max(1, math.ceil(accumulator_tile_bytes(step, spec) / acc.size_bytes))


def transfers_per_step(schedule: LoweredSchedule, plan: SpecPlan) -> dict[int, int]:
    """DMA transfers the plan makes at each step (weight chunks not included)."""
    counts = {s.step: 0 for s in schedule.steps}
    if not schedule.steps:
        return counts
    last = schedule.steps[-1].step
    for b in schedule.buffers:
        if b.role == "input":
            counts[schedule.steps[0].step] += 1
        elif b.role == "output":
            counts[last] += 1
    for m in plan.memories:
        for sp in m.plan.spills:
            counts[sp.store_step] = counts.get(sp.store_step, 0) + 1
            for r in sp.reload_steps:
                counts[r] = counts.get(r, 0) + 1
    return counts


# --------------------------------------------------------------------------- spec model


class SpecCostModel:
    """Cycles of a lowered schedule on an accelerator spec (see the module doc)."""

    def __init__(self, spec: AcceleratorSpec | str | Path, *,
                 call_overhead_cycles: int | None = None):
        self.spec = spec if isinstance(spec, AcceleratorSpec) else load_spec(spec)
        self.call_overhead_cycles = (self.spec.dram.latency_cycles
                                     if call_overhead_cycles is None else call_overhead_cycles)

    def step_cost(self, step: KernelStep, traffic: StepTraffic | None,
                  transfers: int) -> StepCost:
        """One call's cost, given its planned DRAM traffic and non-weight transfers."""
        spec = self.spec
        passes = accumulator_passes(step, spec)
        weight_bytes = traffic.weight_read_bytes if traffic else 0
        chunks = traffic.weight_chunks if traffic else 0
        weight_transfers = chunks if chunks else int(weight_bytes > 0)
        if chunks > 1:  # weights did not stay on chip: stream them again for every pass
            weight_bytes, weight_transfers = weight_bytes * passes, weight_transfers * passes
        reads = weight_bytes + (traffic.activation_read_bytes if traffic else 0)
        writes = traffic.activation_write_bytes if traffic else 0
        n_transfers = transfers + weight_transfers
        compute = compute_cycles(step, spec.compute)
        dram = dram_cycles(reads + writes, n_transfers, spec.dram)
        overhead = passes * self.call_overhead_cycles
        return StepCost(step.step, step.kernel, step.macs, utilisation(step.gemms, spec.compute)
                        if step.gemms else (1.0 if step.macs else 0.0),
                        compute, dram, overhead, step_cycles(compute, dram, overhead),
                        passes, reads, writes, n_transfers)

    def estimate(self, schedule: LoweredSchedule, plan=None) -> CostEstimate:
        """Cycles of every call of ``schedule``; plans it on the spec when ``plan`` is None.

        On a buffered spec the plan is per-call tiles
        (:func:`~tvm_memflat.hardware.call_tiling.plan_buffered`) and each step costs
        the closed form of its calls' tilings (the simulator replays them)."""
        if self.spec.machine_kind == "buffered":
            return self._estimate_buffered(schedule, plan)
        if plan is None:
            plan = plan_for_spec(schedule, self.spec)
        traffic = {t.step: t for t in plan.traffic}
        transfers = transfers_per_step(schedule, plan)
        steps = tuple(self.step_cost(s, traffic.get(s.step), transfers.get(s.step, 0))
                      for s in schedule.steps)
        return CostEstimate(f"spec:{self.spec.name}", steps, sum(s.cycles for s in steps),
                            self.spec.compute.clock_hz)

    def _estimate_buffered(self, schedule: LoweredSchedule, plan=None) -> CostEstimate:
        plan = plan if plan is not None else plan_buffered(schedule, self.spec)
        by_step: dict[int, list] = {}
        for call in plan.calls:
            by_step.setdefault(call.step, []).append(call.cost)
        steps = []
        for s in schedule.steps:
            costs = by_step.get(s.step, [])

            def total(attr: str, costs=costs) -> int:
                return sum(getattr(c, attr) for c in costs)

            steps.append(StepCost(
                s.step, s.kernel, s.macs,
                utilisation(s.gemms, self.spec.compute) if s.gemms else (1.0 if s.macs else 0.0),
                total("compute_cycles"), total("dram_cycles"), total("overhead_cycles"),
                total("cycles"), 1,
                total("input_traffic_bytes") + total("weight_traffic_bytes"),
                total("output_traffic_bytes"), total("transfers")))
        return CostEstimate(f"spec:{self.spec.name}", tuple(steps),
                            sum(s.cycles for s in steps), self.spec.compute.clock_hz)
