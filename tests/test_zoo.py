"""Tests of the ONNX model zoo (`tvm_memflat.zoo`); they need onnx and onnxruntime, not TVM."""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tvm_memflat import zoo
from tvm_memflat.zoo._graph import GraphBuilder

# name -> (input side, published params, published MACs, relative tolerance)
PUBLISHED = {
    "vgg16": (224, 138.36e6, 15.47e9, 0.01),
    "squeezenet1_1": (224, 1.235e6, 0.35e9, 0.01),
    "mobilenet_v2": (224, 3.50e6, 0.30e9, 0.01),
    "resnet18": (224, 11.69e6, 1.81e9, 0.01),
    "inception_v3": (299, 23.8e6, 5.7e9, 0.02),
}

# Exact torchvision parameter counts (``sum(p.numel() for p in m.parameters())``;
# Inception V3 with ``aux_logits=False``).
TORCHVISION_PARAMS = {
    "vgg16": 138_357_544,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v2": 3_504_872,
    "resnet18": 11_689_512,
    "inception_v3": 23_834_568,
}


@functools.cache
def _model(name: str) -> onnx.ModelProto:
    """Build each zoo model once per test session (VGG-16 alone is 553 MB)."""
    return zoo.build(name)


def test_names_and_shapes():
    assert zoo.NAMES == ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18", "inception_v3")
    assert set(PUBLISHED) == set(zoo.NAMES)
    for name in zoo.NAMES:
        side = PUBLISHED[name][0]
        assert zoo.input_shape(name) == (1, 3, side, side)


@pytest.mark.parametrize("bad", ["resnet101", "", "VGG16"])
def test_unknown_name(bad):
    with pytest.raises(ValueError, match=r"unknown zoo model .*; choose from .*resnet18"):
        zoo.build(bad)
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.input_shape(bad)


@pytest.mark.parametrize("name", zoo.NAMES)
def test_sizes_match_published(name):
    _, params, macs, tol = PUBLISHED[name]
    model = _model(name)
    got_params = zoo.count_params(model)
    got_macs = zoo.count_macs(model)
    assert abs(got_params - params) / params < tol, (got_params, params)
    assert abs(got_macs - macs) / macs < tol, (got_macs, macs)
    assert got_params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", zoo.NAMES)
def test_graph_interface(name):
    model = _model(name)
    g = model.graph
    assert [o.domain for o in model.opset_import] == [""]
    assert model.opset_import[0].version == 17
    assert [i.name for i in g.input] == ["input"]
    assert [o.name for o in g.output] == ["logits"]
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert tuple(dims) == zoo.input_shape(name)
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [1, 1000]
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in g.initializer)
    ops = {n.op_type for n in g.node}
    assert "Dropout" not in ops
    assert "Gemm" in ops or name == "squeezenet1_1"
    assert ("BatchNormalization" in ops) == (name in {"mobilenet_v2", "resnet18", "inception_v3"})
    assert ("Clip" in ops) == (name == "mobilenet_v2")
    producers = {n.output[0]: n for n in g.node}
    gemms = [n for n in g.node if n.op_type == "Gemm"]
    for node in gemms:
        assert {a.name: a.i for a in node.attribute}.get("transB") == 1
    if gemms:
        assert producers[gemms[0].input[0]].op_type == "Flatten"
    names = [n.name for n in g.node]
    assert len(set(names)) == len(names) and all(names)


def test_readable_names():
    names = {n.name for n in _model("resnet18").graph.node}
    expected = {"conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer2.0.downsample.0", "fc"}
    assert expected <= names
    inits = {t.name for t in _model("resnet18").graph.initializer}
    assert {"layer1.0.conv1.weight", "layer1.0.bn1.running_var", "fc.bias"} <= inits
    inc = {n.name for n in _model("inception_v3").graph.node}
    assert {"Mixed_5b.branch5x5_2.conv", "Mixed_7c.branch3x3dbl_3b.bn"} <= inc


def test_inception_bn_eps_and_pools():
    g = _model("inception_v3").graph
    eps = {
        a.f
        for n in g.node
        if n.op_type == "BatchNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    }
    assert eps and all(e == pytest.approx(0.001) for e in eps)
    for n in g.node:
        if n.op_type == "AveragePool":
            assert {a.name: a.i for a in n.attribute}["count_include_pad"] == 1


def test_deterministic():
    a = zoo.build("squeezenet1_1").SerializeToString()
    b = zoo.build("squeezenet1_1").SerializeToString()
    assert a == b


@pytest.mark.parametrize("name", zoo.NAMES)
def test_checker(name):
    onnx.checker.check_model(_model(name))


def test_count_params_excludes_bn_statistics():
    model = _model("resnet18")
    bn = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer}
    all_elements = sum(sizes.values())
    stats = sum(sizes[n.input[3]] + sizes[n.input[4]] for n in bn)
    assert zoo.count_params(model) == all_elements - stats


