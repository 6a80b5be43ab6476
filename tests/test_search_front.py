"""The front search: Pareto bookkeeping, replayable points, brute force, device bytes.

Brute force: on graphs small enough to enumerate, every sequence of up to two exact
rewrites (every region ending anywhere, every tile count of :data:`COUNTS`, both
halo modes, H and W, every channel split) is applied and profiled, independently of
the search's region model and pruning; the search must reach the same lowest peak
within the MAC limit.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tvm import relax

from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.transform.flatten_memory_peaks import flatten_peaks, replay
from tvm_memflat.transform.regions import find_regions
from tvm_memflat.transform.search_front import FrontPoint, pareto, search_front
from tvm_memflat.transform.split_channels import SplitRefused, group_families, split_channels
from tvm_memflat.transform.tile_region import tile_region
from tvm_memflat.transform.tiling import AXES, HALO_MODES, TilingRefused

from . import graphs

COUNTS = (2, 4)


def _p(nbytes, macs, n=0):
    return FrontPoint(nbytes, macs, tuple(range(n)), ())


def test_pareto_keeps_the_points_nothing_beats():
    pts = [_p(100, 10), _p(80, 12), _p(90, 13), _p(60, 20), _p(60, 25), _p(100, 10, 2)]
    front = pareto(pts)
    assert [(p.bytes, p.macs) for p in front] == [(100, 10), (80, 12), (60, 20)]
    assert front[0].path == ()  # a tie goes to the shorter path


def _stem_net(h=16):
    """conv 3->8, conv 8->16, maxpool, conv 16->8: a peak the first rewrite moves."""
    def body(bb, x, rng):
        y = graphs.conv(bb, x, rng, 8, name="c1")
        y = graphs.conv(bb, y, rng, 16, name="c2")
        y = bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2), "pool")
        return graphs.conv(bb, y, rng, 8, name="c3")
    return graphs._net(body, in_shape=(1, 3, h, h))


def _one_step_children(mod, mac_limit):
    """Every exact rewrite of ``mod`` (no search, no model): (module, profile).
    Tilings in one strip and in patches of two strips."""
    out = []
    for region in find_regions(mod["main"]):
        for axis in AXES.values():
            for halo in HALO_MODES:
                for tiles, strips in itertools.product(COUNTS, (1, 2)):
                    try:
                        cand = tile_region(mod, region, tiles, halo, axis, strips)
                    except (TilingRefused, ValueError):
                        continue
                    p = profile(cand, with_tvm=False)
                    if p.macs <= mac_limit:
                        out.append((cand, p))
    for family in group_families(mod["main"]):
        for parts in (2, 4):
            try:
                cand = split_channels(mod, family, parts)
            except SplitRefused:
                continue
            p = profile(cand, with_tvm=False)
            if p.macs <= mac_limit:
                out.append((cand, p))
    return out


def _brute_force_best(mod, mac_limit, widen=3):
    """The lowest peak of every one-rewrite module, and of every two-rewrite module
    that starts from one of the ``widen`` best one-rewrite modules."""
    best = profile(mod, with_tvm=False).peak_bytes
    first = sorted(_one_step_children(mod, mac_limit), key=lambda c: c[1].peak_bytes)
    for _, p in first:
        best = min(best, p.peak_bytes)
    for cand, _ in first[:widen]:
        for _, p in _one_step_children(cand, mac_limit):
            best = min(best, p.peak_bytes)
    return best


@pytest.mark.parametrize("make", [lambda: graphs.chain(8, (1, 4, 12, 8)), lambda: _stem_net(12)])
def test_search_matches_brute_force_on_small_graphs(make):
    mod = make()
    base = profile(mod, with_tvm=False)
    limit = 0.30
    brute = _brute_force_best(mod, base.macs * (1 + limit))
    front = search_front(mod, max_mac_overhead=limit, beam=4, branch=4, max_depth=3,
                         tile_counts=COUNTS)
    best = front.best_within(limit)
    assert best.bytes <= brute, (best.bytes, brute)
    # the front is Pareto and every point replays to the module it describes
    assert list(front.points) == pareto(front.points)
    for point in front.points:
        again = profile(replay(mod, point.path), with_tvm=False)
        assert (again.peak_bytes, again.macs) == (point.bytes, point.macs)


def test_front_search_is_at_least_as_good_as_greedy():
    mod = _stem_net(24)
    greedy, decisions = flatten_peaks(mod, max_mac_overhead=0.05, tile_counts=COUNTS)
    front = search_front(mod, max_mac_overhead=0.05, tile_counts=COUNTS)
    assert front.best_within(0.05).bytes <= profile(greedy, with_tvm=False).peak_bytes
    assert front.base.path == () and front.explored > 0
    assert front.to_json()["points"][0]["mac_overhead_pct"] >= 0


@pytest.mark.parametrize("convention", [("sram", "sram"), ("stream", "stream")])
def test_predicted_device_bytes_of_front_points_are_measured(convention):
    inp, out = convention
    mod = graphs.chain(8, (1, 4, 32, 8))

    def evaluate(m):
        return predict_device_bytes(m, input=inp, output=out).total_bytes

    front = search_front(mod, max_mac_overhead=0.30, beam=2, branch=2, max_depth=2,
                         tile_counts=COUNTS, evaluate=evaluate)
    assert len(front.points) >= 1 and front.best_within(0.30).bytes < front.base.bytes
    x = np.random.default_rng(0).standard_normal((1, 4, 32, 8)).astype("float32")
    _, ref_alloc, ref = build_and_measure(mod, [x], input=inp, output=out)
    for point in front.points:
        _, alloc, got = build_and_measure(point.module, [x], input=inp, output=out)
        assert alloc.device_bytes == point.bytes  # predicted == measured, exactly
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


def test_profile_leaves_streamed_ends_out():
    mod = graphs.chain()  # x 1024 B, c1..c3 2048 B, y 512 B (see graphs.chain)
    sram = profile(mod, with_tvm=False)
    streamed = profile(mod, with_tvm=False, stream=("input", "output"))
    assert sram.live_bytes[0] - streamed.live_bytes[0] == 1024  # x at layer 0
    assert sram.live_bytes[-1] - streamed.live_bytes[-1] == 512  # y at the last layer
    assert all(not t.is_input for t in streamed.live_at(0))
    with pytest.raises(ValueError, match="stream"):
        profile(mod, with_tvm=False, stream=("weights",))


def test_pass_with_the_front_search_is_exact_and_not_above_greedy():
    import tvm

    from tvm_memflat import FlattenMemoryPeaks
    from tvm_memflat.errors import MemflatError

    mod = graphs.chain(8, (1, 4, 32, 8))
    greedy = FlattenMemoryPeaks(input="stream")
    front = FlattenMemoryPeaks(input="stream", search="front")
    g, f = greedy(mod), front(mod)
    assert front.front is not None and front.decisions
    assert front.device_bytes(f) <= greedy.device_bytes(g) < greedy.device_bytes(mod)
    x = np.random.default_rng(1).standard_normal((1, 4, 32, 8)).astype("float32")
    _, _, ref = build_and_measure(mod, [x], input="stream")
    _, alloc, got = build_and_measure(f, [x], input="stream")
    assert alloc.device_bytes == front.device_bytes(f)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(MemflatError, match="search must be"):
        FlattenMemoryPeaks(search="exhaustive")
    assert isinstance(tvm.transform.Sequential([front]), tvm.transform.Pass)
