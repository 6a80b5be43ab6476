"""Pick the tiling that saves the most memory within a latency budget.

The search space is the pass's own decisions: which region to tile and in how
many tiles, round after round (:func:`~tvm_memflat.transform.flatten_memory_peaks.flatten_peaks`).
One greedy run with a generous MAC cap visits, in every round, every candidate
region and tile count; each becomes a *point* (the path of decisions that
builds it, its modelled peak and MACs). The points that are Pareto-optimal in
(peak, MACs) are then rebuilt, lowered with our pipeline and costed:

* with a spec, by the spec's cycle model on the SRAM plan
  (:class:`~tvm_memflat.hardware.cost_model.SpecCostModel`);
* without one, by the llvm model calibrated on this machine (:func:`calibrate_llvm`);
* with ``measure=True``, by real llvm runs as well (locally or over TVM RPC), and
  the budget is then judged on the measured times. The candidates are built by
  the ``build`` callable the caller gives (default: our pipeline on llvm,
  :func:`~tvm_memflat.planner.pipeline.compile_llvm`); the tuner does not import
  the targets, which sit above it.

The choice:

* latency budget (``1.1x`` of the untiled module, or absolute ``3.5ms``): the
  lowest peak whose latency is within it (an impossible budget is an error
  that names the best latency reachable);
* spec and no budget: the least latency that fits the spec's activation SRAM
  (or, when nothing fits, the lowest peak, reported as a shortfall);
* both: the least latency that fits within the budget, else the lowest peak
  within it.

Everything is deterministic for a given module, spec and options (measured
times aside), and results are cached on disk keyed by model, spec, options
and package version, so a second run replays the chosen decisions instead of
searching again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tvm
import tvm_ffi

from .._io import write_json_atomic
from ..analysis.memory_profile import profile
from ..errors import MemflatError
from ..frontend.canonicalize import marked_canonical
from ..hardware.call_tiling import plan_buffered
from ..hardware.cost_model import SpecCostModel
from ..planner.pipeline import compile_llvm
from ..planner.sram_plan import plan_for_spec
from ..transform.flatten_memory_peaks import flatten_peaks, replay
from ..transform.rewrite_step import RewriteStep
from ..transform.tiling import HALO_MODES
from .cost_model import calibrate_llvm, lowered
from .inputs import random_inputs

#: MAC cap of the search: wide, because the budget, not the cap, decides.
SEARCH_MAC_OVERHEAD = 0.30
SEARCH_ROUNDS = 12
#: At most this many points are lowered and costed (the rest are dominated in peak x MACs).
MAX_COSTED_POINTS = 16
#: Kernels timed to calibrate the llvm model (spread over MACs and bytes).
CALIBRATION_KERNELS = 12

_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(x|ms|us|s)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class LatencyBudget:
    """``1.1x`` (relative to the untiled module) or an absolute time (``3.5ms``)."""

    text: str
    relative: float | None = None
    absolute_ms: float | None = None

    @classmethod
    def parse(cls, text) -> LatencyBudget:
        if isinstance(text, LatencyBudget):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = f"{text}x"
        m = _BUDGET.match(str(text))
        if not m:
            raise MemflatError(f"latency budget {text!r} is not understood: use a factor "
                               "like 1.1x or a time like 3.5ms")
        value, unit = float(m.group(1)), m.group(2).lower()
        if value <= 0:
            raise MemflatError(f"latency budget must be positive, got {text!r}")
        if unit == "x":
            if value < 1.0:
                raise MemflatError(f"latency budget {text!r} is below the untiled module "
                                   "(1.0x); tiling never makes a network faster here")
            return cls(str(text), relative=value)
        scale = {"ms": 1.0, "us": 1e-3, "s": 1e3}[unit]
        return cls(str(text), absolute_ms=value * scale)

    def limit_ms(self, baseline_ms: float) -> float:
        return baseline_ms * self.relative if self.relative is not None else self.absolute_ms


@dataclass(frozen=True)
class Point:
    """One tiling of the module: the decisions that build it and what it costs."""

    path: tuple[RewriteStep, ...]  # the steps that build it from the untiled module
    peak_bytes: int
    macs: int
    latency_ms: float | None = None        # cost model
    measured_ms: float | None = None       # llvm run, when measured
    fits: bool | None = None               # spec SRAM plan fits
    sram_required_bytes: int | None = None  # lower bound of the spec's activation memory

    @property
    def memory_bytes(self) -> int:
        """What the search minimises: the spec's activation SRAM need, else the peak."""
        return self.sram_required_bytes if self.sram_required_bytes is not None \
            else self.peak_bytes

    @property
    def latency(self) -> float:
        """The latency the budget is judged on: measured when there is one."""
        return self.measured_ms if self.measured_ms is not None else self.latency_ms

    def to_dict(self) -> dict:
        return {"path": [s.to_json() for s in self.path], "peak_bytes": self.peak_bytes,
                "macs": self.macs, "latency_ms": _round(self.latency_ms),
                "measured_ms": _round(self.measured_ms), "fits": self.fits,
                "sram_required_bytes": self.sram_required_bytes}

    @classmethod
    def from_dict(cls, d: dict) -> Point:
        return cls(tuple(RewriteStep.from_json(s) for s in d["path"]), d["peak_bytes"],
                   d["macs"], d.get("latency_ms"), d.get("measured_ms"), d.get("fits"),
                   d.get("sram_required_bytes"))


