"""SqueezeNet 1.1 as in ``torchvision.models.squeezenet1_1``."""

from __future__ import annotations

import onnx

from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)


def _fire(g: GraphBuilder, x: str, name: str, squeeze: int, e1: int, e3: int) -> str:
    s = g.conv(x, f"{name}.squeeze", squeeze, 1, act="relu", act_name=f"{name}.squeeze_activation")
    a = g.conv(s, f"{name}.expand1x1", e1, 1, act="relu", act_name=f"{name}.expand1x1_activation")
    b = g.conv(
        s,
        f"{name}.expand3x3",
        e3,
        3,
        padding=1,
        act="relu",
        act_name=f"{name}.expand3x3_activation",
    )
    return g.concat([a, b], f"{name}.cat")


def squeezenet1_1(
    seed: int = 11,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build SqueezeNet 1.1 with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input; sizes whose ceil-mode pooling is ambiguous
        in ONNX raise ``ValueError`` (224, 64 and 32 are fine).
    old_style : bool, optional
        Opset-9 idioms (ceil-mode pools as end padding, ``Dropout``
        ``classifier.0``, ``Reshape``; see `GraphBuilder`); same function. The
        model zoo's SqueezeNet has no ``LRN``, so none is added.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    The classifier is a 1x1 convolution, ReLU and global average pool, as in
    torchvision (so the logits are non-negative); dropout is omitted (old
    style: a ``Dropout`` node).
    """
    g = GraphBuilder("squeezenet1_1", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = g.conv(g.input, "features.0", 64, 3, stride=2, act="relu", act_name="features.1")
    x = g.maxpool(x, "features.2", 3, 2, ceil_mode=True)
    x = _fire(g, x, "features.3", 16, 64, 64)
    x = _fire(g, x, "features.4", 16, 64, 64)
    x = g.maxpool(x, "features.5", 3, 2, ceil_mode=True)
    x = _fire(g, x, "features.6", 32, 128, 128)
    x = _fire(g, x, "features.7", 32, 128, 128)
    x = g.maxpool(x, "features.8", 3, 2, ceil_mode=True)
    x = _fire(g, x, "features.9", 48, 192, 192)
    x = _fire(g, x, "features.10", 48, 192, 192)
    x = _fire(g, x, "features.11", 64, 256, 256)
    x = _fire(g, x, "features.12", 64, 256, 256)
    x = g.dropout(x, "classifier.0", 0.5)
    x = g.conv(x, "classifier.1", num_classes, 1, act="relu", act_name="classifier.2")
    x = g.global_avgpool(x, "classifier.3")
    x = g.flatten(x, "flatten")
    return g.finish(x, "torchvision squeezenet1_1 (random weights)")
