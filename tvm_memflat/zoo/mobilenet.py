"""MobileNet V2 (width 1.0) as in ``torchvision.models.mobilenet_v2``."""

from __future__ import annotations

import onnx

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
    x = g.conv(
        g.input,
        "features.0.0",
        make_divisible(32 * width),
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
            out = make_divisible(c * width)
            x = _inverted_residual(g, x, f"features.{idx}", out, s if r == 0 else 1, t)
            idx += 1
    x = g.conv(
        x,
        f"features.{idx}.0",
        make_divisible(1280 * max(1.0, width)),
        1,
        bn=True,
        act="relu6",
        bn_name=f"features.{idx}.1",
        act_name=f"features.{idx}.2",
    )
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.dropout(x, "classifier.0", 0.2)
    x = g.gemm(x, "classifier.1", num_classes)
    return g.finish(x, "torchvision mobilenet_v2 (random weights)")
