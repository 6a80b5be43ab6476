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


def vgg16(seed: int = 16, num_classes: int = 1000) -> onnx.ModelProto:
    """Build VGG-16 with random weights.

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

    Notes
    -----
    torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the identity on the 7x7
    feature map of a 224x224 input and is omitted; dropout is omitted.
    """
    g = GraphBuilder("vgg16", INPUT_SHAPE, seed)
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
    if g.shape(x)[2:] != (7, 7):
        raise RuntimeError(f"unexpected feature map {g.shape(x)}")
    x = g.flatten(x, "flatten")
    x = g.gemm(x, "classifier.0", 4096, act="relu", act_name="classifier.1")
    x = g.gemm(x, "classifier.3", 4096, act="relu", act_name="classifier.4")
    x = g.gemm(x, "classifier.6", num_classes)
    return g.finish(x, "torchvision vgg16 (random weights)")
