"""ResNet-18 and ResNet-50 as in ``torchvision.models.resnet18`` / ``resnet50``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from ._graph import OLD_STYLE_DROPOUT, GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

BOTTLENECK_EXPANSION = 4

# gamma of the last BN of a residual branch: keeps the running sum O(1).
RESIDUAL_BN_SCALE = 0.5


def _basic_block(g: GraphBuilder, x: str, name: str, planes: int, stride: int) -> str:
    cin = g.channels(x)
    y = g.conv(
        x,
        f"{name}.conv1",
        planes,
        3,
        stride=stride,
        padding=1,
        bn=True,
        act="relu",
        bn_name=f"{name}.bn1",
        act_name=f"{name}.relu1",
    )
    y = g.conv(
        y,
        f"{name}.conv2",
        planes,
        3,
        padding=1,
        bn=True,
        bn_name=f"{name}.bn2",
        bn_scale=RESIDUAL_BN_SCALE,
    )
    identity = x
    if stride != 1 or cin != planes:
        identity = g.conv(
            x,
            f"{name}.downsample.0",
            planes,
            1,
            stride=stride,
            bn=True,
            bn_name=f"{name}.downsample.1",
        )
    y = g.add(y, identity, f"{name}.add")
    return g.relu(y, f"{name}.relu2")


def _bottleneck(g: GraphBuilder, x: str, name: str, planes: int, stride: int) -> str:
    """torchvision's ``Bottleneck`` (v1.5: the stride is on the 3x3 conv), expansion 4."""
    cin = g.channels(x)
    out = planes * BOTTLENECK_EXPANSION
    y = g.conv(
        x,
        f"{name}.conv1",
        planes,
        1,
        bn=True,
        act="relu",
        bn_name=f"{name}.bn1",
        act_name=f"{name}.relu1",
    )
    y = g.conv(
        y,
        f"{name}.conv2",
        planes,
        3,
        stride=stride,
        padding=1,
        bn=True,
        act="relu",
        bn_name=f"{name}.bn2",
        act_name=f"{name}.relu2",
    )
    y = g.conv(
        y,
        f"{name}.conv3",
        out,
        1,
        bn=True,
        bn_name=f"{name}.bn3",
        bn_scale=RESIDUAL_BN_SCALE,
    )
    identity = x
    if stride != 1 or cin != out:
        identity = g.conv(
            x,
            f"{name}.downsample.0",
            out,
            1,
            stride=stride,
            bn=True,
            bn_name=f"{name}.downsample.1",
        )
    y = g.add(y, identity, f"{name}.add")
    return g.relu(y, f"{name}.relu3")


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
    x = g.conv(
        g.input,
        "conv1",
        64,
        7,
        stride=2,
        padding=3,
        bn=True,
        act="relu",
        bn_name="bn1",
        act_name="relu",
    )
    x = g.maxpool(x, "maxpool", 3, 2, padding=1)
    stages = zip((64, 128, 256, 512), (1, 2, 2, 2), layers, strict=True)
    for layer, (planes, stride, blocks) in enumerate(stages, 1):
        for b in range(blocks):
            x = block(g, x, f"layer{layer}.{b}", planes, stride if b == 0 else 1)
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.dropout(x, "dropout", OLD_STYLE_DROPOUT)  # old style only; torchvision has none
    x = g.gemm(x, "fc", num_classes)
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
