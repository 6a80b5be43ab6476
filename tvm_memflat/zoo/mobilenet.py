"""MobileNet V2 (width 1.0) as in ``torchvision.models.mobilenet_v2``."""

from __future__ import annotations

import onnx

from ._blocks import classifier, inverted_residual
from ._graph import GraphBuilder, make_divisible

INPUT_SHAPE = (1, 3, 224, 224)

# (expand ratio t, output channels c, repeats n, first stride s), torchvision's
# inverted_residual_setting; all channel counts are already multiples of 8.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(
    seed: int = 2,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    width: float = 1.0,
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build MobileNet V2 with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input.
    width : float, optional
        torchvision's ``width_mult``: channel counts are ``make_divisible(c * width, 8)``,
        the last conv has ``make_divisible(1280 * max(1, width), 8)``.
    old_style : bool, optional
        Opset-9 idioms (``Clip`` attributes, ``Sum``, ``Reshape``, ``Dropout``
        ``classifier.0``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    ReLU6 is ``Clip(0, 6)``; batch norms are kept as separate nodes; dropout
    is omitted (old style: a ``Dropout`` node).
    """
    g = GraphBuilder("mobilenet_v2", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = g.conv_norm_act(g.input, "features.0", make_divisible(32 * width), 3, 2, act="relu6")
    idx = 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for r in range(n):
            out = make_divisible(c * width)
            hidden = g.channels(x) * t
            stride = s if r == 0 else 1
            x = inverted_residual(
                g, x, f"features.{idx}", out, hidden, 3, stride, "relu6", v2_layout=True
            )
            idx += 1
    last = make_divisible(1280 * max(1.0, width))
    x = g.conv_norm_act(x, f"features.{idx}", last, 1, act="relu6")
    x = classifier(g, x, num_classes, fc="classifier.1", dropout="classifier.0", ratio=0.2)
    return g.finish(x, "torchvision mobilenet_v2 (random weights)")
