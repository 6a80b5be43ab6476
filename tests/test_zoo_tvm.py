"""Zoo models imported through our front end, compiled on llvm, against onnxruntime."""

import numpy as np
import pytest

from tvm_memflat import zoo
from tvm_memflat.analysis.memory_profile import profile
from tvm_memflat.frontend import load_model
from tvm_memflat.targets.runtime import measure_runtime_storage
from tvm_memflat.targets.stock import build_stock

from . import onnx_models

SMALLEST = ["squeezenet1_1", "mobilenet_v2"]


@pytest.fixture(scope="module", params=SMALLEST)
def imported(request):
    name = request.param
    return name, zoo.build(name), load_model(name)


def test_zoo_model_on_llvm_matches_onnxruntime(imported):
    name, model, mod = imported
    x = np.random.default_rng(7).standard_normal(zoo.input_shape(name)).astype("float32")
    ref = onnx_models.onnxruntime_outputs(model, {"input": x})[0]
    measured, (got,) = measure_runtime_storage(build_stock(mod), [x])
    assert got.shape == ref.shape == (1, 1000)
    err = np.abs(got - ref).max()
    assert err <= 1e-4 * np.abs(ref).max(), (name, err, np.abs(ref).max())
    # the runtime allocation equals the static count of the same (fusing) pipeline
    t = profile(mod, model=name).tvm
    assert measured == t.planned_storage_bytes + t.output_bytes


def test_zoo_profile_is_consistent(imported):
    name, model, mod = imported
    prof = profile(mod, model=name)
    assert prof.macs == zoo.count_macs(model)  # TIR-derived MACs == ONNX-derived MACs
    assert prof.peak_bytes == max(r.live_bytes for r in prof.layers)
    assert prof.input_bytes == 4 * int(np.prod(zoo.input_shape(name)))
    assert prof.output_bytes == 4 * 1000
    inputs_at_peak = sum(t.bytes for t in prof.live_at_peak() if t.is_input)
    planned = prof.tvm.planned_storage_bytes + prof.tvm.output_bytes
    assert planned >= prof.peak_bytes - inputs_at_peak
