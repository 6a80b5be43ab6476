"""The region model's estimates against full profiles, and layers mapped to their bindings."""

import pytest
from tvm import relax

from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.transform import find_chains, tile_chain
from tvm_memflat.transform.region_model import RegionModel
from tvm_memflat.transform.regions import find_regions, sub_chains

from . import graphs


def _fire(h=16):
    """squeeze 1x1 -> (expand 1x1, expand 3x3) -> concat, then a 3x3 conv chain that
    reads the squeeze output again after the concat (a source outliving its region)."""
    def body(bb, x, rng):
        s = graphs.conv(bb, x, rng, 8, k=1, name="squeeze")
        e1 = graphs.conv(bb, s, rng, 16, k=1, name="expand1x1")
        e3 = graphs.conv(bb, s, rng, 16, name="expand3x3")
        cat = bb.emit(relax.op.concat([e1, e3], axis=1), "cat")
        tail = graphs.conv(bb, cat, rng, 8, name="tail")
        return bb.emit(relax.op.add(tail, s), "out")
    return graphs._net(body, in_shape=(1, 4, h, h))


def _pooled_chain(h=24):
    def body(bb, x, rng):
        y = graphs.conv(bb, x, rng, 8, name="c1")
        y = graphs.conv(bb, y, rng, 8, stride=2, name="c2")
        y = graphs.conv(bb, y, rng, 8, name="c3")
        return bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2), "pool")
    return graphs._net(body, in_shape=(1, 4, h, h))


def test_layers_know_their_bindings_even_when_fusion_interleaves_branches():
    mod = _fire()
    prof = profile(mod, with_tvm=False)
    # The two expand convs read the same tensor and are interleaved in the schedule:
    # every layer is still named after (and mapped to) its own bindings.
    assert [r.name for r in prof.layers] == ["squeeze", "expand1x1", "expand3x3", "cat",
                                             "tail", "out"][:len(prof.layers)]
    bound = {b.var.name: b.var for blk in mod["main"].body.blocks for b in blk.bindings}
    for row in prof.layers:
        assert row.members, row.name
        assert any(m.same_as(bound[row.name]) for m in row.members)


@pytest.mark.parametrize("make", [_fire, _pooled_chain, graphs.chain])
def test_estimate_matches_the_full_profile(make):
    mod = make()
    base = profile(mod, with_tvm=False)
    checked = 0
    for chain in find_chains(mod["main"]):
        for sub in sub_chains(chain):
            model = RegionModel(mod, sub, base, tile_chain)
            assert not model.exact_only
            for tiles in (2, 4):
                est = model.estimate(tiles)
                full = profile(tile_chain(mod, sub, tiles), with_tvm=False)
                assert est.macs == full.macs
                # An estimate may err high (a source kept live), never low.
                assert est.peak_bytes >= full.peak_bytes
                assert est.peak_bytes <= full.peak_bytes * 1.25
                checked += 1
    assert checked >= 2


@pytest.mark.parametrize("make", [_pooled_chain, graphs.chain])
def test_cannot_lower_exactly_when_no_tiling_lowers_the_peak(make):
    # cannot_lower is decided without profiling the region on its own: it must agree
    # with what the tiled modules' full profiles say.
    mod = make()
    base = profile(mod, with_tvm=False)
    verdicts = []
    for region in find_regions(mod["main"]):
        model = RegionModel(mod, region, base, tile_chain)
        verdicts.append(model.cannot_lower)
        lowered = any(profile(tile_chain(mod, region, t), with_tvm=False).peak_bytes
                      < base.peak_bytes for t in (2, 4))
        if model.cannot_lower:
            assert not lowered, region.key
            assert model.local is None  # decided before the costly local profile
    # both kinds occur: a one-op region beside the peak, and the whole chain at it
    assert set(verdicts) == {True, False}


def test_a_region_the_profile_cannot_place_is_estimated_by_full_profiles():
    """When the base profile's layers do not name the region's bindings (here: the
    profile of another module), every estimate profiles the tiled module whole, and
    the search knows no floor for the region (it must not stop early)."""
    from tvm_memflat.transform.flatten_memory_peaks import TILE_COUNTS, _evaluate_region

    mod = _pooled_chain()
    base = profile(graphs.chain(), with_tvm=False)  # layers of another module
    region = max(find_regions(mod["main"]), key=lambda r: len(r.vars))
    assert RegionModel(mod, region, base, tile_chain).exact_only
    out = _evaluate_region(mod, region, base, base.macs * 10, TILE_COUNTS, "cache")
    assert out and all(e.floor == 0 and not e.at_floor for e in out)
    for e in out:
        assert e.peak_bytes == profile(e.apply(mod), with_tvm=False).peak_bytes


def _two_stages():
    """a 3x3 pair at 32x32 (8 channels), a pool, then a 1x1 -> 3x3 -> 1x1 block at
    16x16 over 40 channels: the block holds the peak, the pair the peak outside it."""
    def body(bb, x, rng):
        y = graphs.conv(bb, x, rng, 8, name="a1")
        y = graphs.conv(bb, y, rng, 8, name="a2")
        y = bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2), "pool")
        y = graphs.conv(bb, y, rng, 40, k=1, name="b1")
        y = graphs.conv(bb, y, rng, 40, name="b2")
        return graphs.conv(bb, y, rng, 4, k=1, name="b3")
    return graphs._net(body, in_shape=(1, 4, 32, 32))


def test_at_the_floor_free_tilings_go_on_while_the_local_peak_drops():
    """Two cached-halo tiles already bring the block's estimate to the peak outside it
    (the floor). More tiles cost no MACs and still lower the peak while the block
    runs (the floor is the ranking model's, and the build's can lie below it), so they
    are estimated too, and the ranking's tie goes to the lowest local peak. Recomputed
    halos cost MACs: at the floor they stop at once."""
    from tvm_memflat.transform.flatten_memory_peaks import (
        TILE_COUNTS,
        RoundOptions,
        _evaluate_region,
        round_candidates,
    )

    mod = _two_stages()
    base = profile(mod, with_tvm=False)
    assert base.peak_layer.name == "b2"
    block = next(r for r in find_regions(mod["main"])
                 if getattr(r.source, "name", "") == "pool" and len(r.vars) == 6)
    cached = _evaluate_region(mod, block, base, base.macs * 2, TILE_COUNTS, "cache")
    assert len(cached) >= 3 and all(e.at_floor and e.macs == base.macs for e in cached)
    locals_ = [e.local_peak for e in cached]
    assert locals_ == sorted(locals_, reverse=True) and len(set(locals_)) == len(locals_)
    for e in cached:  # the local peak is what the tiled module's profile says
        assert profile(e.apply(mod), with_tvm=False).peak_bytes <= e.peak_bytes
    recomputed = _evaluate_region(mod, block, base, base.macs * 2, TILE_COUNTS, "recompute")
    assert len(recomputed) == 1 and recomputed[0].at_floor
    # the block's tilings tie at the floor with no extra MACs: the lowest local peak leads
    _, ranked = round_candidates(mod, base, RoundOptions(base.macs * 1.05))
    ours = [e for e in ranked if e.region.key == block.key]
    assert all((e.peak_bytes, e.macs) == (ours[0].peak_bytes, base.macs) for e in ours[:2])
    assert ours[0].local_peak == min(locals_)
