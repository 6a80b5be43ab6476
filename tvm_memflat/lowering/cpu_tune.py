"""Tuning the CPU schedules with TVM's MetaSchedule, our rules as the design space.

:func:`tune_kernels` makes one MetaSchedule task per distinct fused kernel that a
tiling rule schedules (conv, window, matmul), weighted by how often ``main`` calls
it. Its design space is the rule itself with its tile sizes sampled
(:data:`TUNE_SPACE`: ``sample_categorical`` over the output-channel and width tiles
that divide the kernel; the default's choice is among them). MetaSchedule's task
scheduler and ``ReplayFunc`` search replay that function and measure each candidate
on this machine. Every candidate keeps the rule's loop order, so each output element
is still summed in the original order: tuned kernels are bit-exact too, and their
only scratch is still the padding window and the accumulator tile, counted like the
default's (at most 8 channels x :data:`MAX_TUNE_LANES` accumulator elements).

Two parts of MetaSchedule are replaced, because in the apache-tvm 0.27.0.post1
wheel serializing any PrimFunc (``tvm.ir.save_json``, even a 4x4 TE compute)
segfaults, and both its ``LocalBuilder`` (which pickles the module to a worker) and
its ``JSONDatabase`` (which writes it to disk) do that:

* candidates are built and timed in this process (:class:`_InProcessBuilder`,
  :class:`_InProcessRunner`), into an in-memory database;
* what is kept on disk (:class:`TuneDatabase`) is each kernel's decisions, the tile
  sizes the fastest candidate sampled, keyed by the target and a digest of the
  kernel's TVMScript: a JSON file per target (:func:`default_work_dir`).

Tuning is resumable: a kernel already in the file keeps its decisions, and its
trials count towards the budget. Inside ``with tuned(database):`` the schedule pass
(:func:`~.cpu_schedule.schedule_cpu_kernels`) replays a kernel's decisions (rule
``"tuned"``) and uses the default rule for any kernel the file does not hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, s_tir, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .._io import write_json_atomic
from .cpu_schedule import (
    TILE_CHANNELS,
    TILE_WIDTHS,
    Space,
    apply_rules,
    current_database,
    schedule_kernel,
    tuned,
)

__all__ = ["TUNE_CHANNELS", "TUNE_SPACE", "TUNE_WIDTHS", "TuneDatabase", "TuneSummary",
           "current_database", "default_work_dir", "kernel_key", "open_database",
           "tunable_kernels", "tune_kernels", "tuned"]

LOG = logging.getLogger(__name__)

#: Tile sizes tuning may pick (the default's candidates come first among them).
TUNE_WIDTHS = (*TILE_WIDTHS, 2)
TUNE_CHANNELS = (*TILE_CHANNELS, 1)
#: Widest vector tuning may pick. (A first run sampled a 111-wide row with 16
#: channels on SqueezeNet's stem: LLVM took minutes on that one candidate.)
MAX_TUNE_LANES = 64
#: Rules whose tile sizes are tuned.
TUNED_RULES = ("conv", "window", "matmul")
#: Timed runs per candidate (the median counts).
REPEAT = 5
#: Version of the database file's format and of the design space it indexes.
FORMAT = 1


def _tunable(candidates: list[int]) -> list[int]:
    return [c for c in candidates if c <= MAX_TUNE_LANES] or sorted(candidates)[:1]


def _sample(sch: s_tir.Schedule, candidates: list[int]):
    candidates = _tunable(candidates)
    if len(candidates) == 1:
        return candidates[0]
    return sch.sample_categorical(candidates, [1.0 / len(candidates)] * len(candidates))


TUNE_SPACE = Space(TUNE_WIDTHS, TUNE_CHANNELS, _sample)


def _space(sch: s_tir.Schedule) -> None:
    if apply_rules(sch, TUNE_SPACE) is None:
        raise s_tir.ScheduleError("no CPU rule fits this kernel")


def kernel_key(func: tirx.PrimFunc) -> str:
    """A digest of the kernel's TVMScript (structural hashes collide on shapes)."""
    return hashlib.sha256(func.script().encode()).hexdigest()[:24]


def replay_space(values: list[int]) -> Space:
    """The tuning space with its samples replaced by ``values``, in order."""
    it = iter(values)

    def choose(sch, candidates):
        candidates = _tunable(candidates)
        return candidates[0] if len(candidates) == 1 else next(it)

    return Space(TUNE_WIDTHS, TUNE_CHANNELS, choose)


# --------------------------------------------------------------------------- database


