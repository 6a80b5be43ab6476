"""The latency-budget tuner on small graphs (its choice against an exhaustive search of
every rewrite path: tests/test_tuner_exhaustive.py)."""

import dataclasses
import json

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat import FlattenMemoryPeaks
from tvm_memflat.errors import MemflatError
from tvm_memflat.spec import load_spec
from tvm_memflat.transform.rewrite_step import RewriteStep
from tvm_memflat.tuner.tuner import (
    LatencyBudget,
    Point,
    TuneResult,
    cache_key,
    pareto_front,
    tune,
)

from . import graphs
from .util import run_llvm


def _net(h=48):
    """conv 3->16, conv/s2 16->16, conv 16->16, maxpool: tiling pays, at a cost."""
    def body(bb, x, rng):
        y = graphs.conv(bb, x, rng, 16, name="c1")
        y = graphs.conv(bb, y, rng, 16, stride=2, name="c2")
        y = graphs.conv(bb, y, rng, 16, name="c3")
        return bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2), "pool")
    return graphs._net(body, in_shape=(1, 3, h, h))


@pytest.fixture(scope="module")
def mod():
    return _net()


def _small_mcu(size_bytes=4096):
    """mcu_256k with a tiny SRAM, so the untiled module does not fit."""
    spec = load_spec("mcu_256k")
    sram = dataclasses.replace(spec.memories[0], size_bytes=size_bytes)
    return dataclasses.replace(spec, name=f"mcu_{size_bytes}", memories=(sram,
                                                                         *spec.memories[1:]))


def _tune(mod, tmp_path, **kw):
    kw.setdefault("spec", _small_mcu())  # deterministic cycle model: no timing involved
    return tune(mod, cache_dir=tmp_path, use_cache=False, max_points=64, **kw)


def test_budget_parsing():
    assert LatencyBudget.parse("1.1x").relative == pytest.approx(1.1)
    assert LatencyBudget.parse(1.25).relative == pytest.approx(1.25)
    assert LatencyBudget.parse("3.5ms").absolute_ms == pytest.approx(3.5)
    assert LatencyBudget.parse("250us").absolute_ms == pytest.approx(0.25)
    assert LatencyBudget.parse("2 s").absolute_ms == pytest.approx(2000)
    assert LatencyBudget.parse("1.1x").limit_ms(10.0) == pytest.approx(11.0)
    for bad in ("fast", "0.9x", "-1ms", "1.1", "x", "0ms"):
        with pytest.raises(MemflatError):
            LatencyBudget.parse(bad)


def test_pareto_front_keeps_only_undominated_points():
    pts = [Point((), 100, 0, 1.0), Point((("a", 1, 2),), 60, 0, 2.0),
           Point((("b", 1, 2),), 70, 0, 3.0), Point((("c", 1, 2),), 40, 0, 2.5),
           Point((("d", 1, 2),), 40, 0, 2.6)]
    assert [p.peak_bytes for p in pareto_front(pts)] == [40, 60, 100]


@pytest.mark.parametrize("budget", ["1.0x", "1.2x", "3x"])
def test_choice_is_the_best_costed_point_within_the_budget(mod, tmp_path, budget):
    # Only against the points the tuner itself costed (its shortlist); the exhaustive
    # check is tests/test_tuner_exhaustive.py.
    new, result = _tune(mod, tmp_path, latency_budget=budget)
    limit = result.limit_ms
    assert limit == pytest.approx(LatencyBudget.parse(budget).limit_ms(result.baseline.latency))
    within = [p for p in result.points if p.latency <= limit * (1 + 1e-9)]
    assert result.chosen.latency <= limit * (1 + 1e-9)
    # Every costed point is known: the choice is the least memory among those within
    # the budget (fits the spec first, when any does).
    fitting = [p for p in within if p.fits]
    if fitting:
        assert result.chosen.latency == min(p.latency for p in fitting)
    else:
        assert result.chosen.memory_bytes == min(p.memory_bytes for p in within)
    if budget == "1.0x":  # tiling only adds work: nothing beats the untiled module's time
        assert result.chosen.path == ()
    if budget == "3x":
        assert result.chosen.memory_bytes < result.baseline.memory_bytes
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 48)).astype("float32")
    ref, got = run_llvm(mod, x), run_llvm(new, x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_impossible_budget_names_the_best_latency(mod, tmp_path):
    with pytest.raises(MemflatError, match="the best latency reachable is"):
        _tune(mod, tmp_path, latency_budget="0.000001ms")


def test_with_room_to_spare_the_spec_is_fitted_at_the_least_latency(mod, tmp_path):
    _, result = _tune(mod, tmp_path, spec="mcu_256k")  # 256 KiB: the untiled module fits
    assert result.baseline.fits and result.chosen.path == ()
    assert "fits mcu_256k at the least latency" in result.reason


def test_deterministic_and_cached(mod, tmp_path):
    a_mod, a = _tune(mod, tmp_path, latency_budget="2x")
    b_mod, b = _tune(mod, tmp_path, latency_budget="2x")
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("tuner_s", "cached")}  # noqa: E731
    assert strip(a) == strip(b)
    c_mod, c = tune(mod, spec=_small_mcu(), latency_budget="2x", cache_dir=tmp_path,
                    max_points=64)
    assert c.cached and c.chosen.to_dict() == a.chosen.to_dict()
    tvm.ir.assert_structural_equal(c_mod, a_mod)


