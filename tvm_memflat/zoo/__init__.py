"""Model zoo: five ImageNet classifiers built in code as ONNX graphs.

The models follow torchvision's architectures layer by layer (NCHW float32,
batch 1, opset 17) and carry deterministic random weights, so no download is
needed. Batch norms are kept as ``BatchNormalization`` nodes, classifiers are
``Flatten`` + ``Gemm`` (``transB=1``) and dropout is omitted. The input is
called ``"input"`` and the output ``"logits"`` with shape ``(1, 1000)``.

Examples
--------
>>> from tvm_memflat import zoo
>>> model = zoo.build("resnet18")
>>> zoo.count_params(model), zoo.count_macs(model)  # doctest: +SKIP
(11689512, 1814073344)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx
from onnx import TensorProto, helper

from .inception import INPUT_SHAPE as _INCEPTION_SHAPE
from .inception import inception_v3
from .mobilenet import INPUT_SHAPE as _MOBILENET_SHAPE
from .mobilenet import mobilenet_v2
from .resnet import INPUT_SHAPE as _RESNET_SHAPE
from .resnet import resnet18
from .squeezenet import INPUT_SHAPE as _SQUEEZENET_SHAPE
from .squeezenet import squeezenet1_1
from .vgg import INPUT_SHAPE as _VGG_SHAPE
from .vgg import vgg16

__all__ = [
    "NAMES",
    "PUBLISHED",
    "build",
    "count_macs",
    "count_params",
    "input_shape",
]

NAMES = ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18", "inception_v3")

_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "vgg16": vgg16,
    "squeezenet1_1": squeezenet1_1,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "inception_v3": inception_v3,
}

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "vgg16": _VGG_SHAPE,
    "squeezenet1_1": _SQUEEZENET_SHAPE,
    "mobilenet_v2": _MOBILENET_SHAPE,
    "resnet18": _RESNET_SHAPE,
    "inception_v3": _INCEPTION_SHAPE,
}

#: Published sizes (torchvision model cards; Inception V3 without the aux
#: head): ``name -> (parameters, multiply-accumulates per image)``.
PUBLISHED: dict[str, tuple[float, float]] = {
    "vgg16": (138.36e6, 15.47e9),
    "squeezenet1_1": (1.235e6, 0.35e9),
    "mobilenet_v2": (3.50e6, 0.30e9),
    "resnet18": (11.69e6, 1.81e9),
    "inception_v3": (23.8e6, 5.7e9),
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(NAMES)}")


def build(name: str) -> onnx.ModelProto:
    """Build a zoo model with its fixed-seed random weights.

    Parameters
    ----------
    name : str
        One of `NAMES`.

    Returns
    -------
    onnx.ModelProto
        A fresh model; two calls give byte-identical models.

    Raises
    ------
    ValueError
        If `name` is not a zoo model.
    """
    _check_name(name)
    return _BUILDERS[name]()


def input_shape(name: str) -> tuple[int, ...]:
    """Return the NCHW input shape of a zoo model.

    Parameters
    ----------
    name : str
        One of `NAMES`.

    Returns
    -------
    tuple of int
        ``(1, 3, 224, 224)``, or ``(1, 3, 299, 299)`` for ``"inception_v3"``.

    Raises
    ------
    ValueError
        If `name` is not a zoo model.
    """
    _check_name(name)
    return _INPUT_SHAPES[name]


# (op_type, input index) pairs whose initializers are not trainable parameters.
_NON_PARAMETER_INPUTS = {
    ("BatchNormalization", 3),  # running mean
    ("BatchNormalization", 4),  # running var
    ("Clip", 1),  # ReLU6 bounds
    ("Clip", 2),
}


def count_params(model: onnx.ModelProto) -> int:
    """Count parameters the way torchvision does.

    Parameters
    ----------
    model : onnx.ModelProto
        Model whose initializers hold the weights.

    Returns
    -------
    int
        Number of initializer elements, excluding initializers used only as
        ``BatchNormalization`` running mean/variance (inputs 3 and 4), which
        are buffers in PyTorch, and as ``Clip`` bounds (ReLU6 has no
        parameters in PyTorch).
    """
    uses: dict[str, list[bool]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((node.op_type, i) in _NON_PARAMETER_INPUTS)
    total = 0
    for init in model.graph.initializer:
        flags = uses.get(init.name, [])
        if flags and all(flags):
            continue
        total += math.prod(init.dims)
    return total


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Infer the static shape of every tensor without copying the weights.

    Large float initializers are replaced by graph inputs of the same shape,
    so ``onnx.shape_inference`` never serialises hundreds of megabytes.
    """
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {vi.name for vi in model.graph.input}
    shapes: dict[str, tuple[int, ...]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        if init.data_type == TensorProto.FLOAT and math.prod(init.dims) > 64:
            if init.name not in declared:
                graph.input.append(
                    helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        else:  # small or integer tensors may be needed as values (e.g. Reshape shapes)
            graph.initializer.append(init)
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True)
    g = inferred.graph
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            shapes[vi.name] = dims
    return shapes


def count_macs(model: onnx.ModelProto) -> int:
    """Count multiply-accumulates per image from the graph's static shapes.

    Parameters
    ----------
    model : onnx.ModelProto
        Model with static input shapes; shapes are found with
        ``onnx.shape_inference``.

    Returns
    -------
    int
        Sum over ``Conv`` nodes of ``Cout * Hout * Wout * (Cin / groups) * Kh * Kw``
        and over ``Gemm``/``MatMul`` nodes of ``In * Out`` (times the non-batch
        rows of a batched ``MatMul``). Batch (axis 0) is excluded; other
        operators count zero.

    Raises
    ------
    ValueError
        If a counted node has a tensor of unknown shape.
    """
    shapes = _static_shapes(model)

    def shape_of(name: str, node: onnx.NodeProto) -> tuple[int, ...]:
        # Axis 0 (batch, or Cout of a weight) may be symbolic; the counts never use it.
        dims = shapes.get(name)
        if dims is None or not dims or any(d <= 0 for d in dims[1:]):
            raise ValueError(f"node {node.name!r}: unknown static shape of {name!r}: {dims}")
        return dims

    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shape_of(node.output[0], node)
            w = shape_of(node.input[1], node)
            total += math.prod(out[1:]) * math.prod(w[1:])
        elif node.op_type == "Gemm":
            out = shape_of(node.output[0], node)
            a = shape_of(node.input[0], node)
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if trans_a else a[1]
            if k <= 0:
                raise ValueError(
                    f"node {node.name!r}: unknown inner dimension of {node.input[0]!r}"
                )
            total += math.prod(out[1:]) * k
        elif node.op_type == "MatMul":
            out = shape_of(node.output[0], node)
            a = shape_of(node.input[0], node)
            total += math.prod(out[1:]) * a[-1]
    return total
