"""Inception V3 as in ``torchvision.models.inception_v3`` (no auxiliary head)."""

from __future__ import annotations

import onnx

from ._blocks import basic_conv2d, classifier
from ._graph import GraphBuilder

INPUT_SHAPE = (1, 3, 299, 299)


def _inception_a(g: GraphBuilder, x: str, name: str, pool_features: int) -> str:
    b1 = basic_conv2d(g, x, f"{name}.branch1x1", 64, 1)
    b5 = basic_conv2d(g, x, f"{name}.branch5x5_1", 48, 1)
    b5 = basic_conv2d(g, b5, f"{name}.branch5x5_2", 64, 5, padding=2)
    b3 = basic_conv2d(g, x, f"{name}.branch3x3dbl_1", 64, 1)
    b3 = basic_conv2d(g, b3, f"{name}.branch3x3dbl_2", 96, 3, padding=1)
    b3 = basic_conv2d(g, b3, f"{name}.branch3x3dbl_3", 96, 3, padding=1)
    bp = g.avgpool(x, f"{name}.avg_pool", 3, 1, padding=1)
    bp = basic_conv2d(g, bp, f"{name}.branch_pool", pool_features, 1)
    return g.concat([b1, b5, b3, bp], f"{name}.cat")


def _inception_b(g: GraphBuilder, x: str, name: str) -> str:
    b3 = basic_conv2d(g, x, f"{name}.branch3x3", 384, 3, stride=2)
    bd = basic_conv2d(g, x, f"{name}.branch3x3dbl_1", 64, 1)
    bd = basic_conv2d(g, bd, f"{name}.branch3x3dbl_2", 96, 3, padding=1)
    bd = basic_conv2d(g, bd, f"{name}.branch3x3dbl_3", 96, 3, stride=2)
    bp = g.maxpool(x, f"{name}.max_pool", 3, 2)
    return g.concat([b3, bd, bp], f"{name}.cat")


def _inception_c(g: GraphBuilder, x: str, name: str, c7: int) -> str:
    b1 = basic_conv2d(g, x, f"{name}.branch1x1", 192, 1)
    b7 = basic_conv2d(g, x, f"{name}.branch7x7_1", c7, 1)
    b7 = basic_conv2d(g, b7, f"{name}.branch7x7_2", c7, (1, 7), padding=(0, 3))
    b7 = basic_conv2d(g, b7, f"{name}.branch7x7_3", 192, (7, 1), padding=(3, 0))
    bd = basic_conv2d(g, x, f"{name}.branch7x7dbl_1", c7, 1)
    bd = basic_conv2d(g, bd, f"{name}.branch7x7dbl_2", c7, (7, 1), padding=(3, 0))
    bd = basic_conv2d(g, bd, f"{name}.branch7x7dbl_3", c7, (1, 7), padding=(0, 3))
    bd = basic_conv2d(g, bd, f"{name}.branch7x7dbl_4", c7, (7, 1), padding=(3, 0))
    bd = basic_conv2d(g, bd, f"{name}.branch7x7dbl_5", 192, (1, 7), padding=(0, 3))
    bp = g.avgpool(x, f"{name}.avg_pool", 3, 1, padding=1)
    bp = basic_conv2d(g, bp, f"{name}.branch_pool", 192, 1)
    return g.concat([b1, b7, bd, bp], f"{name}.cat")


def _inception_d(g: GraphBuilder, x: str, name: str) -> str:
    b3 = basic_conv2d(g, x, f"{name}.branch3x3_1", 192, 1)
    b3 = basic_conv2d(g, b3, f"{name}.branch3x3_2", 320, 3, stride=2)
    b7 = basic_conv2d(g, x, f"{name}.branch7x7x3_1", 192, 1)
    b7 = basic_conv2d(g, b7, f"{name}.branch7x7x3_2", 192, (1, 7), padding=(0, 3))
    b7 = basic_conv2d(g, b7, f"{name}.branch7x7x3_3", 192, (7, 1), padding=(3, 0))
    b7 = basic_conv2d(g, b7, f"{name}.branch7x7x3_4", 192, 3, stride=2)
    bp = g.maxpool(x, f"{name}.max_pool", 3, 2)
    return g.concat([b3, b7, bp], f"{name}.cat")


