"""DenseNet-121 as in ``torchvision.models.densenet121``."""

from __future__ import annotations

import onnx

from ._blocks import classifier, resnet_stem
from ._graph import RELU_GAIN, GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

GROWTH_RATE = 32
BLOCK_CONFIG = (6, 12, 24, 16)
NUM_INIT_FEATURES = 64
BN_SIZE = 4


def _norm_relu_conv(
    g: GraphBuilder, x: str, name: str, out_channels: int, kernel: int, suffix: str = ""
) -> str:
    """Pre-activation BN, ReLU and conv (no bias): ``name.{norm,relu,conv}<suffix>``."""
    x = g.batchnorm(x, f"{name}.norm{suffix}")
    x = g.relu(x, f"{name}.relu{suffix}")
    return g.conv(
        x,
        f"{name}.conv{suffix}",
        out_channels,
        kernel,
        padding=kernel // 2,
        bias=False,
        gain=RELU_GAIN,
    )


def _dense_layer(g: GraphBuilder, features: list[str], name: str) -> str:
    """torchvision's ``_DenseLayer``: concat of all earlier maps, BN-ReLU-conv1x1, BN-ReLU-conv3x3.

    Every convolution reads a ReLU output, so all use the ReLU gain.
    """
    x = features[0] if len(features) == 1 else g.concat(features, f"{name}.cat")
    x = _norm_relu_conv(g, x, name, BN_SIZE * GROWTH_RATE, 1, "1")
    return _norm_relu_conv(g, x, name, GROWTH_RATE, 3, "2")


def _transition(g: GraphBuilder, x: str, name: str) -> str:
    """torchvision's ``_Transition``: BN, ReLU, 1x1 conv halving the channels, 2x2 average pool."""
    x = _norm_relu_conv(g, x, name, g.channels(x) // 2, 1)
    return g.avgpool(x, f"{name}.pool", 2, 2)


def densenet121(
    seed: int = 121,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build DenseNet-121 (growth 32, blocks [6, 12, 24, 16]) with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input (at least 32).
    old_style : bool, optional
        Opset-9 idioms (``Reshape``, a ``Dropout`` before the classifier; see
        `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    Each dense layer concatenates the block input and all earlier layers'
    outputs (``Concat`` node ``<layer>.cat``, as torch's ``torch.cat(inputs, 1)``
    in ``bn_function``), so the concatenations grow quadratically with depth;
    each block ends with the concatenation of all its maps (``<block>.cat``).
    ``drop_rate`` is 0, as in torchvision, so there is no dropout.
    """
    g = GraphBuilder("densenet121", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = resnet_stem(
        g,
        NUM_INIT_FEATURES,
        "features.conv0",
        "features.norm0",
        "features.relu0",
        "features.pool0",
    )
    for i, num_layers in enumerate(BLOCK_CONFIG, 1):
        block = f"features.denseblock{i}"
        features = [x]
        for j in range(1, num_layers + 1):
            features.append(_dense_layer(g, features, f"{block}.denselayer{j}"))
        x = g.concat(features, f"{block}.cat")
        if i != len(BLOCK_CONFIG):
            x = _transition(g, x, f"features.transition{i}")
    x = g.batchnorm(x, "features.norm5")
    x = g.relu(x, "relu")
    x = classifier(g, x, num_classes, fc="classifier")  # its dropout: old style only
    return g.finish(x, "torchvision densenet121 (random weights)")
