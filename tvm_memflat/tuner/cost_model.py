"""The tuner's llvm cost model: ms per kernel call, fitted on this machine.

The spec's cycle model (:class:`~tvm_memflat.hardware.cost_model.SpecCostModel`)
lives below the tuner, in :mod:`tvm_memflat.hardware.cost_model`, with the result
types both models return (:class:`~tvm_memflat.hardware.cost_model.StepCost`,
:class:`~tvm_memflat.hardware.cost_model.CostEstimate`).

LLVM model (:class:`LlvmCostModel`)
-----------------------------------
``ms per call = a·MACs + b·bytes + c`` with non-negative coefficients fitted by
:func:`calibrate_llvm` on the distinct kernels of a module, each compiled and
timed alone on this machine, scheduled as the build schedules them (the default
CPU rules, on the runtime's threads). ``bytes`` are the activation bytes the call reads
and writes (whole buffers, at their own dtype) plus its weight bytes. Terms add
(a scalar CPU does not overlap them). Cycles are nanoseconds (``clock_hz`` 1 GHz).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import tvm

from ..hardware.cost_model import CostEstimate, StepCost
from ..planner.live_ranges import KernelStep, LoweredSchedule

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


def _lower_llvm(mod: tvm.IRModule, cpu_schedule: bool = True
                ) -> tuple[tvm.IRModule, LoweredSchedule]:
    from ..lowering.concat_in_place import copy_module
    from ..planner.pipeline import lower_and_plan

    low, _, schedule = lower_and_plan(copy_module(mod), tvm.target.Target("llvm"),
                                      cpu_schedule=cpu_schedule)
    return low, schedule


def lowered(mod: tvm.IRModule) -> LoweredSchedule:
    """The schedule a spec is planned and costed on: ``tvm_memflat.build``'s lowering
    (``lower_and_plan``, as in ``BuildRecord``) with the kernels left unscheduled for
    the CPU. An accelerator runs its own kernels: the CPU schedules' staging scratch
    (padding windows, accumulator tiles sized for AVX) is not its; a reduction's
    accumulator is modelled by the spec (design.md §6)."""
    return _lower_llvm(mod, cpu_schedule=False)[1]


def _random_tensor(rng, buf):
    shape = [int(d) for d in buf.shape]
    dtype = str(buf.dtype)
    arr = (rng.standard_normal(shape) if dtype.startswith("float")
           else rng.integers(-3, 4, size=shape)).astype(dtype)
    return tvm.runtime.tensor(arr)


def time_kernel_ms(prim_func, rng, repeat: int = 3, min_repeat_ms: int = 2) -> float:
    """Best-of-``repeat`` time of one call of ``prim_func`` compiled alone for llvm on
    this CPU, as ``tvm_memflat.build(mod, "llvm")`` compiles it (the kernels are the
    scheduled ones the build runs: :mod:`tvm_memflat.lowering.cpu_schedule`)."""
    from ..host import host_target

    func = prim_func.with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=host_target()).jit()
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
