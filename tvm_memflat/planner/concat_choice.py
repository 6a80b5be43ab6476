"""Which inputs of each concatenation are written in place, and which are copied.

Writing a concatenation's inputs straight into their slices (:mod:`~tvm_memflat.
lowering.concat_in_place`) removes the copy and the inputs, but keeps the whole output
live from the first input's producer on. That is what a tiled region wants for its
tiles, and a fire or inception module for its branches; it is not what a cached halo
wants: the halo rows a tile carries to the next one are made a whole tile before the
rest of the next tile's input, and writing them in place holds that whole input (five
rows where the halo is one) through the tile in between.

:func:`choose_concat_copies` decides from the lowered schedule without the in-place
rewrite, by the arithmetic of live ranges alone (the rewrite's ranges are computed,
not built): start with every input in place, then, while it lowers the peak of the
live bytes (or the number of steps at that peak), copy the input that lowers it most.
Only inputs whose in-place write keeps an output live at a peak step are tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..lowering.concat_in_place import ConcatSite
from .allocator import align_up
from .live_ranges import LoweredSchedule

#: at most this many inputs are turned into copies (each a pass over the candidates)
_MAX_COPIES = 64


@dataclass(frozen=True)
class _Site:
    step: int                 # the concat's step (where its copies run)
    output: str               # buffer names in the schedule
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class _Trial:
    """One more input copied than ``base``: the buffers whose ranges that changes
    (the sites containing it) and their ranges under the trial."""

    base: frozenset
    changed: frozenset
    memo: dict


class _Ranges:
    """Live ranges of the schedule's buffers once a choice of copies is applied.

    The ranges under one choice are memoised (the greedy loop asks the same choice
    about every candidate); a trial (one more input copied) recomputes only the
    buffers that choice changes (the sites that contain the input) and takes every
    other range from the memo."""

    def __init__(self, schedule: LoweredSchedule, sites: Sequence[_Site], alignment: int):
        self.start = {b.name: b.start for b in schedule.buffers}
        self.end = {b.name: b.end for b in schedule.buffers}
        self.size = {b.name: (align_up(b.size_bytes, alignment) if b.role == "intermediate"
                              else 0) for b in schedule.buffers}
        self.sites = {s.output: s for s in sites}
        self.parents: dict = {}  # input -> every site output it is an input of
        for s in sites:
            for i in s.inputs:
                self.parents.setdefault(i, []).append(s.output)
        # the one it is written into in place: the last (as the sites are listed)
        self.container = {i: outs[-1] for i, outs in self.parents.items()}
        self.n_steps = max((b.end for b in schedule.buffers), default=0) + 1
        self._memo: dict = {}  # copied -> {name: (begin, finish)}

    def _ranges(self, name: str, copied: frozenset, trial: _Trial | None = None
                ) -> tuple[int, int]:
        """(begin, finish) of ``name`` under ``copied``; in a ``trial``, the buffers it
        changes are computed into its own memo, the rest taken from its base's."""
        if trial is not None and name in trial.changed:
            cache = trial.memo
        else:
            cache = self._memo.setdefault(trial.base if trial is not None else copied, {})
        hit = cache.get(name)
        if hit is not None:
            return hit
        site = self.sites.get(name)
        if site is None:
            out = (self.start[name], self.end[name])
        else:
            kept = [self._ranges(i, copied, trial) for i in site.inputs if i not in copied]
            starts = [b for b, _ in kept]
            if starts and len(starts) < len(site.inputs):
                starts.append(site.step)
            out = (min(starts) if starts else self.start[name],
                   max([self.end[name]] + [f for _, f in kept]))
        cache[name] = out
        return out

    def begin(self, name: str, copied: frozenset) -> int:
        """Where buffer ``name`` starts: at its producer, or, written in place, at the
        first producer of its in-place inputs (a copied input's copy runs at the
        concat's step)."""
        return self._ranges(name, copied)[0]

    def finish(self, name: str, copied: frozenset) -> int:
        """Where buffer ``name`` ends: at its last use, or, with inputs written in place
        that other kernels read after the concat, at their last reader."""
        return self._ranges(name, copied)[1]

    def root(self, name: str, copied: frozenset) -> str:
        """The buffer ``name`` is written into (itself unless written in place). A
        concat with an input written in place is done in place, so the walk goes on
        through its output."""
        while name in self.container and name not in copied:
            name = self.container[name]
        return name

    def with_copy(self, live: np.ndarray, name: str, copied: frozenset) -> np.ndarray:
        """``live`` (the live bytes under ``copied``) once ``name`` is copied as well:
        only ``name`` (now a tensor of its own) and the buffer it was written into
        (whose range may shrink) change."""
        into = self.root(name, copied)
        # only the sites that contain ``name`` (directly or not) change their ranges
        changed, todo = set(), [name]
        while todo:
            for parent in self.parents.get(todo.pop(), ()):
                if parent not in changed:
                    changed.add(parent)
                    todo.append(parent)
        was = self._ranges(into, copied)
        now = self._ranges(into, copied | {name}, _Trial(copied, frozenset(changed), {}))
        new = live.copy()
        if self.size[into]:
            new[was[0]:was[1] + 1] -= self.size[into]
            new[now[0]:now[1] + 1] += self.size[into]
        if self.size[name]:
            begin, finish = self._ranges(name, copied)  # its own inputs are as they were
            new[begin:finish + 1] += self.size[name]
        return new

    def live(self, copied: frozenset) -> np.ndarray:
        diff = np.zeros(self.n_steps + 1, dtype=np.int64)
        for name, size in self.size.items():
            if size and self.root(name, copied) == name:
                begin, finish = self._ranges(name, copied)
                diff[begin] += size
                diff[finish + 1] -= size
        return np.cumsum(diff)[:-1]


