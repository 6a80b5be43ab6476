"""Device bytes: what the pass and ``profile`` predict equals what the build allocates.

The prediction (:func:`tvm_memflat.planner.device_bytes.predict_device_bytes`) is
read from our lowering and offset plan without compiling; the measurement runs the
built module once with ``vm.builtin.alloc_storage`` recorded
(:func:`tvm_memflat.targets.build.build_and_measure`). They are computed by
different code paths, so a disagreement is a bug.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_memflat
from tvm_memflat.analysis.device_bytes import Accounting, DeviceBytes
from tvm_memflat.errors import MemflatError
from tvm_memflat.lowering.input_in_arena import INPUT_COPY_KERNEL, input_into_arena
from tvm_memflat.lowering.pipeline import lower
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.transform.flatten_memory_peaks import flatten_peaks

from . import graphs

CONVENTIONS = [("sram", "sram"), ("stream", "sram"), ("sram", "stream"), ("stream", "stream")]


def _inputs(mod, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
            for p in mod["main"].params]


def _tall_chain():
    """A chain tall enough for tiling to pay: x(1,4,32,8) -> 3 convs of 8 -> pool."""
    return graphs.chain(8, (1, 4, 32, 8))


@pytest.mark.parametrize("make", [graphs.chain, graphs.residual, graphs.branches, _tall_chain])
@pytest.mark.parametrize("inp,out", CONVENTIONS)
def test_predicted_equals_measured_on_small_graphs(make, inp, out):
    mod = make()
    predicted = predict_device_bytes(mod, input=inp, output=out)
    _, allocation, _ = build_and_measure(mod, _inputs(mod), input=inp, output=out)
    assert predicted.total_bytes == allocation.device_bytes
    # alloc_storage at run time is the arena plus the output, nothing else
    assert allocation.runtime_storage_bytes == predicted.arena_bytes + predicted.output_bytes


@pytest.mark.parametrize("halo", ["recompute", "cache"])
def test_pass_minimises_device_bytes_and_prediction_holds_after_tiling(halo):
    mod = _tall_chain()
    before = predict_device_bytes(mod).total_bytes
    new, decisions = flatten_peaks(mod, halo=halo,
                                   evaluate=lambda m: predict_device_bytes(m).total_bytes)
    assert decisions, "tiling a tall chain must pay"
    after = predict_device_bytes(new)
    assert after.total_bytes < before
    assert decisions[-1].peak_after == after.total_bytes  # decisions speak device bytes
    x = _inputs(mod)
    _, allocation, (got,) = build_and_measure(new, x)
    assert allocation.device_bytes == after.total_bytes
    _, _, (ref,) = build_and_measure(mod, x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_input_in_arena_keeps_the_signature_and_the_result():
    mod = graphs.chain()
    lowered = lower(mod, tvm.target.Target("llvm"))
    moved = input_into_arena(lowered)
    assert [p.name for p in moved["main"].params] == [p.name for p in lowered["main"].params]
    assert any(gv.name_hint.startswith(INPUT_COPY_KERNEL) for gv in moved.get_global_vars())
    x = _inputs(mod)
    outs = [build_and_measure(mod, x, input=inp)[2][0] for inp in ("sram", "stream")]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_input_in_arena_reuses_the_input_bytes():
    # chain(): x (1024 B) dies after L0; with it in the arena the planner reuses its
    # bytes, so counting it costs less than holding it beside the arena all run long.
    mod = graphs.chain()
    inside = predict_device_bytes(mod, input="sram")
    beside = predict_device_bytes(mod, input="stream")
    assert inside.input_in_arena and not beside.input_in_arena
    assert inside.total_bytes < beside.total_bytes + inside.input_bytes
    assert beside.total_bytes == beside.arena_bytes + beside.output_bytes + beside.scratch_bytes


def test_device_bytes_arithmetic():
    d = DeviceBytes(arena_bytes=1000, output_bytes=40, scratch_bytes=4, input_bytes=300,
                    input_in_arena=False, accounting=Accounting("sram", "stream"))
    assert d.total_bytes == 1000 + 40 + 4 + 300 - 40
    assert d.to_dict()["total_bytes"] == d.total_bytes
    with pytest.raises(MemflatError, match="input must be one of"):
        Accounting("dram", "sram")


def test_public_profile_reports_predicted_device_bytes():
    mod = graphs.residual()
    prof = tvm_memflat.profile(mod)
    assert prof.device is not None
    assert prof.to_dict()["predicted_device_bytes"] == predict_device_bytes(mod).total_bytes
    stream = tvm_memflat.profile(mod, input="stream")
    assert stream.device.accounting.input == "stream"


@pytest.fixture(scope="module", params=["squeezenet1_1", "mobilenet_v2"])
def zoo_default_rewrite(request):
    """The default pass on the two smallest zoo nets (cached for this module)."""
    mod = tvm_memflat.load_model(request.param)
    pass_ = tvm_memflat.FlattenMemoryPeaks()
    new = tvm.transform.Sequential([pass_])(mod)
    return request.param, mod, new, pass_


def test_zoo_default_rewrite_prediction_within_one_percent(zoo_default_rewrite):
    name, mod, new, pass_ = zoo_default_rewrite
    assert pass_.decisions, f"{name}: the default pass must rewrite"
    x = [np.random.default_rng(1).standard_normal(
        [int(d) for d in mod["main"].params[0].ty.shape.values]).astype("float32")]
    for m in (mod, new):
        predicted = predict_device_bytes(m)
        _, allocation, _ = build_and_measure(m, x)
        assert abs(predicted.total_bytes / allocation.device_bytes - 1) <= 0.01, name
    # what the pass says it reached is what the build allocates
    _, allocation, _ = build_and_measure(new, x)
    assert pass_.decisions[-1].peak_after == allocation.device_bytes


def test_weights_kept_as_parameters_are_not_copied_into_the_arena():
    # from_onnx(keep_params_in_input=True) makes the weights parameters after
    # num_input: only the network input gets an arena slot, and the prediction
    # still equals what the built module allocates.
    from tvm.relax.frontend.onnx import from_onnx

    from . import onnx_models

    mod = from_onnx(onnx_models.small_cnn(h=16), keep_params_in_input=True)
    params = mod["main"].params
    assert int(mod["main"].attrs["num_input"]) == 1 and len(params) > 1
    lowered = input_into_arena(lower(mod, tvm.target.Target("llvm")))
    copies = [b for block in lowered["main"].body.blocks for b in block.bindings
              if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.GlobalVar)
              and b.value.op.name_hint.startswith(INPUT_COPY_KERNEL)]
    assert len(copies) == 1 and copies[0].value.args[0].name == params[0].name
    rng = np.random.default_rng(0)
    args = [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
            for p in params]
    _, allocation, _ = build_and_measure(mod, args)
    assert predict_device_bytes(mod).total_bytes == allocation.device_bytes
