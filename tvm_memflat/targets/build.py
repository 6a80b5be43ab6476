"""``tvm_memflat.build``: compile a Relax module with our memory planning applied.

Targets: ``"llvm"`` (or a ``tvm.target.Target`` of kind llvm) returns a
``relax.VMExecutable``; ``"vta_like"`` returns a
:class:`~tvm_memflat.targets.vta_like.VtaLikeExecutable`: the same llvm
executable (``.executable``, bit-identical results) plus a cycle and DRAM-traffic
simulation on an accelerator spec (``.report``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tvm
from tvm import relax

from ..analysis.device_bytes import Accounting, DeviceBytes
from ..errors import MemflatError
from ..host import resolve_llvm_target, set_threads
from ..planner.device_bytes import device_bytes_of
from ..planner.pipeline import BuildRecord, compile_llvm

TARGETS = ("llvm", "vta_like")


def build(mod: tvm.IRModule, target="llvm", *, spec=None, in_place_concat: bool = True,
          shrink_scratch: bool = True, input: str = "sram", output: str = "sram",
          in_place_depthwise: bool | str = True, schedule: bool | None = None,
          threads: int | None = None, tune_trials: int = 0, tune_dir=None,
          record: BuildRecord | None = None):
    """Compile ``mod`` with tvm_memflat's pipeline.

    Parameters
    ----------
    mod
        A Relax IRModule with static shapes (e.g. from :func:`tvm_memflat.load_model`,
        optionally after :class:`tvm_memflat.FlattenMemoryPeaks`).
    target
        ``"llvm"`` (this machine's CPU: :func:`~tvm_memflat.host.host_target`)
        or a ``tvm.target.Target`` of kind llvm (used as given); or ``"vta_like"``.
    spec
        ``target="vta_like"`` only: the accelerator spec to simulate, a shipped name,
        a TOML path or an :class:`~tvm_memflat.spec.AcceleratorSpec` (default
        ``"vta_like"``).
    in_place_concat
        Let producers write into their slice of each concatenation.
    shrink_scratch
        Schedule away kernel scratch (inline padding, conv under its activation).
    input, output
        The counting convention (``"sram"`` or ``"stream"``). With ``input="sram"``
        the network input gets a slot in the arena (copied there by the first
        kernel), so the planner reuses its bytes after its last use and the arena
        is what the device holds; see :mod:`tvm_memflat.analysis.device_bytes`.
    in_place_depthwise
        Let a stride-1 depthwise convolution whose input dies there write its output
        over that input (one storage for both; the kernel's one-channel temporary is
        counted as its scratch): ``True`` where that lowers device bytes (the input
        and output are at the arena's peak), ``"all"`` wherever possible, ``False``
        nowhere.
    schedule
        Give every kernel the default CPU schedule
        (:mod:`tvm_memflat.lowering.cpu_schedule`: tiled, vectorised, parallel,
        bit-exact); ``False``: TVM's legalized loops as they are (one thread). The
        default (``None``) is ``True`` for llvm. For ``"vta_like"`` it is passed on:
        on a buffered spec the kernels are always tiled with the CPU schedule inside
        the tiles (``False`` is refused); on a fixed one they stay unscheduled unless
        ``True`` (see ``build_vta_like``).
    threads
        Size of TVM's thread pool for running it (default: every CPU this process may
        use, or ``TVM_NUM_THREADS``): :func:`~tvm_memflat.host.set_threads`,
        which applies to the whole process.
    tune_trials
        llvm only: first tune the kernels' tile sizes with MetaSchedule, this many
        trials in all (:mod:`tvm_memflat.lowering.cpu_tune`; progress on stderr). The
        decisions are kept in a database on disk per target (``tune_dir``, default
        ``$MEMFLAT_TUNE_DIR`` or ``~/.cache/tvm_memflat/tune``), so a second build
        reuses them and tuning resumes where it stopped. A kernel the database holds
        is built with its tuned tile sizes whatever ``tune_trials`` is.
    record
        Optional :class:`~tvm_memflat.lowering.pipeline.BuildRecord` filled with the
        offset plan, the lowered schedule, how many concats were removed and how
        many depthwise convolutions run in place.

    Returns
    -------
    relax.VMExecutable or VtaLikeExecutable
        llvm: runs on ``relax.VirtualMachine``; allocates one arena of the planned
        size for all intermediate tensors. vta_like: that executable as
        ``.executable``, with the simulation ``.report`` and the spec's ``.plan``.
    """
    accounting = Accounting(input, output)
    if isinstance(target, str):
        if target not in TARGETS:
            raise MemflatError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
        if target == "vta_like":
            from .vta_like import build_vta_like

            if tune_trials or tune_dir is not None:
                raise MemflatError("tune_trials and tune_dir apply to llvm builds only, "
                                   "not to target='vta_like'")
            return build_vta_like(mod, "vta_like" if spec is None else spec,
                                  in_place_concat=in_place_concat,
                                  shrink_scratch=shrink_scratch, input=input, output=output,
                                  in_place_depthwise=in_place_depthwise, schedule=schedule,
                                  threads=threads, record=record)
    schedule = True if schedule is None else schedule
    target = resolve_llvm_target(target)
    if spec is not None:
        raise MemflatError("spec= applies to target='vta_like' only")
    if target.kind.name != "llvm":
        raise MemflatError(f"target kind {target.kind.name!r} is not supported (llvm only)")
    set_threads(threads)
    if not isinstance(tune_trials, int) or tune_trials < 0:
        raise MemflatError(f"tune_trials must be a non-negative integer, got {tune_trials!r}")
    database = None
    if schedule and (tune_trials or tune_dir is not None):
        from ..lowering.cpu_tune import open_database, tune_kernels
        from ..lowering.pipeline import fused_kernels

        database = open_database(target, tune_dir)
        if tune_trials:
            summary = tune_kernels(fused_kernels(mod, target), target, tune_trials, database)
            if record is not None:
                record.tuning = summary
    from ..lowering.cpu_tune import tuned

    with tuned(database):
        return compile_llvm(mod, target, in_place_concat=in_place_concat,
                            shrink_scratch=shrink_scratch,
                            input_in_arena=accounting.input_in_arena,
                            in_place_depthwise=in_place_depthwise, cpu_schedule=schedule,
                            record=record)


@dataclass(frozen=True)
class MemflatAllocation:
    """What a module built with :func:`build` allocates, measured by running it once."""

    runtime_storage_bytes: int   # recorded ``vm.builtin.alloc_storage`` bytes (arena + outputs)
    arena_bytes: int
    lower_bound_bytes: int
    output_bytes: int
    max_scratch_bytes: int       # largest scratch set of one kernel (TIR workspace)
    concats_removed: int
    #: device bytes measured on this run (alloc_storage as recorded at run time)
    device: DeviceBytes | None = None
    #: depthwise convolutions that write over their input
    depthwise_in_place: int = 0

    @property
    def device_bytes(self) -> int:
        """Measured device bytes under the build's counting convention."""
        return self.device.total_bytes

    @property
    def total_bytes(self) -> int:
        """``tvm_allocated_bytes``: runtime storage + largest kernel scratch (as for stock)."""
        return self.runtime_storage_bytes + self.max_scratch_bytes

    def to_dict(self) -> dict:
        out = {**asdict(self), "total_bytes": self.total_bytes}
        out["device"] = self.device.to_dict() if self.device is not None else None
        out["device_bytes"] = self.device.total_bytes if self.device is not None else None
        return out


def build_and_measure(mod: tvm.IRModule, inputs, *, input: str = "sram",
                      output: str = "sram", in_place_depthwise: bool | str = True,
                      schedule: bool = True, threads: int | None = None,
                      tune_trials: int = 0, tune_dir=None) -> tuple[relax.VMExecutable,
                                                                MemflatAllocation, list]:
    """Build with :func:`build`, run once on ``inputs``; return executable, bytes, outputs.

    The bytes include the measured device bytes (``.device``): what
    ``vm.builtin.alloc_storage`` handed out during the run, plus the largest kernel
    workspace, adjusted for the counting convention ``input``/``output``.
    """
    from .runtime import measure_runtime_storage

    accounting = Accounting(input, output)
    record = BuildRecord()
    executable = build(mod, record=record, input=input, output=output,
                       in_place_depthwise=in_place_depthwise, schedule=schedule,
                       threads=threads, tune_trials=tune_trials, tune_dir=tune_dir)
    runtime, outputs = measure_runtime_storage(executable, inputs)
    device = device_bytes_of(record.plan, record.schedule, accounting,
                             runtime_alloc_storage_bytes=runtime)
    allocation = MemflatAllocation(
        runtime_storage_bytes=runtime,
        arena_bytes=record.plan.arena_bytes,
        lower_bound_bytes=record.plan.lower_bound_bytes,
        output_bytes=record.schedule.output_bytes,
        max_scratch_bytes=record.schedule.max_scratch_bytes,
        concats_removed=record.concats_removed, device=device,
        depthwise_in_place=record.depthwise_in_place)
    return executable, allocation, outputs