def _score(live: np.ndarray) -> tuple[int, int]:
    peak = int(live.max(initial=0))
    return peak, int((live == peak).sum())


def choose_concat_copies(schedule: LoweredSchedule, sites: Sequence[ConcatSite],
                         alignment_bytes: int = 1) -> frozenset:
    """The concat inputs (root variables of ``sites``) to copy rather than write in
    place, for the schedule of the module *before* the in-place rewrite; empty when
    writing every input in place is as good.

    Sites may have inputs that other kernels read too (``shared_inputs``): written in
    place, the output stays live until those have read. Greedy from all in place can
    end above the old rule (a concat with such an input kept whole, all its inputs
    copied); that rule's choice is returned when it is lower."""
    name_of = {}
    for name, var in schedule.variables.items():
        name_of.setdefault(var, name)
    step_of = {b.name: b.start for b in schedule.buffers}
    own = []
    for s in sites:
        names = [name_of.get(v) for v in (s.output, *s.inputs)]
        if None in names:
            continue
        own.append(_Site(step_of[names[0]], names[0], tuple(names[1:])))
    if not own:
        return frozenset()
    ranges = _Ranges(schedule, own, alignment_bytes)
    # an input read by more than its producer and the concat is shared
    shared = {b.name for b in schedule.buffers if len(set(b.uses)) > 2}
    legacy = frozenset(i for s in own if shared.intersection(s.inputs) for i in s.inputs)
    legacy_score = _score(ranges.live(legacy))
    copied: frozenset = frozenset()
    live = ranges.live(copied)
    score = _score(live)
    for _ in range(_MAX_COPIES):
        peaks = np.flatnonzero(live == score[0])
        best = None
        for site in own:
            for name in site.inputs:
                if name in copied:
                    continue
                # only an input whose write keeps its output live at a peak step early
                first = ranges.begin(ranges.root(name, copied), copied)
                if not ((peaks >= first) & (peaks < site.step)).any():
                    continue
                trial_live = ranges.with_copy(live, name, copied)
                trial_score = _score(trial_live)
                if trial_score < (best[0] if best else score):
                    best = (trial_score, copied | {name}, trial_live)
        if best is None:
            break
        score, copied, live = best
    if legacy_score < score:
        copied = legacy
    return frozenset(var for var, name in name_of.items() if name in copied)