def _round(x):
    return None if x is None else round(float(x), 4)


@dataclass(frozen=True)
class TuneResult:
    """The searched points, their Pareto frontier and the choice, with why."""

    model: str
    spec: str | None
    budget: str | None
    cost_model: str
    limit_ms: float | None
    baseline: Point
    points: tuple[Point, ...]
    chosen: Point
    reason: str
    tuner_s: float
    cached: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def pareto(self) -> tuple[Point, ...]:
        return pareto_front(self.points)

    def to_dict(self) -> dict:
        return {"model": self.model, "spec": self.spec, "latency_budget": self.budget,
                "cost_model": self.cost_model, "limit_ms": _round(self.limit_ms),
                "baseline": self.baseline.to_dict(), "chosen": self.chosen.to_dict(),
                "reason": self.reason, "tuner_s": round(self.tuner_s, 3),
                "cached": self.cached, "points": [p.to_dict() for p in self.points],
                "pareto": [p.to_dict() for p in self.pareto], **self.extra}

    @classmethod
    def from_dict(cls, d: dict, cached: bool = False) -> TuneResult:
        known = {"model", "spec", "latency_budget", "cost_model", "limit_ms", "baseline",
                 "chosen", "reason", "tuner_s", "cached", "points", "pareto"}
        return cls(d["model"], d["spec"], d["latency_budget"], d["cost_model"], d["limit_ms"],
                   Point.from_dict(d["baseline"]),
                   tuple(Point.from_dict(p) for p in d["points"]),
                   Point.from_dict(d["chosen"]), d["reason"], d["tuner_s"], cached,
                   {k: v for k, v in d.items() if k not in known})


def pareto_front(points, key=lambda p: (p.memory_bytes, p.latency)) -> tuple[Point, ...]:
    """Points no other point beats in both memory and latency, by increasing memory."""
    pts = sorted((p for p in points if key(p)[1] is not None), key=key)
    front, best = [], math.inf
    for p in pts:
        if key(p)[1] < best:
            front.append(p)
            best = key(p)[1]
    return tuple(front)


# ----------------------------------------------------------------------------- search


_SEARCH_MEMO: dict = {}


def search_points(mod: tvm.IRModule, *, max_mac_overhead: float = SEARCH_MAC_OVERHEAD,
                  max_rounds: int = SEARCH_ROUNDS, halo: str = "auto",
                  progress=None) -> list[Point]:
    """Every tiling the greedy search looks at, as points (peaks estimated, MACs exact).

    ``halo="auto"`` searches :data:`SEARCH_HALO` and adds the pass's default rewrite
    (any halo mode) as a point; ``"recompute"`` or ``"cache"`` restrict both to that
    mode. The search does not depend on the spec or the budget, so it is remembered
    per module for the rest of the process (tuning one net for several specs).
    """
    if halo not in (*HALO_MODES, "auto"):
        raise MemflatError(f"halo must be recompute, cache or auto, got {halo!r}")
    key = (int(tvm_ffi.structural_hash(mod)), max_mac_overhead, max_rounds, halo)
    if key not in _SEARCH_MEMO:
        _SEARCH_MEMO.clear()  # keep one module's points: they hold no IR, but stay small
        _SEARCH_MEMO[key] = _search(mod, max_mac_overhead, max_rounds, halo, progress)
    return list(_SEARCH_MEMO[key])