def test_flatten_memory_peaks_with_a_latency_budget_uses_the_tuner(mod, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMFLAT_CACHE_DIR", str(tmp_path))
    pass_ = FlattenMemoryPeaks("mcu_256k", latency_budget="3x")
    new = tvm.transform.Sequential([pass_])(mod)
    assert pass_.tune_result is not None
    assert pass_.tune_result.chosen.latency <= pass_.tune_result.limit_ms
    x = np.random.default_rng(1).standard_normal((1, 3, 48, 48)).astype("float32")
    ref, got = run_llvm(mod, x), run_llvm(new, x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    with pytest.raises(MemflatError):
        FlattenMemoryPeaks(latency_budget="soon")


def test_llvm_budget_without_spec_calibrates_on_this_machine(mod, tmp_path):
    _, result = tune(mod, latency_budget="5x", cache_dir=tmp_path, use_cache=False)
    assert result.cost_model.startswith("llvm")
    assert result.chosen.latency <= result.limit_ms
    assert result.chosen.memory_bytes <= result.baseline.memory_bytes


def test_the_pass_default_is_a_point_so_a_loose_budget_never_does_worse(mod, tmp_path):
    # The search walks recomputed halos only; the pass's default (cached halos, splits)
    # is added as a point of its own and costed. With a budget that everything meets,
    # the tuner needs no more memory than the default pass's rewrite.
    from tvm_memflat.transform.flatten_memory_peaks import flatten_peaks

    _, decisions = flatten_peaks(mod)
    assert decisions
    _, result = _tune(mod, tmp_path, latency_budget="100x")
    default = next(p for p in result.points if p.path == tuple(d.step for d in decisions))
    assert default.peak_bytes == decisions[-1].peak_after
    assert result.chosen.memory_bytes <= default.memory_bytes


@pytest.mark.parametrize("halo", ["recompute", "cache"])
def test_halo_restricts_the_search_and_keys_the_cache(mod, tmp_path, halo):
    _, result = _tune(mod, tmp_path, latency_budget="100x", halo=halo)
    steps = [s for p in result.points for s in p.path]
    assert steps and all(s.halo in (halo, None) for s in steps)  # None: a channel split
    key = lambda h: cache_key(mod, None, {"halo": h})  # noqa: E731
    assert key(halo) != key("auto")
    with pytest.raises(MemflatError, match="halo must be"):
        _tune(mod, tmp_path, halo="sometimes")


def test_points_round_trip_through_json_as_rewrite_steps(mod, tmp_path):
    _, result = _tune(mod, tmp_path, latency_budget="100x")
    again = TuneResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict()
    assert [p.path for p in again.points] == [p.path for p in result.points]
    assert all(isinstance(s, RewriteStep) for p in again.points for s in p.path)
    # steps stored by older versions as tuples are still read
    old = Point.from_dict({"path": [["c3", 2, 4, "recompute", "H"], ["pool", 5, 4, "channels"]],
                           "peak_bytes": 1, "macs": 1})
    assert old.path == (RewriteStep.tile("c3", 2, 4, "recompute", "H"),
                        RewriteStep.split("pool", 5, 4))


def test_the_pass_with_a_spec_and_no_budget_fits_it_with_the_tuner(mod, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMFLAT_CACHE_DIR", str(tmp_path))
    pass_ = FlattenMemoryPeaks(_small_mcu(), halo="recompute")
    assert pass_.uses_tuner and (pass_.input, pass_.output) == ("sram", "sram")
    new = pass_(mod)
    direct, result = tune(mod, spec=_small_mcu(), halo="recompute", cache_dir=tmp_path)
    assert result.cached and pass_.tune_result.chosen.path == result.chosen.path
    tvm.ir.assert_structural_equal(new, direct)
    assert not FlattenMemoryPeaks(_small_mcu(), memory_budget=4096).uses_tuner
    with pytest.raises(MemflatError, match="not both"):
        FlattenMemoryPeaks(memory_budget=4096, latency_budget="2x")
    with pytest.raises(MemflatError):
        FlattenMemoryPeaks(input="disk")
