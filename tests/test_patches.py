"""Patches: a region in tiles along one axis inside strips along the other.

Each strip recomputes its halo along the strip axis; inside it, the tiles carry
cached (or recompute) halos along the tile axis, as in MCUNetV2's patch-based
inference. Exact on llvm, the expected structure, MACs only from the strips, a
lower peak than the same tiles without strips, and replayable steps.
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.transform.flatten_memory_peaks import (
    RoundOptions,
    replay,
    round_candidates,
)
from tvm_memflat.transform.rewrite_step import RewriteStep
from tvm_memflat.transform.tile_region import tile_region
from tvm_memflat.transform.tiling import H_AXIS, W_AXIS, TilingRefused

from . import graphs
from .test_flatten_memory_peaks import (
    _assert_same_function,
    _farthest_region,
    _fire,
    _inverted_residual,
)


@pytest.mark.parametrize("make", [graphs.residual, graphs.branches, _fire, _inverted_residual])
@pytest.mark.parametrize("halo", ["recompute", "cache"])
def test_dag_regions_in_patches_are_exact(make, halo):
    mod = make()
    region = _farthest_region(mod)
    _assert_same_function(mod, tile_region(mod, region, 3, halo, H_AXIS, strips=2))


def test_w_tiles_in_h_strips_are_exact():
    mod = _inverted_residual(h=12)
    _assert_same_function(mod, tile_region(mod, _farthest_region(mod), 4, "cache", W_AXIS,
                                           strips=3))


def _one_conv():
    """x (1,1,4,4) -> 3x3 conv, padding 1 -> y (1,2,4,4)."""
    w = np.arange(18, dtype="float32").reshape(2, 1, 3, 3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1), "y")
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    return bb.get(), w


def test_patch_structure_of_one_conv():
    """2 H-tiles in 2 W-strips: each patch slices the input rows and columns it
    needs and keeps only its own border's padding; strips are concatenated along W."""
    before, w = _one_conv()
    after = tile_region(before, _farthest_region(before), 2, "recompute", H_AXIS, strips=2)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            strips = []
            for c0, c1, left, right in ((0, 3, 1, 0), (1, 4, 0, 1)):
                tiles = []
                for r0, r1, top, bottom in ((0, 3, 1, 0), (1, 4, 0, 1)):
                    cut = bb.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[r0, c0],
                                                         end=[r1, c1]))
                    tiles.append(bb.emit(relax.op.nn.conv2d(
                        cut, relax.const(w), padding=(top, left, bottom, right))))
                strips.append(bb.emit(relax.op.concat(tiles, axis=2)))
            y = bb.emit(relax.op.concat(strips, axis=3))
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    tvm.ir.assert_structural_equal(after, bb.get())
    _assert_same_function(before, after)


def test_cached_patches_add_only_the_strips_macs():
    """Cached halos along H add nothing: a patch grid costs what its strips alone do."""
    mod = _inverted_residual(h=16)
    region = _farthest_region(mod)
    patches = profile(tile_region(mod, region, 4, "cache", H_AXIS, strips=2), with_tvm=False)
    strips = profile(tile_region(mod, region, 2, "recompute", W_AXIS), with_tvm=False)
    assert patches.macs == strips.macs > profile(mod, with_tvm=False).macs


def test_patches_lower_the_peak_below_the_same_tiles():
    mod = _inverted_residual(h=16)
    region = _farthest_region(mod)
    tiles = profile(tile_region(mod, region, 4, "cache"), with_tvm=False).peak_bytes
    patches = profile(tile_region(mod, region, 4, "cache", strips=4),
                      with_tvm=False).peak_bytes
    assert patches < tiles


def test_more_strips_than_columns_is_refused():
    mod = _inverted_residual(h=8)
    with pytest.raises(TilingRefused):
        tile_region(mod, _farthest_region(mod), 2, "cache", H_AXIS, strips=99)


def test_a_patch_step_survives_json_and_replays():
    mod = _inverted_residual(h=16)
    region = _farthest_region(mod)
    step = RewriteStep.tile(region.sink.name, len(region.vars), 4, "cache", "H", strips=2)
    back = RewriteStep.from_json(step.to_json())
    assert back == step and back.to_json()["strips"] == 2
    assert "in 2 W-strips" in step.describe
    assert "strips" not in RewriteStep.tile("y", 3, 4).to_json()  # old JSON unchanged
    tvm.ir.assert_structural_equal(replay(mod, [back.to_json()]),
                                   tile_region(mod, region, 4, "cache", H_AXIS, strips=2))
    with pytest.raises(ValueError):
        RewriteStep("split", "y", 3, 4, None, "C", strips=2)


def test_the_round_offers_patches():
    mod = _inverted_residual(h=32)
    prof = profile(mod, with_tvm=False)
    opts = RoundOptions(prof.macs * 1.3)
    evaluated, ranked = round_candidates(mod, prof, opts)
    patches = [e for e in evaluated if e.strips > 1]
    assert patches and all(e.step.strips == e.strips for e in patches)
    none = RoundOptions(prof.macs * 1.3, patches=False)
    assert not [e for e in round_candidates(mod, prof, none)[0] if e.strips > 1]
