"""MobileNet V3 Small and Large as in ``torchvision.models.mobilenet_v3_small`` / ``_large``."""

from __future__ import annotations

from typing import NamedTuple

import onnx

from ._blocks import inverted_residual
from ._graph import GraphBuilder, make_divisible

INPUT_SHAPE = (1, 3, 224, 224)

BN_EPS = 0.001


class BlockConfig(NamedTuple):
    """torchvision's ``InvertedResidualConfig`` before the width multiplier."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    activation: str  # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


# torchvision's _mobilenet_v3_conf (dilation 1, reduce_divider 1)
LARGE = (
    BlockConfig(16, 3, 16, 16, False, "RE", 1),
    BlockConfig(16, 3, 64, 24, False, "RE", 2),
    BlockConfig(24, 3, 72, 24, False, "RE", 1),
    BlockConfig(24, 5, 72, 40, True, "RE", 2),
    BlockConfig(40, 5, 120, 40, True, "RE", 1),
    BlockConfig(40, 5, 120, 40, True, "RE", 1),
    BlockConfig(40, 3, 240, 80, False, "HS", 2),
    BlockConfig(80, 3, 200, 80, False, "HS", 1),
    BlockConfig(80, 3, 184, 80, False, "HS", 1),
    BlockConfig(80, 3, 184, 80, False, "HS", 1),
    BlockConfig(80, 3, 480, 112, True, "HS", 1),
    BlockConfig(112, 3, 672, 112, True, "HS", 1),
    BlockConfig(112, 5, 672, 160, True, "HS", 2),
    BlockConfig(160, 5, 960, 160, True, "HS", 1),
    BlockConfig(160, 5, 960, 160, True, "HS", 1),
)
LARGE_LAST_CHANNEL = 1280

SMALL = (
    BlockConfig(16, 3, 16, 16, True, "RE", 2),
    BlockConfig(16, 3, 72, 24, False, "RE", 2),
    BlockConfig(24, 3, 88, 24, False, "RE", 1),
    BlockConfig(24, 5, 96, 40, True, "HS", 2),
    BlockConfig(40, 5, 240, 40, True, "HS", 1),
    BlockConfig(40, 5, 240, 40, True, "HS", 1),
    BlockConfig(40, 5, 120, 48, True, "HS", 1),
    BlockConfig(48, 5, 144, 48, True, "HS", 1),
    BlockConfig(48, 5, 288, 96, True, "HS", 2),
    BlockConfig(96, 5, 576, 96, True, "HS", 1),
    BlockConfig(96, 5, 576, 96, True, "HS", 1),
)
SMALL_LAST_CHANNEL = 1024


def _inverted_residual(g: GraphBuilder, x: str, name: str, cnf: BlockConfig, width: float) -> str:
    """torchvision's MobileNetV3 ``InvertedResidual`` (module path ``name.block.<i>``)."""
    cin = g.channels(x)
    if cin != make_divisible(cnf.input_channels * width):
        raise RuntimeError(f"{name}: input has {cin} channels, config says {cnf}")
    expanded = make_divisible(cnf.expanded_channels * width)
    out = make_divisible(cnf.out_channels * width)
    act = "hardswish" if cnf.activation == "HS" else "relu"
    se_channels = make_divisible(expanded // 4) if cnf.use_se else None
    return inverted_residual(
        g,
        x,
        name,
        out,
        expanded,
        cnf.kernel,
        cnf.stride,
        act,
        se_channels=se_channels,
        se_scale_act="hardsigmoid",
        eps=BN_EPS,
    )


def _mobilenet_v3(
    name: str,
    setting: tuple[BlockConfig, ...],
    last_channel: int,
    seed: int,
    num_classes: int,
    resolution: int,
    width: float,
    old_style: bool,
) -> onnx.ModelProto:
    g = GraphBuilder(name, (1, 3, resolution, resolution), seed, old_style=old_style)
    stem = make_divisible(setting[0].input_channels * width)
    x = g.conv_norm_act(g.input, "features.0", stem, 3, 2, act="hardswish", eps=BN_EPS)
    for idx, cnf in enumerate(setting, 1):
        x = _inverted_residual(g, x, f"features.{idx}", cnf, width)
    idx = len(setting) + 1
    x = g.conv_norm_act(x, f"features.{idx}", 6 * g.channels(x), 1, act="hardswish", eps=BN_EPS)
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.gemm(
        x,
        "classifier.0",
        make_divisible(last_channel * width),
        act="hardswish",
        act_name="classifier.1",
    )
    x = g.dropout(x, "classifier.2", 0.2)
    x = g.gemm(x, "classifier.3", num_classes)
    return g.finish(x, f"torchvision {name} (random weights)")


_DOC = """Build MobileNet V3 {size} with random weights.

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
        configuration becomes ``make_divisible(c * width, 8)``.
    old_style : bool, optional
        Opset-9 idioms (hard-swish as ``Mul(x, HardSigmoid(x))``, ``Sum``,
        ``Reshape``, ``Dropout`` ``classifier.2``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    Hard-swish is ONNX ``HardSwish``; squeeze-and-excitation is
    ``GlobalAveragePool``, 1x1 conv, ``Relu``, 1x1 conv, ``HardSigmoid``
    (alpha 1/6) and ``Mul`` with the map. Batch norms use eps 0.001; dropout
    is omitted (old style: a ``Dropout`` node).
    """


def mobilenet_v3_large(
    seed: int = 33,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    width: float = 1.0,
    old_style: bool = False,
) -> onnx.ModelProto:
    return _mobilenet_v3(
        "mobilenet_v3_large",
        LARGE,
        LARGE_LAST_CHANNEL,
        seed,
        num_classes,
        resolution,
        width,
        old_style,
    )


def mobilenet_v3_small(
    seed: int = 31,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    width: float = 1.0,
    old_style: bool = False,
) -> onnx.ModelProto:
    return _mobilenet_v3(
        "mobilenet_v3_small",
        SMALL,
        SMALL_LAST_CHANNEL,
        seed,
        num_classes,
        resolution,
        width,
        old_style,
    )


mobilenet_v3_large.__doc__ = _DOC.format(size="Large")
mobilenet_v3_small.__doc__ = _DOC.format(size="Small")
