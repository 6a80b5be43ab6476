"""VGG-16 (configuration "D", no batch norm) as in ``torchvision.models.vgg16``."""

from __future__ import annotations

import onnx

from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

# torchvision's cfgs["D"]: output channels of the 3x3 convs of each stage; every
# stage ends with a 2x2 max pool ("M").
CFG_D: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def vgg16(
    seed: int = 16,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build VGG-16 with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input. The feature map (``resolution // 32``) must
        be 1 or a multiple of 7, so that torchvision's ``AdaptiveAvgPool2d((7, 7))``
        is an ``Expand`` or an ``AveragePool`` (e.g. 32 or 224); the
        classifier, and so the parameter count, does not change.
    old_style : bool, optional
        Opset-9 idioms (``Reshape``, ``Dropout`` ``classifier.2`` and
        ``classifier.5``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Raises
    ------
    ValueError
        If the feature map is neither 1 nor a multiple of 7.

    Notes
    -----
    torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the identity on the 7x7
    feature map of a 224x224 input and is omitted; dropout is omitted (old
    style: ``Dropout`` nodes).
    """
    g = GraphBuilder("vgg16", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = g.input
    i = 0  # index into torchvision's ``features`` Sequential
    for stage in CFG_D:
        for channels in stage:
            x = g.conv(
                x, f"features.{i}", channels, 3, padding=1, act="relu", act_name=f"features.{i + 1}"
            )
            i += 2
        x = g.maxpool(x, f"features.{i}", kernel=2, stride=2)
        i += 1
    n, c, h, w = g.shape(x)
    if (h, w) == (1, 1):  # adaptive pooling of one pixel to 7x7 repeats it
        x = g.expand(x, "avgpool", (n, c, 7, 7))
    elif h == w and h % 7 == 0 and h > 7:
        x = g.avgpool(x, "avgpool", h // 7, h // 7)
    elif (h, w) != (7, 7):
        raise ValueError(
            f"vgg16 at resolution {resolution}: feature map {h}x{w} is neither 1x1 nor 7k x 7k"
        )
    x = g.flatten(x, "flatten")
    x = g.gemm(x, "classifier.0", 4096, act="relu", act_name="classifier.1")
    x = g.dropout(x, "classifier.2", 0.5)
    x = g.gemm(x, "classifier.3", 4096, act="relu", act_name="classifier.4")
    x = g.dropout(x, "classifier.5", 0.5)
    x = g.gemm(x, "classifier.6", num_classes)
    return g.finish(x, "torchvision vgg16 (random weights)")
