"""The workflows behind ``memflat profile | optimize | plan``, as library functions.

Scripts and Python users call these; the CLI only parses, calls and prints. Each
returns a frozen result whose ``to_json()`` writes the keys of
``shared/docs/design.md`` §5.

* :func:`profile` — the per-layer profile plus the *device bytes* predicted from
  the build's own lowered schedule (:mod:`tvm_memflat.analysis.device_bytes`).
* :func:`optimize` — rewrite (the greedy pass or the tuner, one behaviour per
  option as in :class:`tvm_memflat.passes.FlattenMemoryPeaks`), then build and run
  three modules on the same random input, side by side in one run:

  - ``before``: the original built by stock TVM (llvm, with fusion);
  - ``before_ours``: the original built by :func:`tvm_memflat.build`;
  - ``after``: the rewritten module built by :func:`tvm_memflat.build`.

  "Build alone" is ``before_ours`` vs ``before``, "pass alone" (the headline)
  ``after`` vs ``before_ours``, "both" ``after`` vs ``before``. Every side has its
  device bytes measured at run time and, for ours, predicted without building.
* :func:`plan` — every lowered buffer placed in a spec's memories.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import tvm

from .analysis.device_bytes import Accounting, DeviceBytes
from .analysis.memory_profile import MemoryProfile
from .analysis.memory_profile import profile as _profile
from .errors import MemflatError
from .spec import AcceleratorSpec, load_spec

__all__ = ["BuiltSide", "OptimizeResult", "PlanResult", "optimize", "plan", "profile"]

#: The rewritten module must compute the same function: max abs error at most this
#: fraction of the largest reference output (design.md §5).
TOLERANCE = 1e-4


def _quiet(_message: str) -> None:
    pass


def _spec_or_none(spec) -> AcceleratorSpec | None:
    if spec is None or isinstance(spec, AcceleratorSpec):
        return spec
    return load_spec(spec)


def _module(model, input_shapes=None) -> tuple[tvm.IRModule, str]:
    """``model`` as a Relax module and a label: a module is taken as it is."""
    if isinstance(model, tvm.IRModule):
        return model, "model"
    from .frontend import load_model, model_label

    return load_model(model, input_shapes or {}), model_label(model)


def profile(mod: tvm.IRModule, *, model: str = "model", activation_dtype: str | None = None,
            spec=None, input: str | None = None, output: str | None = None,
            with_tvm: bool = True, predict: bool = True, fused=None) -> MemoryProfile:
    """:func:`tvm_memflat.analysis.memory_profile.profile` plus the predicted device bytes.

    ``input``/``output`` (``"sram"``/``"stream"``, default the spec's
    ``[accounting]``, else ``"sram"``) choose the counting convention of
    ``MemoryProfile.device``; ``predict=False`` skips the prediction (it lowers and
    plans the module: about as long as the profile itself).
    """
    import dataclasses

    prof = _profile(mod, model=model, activation_dtype=activation_dtype, with_tvm=with_tvm,
                    fused=fused)
    if not predict:
        return prof
    from .planner.device_bytes import predict_device_bytes

    acc = Accounting.resolve(input, output, _spec_or_none(spec))
    return dataclasses.replace(prof, device=predict_device_bytes(mod, input=acc.input,
                                                                 output=acc.output))


@dataclass(frozen=True)
class BuiltSide:
    """One built module, run once: what it allocates, how long it takes."""

    build: str
    peak_bytes: int                     # modelled peak of the fused layers (analysis)
    macs: int
    device_bytes: int                   # measured: alloc_storage at run time + parts
    predicted_device_bytes: int | None  # predicted without building (None: not ours)
    runtime_alloc_storage_bytes: int
    tvm_allocated_bytes: int            # runtime alloc_storage + largest kernel scratch
    max_scratch_bytes: int
    latency_ms: float
    peak_layer: str
    arena_bytes: int | None = None
    concats_in_place: int | None = None
    device: DeviceBytes | None = field(default=None, compare=False)
    #: vta_like: the simulation's figures (cycles, traffic, bounds, fits, violations)
    simulation: dict | None = None

    @property
    def prediction_error(self) -> float | None:
        """|predicted / measured − 1| (None when nothing was predicted)."""
        if self.predicted_device_bytes is None or not self.device_bytes:
            return None
        return abs(self.predicted_device_bytes / self.device_bytes - 1)

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("device", "simulation")}
        if self.device is not None:
            out["device"] = self.device.to_dict()
        if self.simulation is not None:
            out.update(self.simulation)
        return out


@dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize` did and measured."""

    config: dict
    accounting: Accounting
    before: BuiltSide
    before_ours: BuiltSide
    after: BuiltSide
    max_abs_error: float
    max_abs_reference: float
    search_s: float
    steps: tuple                 # RewriteStep of every accepted rewrite, in order
    descriptions: tuple[str, ...]
    tune_result: object = field(default=None, compare=False)
    #: a spec with an on-chip path: tuner.fusion.FusionResult (the regions fused)
    fusion: object = field(default=None, compare=False)
    module: tvm.IRModule = field(default=None, compare=False, repr=False)
    original: tvm.IRModule = field(default=None, compare=False, repr=False)
    before_profile: MemoryProfile = field(default=None, compare=False, repr=False)
    after_profile: MemoryProfile = field(default=None, compare=False, repr=False)
    #: vta_like: side -> VtaLikeExecutable (report, plan)
    simulations: dict = field(default_factory=dict, compare=False, repr=False)
    #: the spec optimized for (None without one)
    spec: AcceleratorSpec | None = field(default=None, compare=False, repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    @property
    def saving_pct(self) -> float:
        """Pass alone: device bytes saved by the rewrite, both built by us."""
        return 100.0 * (1 - self.after.device_bytes / self.before_ours.device_bytes)

    @property
    def build_saving_pct(self) -> float:
        """Build alone: the original built by us vs by stock TVM."""
        return 100.0 * (1 - self.before_ours.device_bytes / self.before.device_bytes)

    @property
    def total_saving_pct(self) -> float:
        """Both: the rewritten module built by us vs the original built by stock TVM."""
        return 100.0 * (1 - self.after.device_bytes / self.before.device_bytes)

    def to_json(self) -> dict:
        out = {"config": {k: str(v) for k, v in self.config.items()},
               "before": self.before.to_json(), "before_ours": self.before_ours.to_json(),
               "after": self.after.to_json(),
               "savings_pct": {"pass_alone": round(self.saving_pct, 3),
                               "build_alone": round(self.build_saving_pct, 3),
                               "both": round(self.total_saving_pct, 3)},
               "max_abs_error": self.max_abs_error,
               "max_abs_reference": self.max_abs_reference,
               "pass_s": round(self.search_s, 2),
               "decisions": [s.to_json() for s in self.steps],
               "describe": list(self.descriptions)}
        out["config"].update(self.accounting.to_dict())
        if self.tune_result is not None:
            out["tuner"] = self.tune_result.to_dict()
        if self.fusion is not None:
            out["fusion"] = self.fusion.to_dict()
        if self.simulations:
            out["simulation"] = {side: v.report.to_dict() for side, v in self.simulations.items()}
        return out


def _max_error(ref: list, got: list) -> tuple[float, float]:
    err = max(float(np.abs(x - y).max()) for x, y in zip(ref, got, strict=True))
    return err, max(float(np.abs(x).max()) for x in ref)


def _stock_side(mod, prof: MemoryProfile, inputs, acc: Accounting, latency_repeat: int):
    from .targets.runtime import measure_latency_ms, measure_runtime_storage
    from .targets.stock import build_stock

    stock = build_stock(mod)
    runtime, outputs = measure_runtime_storage(stock, inputs)
    scratch = prof.tvm.max_scratch_bytes
    # Stock TVM never places the input in its storage: under "sram" it is held beside.
    input_bytes = sum(a.nbytes for a in inputs)
    out_bytes = prof.tvm.output_bytes
    device = DeviceBytes(arena_bytes=runtime - out_bytes, output_bytes=out_bytes,
                         scratch_bytes=scratch, input_bytes=input_bytes, input_in_arena=False,
                         accounting=acc, runtime_alloc_storage_bytes=runtime)
    predicted = DeviceBytes(arena_bytes=prof.tvm.planned_storage_bytes,
                            output_bytes=out_bytes, scratch_bytes=scratch,
                            input_bytes=input_bytes, input_in_arena=False, accounting=acc)
    side = BuiltSide("stock TVM 0.27 (llvm, fused)", prof.peak_bytes, prof.macs,
                     device.total_bytes, predicted.total_bytes, runtime, runtime + scratch,
                     scratch, round(measure_latency_ms(stock, inputs, latency_repeat), 3),
                     prof.peak_layer.name, device=device)
    return side, outputs


def _our_side(mod, prof: MemoryProfile, inputs, acc: Accounting, latency_repeat: int,
              label: str, predicted: DeviceBytes | None = None, tune_trials: int = 0):
    from .planner.device_bytes import predict_device_bytes
    from .targets.build import build_and_measure
    from .targets.runtime import measure_latency_ms

    if predicted is None:
        predicted = predict_device_bytes(mod, input=acc.input, output=acc.output)
    executable, allocation, outputs = build_and_measure(mod, inputs, input=acc.input,
                                                        output=acc.output,
                                                        tune_trials=tune_trials)
    side = BuiltSide(label, prof.peak_bytes, prof.macs, allocation.device_bytes,
                     predicted.total_bytes, allocation.runtime_storage_bytes,
                     allocation.total_bytes, allocation.max_scratch_bytes,
                     round(measure_latency_ms(executable, inputs, latency_repeat), 3),
                     prof.peak_layer.name, allocation.arena_bytes, allocation.concats_removed,
                     device=allocation.device)
    return side, outputs


def _simulate(mod, spec, inputs, reference):
    """Build ``mod`` for vta_like, check it agrees with the llvm run, sum up the figures."""
    from .targets.build import build
    from .targets.runtime import measure_runtime_storage
    from .targets.vta_like import traffic_bounds

    vta = build(mod, target="vta_like", spec=spec)
    _, outputs = measure_runtime_storage(vta.executable, inputs)
    if any(not np.array_equal(x, y) for x, y in zip(outputs, reference, strict=True)):
        raise RuntimeError("vta_like and llvm builds of the same module disagree")
    report = vta.report
    figures = {"cycles": report.total_cycles,
               "simulated_latency_ms": round(report.latency_ms, 4),
               "dram_traffic_bytes": report.dram_traffic_bytes,
               "sram_high_water_bytes": dict(report.high_water_bytes),
               "fits": report.fits, "violations": len(report.violations),
               "first_violation": report.violations[0] if report.violations else None,
               **traffic_bounds(vta.record.schedule, spec, vta.plan).to_dict()}
    return vta, figures


def optimize(model, *, spec=None, latency_budget=None, memory_budget: int | None = None,
             halo: str = "auto", input: str | None = None, output: str | None = None,
             target: str = "llvm", max_mac_overhead: float | None = None,
             measure: bool = False, rpc=None, parallel: int = 1, use_cache: bool = True,
             input_shapes=None, label: str | None = None, latency_repeat: int = 3,
             seed: int = 1, progress=None, search: str = "greedy", tune_trials: int = 0,
             threads: int | None = None) -> OptimizeResult:
    """Rewrite ``model``, build and run it before and after, and compare.

    Parameters
    ----------
    model
        A Relax IRModule (as TVM's importers or :func:`tvm_memflat.load_model` give
        it), an ``.onnx`` path, or a zoo name.
    spec, latency_budget, memory_budget, halo, input, output, max_mac_overhead
        As for :class:`tvm_memflat.passes.FlattenMemoryPeaks` (one behaviour per
        option): a latency budget, or a spec without a memory budget, runs the
        tuner; otherwise the greedy pass minimises device bytes, down to
        ``memory_budget`` if given (an unreachable budget is an error).
        ``max_mac_overhead`` is a fraction (default 0.05).
    target
        ``"llvm"``, or ``"vta_like"`` (the spec, default ``vta_like``, simulated too).
    measure, rpc, parallel, use_cache
        The tuner's: time candidates on llvm (locally or through TVM RPC), and
        its disk cache.
    tune_trials, threads
        llvm kernels: tune their tile sizes with MetaSchedule first, this many trials
        for each module built by us (:func:`tvm_memflat.build`); the thread count
        (default: every core). Latencies are of the scheduled kernels either way.
    progress
        ``progress(message)`` for long work.
    """
    from .passes import FlattenMemoryPeaks
    from .transform.flatten_memory_peaks import DEFAULT_MAC_OVERHEAD
    from .tuner.inputs import random_inputs

    progress = progress or _quiet
    if target not in ("llvm", "vta_like"):
        raise MemflatError(f"unknown target {target!r}: expected llvm or vta_like")
    spec = _spec_or_none(spec if spec is not None else
                         ("vta_like" if target == "vta_like" else None))
    max_mac_overhead = DEFAULT_MAC_OVERHEAD if max_mac_overhead is None else max_mac_overhead
    if max_mac_overhead < 0:
        raise MemflatError(f"max_mac_overhead must be >= 0, got {max_mac_overhead}")
    pass_ = FlattenMemoryPeaks(spec, memory_budget=memory_budget, latency_budget=latency_budget,
                               halo=halo, input=input, output=output,
                               max_mac_overhead=max_mac_overhead, search=search,
                               progress=progress)
    acc = Accounting(pass_.input, pass_.output)
    progress("loading the model ...")
    mod, default_label = _module(model, input_shapes)
    label = label or default_label
    config = {"model": label, "spec": spec.name if spec else "(none)", "target": target,
              "halo": halo, "input": acc.input, "output": acc.output}
    if pass_.fuses:
        config.update({"search": "depth-first fusion for the spec's on-chip path "
                                 "(tuner.fusion.fuse_regions: the least DRAM traffic)",
                       "latency_budget": f"{pass_.fusion_budget:g}x the spec's cycles of "
                                         "the module as given"})
    elif pass_.uses_tuner:
        config.update({"search": "tuner over FlattenMemoryPeaks' rewrites",
                       "latency_budget": pass_.latency_budget.text if pass_.latency_budget
                       else "(none: fit the spec at the least latency)",
                       "cost": f"spec {spec.name} cycle model" if spec else
                               "llvm cost model calibrated on this machine",
                       "measure": f"llvm via RPC {rpc}" if rpc else
                                  "llvm, local" if measure else "no"})
    else:
        config.update({"search": f"FlattenMemoryPeaks ({search}, minimises device bytes)",
                       "memory_budget": memory_budget or "(minimise device bytes)",
                       "mac_overhead_limit": f"{100 * max_mac_overhead:g} %"})
    from .host import host_target, set_threads

    threads = set_threads(threads)
    config.update({"before": "stock TVM 0.27, llvm for this CPU, with operator fusion, "
                             "unscheduled kernels",
                   "before_ours": "the original, tvm_memflat.build",
                   "schedules": ("default CPU rules (lowering/cpu_schedule.py)"
                                 + (f", tile sizes tuned with MetaSchedule ({tune_trials} "
                                    "trials per module)" if tune_trials else ""))
                                + f"; {host_target()}, {threads} threads",
                   "after": f"the rewritten module, tvm_memflat.build (target {target})",
                   "device_bytes": "alloc_storage at run time + largest kernel workspace"
                                   + (" (input in the arena)" if acc.input_in_arena else
                                      " (input streamed, not counted)")
                                   + ("" if acc.output == "sram" else ", output not counted")})

    t0 = time.perf_counter()
    fusion = None
    if pass_.fuses:
        progress("fusing regions for the on-chip path ...")
        new = pass_(mod)
        fusion, tuned = pass_.fusion, None
        steps = tuple(s.step for s in fusion.steps)
        descriptions = tuple(s.describe for s in steps)
    elif pass_.uses_tuner:
        from .targets.build import build
        from .tuner.tuner import tune

        progress("tuning ...")
        new, tuned = tune(mod, spec=spec, latency_budget=pass_.latency_budget, halo=halo,
                          model=label, measure=measure, rpc=rpc, parallel=parallel,
                          use_cache=use_cache, build=build,
                          progress=progress)
        steps = tuple(tuned.chosen.path)
        descriptions = tuple(s.describe for s in steps)
    else:
        progress("flattening memory peaks ...")
        new, tuned = pass_(mod), None
        steps = tuple(d.step for d in pass_.decisions)
        descriptions = tuple(d.describe for d in pass_.decisions)
    search_s = time.perf_counter() - t0
    from .planner.device_bytes import predict_device_bytes

    reached = predict_device_bytes(new, input=acc.input, output=acc.output)
    if memory_budget is not None and reached.total_bytes > memory_budget:
        raise MemflatError(
            f"memory budget {memory_budget} B cannot be met: the lowest device bytes reached "
            f"are {reached.total_bytes} B within the MAC overhead limit")

    progress("profiling before and after ...")
    before_prof = profile(mod, model=label, predict=False)
    after_prof = profile(new, model=label, predict=False, with_tvm=False)
    progress("building before (stock TVM and ours) and after, verifying, timing ...")
    inputs = random_inputs(mod["main"], seed=seed)
    before, reference = _stock_side(mod, before_prof, inputs, acc, latency_repeat)
    before_ours, ours_out = _our_side(mod, before_prof, inputs, acc, latency_repeat,
                                      "the original, tvm_memflat.build (llvm)",
                                      tune_trials=tune_trials)
    after, got = _our_side(new, after_prof, inputs, acc, latency_repeat,
                           f"the rewritten module, tvm_memflat.build ({target})", reached,
                           tune_trials=tune_trials)
    err, ref = _max_error(reference, got)
    ours_err, _ = _max_error(reference, ours_out)
    if err > TOLERANCE * max(ref, 1e-12) or ours_err > TOLERANCE * max(ref, 1e-12):
        raise RuntimeError(f"built module differs from the original: max abs error {err} "
                           f"(ours before: {ours_err}) against max |ref| {ref}")
    sims = {}
    if target == "vta_like":
        import dataclasses

        progress("simulating before and after on the spec ...")
        sims["before"], figures = _simulate(mod, spec, inputs, ours_out)
        before_ours = dataclasses.replace(before_ours, simulation=figures)
        sims["after"], figures = _simulate(new, spec, inputs, got)
        after = dataclasses.replace(after, simulation=figures)
    return OptimizeResult(config, acc, before, before_ours, after, err, ref, search_s, steps,
                          descriptions, tuned, fusion, new, mod, before_prof, after_prof, sims,
                          spec)


@dataclass(frozen=True)
class PlanResult:
    """Every lowered buffer of a module placed in a spec's memories."""

    config: dict
    spec_plan: object            # planner.sram_plan.SpecPlan, or for a buffered spec
                                 # hardware.call_tiling.BufferedPlan (per-call tiles)
    schedule: object             # planner.live_ranges.LoweredSchedule
    steps: tuple = ()
    module: tvm.IRModule = field(default=None, compare=False, repr=False)
    #: buffered specs: targets.vta_like.TrafficBounds of the schedule
    bounds: object = None

    @property
    def buffered(self) -> bool:
        return self.bounds is not None

    @property
    def fits(self) -> bool:
        # a buffered plan exists only when every call's tiles fit (else TilingError)
        return True if self.buffered else self.spec_plan.fits

    def to_json(self) -> dict:
        out = {"config": {k: str(v) for k, v in self.config.items()}}
        if self.buffered:
            p = self.spec_plan
            out.update({"fits": True, "arena_bytes": p.activation_high_water_bytes,
                        "lower_bound_bytes": p.lower_bound_bytes, "spilled_bytes": 0,
                        "dram_traffic_bytes": p.traffic_bytes, **p.to_dict(),
                        **self.bounds.to_dict()})
        else:
            out.update(self.spec_plan.to_dict())
        return {**out, "decisions": [s.to_json() for s in self.steps]}


def plan(model, *, spec=None, optimized: bool = False, input: str | None = None,
         output: str | None = None, halo: str = "auto", input_shapes=None,
         progress=None) -> PlanResult:
    """Lower ``model`` with our pipeline and place every buffer in ``spec``'s memories.

    ``optimized``: first rewrite it with :class:`~tvm_memflat.passes.FlattenMemoryPeaks`
    given the spec (no budget: the tuner fits the spec at the least latency, as
    ``memflat optimize --spec``).
    """
    from .planner.pipeline import lower_and_plan
    from .planner.sram_plan import plan_for_spec

    progress = progress or _quiet
    spec = _spec_or_none(spec or "vta_like")
    acc = Accounting.resolve(input, output, spec)
    mod, label = _module(model, input_shapes)
    config = {"model": label, "spec": f"{spec.name} ({spec.path})",
              "activations": f"{spec.compute.activation_dtype} in "
                             f"{spec.memories_for('activations')[0].name}",
              "input": acc.input, "output": acc.output,
              "optimized": "FlattenMemoryPeaks (tuner: fit the spec)" if optimized else "no",
              "pipeline": "tvm_memflat lowering (fused, concat in place, scratch shrunk)"}
    steps: tuple = ()
    if optimized:
        from .passes import FlattenMemoryPeaks

        progress("flattening memory peaks ...")
        pass_ = FlattenMemoryPeaks(spec, halo=halo, input=acc.input, output=acc.output)
        mod = pass_(mod)
        steps = (tuple(pass_.tune_result.chosen.path) if pass_.tune_result is not None else
                 tuple(s.step for s in pass_.fusion.steps) if pass_.fusion is not None else
                 tuple(d.step for d in pass_.decisions))
    progress("lowering and planning ...")
    if spec.machine_kind == "buffered":
        from .hardware.call_tiling import plan_buffered
        from .host import host_target
        from .lowering.pipeline import BUFFERED_LOWERING
        from .targets.vta_like import traffic_bounds

        # lowered as build(target="vta_like") lowers for a buffered spec, so these
        # tiles are the ones its build runs
        _, _, schedule = lower_and_plan(mod, host_target(), **BUFFERED_LOWERING,
                                        concat_copies=False)
        config["pipeline"] = ("tvm_memflat lowering for a buffered machine (fused, concat in "
                              "place; kernels as legalized, input read from DRAM)")
        config["plan"] = ("per-call tiles (activations in DRAM between layers"
                          + (", unless kept on chip over the spec's on-chip path)"
                             if spec.onchip_paths else ")"))
        tiles = plan_buffered(schedule, spec, progress=progress)
        return PlanResult(config, tiles, schedule, steps, mod,
                          traffic_bounds(schedule, spec, tiles))
    # the spec's own kernels, not the CPU schedules (tuner.cost_model.lowered)
    _, _, schedule = lower_and_plan(mod, tvm.target.Target("llvm"), cpu_schedule=False)
    spec_plan = plan_for_spec(schedule, spec, accounting=acc)
    return PlanResult(config, spec_plan, schedule, steps, mod)
