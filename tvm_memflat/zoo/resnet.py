"""ResNet-18 as in ``torchvision.models.resnet18``."""

from __future__ import annotations

import onnx

from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

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


def resnet18(seed: int = 18, num_classes: int = 1000) -> onnx.ModelProto:
    """Build ResNet-18 (BasicBlock, layers [2, 2, 2, 2]) with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, 224, 224)``, output
        ``"logits"`` ``(1, num_classes)``.
    """
    g = GraphBuilder("resnet18", INPUT_SHAPE, seed)
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
    for layer, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
        for b in range(2):
            x = _basic_block(g, x, f"layer{layer}.{b}", planes, stride if b == 0 else 1)
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.gemm(x, "fc", num_classes)
    return g.finish(x, "torchvision resnet18 (random weights)")
