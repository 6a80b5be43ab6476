"""Tests of the zoo's extra CNN families and of `zoo.build`'s options.

``FAMILIES`` (ResNet-50, DenseNet-121, MobileNet V3 Small/Large, ShuffleNet V2,
RegNetY-400MF, EfficientNet-B0, GoogLeNet) run at a small resolution under
onnxruntime, match torchvision's published sizes at 224, and import into TVM.
``old_style=True`` (opset 9 idioms) is checked for every zoo model: structure,
and the same logits as the opset-17 graph. VGG-16's old-style checks build two
553 MB models and run only with ``MEMFLAT_SLOW=1``.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tvm_memflat import zoo
from tvm_memflat.zoo._graph import GraphBuilder

SLOW = pytest.mark.skipif(os.environ.get("MEMFLAT_SLOW") != "1", reason="set MEMFLAT_SLOW=1")

ALL = zoo.NAMES + zoo.FAMILIES

# Small input side per model: VGG-16 needs a 1x1 (or 7k x 7k) feature map,
# Inception V3 at least 75.
SMALL = {name: 64 for name in ALL} | {"vgg16": 32, "inception_v3": 75}

# Exact ``sum(p.numel() for p in m.parameters())`` (torchvision model cards).
TORCHVISION_PARAMS = {
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
    "mobilenet_v3_small": 2_542_856,
    "mobilenet_v3_large": 5_483_032,
    "shufflenet_v2_x1_0": 2_278_604,
    "regnet_y_400mf": 4_344_144,
    "efficientnet_b0": 5_288_548,
    "googlenet": 6_624_904,
}

# Models with residual additions (``Add``; ``Sum`` in old style).
RESIDUAL = {
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "regnet_y_400mf",
    "efficientnet_b0",
}

# Old-style graphs that add LRN nodes (and so compute another function).
WITH_LRN = {"googlenet"}


def _params(name: str) -> object:
    """``name`` as a pytest param, marked slow for VGG-16."""
    return pytest.param(name, marks=SLOW) if name == "vgg16" else name


@functools.cache
def _small(name: str, old_style: bool = False) -> onnx.ModelProto:
    return zoo.build(name, resolution=SMALL[name], old_style=old_style)


@functools.cache
def _input(name: str) -> np.ndarray:
    shape = zoo.input_shape(name, SMALL[name])
    return np.random.default_rng(1234).standard_normal(shape, dtype=np.float32)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3  # old style: "initializer appears in graph inputs" warnings
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["logits"], {"input": x})
    return y


@functools.cache
def _logits(name: str, old_style: bool = False) -> np.ndarray:
    return _ort(_small(name, old_style), _input(name))


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


# ----------------------------------------------------------------- registration
def test_registration():
    assert zoo.NAMES == ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18", "inception_v3")
    assert zoo.FAMILIES == tuple(TORCHVISION_PARAMS)
    assert set(zoo.PUBLISHED_FAMILIES) == set(zoo.FAMILIES)
    assert not set(zoo.NAMES) & set(zoo.FAMILIES)
    for name in zoo.FAMILIES:
        assert zoo.input_shape(name) == (1, 3, 224, 224)
        assert zoo.input_shape(name, 64) == (1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"unknown zoo model .*googlenet"):
        zoo.build("resnet101")


# ------------------------------------------------------------ small resolution
@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_family_runs_at_small_resolution(name):
    model = _small(name)
    onnx.checker.check_model(model)
    g = model.graph
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["logits"]
    side = SMALL[name]
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [1, 3, side, side]
    names = [n.name for n in g.node]
    assert len(set(names)) == len(names) and all(names)
    assert "Dropout" not in _ops(model)
    y = _logits(name)
    assert y.shape == (1, 1000) and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert 1e-3 < float(y.std()) < 1e3, float(y.std())


def test_family_idioms():
    """The operators each family is known for, written as requested."""
    ops = {name: _ops(_small(name)) for name in zoo.FAMILIES}
    assert {"HardSwish", "HardSigmoid", "Mul", "GlobalAveragePool"} <= ops["mobilenet_v3_small"]
    assert {"HardSwish", "HardSigmoid"} <= ops["mobilenet_v3_large"]
    assert {"Split", "Reshape", "Transpose", "Concat"} <= ops["shufflenet_v2_x1_0"]
    assert {"Sigmoid", "Mul", "Relu"} <= ops["regnet_y_400mf"]
    assert {"Sigmoid", "Mul"} <= ops["efficientnet_b0"] and "Relu" not in ops["efficientnet_b0"]
    assert "AveragePool" in ops["densenet121"]
    for node in _small("mobilenet_v3_small").graph.node:
        if node.op_type == "HardSigmoid":
            attrs = {a.name: a.f for a in node.attribute}
            assert attrs == pytest.approx({"alpha": 1 / 6, "beta": 0.5})
    # grouped 3x3 convs with group width 8 in RegNet; 5x5 depthwise convs in the others
    convs = {
        name: [
            ({a.name: a for a in n.attribute}, n.name)
            for n in _small(name).graph.node
            if n.op_type == "Conv"
        ]
        for name in ("regnet_y_400mf", "efficientnet_b0", "mobilenet_v3_large")
    }
    shapes = {t.name: tuple(t.dims) for t in _small("regnet_y_400mf").graph.initializer}
    widths = {
        shapes[f"{n}.weight"][1] for attrs, n in convs["regnet_y_400mf"] if attrs["group"].i > 1
    }
    assert widths == {8}
    for name in ("efficientnet_b0", "mobilenet_v3_large"):
        assert any(
            list(attrs["kernel_shape"].ints) == [5, 5] and attrs["group"].i > 1
            for attrs, _ in convs[name]
        )
    # DenseNet: each dense layer concatenates all earlier maps of its block
    dense = {n.name: len(n.input) for n in _small("densenet121").graph.node}
    assert dense["features.denseblock1.denselayer6.cat"] == 6
    assert dense["features.denseblock4.cat"] == 17
    # GoogLeNet: four branches, no aux heads
    googlenet_nodes = {n.name for n in _small("googlenet").graph.node}
    assert "inception4e.branch3.1.conv" in googlenet_nodes
    assert not any("aux" in n for n in googlenet_nodes)


# --------------------------------------------------------------- sizes at 224
@functools.cache
def _full(name: str) -> onnx.ModelProto:
    return zoo.build(name)


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_family_sizes_match_published(name):
    params, macs = zoo.PUBLISHED_FAMILIES[name]
    model = _full(name)
    got_params, got_macs = zoo.count_params(model), zoo.count_macs(model)
    print(f"{name}: {got_params} params, {got_macs / 1e9:.4f} GMACs")
    assert abs(got_params - params) / params < 0.02, (got_params, params)
    assert abs(got_macs - macs) / macs < 0.02, (got_macs, macs)
    assert got_params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_deterministic(name):
    assert zoo.build(name).SerializeToString() == _full(name).SerializeToString()
    a = zoo.build(name, resolution=SMALL[name], old_style=True).SerializeToString()
    assert a == _small(name, True).SerializeToString()


# ------------------------------------------------------------------ old style
@pytest.mark.parametrize("name", [_params(n) for n in ALL])
def test_old_style_structure(name):
    old, new = _small(name, True), _small(name)
    onnx.checker.check_model(old)  # also rejects operators that do not exist at opset 9
    assert [(o.domain, o.version) for o in old.opset_import] == [("", 9)]
    assert old.ir_version == 4
    inputs = [i.name for i in old.graph.input]
    assert inputs[0] == "input"
    assert inputs[1:] == [t.name for t in old.graph.initializer]
    ops = _ops(old)
    assert "Dropout" in ops and "Reshape" in ops
    assert not ops & {"Flatten", "Add", "HardSwish"}
    assert ("Sum" in ops) == ("Add" in _ops(new)) == (name in RESIDUAL)
    assert ("LRN" in ops) == (name in WITH_LRN)
    for node in old.graph.node:
        attrs = {a.name for a in node.attribute}
        if node.op_type == "Clip":
            assert len(node.input) == 1 and attrs == {"min", "max"}
        if node.op_type in ("MaxPool", "AveragePool"):
            assert "ceil_mode" not in attrs  # opset 10
        if node.op_type == "Split":
            assert "split" in attrs
    # same weights, same counts
    assert zoo.count_params(old) == zoo.count_params(new)
    if name not in WITH_LRN:
        assert zoo.count_macs(old) == zoo.count_macs(new)


@pytest.mark.parametrize("name", [_params(n) for n in ALL if n not in WITH_LRN])
def test_old_style_same_function(name):
    new, old = _logits(name), _logits(name, True)
    np.testing.assert_allclose(old, new, rtol=1e-4, atol=1e-5 * float(np.abs(new).max()))


def test_googlenet_old_style_is_new_style_plus_lrn():
    old = onnx.ModelProto()
    old.CopyFrom(_small("googlenet", True))
    lrn = [n for n in old.graph.node if n.op_type == "LRN"]
    assert [n.name for n in lrn] == ["lrn1", "lrn2"]
    for node in lrn:  # bypass the LRN: the rest must be the opset-17 network
        for other in old.graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = node.input[0]
        old.graph.node.remove(node)
    new = _logits("googlenet")
    np.testing.assert_allclose(
        _ort(old, _input("googlenet")), new, rtol=1e-4, atol=1e-5 * float(np.abs(new).max())
    )


def test_old_style_hardswish_and_ceil_pool():
    """``x * HardSigmoid(x)`` is hard-swish; end padding reproduces ceil mode."""
    x = np.linspace(-5, 5, 2 * 12 * 12, dtype=np.float32).reshape(1, 2, 12, 12)
    ref = x * np.clip(x + 3, 0, 6) / 6
    outs = []
    for old_style in (False, True):
        g = GraphBuilder("t", x.shape, seed=0, old_style=old_style)
        h = g.hardswish(g.input, "hs")
        p = g.maxpool(h, "pool", 3, 2, ceil_mode=True)
        y = g.flatten(g.global_avgpool(p, "gap"), "flat")
        model = g.finish(y)
        model.graph.output.extend(
            onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, g.shape(t))
            for t in (h, p)
        )
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        hs, pooled = sess.run([h, p], {"input": x})
        np.testing.assert_allclose(hs, ref, rtol=1e-6, atol=1e-6)
        assert pooled.shape == g.shape(p) == (1, 2, 6, 6)
        outs.append(pooled)
    np.testing.assert_array_equal(outs[0], outs[1])


# ------------------------------------------------------------------------ TVM
@pytest.mark.parametrize("old_style", [False, True], ids=["opset17", "old_style"])
@pytest.mark.parametrize("name", [_params(n) for n in ALL])
def test_tvm_imports(name, old_style):
    from_onnx = pytest.importorskip("tvm.relax.frontend.onnx").from_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the importer's "Renaming name ..." warnings
        mod = from_onnx(_small(name, old_style), keep_params_in_input=False)
    # the weights (declared graph inputs too, in old style) are constants: main takes the image
    assert len(mod["main"].params) == 1


# ------------------------------------------------------------ build options
def test_resolution_and_width_options():
    assert zoo.build("resnet18", resolution=224).SerializeToString() == (
        zoo.build("resnet18").SerializeToString()
    )
    assert zoo.build("mobilenet_v2", width=1.0).SerializeToString() == (
        zoo.build("mobilenet_v2").SerializeToString()
    )
    half = zoo.build("mobilenet_v3_small", width=0.5, resolution=32)
    onnx.checker.check_model(half)
    assert zoo.count_params(half) < zoo.count_params(_small("mobilenet_v3_small"))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert np.isfinite(_ort(half, x)).all()
    with pytest.raises(ValueError, match="no width multiplier"):
        zoo.build("resnet50", width=0.5)
    with pytest.raises(ValueError, match="neither 1x1 nor"):
        zoo.build("vgg16", resolution=64)
    with pytest.raises(ValueError, match="resolution must be a positive integer"):
        zoo.build("resnet50", resolution=0)
    for name in zoo.NAMES:
        if name != "vgg16":
            assert _logits(name).shape == (1, 1000)
