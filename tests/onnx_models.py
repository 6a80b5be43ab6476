"""Small ONNX models built in code for front-end and CLI tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _w(rng, name, shape, scale=0.2):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype("float32"), name)


def small_cnn(batch_dim=1, h=16) -> onnx.ModelProto:
    """conv3x3 -> relu -> conv3x3/s2 -> relu -> maxpool, plus a 1x1/s4 shortcut and Gemm."""
    rng = np.random.default_rng(0)
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4,
                         name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1] * 4, name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["x", "w3"], ["s"], kernel_shape=[1, 1], strides=[4, 4]),
        helper.make_node("Add", ["p", "s"], ["y"]),
        helper.make_node("Flatten", ["y"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], transB=1),
    ]
    feat = c * (h // 4) * (h // 4)
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3, h, h])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, 10])],
        initializer=[_w(rng, "w1", (c, 3, 3, 3)), _w(rng, "b1", (c,)),
                     _w(rng, "w2", (c, c, 3, 3)), _w(rng, "w3", (c, 3, 1, 1)),
                     _w(rng, "wfc", (10, feat)), _w(rng, "bfc", (10,))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dynamic_cnn() -> onnx.ModelProto:
    """small_cnn with a symbolic batch dim and a symbolic height."""
    model = small_cnn()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = "N"
    dims[2].dim_param = "H"
    out = model.graph.output[0].type.tensor_type.shape.dim
    out[0].dim_param = "N"
    return model


def shape_arithmetic_cnn() -> onnx.ModelProto:
    """Conv, then Shape -> Gather -> Cast -> Mul -> Floor -> Cast -> Unsqueeze -> Slice.

    Exporters write this for e.g. ``x[:, :, : int(x.shape[2] * 0.5)]``; TVM 0.27's
    importer alone fails on it (``relax.floor`` gets a scalar, not a tensor).
    """
    rng = np.random.default_rng(1)
    ints = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Shape", ["r1"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["h"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hf", "half"], ["hh"]),
        helper.make_node("Floor", ["hh"], ["hfl"]),
        helper.make_node("Cast", ["hfl"], ["hi"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["hi", "axes0"], ["end"]),
        helper.make_node("Slice", ["r1", "zero1", "end", "axes2"], ["top"]),
        helper.make_node("Conv", ["top", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes, "shape_arith",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 12])],
        initializer=[_w(rng, "w1", (4, 3, 3, 3)), _w(rng, "w2", (4, 4, 3, 3)),
                     ints("two", 2), ints("axes0", [0]), ints("zero1", [0]), ints("axes2", [2]),
                     numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def unsupported_ops() -> onnx.ModelProto:
    """Two operators TVM's Relax importer lacks: Celu and LpNormalization."""
    nodes = [helper.make_node("Celu", ["x"], ["a"]),
             helper.make_node("LpNormalization", ["a"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def checker_failure() -> onnx.ModelProto:
    """A Relu reading a tensor nobody produces: parses, but fails onnx.checker."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def with_external_data(folder, location: str) -> str:
    """Save small_cnn with its weights as external data at ``location``; return the path."""
    import os

    model = small_cnn()
    onnx.external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    path = os.path.join(folder, "ext.onnx")
    onnx.save_model(model, path)
    # point the references elsewhere after saving (a hostile or careless file)
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(model, path)
    return path


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Reference outputs from onnxruntime (the oracle)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def conv_bn_relu() -> onnx.ModelProto:
    """conv3x3 (no bias) -> BatchNormalization -> Relu, and conv+bias -> BN feeding the output."""
    rng = np.random.default_rng(2)
    c = 6
    bn = lambda p: [_w(rng, f"{p}_g", (c,), 1.0), _w(rng, f"{p}_b", (c,)),  # noqa: E731
                    _w(rng, f"{p}_m", (c,)),
                    numpy_helper.from_array(rng.uniform(0.5, 2, c).astype("float32"), f"{p}_v")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"],
                         ["n1"], epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 10, 10])],
        initializer=[_w(rng, "w1", (c, 3, 3, 3)), _w(rng, "w2", (c, c, 1, 1)), _w(rng, "b2", (c,)),
                     *bn("bn1"), *bn("bn2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