# All five, VGG-16 and Inception V3 included: the whole file takes about 25 s on
# two cores, so nothing here needs gating behind MEMFLAT_SLOW.
@pytest.mark.parametrize("name", zoo.NAMES)
def test_onnxruntime_logits(name):
    model = _model(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1234).standard_normal(zoo.input_shape(name), dtype=np.float32)
    (y,) = sess.run(["logits"], {"input": x})
    assert y.shape == (1, 1000) and y.dtype == np.float32
    assert np.isfinite(y).all()
    peak = float(np.abs(y).max())
    print(f"{name}: logits max|x| = {peak:.4g}")
    assert 0.01 < peak < 1000
    assert float(y.std()) > 0  # not a constant output


@st.composite
def _conv_pool_case(draw):
    cin_g = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pk = draw(st.integers(1, 4))
    # big enough that the pool window fits the conv output (pads only help)
    h = draw(st.integers(kh + (pk - 1) * sh, 24))
    w = draw(st.integers(kw + (pk - 1) * sw, 24))
    return {
        "cin": cin_g * groups,
        "groups": groups,
        "cout": groups * draw(st.integers(1, 3)),
        "kernel": (kh, kw),
        "stride": (sh, sw),
        "pad": (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))),
        "h": h,
        "w": w,
        "pool_kernel": pk,
        "pool_stride": draw(st.integers(1, 3)),
        "pool_pad": draw(st.integers(0, pk // 2)),
        "ceil_mode": draw(st.booleans()),
        "bn": draw(st.booleans()),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_conv_pool_case())
def test_builder_shapes_and_macs_agree_with_onnxruntime(case):
    g = GraphBuilder("t", (1, case["cin"], case["h"], case["w"]), seed=0)
    c = g.conv(
        g.input,
        "c",
        case["cout"],
        case["kernel"],
        stride=case["stride"],
        padding=case["pad"],
        groups=case["groups"],
        bn=case["bn"],
        act="relu6",
    )
    conv_out = "c"  # the Conv node's own output, before BN and ReLU6
    try:
        p = g.maxpool(
            c,
            "p",
            case["pool_kernel"],
            case["pool_stride"],
            case["pool_pad"],
            ceil_mode=case["ceil_mode"],
        )
    except ValueError as err:  # ceil_mode sizes that ONNX and onnxruntime disagree on
        assert "ambiguous" in str(err)
        event("skip: a ceil_mode size ONNX and onnxruntime disagree on")
        assume(False)
    q = g.avgpool(p, "q", 1, 1)
    f = g.flatten(g.global_avgpool(q, "gap"), "flat")
    y = g.gemm(f, "fc", 5)
    model = g.finish(y)
    onnx.checker.check_model(model)
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, g.shape(n))
        for n in (conv_out, p)
    )
    # strict ONNX shape inference agrees with the builder's shapes (else it raises)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(g.shape("input"), dtype=np.float32)
    logits, conv_y, pool_y = sess.run(["logits", conv_out, p], {"input": x})
    assert conv_y.shape == g.shape(conv_out)
    assert pool_y.shape == g.shape(p)
    assert logits.shape == (1, 5)
    kh, kw = case["kernel"]
    expected = (
        math.prod(conv_y.shape[1:]) * (case["cin"] // case["groups"]) * kh * kw + g.shape(f)[1] * 5
    )
    assert zoo.count_macs(model) == expected


def test_builder_rejects_empty_or_ambiguous_output():
    g = GraphBuilder("t", (1, 3, 4, 4), seed=0)
    with pytest.raises(ValueError, match="ambiguous"):
        g.maxpool(g.input, "p", 1, 2, ceil_mode=True)
    with pytest.raises(ValueError, match="larger than padded input"):
        g.conv(g.input, "c", 8, 5)
    with pytest.raises(ValueError, match="larger than padded input"):
        g.maxpool(g.input, "p", 5, 1)


def test_count_macs_matmul():
    a = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, ["batch", 7, 16])
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = onnx.numpy_helper.from_array(np.zeros((16, 9), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")], "mm", [a], [out], [w]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert zoo.count_macs(model) == 7 * 16 * 9
