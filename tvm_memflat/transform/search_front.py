"""A beam search over rewrite sequences: the front of (device bytes, MACs).

The greedy rounds of :func:`~.flatten_memory_peaks.flatten_peaks` keep one module
and accept the first rewrite that lowers its peak; a choice that ties now may end
higher later (a region tiled too short leaves the next peak inside its tiles). This
search keeps several modules per depth instead:

* each state (a module reached by a sequence of exact rewrites) is expanded by the
  round of :func:`~.flatten_memory_peaks.round_candidates`: every candidate region,
  tile count, halo mode (cached and recomputed), axis (H and W) and channel split
  (inside tiles too) is estimated, and the best estimates are verified on the real
  module: the ``branch`` lowest peaks, and the lowest peak at each MAC tier (no
  extra MACs, 5 %, 10 %), so cheap points survive beside deep ones;
* a verified child is kept only if its number (``evaluate``: the device bytes the
  build will allocate) is below its parent's; modules reached twice (the same
  rewrites in another order) are expanded once;
* each depth keeps the greedy search's module (the first improvement, in rank
  order, of the first state), the Pareto-optimal children in (bytes, MACs), then the
  lowest bytes, up to ``beam`` states; so the search never ends above greedy
  (with ``branch`` at least :data:`~.flatten_memory_peaks.VERIFY_TRIES`);
* the lowest point within each MAC tier is then refined (:mod:`.refine_path`: finer
  tiles and more strips on its regions, where a later rewrite moved the peak into
  them);
* the front is the Pareto set of every state reached (and refined), the untiled
  module included.

Greedy is the special case ``beam=1``, ``branch=VERIFY_TRIES`` (without refining). The
pass's default point is :meth:`Front.best_within` the MAC limit (5 %).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import tvm
import tvm_ffi

from ..analysis.memory_profile import MemoryProfile, profile
from .flatten_memory_peaks import (
    TILE_COUNTS,
    Decision,
    RoundOptions,
    _halo_modes,
    decision_of,
    judge,
    round_candidates,
)
from .refine_path import refine_path
from .rewrite_step import RewriteStep

logger = logging.getLogger(__name__)

#: MAC overheads at which the lowest-peak candidate is always verified.
MAC_TIERS = (0.0, 0.05, 0.10)
#: Times the search goes on from what refinement found (each time, its new points are
#: refined in turn).
REFINE_ROUNDS = 2


@dataclass(frozen=True)
class FrontPoint:
    """One module the search reached: its number, its MACs, and how to rebuild it."""

    bytes: int                        # the search's number (device bytes predicted)
    macs: int
    path: tuple[RewriteStep, ...]     # replay steps (:func:`~.flatten_memory_peaks.replay`)
    decisions: tuple[Decision, ...]
    module: tvm.IRModule = field(compare=False, repr=False, default=None)
    profile: MemoryProfile = field(compare=False, repr=False, default=None)

    def mac_overhead(self, base_macs: int) -> float:
        return self.macs / base_macs - 1

    def to_json(self, base_macs: int | None = None) -> dict:
        out = {"bytes": self.bytes, "macs": self.macs,
               "path": [s.to_json() for s in self.path],
               "describe": [d.describe for d in self.decisions]}
        if base_macs:
            out["mac_overhead_pct"] = round(100 * self.mac_overhead(base_macs), 3)
        return out


def pareto(points) -> list[FrontPoint]:
    """The points no other point beats on both bytes and MACs (ties: the shorter
    path), sorted by MACs. Pure."""
    ranked = sorted(points, key=lambda p: (p.macs, p.bytes, len(p.path)))
    out: list[FrontPoint] = []
    for p in ranked:
        if not out or p.bytes < out[-1].bytes:
            out.append(p)
    return out


@dataclass(frozen=True)
class Front:
    """The result of :func:`search_front`."""

    base: FrontPoint
    points: tuple[FrontPoint, ...]    # Pareto-optimal, by increasing MACs
    explored: int                     # states verified (modules built and evaluated)
    expanded: int                     # states whose candidates were estimated
    search_s: float
    max_mac_overhead: float
    stop: str = ""

    def best_within(self, max_mac_overhead: float) -> FrontPoint:
        """The lowest bytes at MACs within ``max_mac_overhead`` of the base (the base
        itself when nothing within it is lower)."""
        limit = self.base.macs * (1 + max_mac_overhead)
        inside = [p for p in self.points if p.macs <= limit]
        return min(inside, key=lambda p: (p.bytes, p.macs, len(p.path)), default=self.base)

    def to_json(self) -> dict:
        return {"base": self.base.to_json(self.base.macs),
                "points": [p.to_json(self.base.macs) for p in self.points],
                "explored": self.explored, "expanded": self.expanded,
                "search_s": round(self.search_s, 2),
                "max_mac_overhead_pct": round(100 * self.max_mac_overhead, 3),
                "stop": self.stop}


def _to_verify(ranked, base_macs: int, branch: int) -> list:
    """The ``branch`` best estimates, plus the best at each :data:`MAC_TIERS` tier."""
    picked = list(ranked[:branch])
    for tier in MAC_TIERS:
        best = next((e for e in ranked if e.macs <= base_macs * (1 + tier)), None)
        if best is not None and all(best is not p for p in picked):
            picked.append(best)
    return picked


def search_front(mod: tvm.IRModule, *, max_mac_overhead: float = 0.30, beam: int = 3,
                 branch: int = 3, max_depth: int = 8, halo: str = "auto",
                 splits: bool = True, w_tiles: bool = True, tile_counts=TILE_COUNTS,
                 evaluate=None, progress=None, time_budget_s: float | None = None,
                 stream: tuple[str, ...] = (), patches: bool = True,
                 refine: bool = True) -> Front:
    """Search rewrite sequences of ``mod`` for the (bytes, MACs) front (module docstring).

    Parameters
    ----------
    max_mac_overhead
        The front's MAC limit (0.30: 30 % more MACs than ``mod``).
    beam, branch
        States kept per depth; best estimates verified per state (plus the tiers').
    max_depth
        Most rewrites in a sequence.
    evaluate
        ``evaluate(mod) -> bytes``, the number to minimise (the pass gives the device
        bytes predicted from the build); default the modelled peak of ``profile``.
    progress
        Optional ``progress(message)``, once per depth.
    time_budget_s
        Stop expanding (keeping what was found) once the search has run this long.
    stream
        The convention's streamed ends, left out of the ranking profiles
        (:func:`~.flatten_memory_peaks.flatten_peaks`).
    refine
        After the search, raise the tile and strip counts of the lowest point's tilings
        within each MAC tier where that lowers the number (:func:`~.refine_path.refine_path`:
        a region tiled for an earlier peak can hold a later one), and add what it finds
        to the front; then search on from the refined points (their peaks moved) and
        refine what that finds, up to :data:`REFINE_ROUNDS` times.
    """
    t0 = time.perf_counter()
    ipc = evaluate is not None
    base_prof = profile(mod, with_tvm=False, in_place_concat=ipc, stream=stream)
    score = evaluate(mod) if evaluate is not None else base_prof.peak_bytes
    base = FrontPoint(score, base_prof.macs, (), (), mod, base_prof)
    mac_limit = base_prof.macs * (1 + max_mac_overhead)
    opts = RoundOptions(mac_limit, tuple(tile_counts), _halo_modes(halo), splits, w_tiles,
                        patches, ipc, tuple(stream))
    seen = {tvm_ffi.structural_hash(mod["main"])}
    reached, level = [base], [base]
    explored = expanded = 0
    refined_paths: set = set()
    for rounds in range(1 + (REFINE_ROUNDS if refine else 0)):
        run = _expand(level, reached, base, opts, evaluate, seen, beam, branch, max_depth,
                      t0, time_budget_s, progress)
        reached += run.found
        explored, expanded = explored + run.explored, expanded + run.expanded
        stop = run.stop
        if not refine or run.out_of_time:
            break
        found = _refined(mod, reached, base, opts, evaluate, max_mac_overhead, tile_counts,
                         None if time_budget_s is None else t0 + time_budget_s, progress,
                         refined_paths)
        reached += found
        if not found or rounds == REFINE_ROUNDS:
            break
        # A refined point has a new peak, which the search has not looked at: search on
        # from there (InceptionV3: the first stage's new tiles leave Mixed_6a the peak).
        seen.update(tvm_ffi.structural_hash(p.module["main"]) for p in found)
        level = _select(found, beam)
        if progress is not None:
            progress(f"searching on from {len(level)} refined point(s)")
    front = pareto(reached)
    logger.info("search_front: %d points, %d states explored, %s", len(front), explored, stop)
    return Front(base, tuple(front), explored, expanded, time.perf_counter() - t0,
                 max_mac_overhead, stop)


@dataclass(frozen=True)
class _Expansion:
    """What one run of the beam search (:func:`_expand`) reached."""

    found: tuple[FrontPoint, ...]  # every improving state, in the order found
    explored: int                  # children verified
    expanded: int                  # states expanded
    stop: str                      # why it stopped, in one line
    out_of_time: bool


def _expand(level: list[FrontPoint], reached: list[FrontPoint], base: FrontPoint,
            opts: RoundOptions, evaluate, seen: set, beam: int, branch: int,
            max_depth: int, t0: float, time_budget_s: float | None,
            progress) -> _Expansion:
    """The beam search from ``level`` until no kept state improves, ``max_depth``
    rewrites, or the time budget (``reached``: the points found before, for progress;
    ``seen``: the modules verified so far, updated)."""
    found: list[FrontPoint] = []
    explored = expanded = 0
    for _ in range(max_depth - max(len(s.path) for s in level)):
        children: list[FrontPoint] = []
        greedy = None  # the greedy search's next module: the first state's first improvement
        out_of_time = False
        for index, state in enumerate(level):
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                out_of_time = True
                break
            expanded += 1
            _, ranked = round_candidates(state.module, state.profile, opts)
            for e in _to_verify(ranked, base.macs, branch):
                child = _verify(e, state, seen, opts, evaluate)
                if child is None:
                    continue
                explored += 1
                if child.bytes < state.bytes:
                    children.append(child)
                    if index == 0 and greedy is None:
                        greedy = child
        found += children
        depth = max(len(s.path) for s in level) + 1
        level = _select(children, beam, greedy)
        if progress is not None:
            so_far = [*reached, *found]
            best = min(so_far, key=lambda s: s.bytes)
            progress(f"depth {depth}: {len(children)} new states, front "
                     f"{len(pareto(so_far))} points, lowest {best.bytes} B at "
                     f"{100 * (best.macs / base.macs - 1):.1f} % MACs "
                     f"({time.perf_counter() - t0:.0f} s)")
        if out_of_time:
            return _Expansion(tuple(found), explored, expanded,
                              f"time budget of {time_budget_s:.0f} s spent", True)
        if not level:
            return _Expansion(tuple(found), explored, expanded,
                              "no rewrite lowers any of the kept states further", False)
    return _Expansion(tuple(found), explored, expanded,
                      f"{max_depth} rewrites deep (the most it searches)", False)


def _refined(mod: tvm.IRModule, reached: list[FrontPoint], base: FrontPoint,
             opts: RoundOptions, evaluate, max_mac_overhead: float, tile_counts,
             deadline: float | None, progress, done: set | None = None) -> list[FrontPoint]:
    """The lowest point within each MAC tier (:data:`MAC_TIERS` and the search's
    limit, ascending) after :func:`~.refine_path.refine_path` under that tier's limit,
    where it lowered the number. A point refined in vain under a tight limit is
    refined again under a looser one: more strips can pay only above the tight one.
    ``done`` holds the (path, limit) pairs refined already (skipped; updated)."""
    out: list[FrontPoint] = []
    done = set() if done is None else done
    for tier in sorted({t for t in MAC_TIERS if 0 < t < max_mac_overhead} | {max_mac_overhead}):
        limit = base.macs * (1 + tier)
        point = min((p for p in (*reached, *out) if p.macs <= limit and p.path),
                    key=lambda p: (p.bytes, p.macs, len(p.path)), default=None)
        if point is None or (point.path, tier) in done:
            continue
        done.add((point.path, tier))
        r = refine_path(mod, point.path, point.bytes, point.macs,
                        dataclasses.replace(opts, mac_limit=limit), evaluate,
                        tile_counts=tile_counts, deadline=deadline, progress=progress)
        if not r.changed:
            continue
        decisions = tuple(
            dataclasses.replace(d, tiles=r.path[i].parts, strips=r.path[i].strips,
                                peak_after=r.bytes, macs_after=r.macs)
            if i in r.changed else d
            for i, d in enumerate(point.decisions))
        out.append(FrontPoint(r.bytes, r.macs, r.path, decisions, r.module, r.profile))
    return out


def _verify(e, state: FrontPoint, seen: set, opts: RoundOptions,
            evaluate) -> FrontPoint | None:
    """``e`` applied to ``state``'s module and judged
    (:func:`~.flatten_memory_peaks.judge`), or None if that module was reached before
    or goes over the MAC limit."""
    cand = e.apply(state.module)
    key = tvm_ffi.structural_hash(cand["main"])
    if key in seen:
        return None
    seen.add(key)
    judged = judge(cand, opts, evaluate)
    if judged is None:
        return None
    p, score = judged
    decision = decision_of(e, state.bytes, score, p.macs)
    return FrontPoint(score, p.macs, (*state.path, e.step), (*state.decisions, decision),
                      cand, p)


def _select(children: list[FrontPoint], beam: int,
            greedy: FrontPoint | None = None) -> list[FrontPoint]:
    """The states to expand next: the greedy search's module first (so the search
    never ends above greedy), then the Pareto-optimal children, then the lowest bytes,
    at most ``beam``."""
    kept = [greedy] if greedy is not None else []
    for s in [*sorted(pareto(children), key=lambda s: s.bytes),
              *sorted(children, key=lambda s: (s.bytes, s.macs))]:
        if len(kept) >= beam:
            break
        if all(s is not k for k in kept):
            kept.append(s)
    return kept


__all__ = ["Front", "FrontPoint", "pareto", "search_front"]