class TuneDatabase:
    """Per target, per kernel: the tuned decisions (tile sizes), the best time and
    how many candidates were measured. A JSON file; see the module docstring."""

    def __init__(self, path: str | Path, target: tvm.target.Target):
        self.path, self.target = Path(path), str(target)
        self.records: dict = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                LOG.warning("ignoring unreadable tuning database %s: %s", self.path, err)
                data = {}
            if data.get("format") == FORMAT and data.get("target") == self.target:
                self.records = data.get("kernels", {})

    def get(self, func: tirx.PrimFunc) -> dict | None:
        return self.records.get(kernel_key(func))

    def put(self, func: tirx.PrimFunc, values: list[int], seconds: float, trials: int,
            name: str) -> None:
        self.records[kernel_key(func)] = {"name": name, "values": list(values),
                                          "seconds": seconds, "trials": trials}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"format": FORMAT, "target": self.target,
                                      "kernels": self.records})

    def schedule(self, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        """``func`` with its tuned decisions replayed (``None``: not in the file)."""
        record = self.get(func)
        if record is None:
            return None
        sch = s_tir.Schedule(func)
        try:
            if apply_rules(sch, replay_space(record["values"])) is None:
                return None
        except (s_tir.ScheduleError, StopIteration, RuntimeError) as err:
            LOG.warning("tuned decisions no longer apply to %s: %s", record["name"], err)
            return None
        return sch.mod["main"]


def default_work_dir() -> Path:
    """``$MEMFLAT_TUNE_DIR``, else ``$XDG_CACHE_HOME/tvm_memflat/tune`` (``~/.cache``)."""
    if os.environ.get("MEMFLAT_TUNE_DIR"):
        return Path(os.environ["MEMFLAT_TUNE_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tvm_memflat" / "tune"


def open_database(target: tvm.target.Target, work_dir: str | Path | None = None
                  ) -> TuneDatabase:
    """The database file for ``target`` in ``work_dir`` (:func:`default_work_dir`)."""
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    root = Path(work_dir) if work_dir is not None else default_work_dir()
    return TuneDatabase(root / f"{target.kind.name}-{digest}.json", target)


# --------------------------------------------------------------------------- measuring


@derived_object
class _Done(ms.runner.PyRunnerFuture):
    def __init__(self, result):
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self):
        return self._result


@derived_object
class _InProcessBuilder(ms.builder.PyBuilder):
    """Builds each candidate here and keeps it in ``store`` under a made-up path."""

    def __init__(self, store: dict):
        super().__init__()
        self.store, self.count = store, 0

    def build(self, build_inputs):
        results = []
        for item in build_inputs:
            try:
                mod = tvm.IRModule({gv: f.with_attr("global_symbol", gv.name_hint)
                                    for gv, f in item.mod.functions_items()})
                lib = tvm.tirx.build(mod, item.target)
            except Exception as err:  # noqa: BLE001 - a failed candidate is a result
                results.append(ms.builder.BuilderResult(None, str(err)))
                continue
            self.count += 1
            key = f"memory:{self.count}"
            self.store[key] = lib
            results.append(ms.builder.BuilderResult(key, None))
        return results


@derived_object
class _InProcessRunner(ms.runner.PyRunner):
    """Times each built candidate here: median of ``REPEAT`` runs on random inputs."""

    def __init__(self, store: dict):
        super().__init__()
        self.store = store

    def run(self, runner_inputs):
        futures = []
        dev = tvm.cpu()
        rng = np.random.default_rng(0)
        for item in runner_inputs:
            lib = self.store.pop(item.artifact_path)
            try:
                args = []
                for info in item.args_info:
                    shape, dtype = [int(d) for d in info.shape], str(info.dtype)
                    data = rng.standard_normal(shape) if "float" in dtype else \
                        rng.integers(-8, 8, shape)
                    args.append(tvm.runtime.tensor(data.astype(dtype), dev))
                timer = lib.time_evaluator("main", dev, number=1, repeat=REPEAT)
                secs = list(timer(*args).results)
                futures.append(_Done(ms.runner.RunnerResult(secs, None)))
            except Exception as err:  # noqa: BLE001 - a failed candidate is a result
                futures.append(_Done(ms.runner.RunnerResult(None, str(err))))
        return futures


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """One line per batch of measurements: trials so far, of the budget."""

    def __init__(self, total: int, names: list[str], stream):
        super().__init__()
        self.total, self.names, self.done, self.stream = total, names, 0, stream
        self.start = time.perf_counter()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results):
        self.done += len(measure_candidates)
        errors = [r.error_msg for r in (*builder_results, *runner_results) if r.error_msg]
        if errors:
            LOG.warning("%d of %d candidates failed, e.g.: %s", len(errors),
                        len(measure_candidates), errors[0].splitlines()[-1][:300])
        print(f"  tuning: {self.done}/{self.total} trials, "
              f"{time.perf_counter() - self.start:.0f} s ({self.names[task_id]})",
              file=self.stream, flush=True)


# --------------------------------------------------------------------------- tuning


@dataclass(frozen=True)
class TuneSummary:
    """What :func:`tune_kernels` did."""

    path: str
    kernels: int            # distinct tunable kernels
    tuned_before: int       # of them, already in the database
    trials_requested: int
    trials_run: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def tunable_kernels(fused: tvm.IRModule) -> list[tuple[str, tirx.PrimFunc, int]]:
    """(name, unscheduled kernel, calls from ``main``) for each kernel of ``fused`` (as
    :func:`~.pipeline.fused_kernels` gives them) whose rule has tile sizes."""
    calls: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call):
            for callee in (expr.op, *expr.args):
                if isinstance(callee, tvm.ir.GlobalVar):
                    calls[callee.name_hint] += 1

    relax.analysis.post_order_visit(fused["main"], visit)
    return [(gv.name_hint, func, max(1, calls[gv.name_hint]))
            for gv, func in fused.functions_items()
            if isinstance(func, tirx.PrimFunc) and schedule_kernel(func).rule in TUNED_RULES]