def _inception_e(g: GraphBuilder, x: str, name: str) -> str:
    b1 = basic_conv2d(g, x, f"{name}.branch1x1", 320, 1)
    b3 = basic_conv2d(g, x, f"{name}.branch3x3_1", 384, 1)
    b3 = g.concat(
        [
            basic_conv2d(g, b3, f"{name}.branch3x3_2a", 384, (1, 3), padding=(0, 1)),
            basic_conv2d(g, b3, f"{name}.branch3x3_2b", 384, (3, 1), padding=(1, 0)),
        ],
        f"{name}.branch3x3.cat",
    )
    bd = basic_conv2d(g, x, f"{name}.branch3x3dbl_1", 448, 1)
    bd = basic_conv2d(g, bd, f"{name}.branch3x3dbl_2", 384, 3, padding=1)
    bd = g.concat(
        [
            basic_conv2d(g, bd, f"{name}.branch3x3dbl_3a", 384, (1, 3), padding=(0, 1)),
            basic_conv2d(g, bd, f"{name}.branch3x3dbl_3b", 384, (3, 1), padding=(1, 0)),
        ],
        f"{name}.branch3x3dbl.cat",
    )
    bp = g.avgpool(x, f"{name}.avg_pool", 3, 1, padding=1)
    bp = basic_conv2d(g, bp, f"{name}.branch_pool", 192, 1)
    return g.concat([b1, b3, bd, bp], f"{name}.cat")


def inception_v3(
    seed: int = 3,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build Inception V3 with random weights, without the auxiliary classifier.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input, at least 75 (torchvision's minimum).
    old_style : bool, optional
        Opset-9 idioms (``Reshape``, ``Dropout``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    Matches torchvision with ``aux_logits=False`` and ``transform_input=False``:
    batch norms use eps 0.001, the branch average pools count padding (PyTorch's
    default), dropout is omitted (old style: a ``Dropout`` node).
    """
    g = GraphBuilder("inception_v3", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = basic_conv2d(g, g.input, "Conv2d_1a_3x3", 32, 3, stride=2)
    x = basic_conv2d(g, x, "Conv2d_2a_3x3", 32, 3)
    x = basic_conv2d(g, x, "Conv2d_2b_3x3", 64, 3, padding=1)
    x = g.maxpool(x, "maxpool1", 3, 2)
    x = basic_conv2d(g, x, "Conv2d_3b_1x1", 80, 1)
    x = basic_conv2d(g, x, "Conv2d_4a_3x3", 192, 3)
    x = g.maxpool(x, "maxpool2", 3, 2)
    x = _inception_a(g, x, "Mixed_5b", 32)
    x = _inception_a(g, x, "Mixed_5c", 64)
    x = _inception_a(g, x, "Mixed_5d", 64)
    x = _inception_b(g, x, "Mixed_6a")
    x = _inception_c(g, x, "Mixed_6b", 128)
    x = _inception_c(g, x, "Mixed_6c", 160)
    x = _inception_c(g, x, "Mixed_6d", 160)
    x = _inception_c(g, x, "Mixed_6e", 192)
    x = _inception_d(g, x, "Mixed_7a")
    x = _inception_e(g, x, "Mixed_7b")
    x = _inception_e(g, x, "Mixed_7c")
    if resolution == INPUT_SHAPE[-1] and g.shape(x)[1:] != (2048, 8, 8):
        raise RuntimeError(f"unexpected feature map {g.shape(x)}")
    x = classifier(g, x, num_classes, ratio=0.5)
    return g.finish(x, "torchvision inception_v3, aux_logits=False (random weights)")