def _search(mod, max_mac_overhead, max_rounds, halo, progress) -> list[Point]:
    base = profile(mod, with_tvm=False)
    points = {(): Point((), base.peak_bytes, base.macs)}

    def on_round(path, evaluated):
        for e in evaluated:
            p = Point((*path, e.step), e.peak_bytes, e.macs)
            points.setdefault(p.path, p)

    flatten_peaks(mod, max_mac_overhead=max_mac_overhead, max_rounds=max_rounds,
                  halo=SEARCH_HALO if halo == "auto" else halo, splits=SEARCH_SPLITS,
                  w_tiles=SEARCH_W_TILES, patches=SEARCH_PATCHES, on_round=on_round,
                  progress=progress)
    # The pass's own default result (cached halos, channel splits) lies outside the
    # search above; as a point of its own, the tuner never chooses a higher peak
    # than FlattenMemoryPeaks() would whenever that result fits the budget.
    if progress is not None:
        progress("the pass's default rewrite")
    _, decisions = flatten_peaks(mod, halo=halo)
    if decisions:
        p = Point(tuple(d.step for d in decisions), decisions[-1].peak_after,
                  decisions[-1].macs_after)
        points[p.path] = p
    return list(points.values())


def _shortlist(points: list[Point], limit: int) -> list[Point]:
    """Pareto-optimal points in (peak, MACs), thinned evenly to ``limit``, baseline kept.

    The front is taken per halo mode of the last step: cached halos add no MACs, so
    on one joint front the single lowest cached peak would hide every other point,
    although a lower modelled peak is not always a smaller SRAM need on a spec.
    """
    def halo(p):  # a split has no halo: its own group
        last = p.path[-1] if p.path else None
        return "recompute" if last is None else last.halo or last.kind

    front = sorted({q for mode in {halo(p) for p in points}
                    for q in pareto_front([p for p in points if halo(p) == mode],
                                          key=lambda p: (p.peak_bytes, p.macs))},
                   key=lambda p: (p.peak_bytes, p.macs, p.path))
    if len(front) > limit:
        idx = sorted({round(i * (len(front) - 1) / (limit - 1)) for i in range(limit)})
        front = [front[i] for i in idx]
    if not any(p.path == () for p in front):
        front.append(next(p for p in points if p.path == ()))
    return front


class _Coster:
    """Rebuilds points from their paths, lowers them and applies the cost model."""

    def __init__(self, mod, spec, cost_model):
        self.mod, self.spec, self.cost_model = mod, spec, cost_model

    def module(self, point: Point) -> tvm.IRModule:
        return replay(self.mod, point.path)

    def cost(self, point: Point) -> Point:
        mod = self.module(point)
        peak = profile(mod, with_tvm=False).peak_bytes
        schedule = lowered(mod)
        fits = required = None
        if self.spec is not None and self.spec.machine_kind == "buffered":
            # every call is tiled to fit its buffers (a spec too small for some call's
            # smallest tile raises: bad input); what a point needs is its activation
            # tiles' high water
            plan = plan_buffered(schedule, self.spec)
            fits, required = True, plan.activation_high_water_bytes
            est = self.cost_model.estimate(schedule, plan)
        elif self.spec is not None:
            plan = plan_for_spec(schedule, self.spec)
            fits, required = plan.fits, plan.lower_bound_bytes
            est = self.cost_model.estimate(schedule, plan)  # the spec's cycle model
        else:
            est = self.cost_model.estimate(schedule)
        return Point(point.path, peak, point.macs, est.latency_ms, None, fits, required)


def _choose(points, baseline: Point, budget: LatencyBudget | None, spec):
    """(chosen point, limit in ms, reason)."""
    limit = budget.limit_ms(baseline.latency) if budget is not None else None
    pool = list(points)
    if limit is not None:
        within = [p for p in pool if p.latency <= limit * (1 + 1e-9)]
        if not within:
            best = min(pool, key=lambda p: p.latency)
            raise MemflatError(
                f"latency budget {budget.text} ({limit:.3f} ms) cannot be met: the best "
                f"latency reachable is {best.latency:.3f} ms (peak {best.memory_bytes} B)")
        pool = within
    if spec is not None:
        fitting = [p for p in pool if p.fits]
        if fitting:
            chosen = min(fitting, key=lambda p: (p.latency, p.memory_bytes))
            return chosen, limit, (f"fits {spec.name} at the least latency"
                                   + (f" within {budget.text}" if budget else ""))
    chosen = min(pool, key=lambda p: (p.memory_bytes, p.latency))
    if spec is not None:
        short = (chosen.sram_required_bytes or 0) - spec.activation_capacity_bytes
        return chosen, limit, (f"nothing fits {spec.name}: lowest peak"
                               + (f" within {budget.text}" if budget else "")
                               + f", short by {short} B of activation SRAM")
    return chosen, limit, (f"lowest peak within {budget.text}" if budget else "lowest peak")


# ----------------------------------------------------------------------------- cache


