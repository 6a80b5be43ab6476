"""ResNet-18 and ResNet-50 as in ``torchvision.models.resnet18`` / ``resnet50``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from ._blocks import RESIDUAL_BN_SCALE, classifier, residual_relu, resnet_stem
from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

BOTTLENECK_EXPANSION = 4


def _conv_bn(
    g: GraphBuilder,
    x: str,
    name: str,
    i: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    act: str | None = None,
    bn_scale: float = 1.0,
) -> str:
    """Conv ``name.conv<i>`` (padding ``kernel // 2``), BN ``name.bn<i>``, ``act`` ``name.relu<i>``.

    In torchvision's ``BasicBlock`` and ``Bottleneck`` the ReLUs are one module;
    here each call site is a node of its own.
    """
    return g.conv(
        x,
        f"{name}.conv{i}",
        out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        bn=True,
        act=act,
        bn_name=f"{name}.bn{i}",
        act_name=f"{name}.relu{i}",
        bn_scale=bn_scale,
    )


def _basic_block(g: GraphBuilder, x: str, name: str, planes: int, stride: int) -> str:
    y = _conv_bn(g, x, name, 1, planes, 3, stride, act="relu")
    y = _conv_bn(g, y, name, 2, planes, 3, bn_scale=RESIDUAL_BN_SCALE)
    return residual_relu(g, x, y, name, stride, f"{name}.downsample", f"{name}.relu2")


def _bottleneck(g: GraphBuilder, x: str, name: str, planes: int, stride: int) -> str:
    """torchvision's ``Bottleneck`` (v1.5: the stride is on the 3x3 conv), expansion 4."""
    out = planes * BOTTLENECK_EXPANSION
    y = _conv_bn(g, x, name, 1, planes, 1, act="relu")
    y = _conv_bn(g, y, name, 2, planes, 3, stride, act="relu")
    y = _conv_bn(g, y, name, 3, out, 1, bn_scale=RESIDUAL_BN_SCALE)
    return residual_relu(g, x, y, name, stride, f"{name}.downsample", f"{name}.relu3")


def _resnet(
    name: str,
    block: Callable[[GraphBuilder, str, str, int, int], str],
    layers: Sequence[int],
    seed: int,
    num_classes: int,
    resolution: int,
    old_style: bool,
) -> onnx.ModelProto:
    g = GraphBuilder(name, (1, 3, resolution, resolution), seed, old_style=old_style)
    x = resnet_stem(g, 64, "conv1", "bn1", "relu", "maxpool")
    stages = zip((64, 128, 256, 512), (1, 2, 2, 2), layers, strict=True)
    for layer, (planes, stride, blocks) in enumerate(stages, 1):
        for b in range(blocks):
            x = block(g, x, f"layer{layer}.{b}", planes, stride if b == 0 else 1)
    x = classifier(g, x, num_classes)  # its dropout: old style only; torchvision has none
    return g.finish(x, f"torchvision {name} (random weights)")


def resnet18(
    seed: int = 18,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build ResNet-18 (BasicBlock, layers [2, 2, 2, 2]) with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input.
    old_style : bool, optional
        Opset-9 idioms (``Sum`` residual adds, ``Reshape``, a ``Dropout``
        before ``fc``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``, output
        ``"logits"`` ``(1, num_classes)``.
    """
    return _resnet("resnet18", _basic_block, (2, 2, 2, 2), seed, num_classes, resolution, old_style)


def resnet50(
    seed: int = 50,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build ResNet-50 (Bottleneck, layers [3, 4, 6, 3]) with random weights.

    Parameters are those of `resnet18`.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``, output
        ``"logits"`` ``(1, num_classes)``.
    """
    return _resnet("resnet50", _bottleneck, (3, 4, 6, 3), seed, num_classes, resolution, old_style)
