"""Cost models of one lowered schedule: cycles per kernel call on a spec, or ms on llvm.

Spec model (:class:`SpecCostModel`)
-----------------------------------
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

LLVM model (:class:`LlvmCostModel`)
-----------------------------------
``ms per call = a·MACs + b·bytes + c`` with non-negative coefficients fitted by
:func:`calibrate_llvm` on the distinct kernels of a module, each compiled and
timed alone on this machine. ``bytes`` are the activation bytes the call reads
and writes (whole buffers, at their own dtype) plus its weight bytes. Terms add
(a scalar CPU does not overlap them). Cycles are nanoseconds (``clock_hz`` 1 GHz).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tvm

from ..analysis.tir_stats import dtype_bytes
from ..planner.live_ranges import GemmShape, KernelStep, LoweredSchedule, lowered_schedule
from ..planner.sram_plan import SpecPlan, StepTraffic, plan_for_spec
from ..spec import AcceleratorSpec, Compute, Dram, Memory, load_spec

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


def vector_width(compute: Compute) -> int:
    """Elements the compute unit processes per cycle outside the GEMM core."""
    return compute.gemm_block_out if compute.gemm_block_out > 1 else compute.macs_per_cycle


def gemm_blocks(gemm: GemmShape, compute: Compute) -> int:
    """``gemm_batch × gemm_block_in × gemm_block_out`` block operations one GEMM needs."""
    bi, bo = compute.gemm_block_in, compute.gemm_block_out
    kc, n, groups = gemm.k_channels, gemm.n, gemm.groups
    if groups > 1 and kc < bi and n < bo:   # block-diagonal packing of small groups
        per_tap = math.ceil(groups / min(bi // kc, bo // n))
    else:
        per_tap = groups * math.ceil(kc / bi) * math.ceil(n / bo)
    return math.ceil(gemm.m / compute.gemm_batch) * gemm.taps * per_tap


def _block_macs(compute: Compute) -> int:
    return compute.gemm_batch * compute.gemm_block_in * compute.gemm_block_out


def utilisation(gemms, compute: Compute) -> float:
    """MACs of ``gemms`` over the MAC slots of the blocks they take (1.0 on 1×1 blocks)."""
    blocks = sum(gemm_blocks(g, compute) for g in gemms)
    return sum(g.macs for g in gemms) / (blocks * _block_macs(compute)) if blocks else 0.0


def compute_cycles(step: KernelStep, compute: Compute) -> int:
    """GEMM cycles of the step's MAC blocks plus its vector work (see the module doc)."""
    blocks = sum(gemm_blocks(g, compute) for g in step.gemms)
    gemm = math.ceil(blocks * _block_macs(compute) / compute.macs_per_cycle)
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

    def estimate(self, schedule: LoweredSchedule, plan: SpecPlan | None = None) -> CostEstimate:
        """Cycles of every call of ``schedule``; plans it on the spec when ``plan`` is None."""
        if plan is None:
            plan = plan_for_spec(schedule, self.spec)
        traffic = {t.step: t for t in plan.traffic}
        transfers = transfers_per_step(schedule, plan)
        steps = tuple(self.step_cost(s, traffic.get(s.step), transfers.get(s.step, 0))
                      for s in schedule.steps)
        return CostEstimate(f"spec:{self.spec.name}", steps, sum(s.cycles for s in steps),
                            self.spec.compute.clock_hz)


# --------------------------------------------------------------------------- llvm model

#: 1 cycle = 1 ns in llvm estimates.
LLVM_CLOCK_HZ = 1_000_000_000


def step_bytes(step: KernelStep, schedule: LoweredSchedule) -> int:
    """Activation bytes a call reads and writes, plus its weights (llvm model)."""
    size = {b.name: b.size_bytes for b in schedule.buffers}
    return sum(size.get(n, 0) for n in (*step.reads, *step.writes)) + step.weight_bytes


@dataclass(frozen=True)
class CalibrationRow:
    """One timed kernel."""

    kernel: str
    macs: int
    bytes: int
    measured_ms: float
    predicted_ms: float


@dataclass(frozen=True)
class LlvmCostModel:
    """``ms = ms_per_mac·MACs + ms_per_byte·bytes + ms_per_call``, fitted on this machine."""

    ms_per_mac: float
    ms_per_byte: float
    ms_per_call: float
    rows: tuple[CalibrationRow, ...] = ()
    fit_error_pct: float = 0.0     # mean |predicted - measured| / measured over ``rows``
    machine: dict = field(default_factory=dict, compare=False)

    @property
    def coefficients(self) -> dict[str, float]:
        return {"ms_per_mac": self.ms_per_mac, "ms_per_byte": self.ms_per_byte,
                "ms_per_call": self.ms_per_call}

    def predict_ms(self, macs: int, nbytes: int) -> float:
        return self.ms_per_mac * macs + self.ms_per_byte * nbytes + self.ms_per_call

    def estimate(self, schedule: LoweredSchedule) -> CostEstimate:
        """Nanoseconds per call (compute = MAC term, dram = byte term, overhead = per call)."""
        steps = []
        for s in schedule.steps:
            ns = 1e6  # per ms
            compute = round(self.ms_per_mac * s.macs * ns)
            memory = round(self.ms_per_byte * step_bytes(s, schedule) * ns)
            overhead = round(self.ms_per_call * ns)
            steps.append(StepCost(s.step, s.kernel, s.macs, 1.0 if s.macs else 0.0, compute,
                                  memory, overhead, compute + memory + overhead))
        return CostEstimate("llvm", tuple(steps), sum(s.cycles for s in steps), LLVM_CLOCK_HZ)

    def to_dict(self) -> dict:
        return {"model": "llvm", "coefficients": self.coefficients,
                "fit_error_pct": self.fit_error_pct, "machine": self.machine,
                "rows": [asdict(r) for r in self.rows]}


def nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative errors: min ‖(X·c − y)/y‖, c ≥ 0.

    Exact for a few columns: the optimum solves unconstrained least squares on
    some subset of the columns (the others at 0), so every subset is tried.
    """
    weights = 1.0 / np.maximum(y, 1e-12)
    xw, yw = x * weights[:, None], y * weights
    best, best_err = np.zeros(x.shape[1]), float(np.sum(yw ** 2))
    for r in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), r):
            sol, *_ = np.linalg.lstsq(xw[:, cols], yw, rcond=None)
            if np.any(sol < 0):
                continue
            coef = np.zeros(x.shape[1])
            coef[list(cols)] = sol
            err = float(np.sum((xw @ coef - yw) ** 2))
            if err < best_err - 1e-15:
                best, best_err = coef, err
    return best


def _lower_llvm(mod: tvm.IRModule) -> tuple[tvm.IRModule, LoweredSchedule]:
    from ..lowering.concat_in_place import copy_module
    from ..lowering.pipeline import lower

    low = lower(copy_module(mod), tvm.target.Target("llvm"))
    return low, lowered_schedule(low)


def lowered(mod: tvm.IRModule) -> LoweredSchedule:
    """The schedule ``tvm_memflat.build`` plans (``lower`` on llvm, as in ``BuildRecord``)."""
    return _lower_llvm(mod)[1]


def _random_tensor(rng, buf):
    shape = [int(d) for d in buf.shape]
    dtype = str(buf.dtype)
    arr = (rng.standard_normal(shape) if dtype.startswith("float")
           else rng.integers(-3, 4, size=shape)).astype(dtype)
    return tvm.runtime.tensor(arr)


def time_kernel_ms(prim_func, rng, repeat: int = 3, min_repeat_ms: int = 2) -> float:
    """Best-of-``repeat`` time of one call of ``prim_func`` compiled alone for llvm."""
    func = prim_func.with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm").jit()
    args = [_random_tensor(rng, p) for p in prim_func.params]
    lib["main"](*args)  # warm-up
    timer = lib.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat,
                               min_repeat_ms=min_repeat_ms)
    return 1000.0 * float(min(timer(*args).results))


def calibrate_llvm(mod: tvm.IRModule, *, repeat: int = 3, seed: int = 0,
                   max_kernels: int | None = None) -> LlvmCostModel:
    """Time every distinct kernel of ``mod`` (as ``tvm_memflat.build`` lowers it) and fit.

    With ``max_kernels``, that many kernels spread evenly over the distinct
    kernels sorted by (MACs, bytes) are timed. Inputs are seeded random arrays.
    """
    import os
    import platform

    low, schedule = _lower_llvm(mod)
    first: dict[str, KernelStep] = {}
    for s in schedule.steps:
        first.setdefault(s.kernel, s)
    kernels = list(first.values())
    if max_kernels is not None and len(kernels) > max_kernels:
        ordered = sorted(kernels, key=lambda s: (s.macs, step_bytes(s, schedule), s.kernel))
        picks = np.linspace(0, len(ordered) - 1, max(1, max_kernels)).round().astype(int)
        kernels = [ordered[i] for i in sorted(set(picks.tolist()))]
    rng = np.random.default_rng(seed)
    gvars = {gv.name_hint: gv for gv, _ in low.functions_items()}
    measured = [(s, step_bytes(s, schedule), time_kernel_ms(low[gvars[s.kernel]], rng, repeat))
                for s in kernels]
    x = np.array([[s.macs, nbytes, 1.0] for s, nbytes, _ in measured], dtype=float)
    y = np.array([ms for *_, ms in measured], dtype=float)
    coef = nnls_relative(x, y) if len(y) else np.zeros(3)
    pred = x @ coef if len(y) else np.zeros(0)
    rows = tuple(CalibrationRow(s.kernel, s.macs, nbytes, ms, float(p))
                 for (s, nbytes, ms), p in zip(measured, pred, strict=True))
    error = float(np.mean(np.abs(pred - y) / y) * 100.0) if len(y) else 0.0
    return LlvmCostModel(float(coef[0]), float(coef[1]), float(coef[2]), rows, error,
                         {"node": platform.node(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "repeat": repeat, "seed": seed})
