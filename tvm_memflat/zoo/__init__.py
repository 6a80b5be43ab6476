"""Model zoo: ImageNet classifiers built in code as ONNX graphs.

The models follow torchvision's architectures layer by layer (NCHW float32,
batch 1, opset 17) and carry deterministic random weights, so no download is
needed. Batch norms are kept as ``BatchNormalization`` nodes, classifiers are
``Flatten`` + ``Gemm`` (``transB=1``) and dropout is omitted. The input is
called ``"input"`` and the output ``"logits"`` with shape ``(1, 1000)``.

`NAMES` are the paper's five models (the benchmarks iterate them);
`FAMILIES` are eight more CNN families (bottleneck ResNet, DenseNet,
MobileNet V3, ShuffleNet V2, RegNetY, EfficientNet, GoogLeNet), built and
counted by the same functions. `COMPARISONS` are other papers' networks built
as those papers built them (msf-CNN's MobileNet V2 w0.35 at 144, whose
``"logits"`` are its last conv's ``(1, 448, 5, 5)`` map; ``docs/msf_cnn.md``).

`build` also takes ``resolution`` (a smaller square input, for fast tests),
``width`` (a channel multiplier, for the MobileNets and EfficientNet) and
``old_style``: the same network written the way older exporters did (the
ONNX model zoo's opset-9 files; opset 9, IR version 4, initializers also
listed as graph inputs, ``Reshape`` instead of ``Flatten``, ``Sum`` for
residual additions, ``Dropout`` before the classifier, ``Clip`` bounds as
attributes, hard-swish as ``x * HardSigmoid(x)``, ceil-mode max pools as
explicit end padding). Old style draws the same weights and computes the
same function: under onnxruntime the logits agree within 1e-5 relative
(measured: about 1e-6 of the largest logit), except for GoogLeNet, which
also gets the BVLC model's two ``LRN`` nodes (without them it agrees too).
SqueezeNet's model-zoo variant has no ``LRN``, so it gets none.

Examples
--------
>>> from tvm_memflat import zoo
>>> model = zoo.build("resnet18")
>>> zoo.count_params(model), zoo.count_macs(model)  # doctest: +SKIP
(11689512, 1814073344)
>>> small = zoo.build("efficientnet_b0", resolution=64, old_style=True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx
from onnx import TensorProto, helper

from .densenet import INPUT_SHAPE as _DENSENET_SHAPE
from .densenet import densenet121
from .efficientnet import INPUT_SHAPE as _EFFICIENTNET_SHAPE
from .efficientnet import efficientnet_b0
from .googlenet import INPUT_SHAPE as _GOOGLENET_SHAPE
from .googlenet import googlenet
from .inception import INPUT_SHAPE as _INCEPTION_SHAPE
from .inception import inception_v3
from .mobilenet import INPUT_SHAPE as _MOBILENET_SHAPE
from .mobilenet import MSF_INPUT_SHAPE as _MSF_SHAPE
from .mobilenet import mobilenet_v2, mobilenet_v2_msf
from .mobilenetv3 import INPUT_SHAPE as _MOBILENETV3_SHAPE
from .mobilenetv3 import mobilenet_v3_large, mobilenet_v3_small
from .regnet import INPUT_SHAPE as _REGNET_SHAPE
from .regnet import regnet_y_400mf
from .resnet import INPUT_SHAPE as _RESNET_SHAPE
from .resnet import resnet18, resnet50
from .shufflenet import INPUT_SHAPE as _SHUFFLENET_SHAPE
from .shufflenet import shufflenet_v2_x1_0
from .squeezenet import INPUT_SHAPE as _SQUEEZENET_SHAPE
from .squeezenet import squeezenet1_1
from .vgg import INPUT_SHAPE as _VGG_SHAPE
from .vgg import vgg16

__all__ = [
    "COMPARISONS",
    "FAMILIES",
    "NAMES",
    "PUBLISHED",
    "PUBLISHED_COMPARISONS",
    "PUBLISHED_FAMILIES",
    "build",
    "count_macs",
    "count_params",
    "input_shape",
]

#: The paper's five models; the benchmarks iterate these.
NAMES = ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18", "inception_v3")

#: More CNN families, built the same way (not part of the benchmarks).
FAMILIES = (
    "resnet50",
    "densenet121",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "efficientnet_b0",
    "googlenet",
)

#: Other papers' networks, built as they built them so that their published
#: points can stand beside ours (``docs/msf_cnn.md``; not part of the benchmarks).
#: ``mobilenet_v2_w035_r144`` is msf-CNN's ``MBV2-w0.35-r144``: channels
#: ``int(c * 0.35)``, no residual additions, ends at the 448-channel 1x1 conv
#: (output ``(1, 448, 5, 5)``, no classifier); see `mobilenet.mobilenet_v2_msf`.
COMPARISONS = ("mobilenet_v2_w035_r144",)

_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "vgg16": vgg16,
    "squeezenet1_1": squeezenet1_1,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "inception_v3": inception_v3,
    "resnet50": resnet50,
    "densenet121": densenet121,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "regnet_y_400mf": regnet_y_400mf,
    "efficientnet_b0": efficientnet_b0,
    "googlenet": googlenet,
    "mobilenet_v2_w035_r144": mobilenet_v2_msf,
}

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "vgg16": _VGG_SHAPE,
    "squeezenet1_1": _SQUEEZENET_SHAPE,
    "mobilenet_v2": _MOBILENET_SHAPE,
    "resnet18": _RESNET_SHAPE,
    "inception_v3": _INCEPTION_SHAPE,
    "resnet50": _RESNET_SHAPE,
    "densenet121": _DENSENET_SHAPE,
    "mobilenet_v3_small": _MOBILENETV3_SHAPE,
    "mobilenet_v3_large": _MOBILENETV3_SHAPE,
    "shufflenet_v2_x1_0": _SHUFFLENET_SHAPE,
    "regnet_y_400mf": _REGNET_SHAPE,
    "efficientnet_b0": _EFFICIENTNET_SHAPE,
    "googlenet": _GOOGLENET_SHAPE,
    "mobilenet_v2_w035_r144": _MSF_SHAPE,
}

#: Models whose builder takes a channel multiplier ``width`` (torchvision's ``width_mult``).
WIDTH_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")

#: Published sizes (torchvision model cards; Inception V3 without the aux
#: head): ``name -> (parameters, multiply-accumulates per image)``.
PUBLISHED: dict[str, tuple[float, float]] = {
    "vgg16": (138.36e6, 15.47e9),
    "squeezenet1_1": (1.235e6, 0.35e9),
    "mobilenet_v2": (3.50e6, 0.30e9),
    "resnet18": (11.69e6, 1.81e9),
    "inception_v3": (23.8e6, 5.7e9),
}

#: torchvision's published sizes of the `FAMILIES` (model cards: ``num_params``
#: and ``_ops``, whose "GFLOPS" are multiply-accumulates; GoogLeNet without
#: the aux heads): ``name -> (parameters, multiply-accumulates per image)``.
#: The docs table rounds ``_ops`` to two decimals; the unrounded card values
#: are used where that matters at 2 % (ShuffleNet V2 0.145, not 0.14;
#: MobileNet V3 Small 0.057, not 0.06).
PUBLISHED_FAMILIES: dict[str, tuple[float, float]] = {
    "resnet50": (25.557e6, 4.09e9),
    "densenet121": (7.979e6, 2.83e9),
    "mobilenet_v3_small": (2.543e6, 0.057e9),
    "mobilenet_v3_large": (5.483e6, 0.22e9),
    "shufflenet_v2_x1_0": (2.279e6, 0.145e9),
    "regnet_y_400mf": (4.344e6, 0.40e9),
    "efficientnet_b0": (5.289e6, 0.39e9),
    "googlenet": (6.624e6, 1.50e9),
}

#: Published sizes of the `COMPARISONS`: ``name -> (conv weights, MACs per image)``,
#: exact. msf-CNN (TinyPART/msf-CNN): the MACs are the ``"Common"`` field of every
#: ``msf_CNN_eval_models/MBV2-w0.35-r144_*/result.json`` (the baseline of its
#: ``"Overhead Factor"``), the weights the int8 weight inputs of its deployed
#: graphs (``metadata.json`` of ``default.tar``). `count_params` is larger by
#: the batch norms' gamma and beta, which msf-CNN's bare int8 convs do not have.
PUBLISHED_COMPARISONS: dict[str, tuple[int, int]] = {
    "mobilenet_v2_w035_r144": (280_140, 18_909_490),
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        known = ", ".join(NAMES + FAMILIES + COMPARISONS)
        raise ValueError(f"unknown zoo model {name!r}; choose from {known}")


def build(
    name: str,
    *,
    old_style: bool = False,
    width: float | None = None,
    resolution: int | None = None,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """Build a zoo model with its fixed-seed random weights.

    Parameters
    ----------
    name : str
        One of `NAMES` or `FAMILIES`.
    old_style : bool, optional
        Write the network the way opset-9 exporters did (see the module
        docstring). Same weights, same function (GoogLeNet adds two ``LRN``).
    width : float, optional
        Channel multiplier (torchvision's ``width_mult``, channels rounded to
        multiples of 8); only for `WIDTH_MODELS`. Default: the published width.
    resolution : int, optional
        Side of the square input; default that of `input_shape`. Some
        architectures reject some sizes (VGG-16 needs a feature map of 1 or
        a multiple of 7, e.g. 32; Inception V3 needs at least 75; ceil-mode
        pools reject ambiguous sizes); 64 works for all but VGG-16 (32
        works) and Inception V3 (75 works).
    dtype : {"float32", "int8"}, optional
        ``"int8"``: the same network (batch norms folded) quantized by
        onnxruntime's ``quantize_static`` in ONNX QDQ form: int8 weights per
        output channel, int8 activations calibrated on seeded random inputs,
        all zero points 0 (see :mod:`tvm_memflat.zoo.quantize`).

    Returns
    -------
    onnx.ModelProto
        A fresh model; two calls give byte-identical models.

    Raises
    ------
    ValueError
        If `name` is not a zoo model, `width` is given for a model without
        a width multiplier, or the architecture rejects `resolution`.
    """
    _check_name(name)
    kwargs: dict[str, object] = {"old_style": bool(old_style)}
    if width is not None:
        if name not in WIDTH_MODELS:
            raise ValueError(
                f"{name} has no width multiplier; width works for {', '.join(WIDTH_MODELS)}"
            )
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        kwargs["width"] = float(width)
    if resolution is not None:
        if int(resolution) != resolution or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        kwargs["resolution"] = int(resolution)
    if dtype == "float32":
        return _BUILDERS[name](**kwargs)
    if dtype != "int8":
        raise ValueError(f"dtype must be 'float32' or 'int8', got {dtype!r}")
    from .quantize import quantize_qdq

    key = (name, tuple(sorted(kwargs.items())))
    return quantize_qdq(key, lambda: _BUILDERS[name](**kwargs))


def input_shape(name: str, resolution: int | None = None) -> tuple[int, ...]:
    """Return the NCHW input shape of a zoo model.

    Parameters
    ----------
    name : str
        One of `NAMES` or `FAMILIES`.
    resolution : int, optional
        The ``resolution`` passed to `build`; default the model's own.

    Returns
    -------
    tuple of int
        ``(1, 3, 224, 224)``, or ``(1, 3, 299, 299)`` for ``"inception_v3"``;
        ``(1, 3, resolution, resolution)`` if given.

    Raises
    ------
    ValueError
        If `name` is not a zoo model.
    """
    _check_name(name)
    if resolution is not None:
        return (1, 3, int(resolution), int(resolution))
    return _INPUT_SHAPES[name]


# (op_type, input index) pairs whose initializers are not trainable parameters.
_NON_PARAMETER_INPUTS = {
    ("BatchNormalization", 3),  # running mean
    ("BatchNormalization", 4),  # running var
    ("Clip", 1),  # ReLU6 bounds
    ("Clip", 2),
    ("Reshape", 1),  # constant shapes
    ("Expand", 1),
    ("Split", 1),
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
        are buffers in PyTorch, as ``Clip`` bounds (ReLU6 has no parameters
        in PyTorch) and as the shape of ``Reshape``/``Expand`` or the sizes
        of ``Split``.
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
