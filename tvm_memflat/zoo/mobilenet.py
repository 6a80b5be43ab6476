"""MobileNet V2 as in ``torchvision.models.mobilenet_v2``, and msf-CNN's w0.35 variant."""

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


#: Input of msf-CNN's MobileNet V2 w0.35 (``MBV2-w0.35-r144``).
MSF_INPUT_SHAPE = (1, 3, 144, 144)

#: Its width multiplier.
MSF_WIDTH = 0.35


def mobilenet_v2_msf(
    seed: int = 2,
    *,
    resolution: int = MSF_INPUT_SHAPE[-1],
    width: float = MSF_WIDTH,
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build msf-CNN's MobileNet V2 (its ``mobilenetv2_layers``) with random weights.

    The layer list of ``analysis_optimization.py`` in github.com/TinyPART/msf-CNN,
    the network behind its ``MBV2-w0.35-r144`` points (``docs/msf_cnn.md``). It
    differs from torchvision's ``mobilenet_v2(width_mult=width)``:

    * channels are ``int(c * width)`` (truncated, not ``make_divisible(c * width, 8)``):
      at 0.35 the stem has 11 channels and the stages 5, 8, 11, 22, 33, 56, 112;
      the hidden width is ``int(c_in * width) * t``;
    * every block has its 1x1 expansion, also the first (``t = 1``: 11 -> 11);
    * no block adds its input back (no residual ``Add``);
    * the last 1x1 conv has ``int(1280 * width)`` channels (448; torchvision keeps
      1280 below width 1) and is the output: no pooling, no classifier.

    53 convolutions (1 + 17 x 3 + 1), 18,909,490 MACs at 0.35 and 144, the
    ``"Common"`` MAC count of msf-CNN's ``result.json`` files. Each conv has
    torchvision's batch norm (ReLU6 after the stem, the expansions, the depthwise
    convs and the last conv; the projections are linear); msf-CNN's deployed int8
    graphs have bare convs, which TVM's fusion makes the same layers.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    resolution : int, optional
        Side of the square input (default 144).
    width : float, optional
        Width multiplier (default 0.35).
    old_style : bool, optional
        Opset-9 idioms (``Clip`` attributes; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"``: the last conv's map, ``(1, 448, 5, 5)`` at 0.35 and 144.
    """
    g = GraphBuilder(
        "mobilenet_v2_msf", (1, 3, resolution, resolution), seed, old_style=old_style
    )
    x = g.conv_norm_act(g.input, "features.0", int(32 * width), 3, 2, act="relu6")
    idx = 1
    cin = int(32 * width)
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for r in range(n):
            out = int(c * width)
            hidden = cin * t
            stride = s if r == 0 else 1
            name = f"features.{idx}.conv"
            x = g.conv_norm_act(x, f"{name}.0", hidden, 1, act="relu6")
            x = g.conv_norm_act(x, f"{name}.1", hidden, 3, stride, groups=hidden, act="relu6")
            x = g.conv_norm_act(x, name, out, 1, start=2)
            cin = out
            idx += 1
    x = g.conv_norm_act(x, f"features.{idx}", int(1280 * width), 1, act="relu6")
    return g.finish(x, "msf-CNN mobilenetv2_layers (TinyPART/msf-CNN; random weights)")
