"""refine_path: finer tiles on a finished path's regions, judged on the real module."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.transform.flatten_memory_peaks import RoundOptions, replay
from tvm_memflat.transform.refine_path import finer_counts, more_strips, refine_path
from tvm_memflat.transform.regions import find_regions
from tvm_memflat.transform.rewrite_step import RewriteStep

from . import graphs

STREAM = ("input", "output")


def test_finer_counts_are_the_rounds_counts_above_the_current_one():
    assert finer_counts(14, 8, 3) == [14]  # 16 and 32 clamp to the 14 rows
    assert finer_counts(56, 8, 3) == [16, 32, 56]
    assert finer_counts(28, 14, 30, max_layers=512) == [16]  # 28 tiles x 30 layers > 512
    assert finer_counts(28, 14, 30, strips=2) == [16, 28]  # within REFINE_MAX_LAYERS
    assert finer_counts(7, 7, 1) == []
    assert finer_counts(4, 1, 200, max_layers=10) == [2]  # two tiles are always allowed


def test_more_strips_are_the_counts_above_within_the_width_and_the_cap():
    assert more_strips(64, 18, 2, 10) == [3, 4, 6, 8]
    assert more_strips(5, 18, 2, 10) == [3, 4]  # at most one column per strip
    assert more_strips(64, 28, 1, 20, max_layers=2048) == [2, 3]  # 28 x 4 x 20 > 2048
    assert more_strips(64, 4, 8, 1) == []


def _chain_path(halo):
    mod = graphs.chain(8, (1, 4, 32, 8))
    region = max(find_regions(mod["main"]), key=lambda r: len(r.vars))
    return mod, RewriteStep.tile(region.key[0], len(region.vars), 2, halo)


def _device_bytes(m):
    return predict_device_bytes(m, input="stream", output="stream").total_bytes


def test_refine_raises_a_coarse_tiling_and_the_build_shows_it():
    mod, step = _chain_path("cache")
    coarse = replay(mod, [step])
    before = _device_bytes(coarse)
    base = profile(mod, with_tvm=False)
    opts = RoundOptions(base.macs * 1.3, in_place_concat=True, stream=STREAM)
    r = refine_path(mod, [step], before, profile(coarse, with_tvm=False).macs, opts,
                    _device_bytes)
    assert r.changed == (0,) and r.path[0].parts > step.parts and r.bytes < before
    # the number is the rebuilt path's, and the build allocates it; outputs are exact
    again = replay(mod, r.path)
    assert _device_bytes(again) == r.bytes
    assert profile(again, with_tvm=False).macs == r.macs <= opts.mac_limit
    x = np.random.default_rng(0).standard_normal((1, 4, 32, 8)).astype("float32")
    _, _, ref = build_and_measure(mod, [x], input="stream", output="stream")
    _, alloc, got = build_and_measure(r.module, [x], input="stream", output="stream")
    assert alloc.device_bytes == r.bytes
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


def test_refine_never_goes_over_the_mac_limit():
    mod, step = _chain_path("recompute")
    coarse = replay(mod, [step])
    macs = profile(coarse, with_tvm=False).macs
    # recomputed halos: every finer count adds MACs, and the limit is the path's own
    opts = RoundOptions(macs, in_place_concat=True, stream=STREAM)
    before = _device_bytes(coarse)
    r = refine_path(mod, [step], before, macs, opts, _device_bytes)
    assert r.changed == () and r.path == (step,) and r.bytes == before and r.module is None
    assert r.tried == 2  # each chain's first count (tiles, strips) went over: no more


def test_refine_with_the_modelled_peak_and_json_steps():
    mod, step = _chain_path("cache")
    coarse = profile(replay(mod, [step]), with_tvm=False)
    opts = RoundOptions(coarse.macs, in_place_concat=False)
    r = refine_path(mod, [step.to_json()], coarse.peak_bytes, coarse.macs, opts, None,
                    max_sweeps=1)
    assert r.bytes == profile(replay(mod, r.path), with_tvm=False).peak_bytes
    assert r.bytes <= coarse.peak_bytes


def test_refine_stops_at_the_deadline():
    mod, step = _chain_path("cache")
    r = refine_path(mod, [step], 10**9, 10**9, RoundOptions(10**12), None, deadline=0.0)
    assert r.tried == 0 and r.path == (step,)


@pytest.mark.parametrize("bad", [[{"kind": "tile", "output": "nope", "ops": 3, "parts": 2,
                                   "halo": "cache", "axis": "H"}]])
def test_refine_of_a_path_that_names_nothing_is_a_clear_error(bad):
    from tvm_memflat.errors import MemflatError

    mod, _ = _chain_path("cache")
    with pytest.raises(MemflatError, match="no such region"):
        refine_path(mod, bad, 1, 1, RoundOptions(10**12), None)


def test_search_front_refines_its_lowest_points():
    from tvm_memflat.transform.search_front import search_front

    mod = graphs.chain(8, (1, 4, 32, 8))
    kw = dict(max_mac_overhead=0.30, beam=2, branch=2, max_depth=2, tile_counts=(2,))
    plain = search_front(mod, refine=False, **kw)
    refined = search_front(mod, **kw)
    assert refined.best_within(0.30).bytes < plain.best_within(0.30).bytes
    best = refined.best_within(0.30)
    # only the counts changed, the decisions say so, and the point replays to its number
    assert [s.key for s in best.path] == [s.key for s in plain.best_within(0.30).path]
    assert [d.tiles for d in best.decisions] == [s.parts for s in best.path]
    again = profile(replay(mod, best.path), with_tvm=False)
    assert (again.peak_bytes, again.macs) == (best.bytes, best.macs)


def test_a_point_refined_in_vain_under_a_tight_tier_is_refined_under_a_looser_one():
    from tvm_memflat.transform.search_front import search_front

    mod = graphs.chain(8, (1, 4, 32, 8))
    kw = dict(max_mac_overhead=0.30, beam=2, branch=2, max_depth=1, tile_counts=(2,),
              halo="recompute", w_tiles=False, patches=False, splits=False)
    plain = search_front(mod, refine=False, **kw)
    refined = search_front(mod, **kw)
    tight = plain.best_within(0.05)
    # recomputed halos: nothing finer fits the 5 % tier, so that point stays ...
    assert refined.best_within(0.05).bytes == tight.bytes and tight.path
    # ... but the same point with more strips pays within 30 %
    best = refined.best_within(0.30)
    assert best.bytes < plain.best_within(0.30).bytes
    assert best.macs > refined.base.macs * 1.10 and best.path[0].strips > 1
    # the decisions describe the refined path
    assert [(d.tiles, d.strips) for d in best.decisions] == [(s.parts, s.strips)
                                                             for s in best.path]
    assert "W-strips" in best.decisions[0].describe


@pytest.mark.parametrize("depth", [2, 3])
def test_the_search_goes_on_from_refined_points_and_never_ends_higher(depth, monkeypatch):
    import tvm_memflat.transform.search_front as sf

    mod = graphs.chain(16, (1, 4, 64, 16))
    kw = dict(max_mac_overhead=0.30, beam=2, branch=2, max_depth=depth, tile_counts=(2,))
    monkeypatch.setattr(sf, "REFINE_ROUNDS", 0)
    once = sf.search_front(mod, **kw)
    monkeypatch.setattr(sf, "REFINE_ROUNDS", 2)
    said: list[str] = []
    again = sf.search_front(mod, progress=said.append, **kw)
    refines = [m for m in said if m.startswith("refine:")]
    assert refines and any(m.startswith("searching on from") for m in said)
    for tier in (0.05, 0.10, 0.30):
        assert again.best_within(tier).bytes <= once.best_within(tier).bytes
    for p in again.points:  # every point is at most max_depth deep and replays to its number
        assert len(p.path) <= depth
        prof = profile(replay(mod, p.path), with_tvm=False)
        assert (prof.peak_bytes, prof.macs) == (p.bytes, p.macs)
