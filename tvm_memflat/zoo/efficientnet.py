"""EfficientNet-B0 as in ``torchvision.models.efficientnet_b0``."""

from __future__ import annotations

from typing import NamedTuple

import onnx

from ._blocks import classifier, inverted_residual
from ._graph import GraphBuilder, make_divisible

INPUT_SHAPE = (1, 3, 224, 224)


class StageConfig(NamedTuple):
    """torchvision's ``MBConvConfig`` for B0 (width and depth multipliers 1)."""

    expand_ratio: int
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


SETTING = (
    StageConfig(1, 3, 1, 32, 16, 1),
    StageConfig(6, 3, 2, 16, 24, 2),
    StageConfig(6, 5, 2, 24, 40, 2),
    StageConfig(6, 3, 2, 40, 80, 3),
    StageConfig(6, 5, 1, 80, 112, 3),
    StageConfig(6, 5, 2, 112, 192, 4),
    StageConfig(6, 3, 1, 192, 320, 1),
)


def _mbconv(
    g: GraphBuilder, x: str, name: str, out: int, kernel: int, stride: int, expand_ratio: int
) -> str:
    """torchvision's ``MBConv``: expand 1x1, depthwise, SE (SiLU/Sigmoid), project 1x1."""
    cin = g.channels(x)
    expanded = make_divisible(cin * expand_ratio)
    se_channels = max(1, cin // 4)
    return inverted_residual(
        g, x, name, out, expanded, kernel, stride, "silu", se_channels=se_channels, se_act="silu"
    )


def efficientnet_b0(
    seed: int = 100,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    width: float = 1.0,
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build EfficientNet-B0 with random weights.

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input.
    width : float, optional
        torchvision's ``width_mult``: every channel count ``c`` of the
        configuration becomes ``make_divisible(c * width, 8)`` (the depth is
        not scaled).
    old_style : bool, optional
        Opset-9 idioms (``Sum`` residual adds, ``Reshape``, ``Dropout``
        ``classifier.0``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    SiLU is ``Mul(x, Sigmoid(x))``; squeeze-and-excitation is
    ``GlobalAveragePool``, 1x1 conv, SiLU, 1x1 conv, ``Sigmoid`` and ``Mul``
    with the map, with ``input_channels // 4`` squeeze channels. Batch norms
    use eps 1e-5 (torchvision's B0); dropout and stochastic depth are omitted
    (old style: a ``Dropout`` node).
    """
    g = GraphBuilder("efficientnet_b0", (1, 3, resolution, resolution), seed, old_style=old_style)
    stem = make_divisible(SETTING[0].input_channels * width)
    x = g.conv_norm_act(g.input, "features.0", stem, 3, 2, act="silu")
    for stage, cnf in enumerate(SETTING, 1):
        out = make_divisible(cnf.out_channels * width)
        for i in range(cnf.num_layers):
            x = _mbconv(
                g,
                x,
                f"features.{stage}.{i}",
                out,
                cnf.kernel,
                cnf.stride if i == 0 else 1,
                cnf.expand_ratio,
            )
    last = len(SETTING) + 1
    x = g.conv_norm_act(x, f"features.{last}", 4 * g.channels(x), 1, act="silu")
    x = classifier(g, x, num_classes, fc="classifier.1", dropout="classifier.0", ratio=0.2)
    return g.finish(x, "torchvision efficientnet_b0 (random weights)")