def _decisions(sch: s_tir.Schedule) -> list[int]:
    """The values the sampled instructions of ``sch``'s trace took, in order."""
    trace = sch.trace
    values = []
    for inst in trace.insts:
        if inst.kind.name == "SampleCategorical":
            index = int(trace.decisions[inst])
            values.append(int(inst.attrs[0][index]))
    return values


def tune_kernels(fused: tvm.IRModule, target: tvm.target.Target, trials: int,
                 database: TuneDatabase, seed: int = 0,
                 progress=sys.stderr) -> TuneSummary:
    """Tune the kernels of ``fused`` (:func:`tunable_kernels`) not yet in ``database``
    with what is left of ``trials`` once the trials of those already in it are
    counted; saves the file and returns what was done."""
    kernels = tunable_kernels(fused)
    done = [k for k in kernels if database.get(k[1]) is not None]
    todo = [k for k in kernels if database.get(k[1]) is None]
    spent = sum(database.get(func)["trials"] for _, func, _ in done)
    remaining = max(0, trials - spent)
    start = time.perf_counter()
    run = 0
    if todo and remaining:
        per_task = max(1, math.ceil(remaining / len(todo)))
        if progress is not None:
            print(f"tuning {len(todo)} kernels ({len(done)} already tuned) for {target}: "
                  f"{remaining} trials -> {database.path}", file=progress, flush=True)
        store: dict = {}
        memory = ms.database.MemoryDatabase()
        names = [name for name, _, _ in todo]
        tasks = [ms.TuneContext(
            mod=tvm.IRModule({"main": func}), target=target,
            space_generator=ms.space_generator.ScheduleFn(
                _space, sch_rules=[], postprocs=[], mutator_probs={}),
            search_strategy=ms.search_strategy.ReplayFunc(), task_name=name,
            rand_state=seed + i, num_threads=1) for i, (name, func, _) in enumerate(todo)]
        callbacks = [ms.measure_callback.AddToDatabase()]
        if progress is not None:
            callbacks.append(_Progress(remaining, names, progress))
        ms.tune_tasks(tasks=tasks, task_weights=[float(c) for _, _, c in todo],
                      work_dir=str(database.path.parent), max_trials_global=remaining,
                      max_trials_per_task=per_task, num_trials_per_iter=min(8, per_task),
                      builder=_InProcessBuilder(store), runner=_InProcessRunner(store),
                      database=memory, cost_model="random", measure_callbacks=callbacks,
                      task_scheduler="round-robin")
        for name, func, _ in todo:
            mod = tvm.IRModule({"main": func})
            if not memory.has_workload(mod):
                continue
            records = memory.get_top_k(memory.commit_workload(mod), 1 << 20)
            if not records:
                continue
            best = records[0]
            sch = s_tir.Schedule(func)
            best.trace.apply_to_schedule(sch, remove_postproc=False)
            secs = [float(s) for s in best.run_secs]
            database.put(func, _decisions(sch), float(np.median(secs)), len(records), name)
            run += len(records)
        database.save()
    return TuneSummary(str(database.path), len(kernels), len(done), trials, run,
                       round(time.perf_counter() - start, 1))
