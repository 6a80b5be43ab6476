"""GoogLeNet (Inception v1) as in ``torchvision.models.googlenet`` (no auxiliary heads)."""

from __future__ import annotations

import onnx

from ._blocks import basic_conv2d, classifier
from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

# torchvision's Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
# arguments after the input channels, per module.
INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

# Caffe's (BVLC GoogLeNet, the ONNX model zoo's opset-9 file) local response
# normalisation after pool1 and after conv2/3x3; old style only.
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


def _inception(
    g: GraphBuilder,
    x: str,
    name: str,
    ch1x1: int,
    ch3x3red: int,
    ch3x3: int,
    ch5x5red: int,
    ch5x5: int,
    pool_proj: int,
) -> str:
    b1 = basic_conv2d(g, x, f"{name}.branch1", ch1x1, 1)
    b2 = basic_conv2d(g, x, f"{name}.branch2.0", ch3x3red, 1)
    b2 = basic_conv2d(g, b2, f"{name}.branch2.1", ch3x3, 3, padding=1)
    b3 = basic_conv2d(g, x, f"{name}.branch3.0", ch5x5red, 1)
    # torchvision's "5x5" branch uses a 3x3 kernel (a known quirk kept for its weights)
    b3 = basic_conv2d(g, b3, f"{name}.branch3.1", ch5x5, 3, padding=1)
    b4 = g.maxpool(x, f"{name}.branch4.0", 3, 1, padding=1, ceil_mode=True)
    b4 = basic_conv2d(g, b4, f"{name}.branch4.1", pool_proj, 1)
    return g.concat([b1, b2, b3, b4], f"{name}.cat")


def googlenet(
    seed: int = 1,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build GoogLeNet with random weights, ``aux_logits=False``, ``transform_input=False``.

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
        Opset-9 idioms (ceil-mode pools as end padding, ``Reshape``,
        ``Dropout``; see `GraphBuilder`) plus, as in the model zoo's BVLC
        GoogLeNet, an ``LRN`` after ``maxpool1`` (``lrn1``) and after
        ``conv3`` (``lrn2``). The LRNs change the function; without them it
        is the same.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    Batch norms use eps 0.001; the max pools use ceil mode, as in
    torchvision; dropout is omitted (old style: a ``Dropout`` node).
    """
    g = GraphBuilder("googlenet", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = basic_conv2d(g, g.input, "conv1", 64, 7, stride=2, padding=3)
    x = g.maxpool(x, "maxpool1", 3, 2, ceil_mode=True)
    if old_style:
        x = g.lrn(x, "lrn1", **LRN)
    x = basic_conv2d(g, x, "conv2", 64, 1)
    x = basic_conv2d(g, x, "conv3", 192, 3, padding=1)
    if old_style:
        x = g.lrn(x, "lrn2", **LRN)
    x = g.maxpool(x, "maxpool2", 3, 2, ceil_mode=True)
    for name in ("inception3a", "inception3b"):
        x = _inception(g, x, name, *INCEPTION[name])
    x = g.maxpool(x, "maxpool3", 3, 2, ceil_mode=True)
    for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
        x = _inception(g, x, name, *INCEPTION[name])
    x = g.maxpool(x, "maxpool4", 2, 2, ceil_mode=True)
    for name in ("inception5a", "inception5b"):
        x = _inception(g, x, name, *INCEPTION[name])
    x = classifier(g, x, num_classes, ratio=0.2)
    return g.finish(x, "torchvision googlenet, aux_logits=False (random weights)")
