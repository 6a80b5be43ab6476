"""DenseNet-121 as in ``torchvision.models.densenet121``."""

from __future__ import annotations

import onnx

from ._graph import OLD_STYLE_DROPOUT, RELU_GAIN, GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

GROWTH_RATE = 32
BLOCK_CONFIG = (6, 12, 24, 16)
NUM_INIT_FEATURES = 64
BN_SIZE = 4


def _dense_layer(g: GraphBuilder, features: list[str], name: str) -> str:
    """torchvision's ``_DenseLayer``: concat of all earlier maps, BN-ReLU-conv1x1, BN-ReLU-conv3x3.

    Every convolution reads a ReLU output, so all use the ReLU gain.
    """
    x = features[0] if len(features) == 1 else g.concat(features, f"{name}.cat")
    x = g.batchnorm(x, f"{name}.norm1")
    x = g.relu(x, f"{name}.relu1")
    x = g.conv(x, f"{name}.conv1", BN_SIZE * GROWTH_RATE, 1, bias=False, gain=RELU_GAIN)
    x = g.batchnorm(x, f"{name}.norm2")
    x = g.relu(x, f"{name}.relu2")
    return g.conv(x, f"{name}.conv2", GROWTH_RATE, 3, padding=1, bias=False, gain=RELU_GAIN)


def _transition(g: GraphBuilder, x: str, name: str) -> str:
    """torchvision's ``_Transition``: BN, ReLU, 1x1 conv halving the channels, 2x2 average pool."""
    x = g.batchnorm(x, f"{name}.norm")
    x = g.relu(x, f"{name}.relu")
    x = g.conv(x, f"{name}.conv", g.channels(x) // 2, 1, bias=False, gain=RELU_GAIN)
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
    x = g.conv(
        g.input,
        "features.conv0",
        NUM_INIT_FEATURES,
        7,
        stride=2,
        padding=3,
        bn=True,
        act="relu",
        bn_name="features.norm0",
        act_name="features.relu0",
    )
    x = g.maxpool(x, "features.pool0", 3, 2, padding=1)
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
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.dropout(x, "dropout", OLD_STYLE_DROPOUT)  # old style only
    x = g.gemm(x, "classifier", num_classes)
    return g.finish(x, "torchvision densenet121 (random weights)")
