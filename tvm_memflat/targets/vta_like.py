"""The ``vta_like`` target: exact llvm execution plus a cycle and traffic simulation.

``tvm_memflat.build(mod, target="vta_like", spec="vta_like")`` returns a
:class:`VtaLikeExecutable`:

* ``.executable`` is the same ``relax.VMExecutable`` ``target="llvm"`` gives (same
  pipeline, same kernels), so results are bit-identical to the llvm build; run it
  with ``relax.VirtualMachine(result.executable, tvm.cpu())``;
* ``.report`` is a :class:`SimulationReport` of running the build's lowered
  schedule on the spec's memories and GEMM core;
* ``.plan`` is the spec's SRAM plan, ``.record`` the build's ``BuildRecord``.

The simulator executes the SRAM plan (:func:`~tvm_memflat.planner.sram_plan.plan_for_spec`
on the build's :class:`~tvm_memflat.planner.live_ranges.LoweredSchedule`) step by
step: before step 0 the network input is loaded from DRAM; at each step the
step's weight chunks and spill reloads are loaded, the GEMM blocks and vector
work run, spilled buffers are stored after their producer, and the outputs are
stored after the last step. The cycle arithmetic (GEMM blocks at the utilisation
the layer's channels get, DRAM bandwidth and latency per transfer, overlap,
per-call overhead, accumulator passes) is the hardware cost model's
(:class:`~tvm_memflat.hardware.cost_model.SpecCostModel`), not repeated here.

What the simulator adds is residency: at every step it puts each memory's live
placements at their planned offsets and reports

* the memory's high-water mark (highest aligned byte in use at that step);
* a violation when a live buffer ends beyond the memory's size, or when two live
  buffers overlap (a plan that would clobber data);
* on a memory dedicated to accumulators, the GEMM output tile of the pass
  (``ceil(tile / passes)`` bytes at the accumulator dtype) in place of the
  planned kernel scratch when it is larger: both model the same storage.

On a scratchpad spec, violations are reported, never raised: ``report.fits`` is
False and ``report.violations`` says where. On a buffered spec (``vta_like``) every
call is tiled to fit its buffers (:mod:`tvm_memflat.hardware.call_tiling`) and
:func:`simulate_buffered` replays the tiles (:mod:`.tile_sim`): a tile that does
not fit is a bug and raises :class:`~tvm_memflat.errors.ScheduleViolation`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tvm
from tvm import relax, tirx

from ..analysis.device_bytes import Accounting
from ..errors import MemflatError, ScheduleViolation
from ..hardware.call_tiling import BufferedPlan, plan_buffered
from ..hardware.cost_model import (
    SpecCostModel,
    accumulator_memory,
    accumulator_tile_bytes,
    utilisation,
)
from ..host import host_target, set_threads
from ..lowering.cpu_schedule import scheduled
from ..lowering.pipeline import BUFFERED_LOWERING
from ..planner.allocator import align_up
from ..planner.check import check_plan
from ..planner.live_ranges import LoweredSchedule
from ..planner.pipeline import BuildRecord, compile_llvm
from ..planner.sram_plan import (
    SpecPlan,
    distinct_weight_bytes,
    plan_for_spec,
    weight_bytes_at,
)
from ..spec import AcceleratorSpec, load_spec
from .tile_sim import replay_call, replay_kernel
from .tile_tir import TiledKernel, tile_kernel


@dataclass(frozen=True)
class LayerReport:
    """One kernel call on the simulated accelerator."""

    step: int
    kernel: str
    macs: int
    utilisation: float
    passes: int
    compute_cycles: int
    dram_cycles: int
    overhead_cycles: int
    cycles: int
    dram_read_bytes: int
    dram_write_bytes: int
    high_water_bytes: dict  # memory name -> highest aligned byte in use at this step
    #: buffered specs: the calls' tilings (``CallPlan.describe``)
    tiling: str = ""
    #: buffered specs: what the simulator replayed: ``"tir"`` (the tiled kernel the
    #: build runs) or ``"plan"`` (the tiling record; the kernel is not tiled in TIR)
    replayed: str = ""
    #: of ``dram_read_bytes``: the weights
    dram_weight_bytes: int = 0


@dataclass(frozen=True)
class SimulationReport:
    """A schedule run on a spec: per layer and in total."""

    spec: str
    clock_hz: int
    layers: tuple[LayerReport, ...]
    capacity_bytes: dict          # memory name -> size
    high_water_bytes: dict        # memory name -> max over steps
    violations: tuple[str, ...] = field(default=())

    @property
    def total_cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.total_cycles / self.clock_hz

    @property
    def dram_read_bytes(self) -> int:
        return sum(layer.dram_read_bytes for layer in self.layers)

    @property
    def dram_write_bytes(self) -> int:
        return sum(layer.dram_write_bytes for layer in self.layers)

    @property
    def dram_traffic_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def activation_traffic_bytes(self) -> int:
        """DRAM traffic of activations: all but the weights."""
        return self.dram_traffic_bytes - sum(layer.dram_weight_bytes for layer in self.layers)

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def layers_from_tir(self) -> int:
        """Layers the simulator replayed from the tiled kernels the build runs."""
        return sum(1 for layer in self.layers if layer.replayed == "tir")

    def to_dict(self) -> dict:
        return {"spec": self.spec, "clock_hz": self.clock_hz,
                "total_cycles": self.total_cycles, "latency_ms": self.latency_ms,
                "dram_read_bytes": self.dram_read_bytes,
                "dram_write_bytes": self.dram_write_bytes,
                "dram_traffic_bytes": self.dram_traffic_bytes,
                "activation_traffic_bytes": self.activation_traffic_bytes,
                "capacity_bytes": dict(self.capacity_bytes),
                "high_water_bytes": dict(self.high_water_bytes),
                "fits": self.fits, "violations": list(self.violations),
                "layers_from_tir": self.layers_from_tir,
                "layers": [asdict(layer) for layer in self.layers]}

    def table(self) -> str:
        """A short fixed-width table: one row per layer, then the totals."""
        mems = list(self.capacity_bytes)
        foot = {m: f"{self.high_water_bytes[m]}/{self.capacity_bytes[m]}" for m in mems}
        width = {m: max(len(m), len(foot[m])) for m in mems}
        head = (f"{'step':>4} {'kernel':<28} {'cycles':>10} {'util%':>6} {'pass':>4} "
                f"{'dram_rd':>9} {'dram_wr':>9} " + " ".join(f"{m:>{width[m]}}" for m in mems)
                + (("  tiling (activations in DRAM, or on chip where marked :chip)"
                    if any(":chip" in r.tiling for r in self.layers) else
                    "  tiling (layer by layer: activations in DRAM)")
                   if any(r.tiling for r in self.layers) else ""))
        lines = [f"{self.spec}: {self.total_cycles} cycles = {self.latency_ms:.4f} ms at "
                 f"{self.clock_hz / 1e6:g} MHz, DRAM {self.dram_read_bytes} B read / "
                 f"{self.dram_write_bytes} B written, "
                 f"{'fits' if self.fits else f'{len(self.violations)} violation(s)'}",
                 head, "-" * len(head)]
        for r in self.layers:
            lines.append(f"{r.step:>4} {r.kernel[:28]:<28} {r.cycles:>10} "
                         f"{100 * r.utilisation:>6.1f} {r.passes:>4} {r.dram_read_bytes:>9} "
                         f"{r.dram_write_bytes:>9} "
                         + " ".join(f"{r.high_water_bytes.get(m, 0):>{width[m]}}"
                                    for m in mems)
                         + (f"  {r.tiling}" if r.tiling else "")
                         + ("  (from the plan: kernel not tiled in TIR)"
                            if r.replayed == "plan" else ""))
        lines.append("-" * len(head))
        lines.append(f"{'':>4} {'total; high water/size':<28} {self.total_cycles:>10} "
                     f"{'':>6} {'':>4} {self.dram_read_bytes:>9} {self.dram_write_bytes:>9} "
                     + " ".join(f"{foot[m]:>{width[m]}}" for m in mems))
        if any(r.replayed for r in self.layers):
            rest = len(self.layers) - self.layers_from_tir
            lines.append(f"simulated from the tiled TIR the build runs: {self.layers_from_tir} "
                         f"of {len(self.layers)} layers"
                         + (f"; {rest} from their tiling record (kernel not tiled in TIR)"
                            if rest else ""))
        lines += [f"violation: {v}" for v in self.violations]
        return "\n".join(lines)


def simulate(schedule: LoweredSchedule, spec: AcceleratorSpec | str | Path,
             plan: SpecPlan | BufferedPlan | None = None) -> SimulationReport:
    """Run ``schedule`` on ``spec`` with its ``plan`` (planned here when None).

    On a buffered spec the plan is per-call tiles (:func:`plan_buffered`), replayed
    copy by copy (:func:`simulate_buffered`); on a scratchpad spec, the SRAM plan of
    whole tensors.
    """
    spec = spec if isinstance(spec, AcceleratorSpec) else load_spec(spec)
    if spec.machine_kind == "buffered":
        return simulate_buffered(schedule, spec, plan)
    if plan is None:
        plan = plan_for_spec(schedule, spec)
    costs = {c.step: c for c in SpecCostModel(spec).estimate(schedule, plan).steps}
    acc = accumulator_memory(spec)
    # Overlaps, coverage, alignment and totals: the independent plan checker, not a
    # test of our own here (plan_for_spec has verified these already; a plan made
    # elsewhere and passed in is checked again).
    violations: list[str] = [f"{m.memory}: {problem}" for m in plan.memories if m.ranges
                             for problem in check_plan(m.plan, m.ranges)]
    peak = {m.memory: 0 for m in plan.memories}
    layers = []
    for s in schedule.steps:
        cost = costs[s.step]
        high = {}
        for m in plan.memories:
            live = [p for p in m.plan.placements if p.start <= s.step <= p.end]
            top = max((p.top(m.alignment_bytes) for p in live), default=0)
            if acc is not None and m.memory == acc.name and s.gemms:
                tile = math.ceil(accumulator_tile_bytes(s, spec) / cost.passes)
                top = max(top, align_up(tile, m.alignment_bytes))
            if top > m.size_bytes:
                violations.append(f"step {s.step} ({s.kernel}): {m.memory} needs {top} B "
                                  f"> {m.size_bytes} B")
            high[m.memory] = top
            peak[m.memory] = max(peak[m.memory], top)
        layers.append(LayerReport(s.step, s.kernel, s.macs, cost.utilisation, cost.passes,
                                  cost.compute_cycles, cost.dram_cycles, cost.overhead_cycles,
                                  cost.cycles, cost.dram_read_bytes, cost.dram_write_bytes,
                                  high))
    return SimulationReport(spec.name, spec.compute.clock_hz, tuple(layers),
                            {m.memory: m.size_bytes for m in plan.memories}, peak,
                            tuple(violations))


def simulate_buffered(schedule: LoweredSchedule, spec: AcceleratorSpec,
                      plan: BufferedPlan | None = None,
                      kernels: dict | None = None) -> SimulationReport:
    """Replay every call's tiles on a buffered spec: from the tiled kernel's TIR
    (:func:`~.tile_sim.replay_kernel`) where ``kernels`` (kernel name ->
    :class:`~.tile_tir.TiledKernel`, what the build ran) holds it tiled, else from the
    plan's tiling record (:func:`~.tile_sim.replay_call`).

    Per step: the cycles, DRAM bytes and transfers the replay counts, and each
    memory's most-resident bytes. A tile that does not fit raises
    :class:`~tvm_memflat.errors.ScheduleViolation` naming the step: with per-call
    tiling every schedule fits, so a violation is a bug.
    """
    plan = plan if plan is not None else plan_buffered(schedule, spec)
    by_step: dict[int, list] = {}
    for call in plan.calls:
        by_step.setdefault(call.step, []).append(call)
    capacity = {m.name: m.size_bytes for m in spec.memories}
    peak = {m: 0 for m in capacity}
    layers = []
    for s in schedule.steps:
        calls = by_step.get(s.step, [])
        where = f"step {s.step} ({s.kernel}): "
        kernel = (kernels or {}).get(calls[0].kernel if calls else s.kernel)
        from_tir = kernel is not None and kernel.tiled and len(calls) == 1
        replays = ([replay_kernel(kernel.func, spec, where)] if from_tir else
                   [replay_call(c.shape, c.tiling, spec, where=where) for c in calls])
        high = {m: max((r.high_water_bytes.get(m, 0) for r in replays), default=0)
                for m in capacity}
        for m, v in high.items():
            peak[m] = max(peak[m], v)
        compute = sum(r.compute_cycles for r in replays)
        layers.append(LayerReport(
            s.step, s.kernel, s.macs, utilisation(s.gemms, spec.compute), 1, compute,
            sum(r.dram_cycles for r in replays), spec.dram.latency_cycles * len(replays),
            sum(r.cycles for r in replays), sum(r.read_bytes for r in replays),
            sum(r.write_bytes for r in replays), high,
            "; ".join(c.describe() for c in calls), "tir" if from_tir else "plan",
            sum(r.weight_bytes for r in replays)))
    return SimulationReport(spec.name, spec.compute.clock_hz, tuple(layers), capacity, peak)


@dataclass(frozen=True)
class TrafficBounds:
    """Lower bounds to set the simulated figures against (design.md §6).

    ``compulsory_traffic_bytes``: weights, the input and the output, each moved
    once; ``per_layer_min_traffic_bytes``: every layer reads its activations and
    weights from DRAM and writes its output there once (no fusion, no re-reads);
    ``compute_bound_cycles``: every MAC at the core's peak rate.
    """

    compulsory_traffic_bytes: int
    per_layer_min_traffic_bytes: int
    compute_bound_cycles: int

    def to_dict(self) -> dict:
        return asdict(self)


def traffic_bounds(schedule: LoweredSchedule, spec: AcceleratorSpec,
                   plan: SpecPlan | BufferedPlan | None = None) -> TrafficBounds:
    """:class:`TrafficBounds` of ``schedule`` on ``spec`` at the spec's dtypes.

    ``plan`` is used on a buffered spec only (its per-call tiles, planned here when
    None); a scratchpad spec's bounds need no plan.

    On a buffered spec the per-layer minimum is each call's input, weights and
    output once (:func:`~tvm_memflat.hardware.call_tiling.min_traffic`: a kernel
    writing a slice of a concatenation writes the slice), and the compute bound is
    the GEMM blocks and vector cycles at the utilisation the channel counts allow.
    """
    if spec.machine_kind == "buffered":
        plan = plan if plan is not None else plan_buffered(schedule, spec)
        return TrafficBounds(_compulsory_bytes(schedule, spec), plan.min_traffic_bytes,
                             sum(c.cost.compute_cycles for c in plan.calls))
    act, wgt = spec.compute.activation_dtype, spec.compute.weight_dtype
    size = _sizes_at(schedule, act)
    per_layer = sum(sum(size.get(n, 0) for n in (*s.reads, *s.writes))
                    + weight_bytes_at(s, wgt)
                    for s in schedule.steps)
    compute = sum(math.ceil(s.macs / spec.compute.macs_per_cycle) for s in schedule.steps)
    return TrafficBounds(_compulsory_bytes(schedule, spec), per_layer, compute)


def _sizes_at(schedule: LoweredSchedule, dtype: str) -> dict[str, int]:
    """Buffer name -> its bytes at ``dtype`` (the spec's activation dtype)."""
    from ..analysis.tir_stats import dtype_bytes

    return {b.name: max(1, b.size_bytes * dtype_bytes(dtype) // dtype_bytes(b.dtype))
            for b in schedule.buffers}


def _compulsory_bytes(schedule: LoweredSchedule, spec: AcceleratorSpec) -> int:
    """Weights, the network input and its output, each moved once, at the spec's dtypes
    (a weight the tiles of a region share counts once)."""
    size = _sizes_at(schedule, spec.compute.activation_dtype)
    weights = distinct_weight_bytes(schedule, spec.compute.weight_dtype)
    return weights + sum(size[b.name] for b in schedule.buffers
                         if b.role in ("input", "output"))


@dataclass(frozen=True)
class VtaLikeExecutable:
    """What ``build(mod, target="vta_like")`` returns (see the module doc)."""

    executable: relax.VMExecutable
    report: SimulationReport
    plan: SpecPlan | BufferedPlan   # buffered specs: per-call tiles
    record: BuildRecord

    def vm(self, device=None) -> relax.VirtualMachine:
        """A VirtualMachine running the (llvm) executable."""
        return relax.VirtualMachine(self.executable, device or tvm.cpu())


def build_vta_like(mod: tvm.IRModule, spec: AcceleratorSpec | str | Path = "vta_like", *,
                   in_place_concat: bool = True, shrink_scratch: bool = True,
                   input: str = "sram", output: str = "sram",
                   in_place_depthwise: bool | str = True, schedule: bool | None = None,
                   threads: int | None = None,
                   record: BuildRecord | None = None) -> VtaLikeExecutable:
    """Build ``mod`` for llvm with tvm_memflat's pipeline and simulate it on ``spec``.

    The llvm build is ``tvm_memflat.build(mod, "llvm", ...)``'s with the same options
    (:func:`~tvm_memflat.planner.pipeline.compile_llvm`; this module does not import
    :mod:`.build`, which dispatches here). ``input``/``output`` are the counting
    convention, as for ``build``. The llvm executable is the exactness check of what
    the accelerator computes. On a buffered spec every kernel carries a CPU schedule
    that changes neither a result nor what the simulator reads (:func:`tiled_module`).
    (``schedule=False`` is refused there: the tiles have no unscheduled form.)
    On a fixed machine the kernels are left unscheduled for the CPU unless
    ``schedule=True``, so the simulated schedule and the spec plan carry the
    accelerator's kernels, not the CPU schedules' staging scratch. ``threads`` as
    for ``build``.
    """
    spec = spec if isinstance(spec, AcceleratorSpec) else load_spec(spec)
    if spec.machine_kind == "buffered" and schedule is False:
        raise MemflatError(f"schedule=False: {spec.name} is a buffered machine, whose build "
                           "runs every kernel tiled, with the CPU schedule inside the tiles")
    record = record if record is not None else BuildRecord()
    Accounting(input, output)  # validate the convention
    # A buffered machine keeps activations in DRAM between layers: the first layer
    # reads the input from there, so no kernel copies it into an on-chip slot (the
    # host build's ``input_in_arena``), and the simulated schedule has no such step.
    set_threads(threads)
    if spec.machine_kind == "buffered":
        # every call tiled in its kernel's TIR: the llvm build runs the tiled program,
        # and the simulator reads it (kernels start from legalization's loops:
        # BUFFERED_LOWERING)
        def tile_kernels(lowered: tvm.IRModule, schedule: LoweredSchedule) -> tvm.IRModule:
            return tiled_module(lowered, plan_buffered(schedule, spec), schedule, record)

        executable = compile_llvm(mod, host_target(), in_place_concat=in_place_concat,
                                  **BUFFERED_LOWERING, record=record, kernel_hook=tile_kernels,
                                  concat_copies=False)
        plan = record.buffered_plan
        report = simulate_buffered(record.schedule, spec, plan, record.kernels)
        return VtaLikeExecutable(executable, report, plan, record)
    executable = compile_llvm(mod, host_target(), in_place_concat=in_place_concat,
                              shrink_scratch=shrink_scratch, input_in_arena=False,
                              in_place_depthwise=in_place_depthwise,
                              cpu_schedule=bool(schedule),
                              record=record)
    plan = plan_for_spec(record.schedule, spec)
    return VtaLikeExecutable(executable, simulate(record.schedule, spec, plan), plan, record)


def tiled_module(lowered: tvm.IRModule, plan: BufferedPlan, schedule: LoweredSchedule,
                 record: BuildRecord | None = None) -> tvm.IRModule:
    """``lowered`` with every kernel whose calls have one tiling tiled in TIR
    (:func:`~.tile_tir.tile_kernel`); the others kept as they are. ``record.kernels``
    gets each kernel's :class:`~.tile_tir.TiledKernel`.

    A kernel whose one-call steps got different tilings (the same layer shape with its
    input or output kept on chip in one call and not in another) is first cloned, one
    copy per tiling, and each call of ``schedule`` (the one ``plan`` tiles) pointed at
    its copy: ``plan``'s calls are renamed to match (the returned module and
    ``record.buffered_plan`` carry them).

    Every kernel carries a CPU schedule for the llvm build, none of which changes a
    result or what the simulator reads: a tiled kernel inside its tiles
    (:func:`~.tile_tir.tile_kernel`), any other the default one
    (:func:`~tvm_memflat.lowering.cpu_schedule.scheduled`)."""
    lowered, plan = split_shared_kernels(lowered, plan, schedule)
    if record is not None:
        record.buffered_plan = plan
    by_kernel: dict = {}
    steps: dict = {}
    for call in plan.calls:
        by_kernel.setdefault(call.kernel, set()).add((call.shape, call.tiling))
        steps.setdefault(call.kernel, {}).setdefault(call.step, []).append(call)
    out = tvm.IRModule(dict(lowered.functions_items()), attrs=lowered.attrs)
    for gv, func in lowered.functions_items():
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc):
            continue
        if name not in by_kernel:   # elementwise: no call of the plan
            out[gv] = scheduled(func).func
            continue
        if len(by_kernel[name]) != 1 or any(len(c) != 1 for c in steps[name].values()):
            done = TiledKernel(func, False, "its calls have several tilings (several GEMMs)")
        else:
            call = next(iter(steps[name].values()))[0]
            done = tile_kernel(func, call)
        # a kernel left untiled (replayed from the plan) runs the default CPU schedule
        out[gv] = done.func if done.tiled else scheduled(func).func
        if record is not None:
            record.kernels[name] = done
    return out


def split_shared_kernels(lowered: tvm.IRModule, plan: BufferedPlan,
                         schedule: LoweredSchedule) -> tuple[tvm.IRModule, BufferedPlan]:
    """Clone each kernel whose one-call steps have several tilings: one copy per
    tiling (``<kernel>_t<k>``), each step's call pointed at its copy (steps are the
    kernel calls of ``main`` in binding order, as
    :func:`~tvm_memflat.planner.live_ranges.lowered_schedule` counts them)."""
    from ..lowering.concat_in_place import flat_bindings, is_kernel_call, rebuild

    per_step: dict = {}
    for call in plan.calls:
        per_step.setdefault(call.step, []).append(call)
    variants: dict = {}   # kernel -> {(shape, tiling): new name}
    rename: dict = {}     # step -> new kernel name
    for step, calls in sorted(per_step.items()):
        if len(calls) != 1:
            continue
        call = calls[0]
        names = variants.setdefault(call.kernel, {})
        key = (call.shape, call.tiling)
        if key not in names:
            names[key] = call.kernel if not names else f"{call.kernel}_t{len(names)}"
        if names[key] != call.kernel:
            rename[step] = names[key]
    if not rename:
        return lowered, plan
    builder = relax.BlockBuilder(tvm.IRModule(dict(lowered.functions_items()),
                                              attrs=lowered.attrs))
    clones: dict = {}
    for step, name in rename.items():
        if name not in clones:
            original = schedule.steps[step].kernel
            clones[name] = builder.add_func(
                lowered[original].with_attr("global_symbol", name), name)
    out = builder.get()
    main = lowered["main"]
    bindings, step = [], 0
    for b in flat_bindings(main):
        if is_kernel_call(lowered, b.value):
            if step in rename:
                v = b.value
                b = relax.VarBinding(b.var, relax.Call(clones[rename[step]], v.args, v.attrs,
                                                       v.ty_args))
            step += 1
        bindings.append(b)
    if step != len(schedule.steps):
        raise ScheduleViolation(f"main has {step} kernel calls, the schedule {len(schedule.steps)}")
    out["main"] = rebuild(main, bindings)
    calls = tuple(replace(c, kernel=rename.get(c.step, c.kernel)) for c in plan.calls)
    return out, replace(plan, calls=calls)