#: Halo mode the tuner searches. Cached halos need no extra MACs but many more,
#: smaller kernels (up to one sink row per tile), and on vta_like every one of them
#: pays the per-call overhead: searched with ``auto``, the README's MobileNetV2 run
#: found no tiling within 1.1x and kept the untiled module (2026-11-23). Until the
#: search offers cached halos with few tiles, the tuner searches recomputed ones, as
#: it did when docs/tuner.md was measured.
SEARCH_HALO = "recompute"

#: The tuner searches tilings only: with channel splits too, the README's MobileNetV2
#: run searched 4x longer (227 s) and its greedy path led to a worse point within
#: 1.1x (908 KiB instead of 651 KiB of int8 need), measured 2026-11-23.
SEARCH_SPLITS = False

#: The tuner's search offers no W-tiles (the pass's default point may hold some): with
#: them, the README's MobileNetV2 run searched 3.6 s longer (61.5 s in all, over the
#: 60 s tuning target) and chose the same 651 KiB; without, 56.2 s (2026-11-23).
SEARCH_W_TILES = False

#: Nor patches (tiles inside strips, :mod:`tvm_memflat.transform.tile_region`), for
#: the same reason: each round would estimate up to four grids more, on regions the
#: tuner then costs on the spec one by one. The pass's default point may hold some.
SEARCH_PATCHES = False

#: Bumped when the pass's search space or the cached format changes (v2: DAG regions
#: and cached halos; v3: W-tiles, regions or splits that cannot lower the peak are
#: not estimated, and the pass's default result is a point of the search; v4: paths
#: are lists of RewriteStep JSON objects, and ``halo`` restricts the search; v5:
#: the pass's default point may hold patches, and the ranking lays depthwise convs
#: in place; v6: llvm latencies are of the scheduled kernels, lowering/cpu_schedule;
#: v7: a buffered spec's plan counts the slice a concatenation's writer writes),
#: so results cached by an older search are not replayed as if current.
SEARCH_VERSION = 7


