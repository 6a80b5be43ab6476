"""MobileNet V2 (width 1.0) as in ``torchvision.models.mobilenet_v2``."""

from __future__ import annotations

import onnx

from ._graph import GraphBuilder

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

# gamma of the last BN of a residual branch: keeps the running sum O(1).
RESIDUAL_BN_SCALE = 0.5


def _inverted_residual(
    g: GraphBuilder, x: str, name: str, out_channels: int, stride: int, expand_ratio: int
) -> str:
    cin = g.channels(x)
    hidden = cin * expand_ratio
    use_res = stride == 1 and cin == out_channels
    y = x
    i = 0
    if expand_ratio != 1:
        y = g.conv(
            y,
            f"{name}.conv.{i}.0",
            hidden,
            1,
            bn=True,
            act="relu6",
            bn_name=f"{name}.conv.{i}.1",
            act_name=f"{name}.conv.{i}.2",
        )
        i += 1
    y = g.conv(
        y,
        f"{name}.conv.{i}.0",
        hidden,
        3,
        stride=stride,
        padding=1,
        groups=hidden,
        bn=True,
        act="relu6",
        bn_name=f"{name}.conv.{i}.1",
        act_name=f"{name}.conv.{i}.2",
    )
    i += 1
    y = g.conv(
        y,
        f"{name}.conv.{i}",
        out_channels,
        1,
        bn=True,
        bn_name=f"{name}.conv.{i + 1}",
        bn_scale=RESIDUAL_BN_SCALE if use_res else 1.0,
    )
    if use_res:
        y = g.add(x, y, f"{name}.add")
    return y


def mobilenet_v2(seed: int = 2, num_classes: int = 1000) -> onnx.ModelProto:
    """Build MobileNet V2 (width multiplier 1.0) with random weights.

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
    ReLU6 is ``Clip(0, 6)``; batch norms are kept as separate nodes; dropout
    is omitted.
    """
    g = GraphBuilder("mobilenet_v2", INPUT_SHAPE, seed)
    x = g.conv(
        g.input,
        "features.0.0",
        32,
        3,
        stride=2,
        padding=1,
        bn=True,
        act="relu6",
        bn_name="features.0.1",
        act_name="features.0.2",
    )
    idx = 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for r in range(n):
            x = _inverted_residual(g, x, f"features.{idx}", c, s if r == 0 else 1, t)
            idx += 1
    x = g.conv(
        x,
        f"features.{idx}.0",
        1280,
        1,
        bn=True,
        act="relu6",
        bn_name=f"features.{idx}.1",
        act_name=f"features.{idx}.2",
    )
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.gemm(x, "classifier.1", num_classes)
    return g.finish(x, "torchvision mobilenet_v2 (random weights)")
