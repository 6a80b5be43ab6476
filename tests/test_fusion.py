"""Depth-first fusion on a spec with an on-chip path (tuner.fusion): the regions it
fuses lower the DRAM traffic the build's simulation shows, within the cycle budget,
and the fused build computes what the original does."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat import load_model
from tvm_memflat.errors import MemflatError
from tvm_memflat.frontend.canonicalize import canonicalize
from tvm_memflat.spec import load_spec
from tvm_memflat.targets.build import build
from tvm_memflat.targets.vta_like import traffic_bounds
from tvm_memflat.transform.flatten_memory_peaks import replay
from tvm_memflat.tuner.fusion import fuse_regions
from tvm_memflat.tuner.inputs import random_inputs

from . import onnx_models


@pytest.fixture(scope="module")
def small():
    """conv3x3 -> conv3x3/s2 -> maxpool plus a 1x1/s4 shortcut, 8 channels at 64x64:
    its 64x64 maps (64 KiB with the channels padded to 16) do not fit the 32 KiB
    input buffer whole."""
    return load_model(onnx_models.small_cnn(h=64))


def test_fusion_lowers_the_traffic_the_build_simulates(small):
    new, result = fuse_regions(small, "vta_like_fused", latency_budget=3.0)
    assert result.steps, result.reason
    assert result.traffic_bytes < result.base_traffic_bytes
    assert result.activation_traffic_bytes < result.base_activation_traffic_bytes
    assert result.cycles <= 3.0 * result.base_cycles
    # the steps replay on the canonical module to the same module
    again = replay(canonicalize(small).mod, [s.step for s in result.steps])
    tvm.ir.assert_structural_equal(again, new)
    # the build runs the fused module: its simulated traffic is the search's, and it
    # computes the original's outputs
    fused = build(new, target="vta_like", spec="vta_like_fused")
    assert fused.report.dram_traffic_bytes == result.traffic_bytes
    assert fused.report.activation_traffic_bytes == result.activation_traffic_bytes
    assert fused.plan.kept_on_chip
    # the compulsory traffic (weights, input, output once) is the module's as given:
    # the tiles share their weights
    spec = load_spec("vta_like_fused")
    given = build(small, target="vta_like", spec=spec)
    assert traffic_bounds(fused.record.schedule, spec).compulsory_traffic_bytes == \
        traffic_bounds(given.record.schedule, spec).compulsory_traffic_bytes
    inputs = [tvm.runtime.tensor(x) for x in random_inputs(small["main"], seed=3)]
    ref = relax.VirtualMachine(build(small), tvm.cpu())["main"](*inputs).numpy()
    got = fused.vm()["main"](*inputs).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert "recompute halos" in result.summary() or "cache halos" in result.summary()


def test_fusion_within_a_tight_budget_leaves_the_module_and_says_why():
    """At 32x32 with cached halos every candidate costs more cycles than the module as
    given, so a budget of 1x fuses nothing and says so. (At 64x64 with recomputed
    halos the strips cost 0.81x the cycles since each strip's pool is counted at the
    slice of the concatenation it writes, b749bcd; it was counted at twice that.)"""
    mod = load_model(onnx_models.small_cnn(h=32))
    new, result = fuse_regions(mod, "vta_like_fused", latency_budget=1.0, halo="cache")
    assert result.steps == () and "no candidate within 1x the cycles" in result.reason
    tvm.ir.assert_structural_equal(new, canonicalize(mod).mod)


@pytest.mark.parametrize("kwargs, message", [
    ({"spec": "vta_like"}, "no on-chip path"),
    ({"spec": "mcu_256k"}, "no on-chip path"),
    ({"halo": "both"}, "halo must be"),
    ({"latency_budget": 0.5}, "below the module"),
])
def test_fusion_refuses_bad_input_with_one_clear_error(small, kwargs, message):
    with pytest.raises(MemflatError, match=message):
        fuse_regions(small, **{"spec": "vta_like_fused", **kwargs})
