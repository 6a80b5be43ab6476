"""``mobilenet_v2_w035_r144``: msf-CNN's MobileNet V2 w0.35 at 144, counted as msf-CNN counts.

The network is the layer list ``mobilenetv2_layers`` of ``analysis_optimization.py``
in github.com/TinyPART/msf-CNN (``docs/msf_cnn.md``). Its MACs must be msf-CNN's
``"Common"`` MAC count and, untiled, our int8 profile without the network input
and output must equal msf-CNN's vanilla count layer by layer.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tvm_memflat import zoo

NAME = "mobilenet_v2_w035_r144"

#: ``"Common"`` of every ``msf_CNN_eval_models/MBV2-w0.35-r144_*/result.json``.
MSF_COMMON_MACS = 18_909_490

#: msf-CNN's untiled peak (``python analysis_optimization.py -m MBV2-w0.35 -p vanilla``)
#: and the ``peak_mem_usage`` of its unfused deployments (``F 1.2``, ``320 K``, ...).
MSF_VANILLA_PEAK = 194_400

#: msf-CNN's per-layer memory of the untiled network, bytes (int8), as
#: ``Network.calc_memory_usage`` logs it (``--log INFO``): input + output of each
#: layer, the network input left out of layer 0 (``ignore_input=True``).
MSF_VANILLA_LAYERS = (
    57024, 114048, 114048, 82944, 181440, 194400, 49248, 72576, 124416, 72576,
    72576, 77760, 19116, 24948, 42768, 24948, 24948, 42768, 24948, 24948,
    26730, 7128, 12474, 21384, 12474, 12474, 21384, 12474, 12474, 21384,
    12474, 12474, 21384, 13365, 18711, 32076, 18711, 18711, 32076, 18711,
    18711, 20988, 6350, 9800, 16800, 9800, 9800, 16800, 9800, 9800,
    16800, 11200, 14000,
)

#: (output channels, kernel, stride, groups > 1) of msf-CNN's 53 layers.
STEM = [(11, 3, 2, False)]
_STAGES = [(1, 5, 1, 1), (6, 8, 2, 2), (6, 11, 3, 2), (6, 22, 4, 2), (6, 33, 3, 1),
           (6, 56, 3, 2), (6, 112, 1, 1)]


def _msf_layers() -> list[tuple[int, int, int, bool]]:
    layers, cin = list(STEM), 11
    for t, c, n, s in _STAGES:
        for r in range(n):
            layers += [(cin * t, 1, 1, False), (cin * t, 3, s if r == 0 else 1, True),
                       (c, 1, 1, False)]
            cin = c
    return layers + [(448, 1, 1, False)]


@functools.cache
def _model(resolution: int | None = None, old_style: bool = False) -> onnx.ModelProto:
    return zoo.build(NAME, resolution=resolution, old_style=old_style)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["logits"], {"input": x})
    return y


def test_registration():
    assert zoo.COMPARISONS == (NAME,)
    assert NAME not in zoo.NAMES + zoo.FAMILIES
    assert set(zoo.PUBLISHED_COMPARISONS) == set(zoo.COMPARISONS)
    assert zoo.input_shape(NAME) == (1, 3, 144, 144)
    assert zoo.input_shape(NAME, 64) == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="no width multiplier"):
        zoo.build(NAME, width=0.5)


def test_structure_is_msf_cnns():
    model = _model()
    onnx.checker.check_model(model)
    g = model.graph
    assert model.opset_import[0].version == 17
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["logits"]
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [1, 448, 5, 5]
    ops = {n.op_type for n in g.node}
    assert not ops & {"Add", "Gemm", "GlobalAveragePool", "Flatten"}  # no residuals, no head
    init = {t.name: tuple(t.dims) for t in g.initializer}
    convs = []
    for node in g.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out, _, k, _ = init[node.input[1]]
            convs.append((out, k, attrs["strides"][0], attrs["group"] > 1))
    assert convs == _msf_layers()
    assert len(convs) == 53


def test_sizes_are_msf_cnns():
    weights, macs = zoo.PUBLISHED_COMPARISONS[NAME]
    model = _model()
    assert zoo.count_macs(model) == macs == MSF_COMMON_MACS
    conv_weights = sum(math.prod(t.dims) for t in model.graph.initializer
                       if len(t.dims) == 4)
    assert conv_weights == weights == 280_140
    # + gamma and beta of the 53 batch norms (msf-CNN's int8 convs have none)
    bn_channels = sum(c for c, *_ in _msf_layers())
    assert zoo.count_params(model) == weights + 2 * bn_channels


def test_runs_and_old_style_is_the_same_function():
    assert zoo.build(NAME).SerializeToString() == _model().SerializeToString()
    x = np.random.default_rng(3).standard_normal((1, 3, 144, 144), dtype=np.float32)
    y = _ort(_model(), x)
    assert y.shape == (1, 448, 5, 5) and np.isfinite(y).all()
    assert 1e-3 < float(y.std()) < 1e3, float(y.std())
    small = np.random.default_rng(4).standard_normal((1, 3, 64, 64), dtype=np.float32)
    new, old = _ort(_model(64), small), _ort(_model(64, True), small)
    np.testing.assert_allclose(old, new, rtol=1e-4, atol=1e-5 * float(np.abs(new).max()))


def test_profile_counts_as_msf_cnn():
    """Untiled, int8, input and output left out: msf-CNN's vanilla count, layer by layer."""
    pytest.importorskip("tvm")
    import tvm_memflat

    mod = tvm_memflat.load_model(_model())
    prof = tvm_memflat.profile(mod, model=NAME, activation_dtype="int8", with_tvm=False,
                               predict=False)
    assert prof.macs == MSF_COMMON_MACS
    assert len(prof.layers) == len(MSF_VANILLA_LAYERS) == 53
    assert (prof.input_bytes, prof.output_bytes) == (144 * 144 * 3, 448 * 5 * 5)
    streamed = [sum(t.bytes for t in prof.live_at(s) if not (t.is_input or t.is_output))
                for s in range(len(prof.layers))]
    # msf-CNN keeps the output in its vanilla count (ignore_output=False): add it back
    streamed[-1] += prof.output_bytes
    assert tuple(streamed) == MSF_VANILLA_LAYERS
    assert prof.peak_bytes == max(streamed) == MSF_VANILLA_PEAK
    assert prof.peak_layer.name == "features_2_conv_1_1"  # the stride-2 depthwise of block 2
    assert [t.bytes for t in prof.live_at_peak()] == [155_520, 38_880]


def test_load_model_by_name():
    pytest.importorskip("tvm")
    import tvm_memflat

    mod = tvm_memflat.load_model(NAME)
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [1, 3, 144, 144]
