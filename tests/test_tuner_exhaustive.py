"""The tuner's choice against an exhaustive search of every rewrite path.

The tuner (:func:`tvm_memflat.tuner.tuner.tune`) walks one greedy path of the pass
and costs a shortlist of the points it saw. Here, on a graph small enough
(``graphs.chain()``: three 3x3 convs and a max pool on 1x4x8x8), every path is
enumerated: every sequence of rewrites the search could accept, up to the tuner's
number of rounds, each step any region of :func:`find_regions` in any tile count
of the pass and either halo mode (along H; along W too where a region does not
mirror H), or any channel split of :func:`group_families`. A step is accepted (and
searched on from) when, as in :func:`flatten_peaks`, it lowers the modelled peak
and keeps the MACs within the tuner's cap; every path whose steps but the last
were accepted is a point. Each end module is costed as the tuner costs its points
(its own ``_Coster``: modelled peak, lowered schedule, SRAM plan and cycle model of
the spec), and the tuner's objective is applied to the whole set: within the
latency budget, the least latency among points that fit the spec's SRAM, else the
least SRAM need. The tuner's choice must reach that optimum.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import tvm_ffi

from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.transform.flatten_memory_peaks import SPLIT_COUNTS, TILE_COUNTS, replay
from tvm_memflat.transform.regions import find_regions
from tvm_memflat.transform.split_channels import SplitRefused, group_families, split_channels
from tvm_memflat.transform.tile_region import tile_region
from tvm_memflat.transform.tiling import (
    AXES,
    HALO_MODES,
    TilingRefused,
    height,
    same_along_h_and_w,
)
from tvm_memflat.tuner import tuner as tuner_mod
from tvm_memflat.tuner.tuner import LatencyBudget, Point, tune

from . import graphs
from .test_tuner import _small_mcu


def _spec(sram: int):
    """``mcu_256k`` with ``sram`` bytes of SRAM. At 600 B the tilings fit only by
    spilling, so its DRAM is made writable (the shipped spec's is flash: read-only);
    at 256 B nothing fits."""
    spec = _small_mcu(sram)
    if sram >= 600 and hasattr(spec.dram, "writable"):
        spec = dataclasses.replace(spec, dram=dataclasses.replace(spec.dram, writable=True))
    return spec


def _mirrored(region) -> bool:
    """W-tiles of ``region`` would repeat its H-tiles (square, same windows along both)."""
    shape = [int(v) for v in region.source.ty.shape.values]
    return shape[2] == shape[3] and all(same_along_h_and_w(c) for c in region.calls)


def _rewrites(mod):
    """Every single rewrite of ``mod``: (label, new module)."""
    for region in find_regions(mod["main"]):
        for axis in ("H",) if _mirrored(region) else ("H", "W"):
            rows = height(region.sink, AXES[axis])
            for tiles in sorted({min(t, rows) for t in TILE_COUNTS} - {0, 1}):
                for halo in HALO_MODES:
                    try:
                        new = tile_region(mod, region, tiles, halo, AXES[axis])
                    except TilingRefused:
                        continue
                    yield f"{region.key} in {tiles} {axis}-tiles {halo}", new
    for family in group_families(mod["main"]):
        counts = ([len(family.part_bounds) - 1] if family.by_branch else
                  sorted({min(k, family.channels) for k in SPLIT_COUNTS} - {1}))
        for parts in counts:
            try:
                new = split_channels(mod, family, parts)
            except SplitRefused:
                continue
            yield f"{family.key} in {parts} channel slices", new


def _key(mod) -> int:
    # main only: the tuner searches the marked canonical module (a module attribute
    # the enumeration here does not add); the computation is what must match
    return int(tvm_ffi.structural_hash(mod["main"]))


def exhaustive_points(mod) -> dict:
    """{structural hash: (path of labels, module, profile)} for every point reachable by
    accepted steps (see the module docstring), the untiled module included."""
    base = profile(mod, with_tvm=False)
    mac_cap = base.macs * (1 + tuner_mod.SEARCH_MAC_OVERHEAD)
    found = {_key(mod): ((), mod, base)}
    frontier = [((), mod, base)]
    for _ in range(tuner_mod.SEARCH_ROUNDS):
        accepted = []
        for path, m, prof in frontier:
            for label, new in _rewrites(m):
                key = _key(new)
                if key in found:
                    continue  # another path reaches the same module
                p = profile(new, with_tvm=False)
                found[key] = ((*path, label), new, p)
                if p.peak_bytes < prof.peak_bytes and p.macs <= mac_cap:
                    accepted.append(((*path, label), new, p))
        if not accepted:
            break
        frontier = accepted
    return found


class _ModuleCoster(tuner_mod._Coster):
    """The tuner's own costing, on modules we hold (keyed by point path)."""

    def __init__(self, mod, spec, modules):
        super().__init__(mod, spec, tuner_mod.SpecCostModel(spec))
        self.modules = modules

    def module(self, point):
        return self.modules[point.path]


def _optimum(points, limit):
    """The tuner's objective over ``points``: (fits, the minimised pair)."""
    within = [p for p in points if p.latency <= limit * (1 + 1e-9)]
    fitting = [p for p in within if p.fits]
    if fitting:
        return True, min((p.latency, p.memory_bytes) for p in fitting)
    return False, min((p.memory_bytes, p.latency) for p in within)


@pytest.fixture(scope="module")
def space():
    mod = graphs.chain()
    t0 = time.perf_counter()
    found = exhaustive_points(mod)
    return mod, found, time.perf_counter() - t0


@pytest.fixture(scope="module")
def costed(space):
    """The exhaustive points costed on each SRAM size the tests use."""
    mod, found, _ = space
    modules = {path: m for path, m, _ in found.values()}
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        # lowering (and profiling) a module does not depend on the spec: do it once
        # per module for both SRAM sizes, through the tuner's own functions
        for name in ("lowered", "profile"):
            mp.setattr(tuner_mod, name, _memoized(getattr(tuner_mod, name)))
        for sram in (600, 256):
            spec = _spec(sram)
            coster = _ModuleCoster(mod, spec, modules)
            out[sram] = [coster.cost(Point(path, p.peak_bytes, p.macs))
                         for path, _, p in found.values()]
    return out


def _memoized(fn):
    memo = {}

    def call(mod, **kw):
        key = (_key(mod), tuple(sorted(kw.items())))
        if key not in memo:
            memo[key] = fn(mod, **kw)
        return memo[key]
    return call


def test_the_exhaustive_space_holds_every_point_the_tuner_searches(space):
    mod, found, _ = space
    assert len(found) > 20  # 43 modules, two rounds deep (2-9 s on 2 cores)
    for point in tuner_mod.search_points(mod):
        assert _key(replay(mod, point.path)) in found, point.path


# 600 B: some tilings fit the SRAM, spilling to DRAM (the tuner then wants the least
# latency among them). 256 B: nothing fits (it wants the least SRAM need).
CASES = [(600, "1.05x"), (600, "1.2x"), (600, "3x"), (256, "1.2x")]
# Found by this test (2026-12-01): with nothing fitting and room in the budget, the
# least SRAM need (960 B) is 'pool' in 2 H-tiles, then tile 0's conv+relu+pool in 2
# H-tiles (recomputed halos). The tuner's search sees that point, but the region model
# estimates its peak at 5120 B (its real modelled peak is 3840 B), so the (peak, MACs)
# shortlist drops it uncosted, and the tuner settles for 964 B.
SHORTLIST_MISSES = pytest.mark.xfail(
    strict=True, reason="the tuner's shortlist ranks by the region model's estimated "
    "peak and drops the point of least SRAM need (960 vs 964 B)")
CASES += [pytest.param(256, "1.5x", marks=SHORTLIST_MISSES),
          pytest.param(256, "3x", marks=SHORTLIST_MISSES)]


@pytest.mark.parametrize("sram, budget", CASES)
def test_the_tuner_reaches_the_exhaustive_optimum(space, costed, tmp_path, sram, budget):
    mod, found, _ = space
    points = costed[sram]
    baseline = next(p for p in points if p.path == ())
    new, result = tune(mod, spec=_spec(sram), latency_budget=budget, cache_dir=tmp_path,
                       use_cache=False, max_points=64)
    limit = LatencyBudget.parse(budget).limit_ms(baseline.latency)
    assert result.limit_ms == pytest.approx(limit, rel=1e-9)
    assert _key(new) in found  # the tuner's choice is a point of the exhaustive space
    fits, best = _optimum(points, limit)
    assert fits == (sram == 600)  # both branches of the objective are exercised
    chosen = result.chosen
    assert chosen.latency <= limit * (1 + 1e-9)
    assert chosen.fits == fits, (result.reason, best)
    got = (chosen.latency, chosen.memory_bytes) if fits else (chosen.memory_bytes, chosen.latency)
    assert got == pytest.approx(best, rel=1e-9), result.reason