def default_cache_dir() -> Path:
    """``$MEMFLAT_CACHE_DIR``, else ``~/.cache/tvm_memflat``."""
    env = os.environ.get("MEMFLAT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tvm_memflat"


def _package_version() -> str:
    """The installed tvm_memflat's version (part of the cache key)."""
    try:
        return importlib.metadata.version("tvm_memflat")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def cache_key(mod: tvm.IRModule, spec, options: dict) -> str:
    """Key of a tuning run: the module's structure and weights, the spec, the options."""
    payload = json.dumps({"module": int(tvm_ffi.structural_hash(mod)),
                          "spec": spec.to_dict() if spec is not None else None,
                          "options": options, "version": _package_version(),
                          "search": SEARCH_VERSION, "search_halo": SEARCH_HALO,
                          "search_splits": SEARCH_SPLITS, "search_w_tiles": SEARCH_W_TILES},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------- entry point


def tune(mod: tvm.IRModule, *, spec=None, latency_budget=None, halo: str = "auto",
         model: str = "model", measure: bool = False, rpc=None, parallel: int = 1,
         seed: int = 0, cache_dir: str | Path | None = None, use_cache: bool = True,
         max_points: int = MAX_COSTED_POINTS,
         build: Callable[[tvm.IRModule, tvm.target.Target], object] | None = None,
         progress=None) -> tuple[tvm.IRModule, TuneResult]:
    """Search the pass's tilings of ``mod`` against a latency budget and/or a spec.

    Parameters
    ----------
    spec
        Accelerator spec (name, path or ``AcceleratorSpec``): cost = its cycle model,
        and the choice must fit its activation SRAM when anything does.
    latency_budget
        ``"1.1x"``, ``1.1``, ``"3.5ms"``, or a :class:`LatencyBudget`.
    halo
        ``"auto"`` (default): the search walks :data:`SEARCH_HALO` halos and the
        pass's default rewrite (any halo mode) is a point too; ``"recompute"`` or
        ``"cache"``: every tiling searched, and that default rewrite, use only that
        halo mode. Part of the cache key.
    measure
        Also time the costed points on llvm (locally, or through ``rpc``, an
        :class:`~tvm_memflat.tuner.measure.RPCConfig` or ``"key@host:port"``) and
        judge the budget on measured times.
    build
        ``build(mod, target) -> executable`` that compiles a candidate for
        measurement (``tvm_memflat.targets.build.build`` is one); default: our
        pipeline on llvm (:func:`~tvm_memflat.planner.pipeline.compile_llvm`, as
        ``tvm_memflat.build`` with its default options).
    cache_dir, use_cache
        Where results are kept (default :func:`default_cache_dir`); ``use_cache=False``
        always searches (and still stores the result).
    progress
        ``progress(message)`` for long searches.

    Returns
    -------
    (module, TuneResult)
        The chosen module (rebuilt from its decisions) and the search record.
    """
    from ..spec import AcceleratorSpec, load_spec

    if halo not in (*HALO_MODES, "auto"):
        raise MemflatError(f"halo must be recompute, cache or auto, got {halo!r}")
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    # the pass's canonical form, marked: one cache key whether the caller canonicalised
    mod = marked_canonical(mod)
    if spec is not None and not isinstance(spec, AcceleratorSpec):
        spec = load_spec(spec)
    budget = LatencyBudget.parse(latency_budget) if latency_budget is not None else None
    if rpc is not None and not measure:
        raise MemflatError("an RPC tracker was given without measure=True")
    if isinstance(rpc, str):
        from .measure import RPCConfig

        rpc = RPCConfig.parse(rpc)
    options = {"budget": budget.text if budget else None, "measure": measure,
               "rpc": str(rpc) if rpc else None,
               "rpc_target": rpc.target_json if rpc else None,
               "seed": seed, "max_points": max_points,
               "search_mac_overhead": SEARCH_MAC_OVERHEAD, "search_rounds": SEARCH_ROUNDS,
               "halo": halo}
    cache_file = None
    if cache_dir is not None or use_cache:
        cache_file = Path(cache_dir or default_cache_dir()) / "tuner" / (
            f"{model}-{cache_key(mod, spec, options)}.json")
    if use_cache and cache_file is not None and cache_file.is_file():
        try:
            result = TuneResult.from_dict(json.loads(cache_file.read_text()), cached=True)
        except (ValueError, KeyError, TypeError):
            result = None  # a damaged entry: search again and overwrite it
        if result is not None:
            say(f"tuner: cached result {cache_file}")
            return replay(mod, result.chosen.path), result

    say("tuner: searching tilings")
    points = search_points(mod, halo=halo, progress=lambda m: say(f"tuner: {m}"))
    short = _shortlist(points, max_points)
    say(f"tuner: {len(points)} tilings seen, costing {len(short)} on the (peak, MACs) front")
    if spec is not None:
        cost_model, cost_name = SpecCostModel(spec), f"spec:{spec.name}"
    else:
        say("tuner: calibrating the llvm cost model on this machine")
        cost_model = calibrate_llvm(mod, seed=seed, max_kernels=CALIBRATION_KERNELS)
        cost_name = f"llvm (fit error {cost_model.fit_error_pct:.1f} %)"
    coster = _Coster(mod, spec, cost_model)
    costed = []
    for i, p in enumerate(short):
        costed.append(coster.cost(p))
        say(f"tuner: costed {i + 1}/{len(short)}: peak {costed[-1].peak_bytes} B, "
            f"{costed[-1].latency_ms:.3f} ms")
    if measure:
        costed = _measure(coster, costed, rpc, parallel, seed, say, build or _build_llvm)
    baseline = next(p for p in costed if p.path == ())
    chosen, limit, reason = _choose(costed, baseline, budget, spec)
    result = TuneResult(model, spec.name if spec else None, budget.text if budget else None,
                        cost_name + (" + measured" if measure else ""), limit, baseline,
                        tuple(sorted(costed, key=lambda p: (p.memory_bytes, p.latency))),
                        chosen, reason, time.perf_counter() - t0)
    if cache_file is not None:
        write_json_atomic(cache_file, result.to_dict())
    say(f"tuner: chose peak {chosen.peak_bytes} B at {chosen.latency:.3f} ms ({reason})")
    return coster.module(chosen), result


def _build_llvm(mod: tvm.IRModule, target: tvm.target.Target):
    """What ``tvm_memflat.build(mod, target)`` compiles (its default counting puts the
    network input in the arena), without importing the targets."""
    return compile_llvm(mod, target, input_in_arena=True)


def _measure(coster, points, rpc, parallel, seed, say, build) -> list[Point]:
    from .measure import measure_many, rpc_build_target

    mods = [coster.module(p) for p in points]
    inputs = random_inputs(mods[0]["main"], seed=seed)
    target = rpc_build_target(rpc)  # the boards' target with RPC, else this host's llvm
    say(f"tuner: building {len(mods)} candidates for measurement")
    executables = [build(m, target) for m in mods]
    found = measure_many(executables, inputs, rpc=rpc, parallel=parallel,
                         progress=lambda i, n: say(f"tuner: measured {i}/{n}"))
    return [Point(p.path, p.peak_bytes, p.macs, p.latency_ms, m.median_ms, p.fits,
                  p.sram_required_bytes) for p, m in zip(points, found, strict=True)]
