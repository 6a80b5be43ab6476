"""ShuffleNet V2 1.0x as in ``torchvision.models.shufflenet_v2_x1_0``."""

from __future__ import annotations

import onnx

from ._graph import OLD_STYLE_DROPOUT, GraphBuilder

INPUT_SHAPE = (1, 3, 224, 224)

STAGES_REPEATS = (4, 8, 4)
STAGES_OUT_CHANNELS = (24, 116, 232, 464, 1024)


def _branch(g: GraphBuilder, x: str, name: str, branch_features: int, stride: int) -> str:
    """torchvision's ``branch2``: 1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU."""
    y = g.conv_norm_act(x, name, branch_features, 1, act="relu")
    y = g.conv_norm_act(y, name, branch_features, 3, stride, groups=branch_features, start=3)
    return g.conv_norm_act(y, name, branch_features, 1, act="relu", start=5)


def _inverted_residual(g: GraphBuilder, x: str, name: str, out_channels: int, stride: int) -> str:
    """torchvision's ShuffleNetV2 ``InvertedResidual``.

    Stride 1: split the channels in two halves (``name.chunk``), transform the
    second, concatenate (``name.cat``). Stride 2: both branches read the whole
    input. Then ``channel_shuffle(out, 2)`` (``name.shuffle``).
    """
    branch_features = out_channels // 2
    if stride == 1:
        x1, x2 = g.split(x, f"{name}.chunk", 2)
        y = g.concat([x1, _branch(g, x2, f"{name}.branch2", branch_features, 1)], f"{name}.cat")
    else:
        cin = g.channels(x)
        b1 = g.conv_norm_act(x, f"{name}.branch1", cin, 3, stride, groups=cin)
        b1 = g.conv_norm_act(b1, f"{name}.branch1", branch_features, 1, act="relu", start=2)
        b2 = _branch(g, x, f"{name}.branch2", branch_features, stride)
        y = g.concat([b1, b2], f"{name}.cat")
    return g.channel_shuffle(y, f"{name}.shuffle", 2)


def shufflenet_v2_x1_0(
    seed: int = 210,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build ShuffleNet V2 1.0x (stages [4, 8, 4], channels [24, 116, 232, 464, 1024]).

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input.
    old_style : bool, optional
        Opset-9 idioms (``Split`` sizes as an attribute, a ``Dropout`` before
        ``fc``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    The channel split is one ``Split`` node (torch's ``x.chunk(2, dim=1)``);
    the channel shuffle is ``Reshape`` to ``(1, 2, C/2, H, W)``, ``Transpose``
    of axes 1 and 2, and ``Reshape`` back, with constant shapes. The global
    pool is ``ReduceMean`` over H and W (torch's ``x.mean([2, 3])``).
    """
    g = GraphBuilder(
        "shufflenet_v2_x1_0", (1, 3, resolution, resolution), seed, old_style=old_style
    )
    x = g.conv_norm_act(g.input, "conv1", STAGES_OUT_CHANNELS[0], 3, 2, act="relu")
    x = g.maxpool(x, "maxpool", 3, 2, padding=1)
    stages = zip(STAGES_REPEATS, STAGES_OUT_CHANNELS[1:4], strict=True)
    for stage, (repeats, out) in enumerate(stages, 2):
        for i in range(repeats):
            x = _inverted_residual(g, x, f"stage{stage}.{i}", out, 2 if i == 0 else 1)
    x = g.conv_norm_act(x, "conv5", STAGES_OUT_CHANNELS[-1], 1, act="relu")
    x = g.reduce_mean(x, "mean")
    x = g.dropout(x, "dropout", OLD_STYLE_DROPOUT)  # old style only
    x = g.gemm(x, "fc", num_classes)
    return g.finish(x, "torchvision shufflenet_v2_x1_0 (random weights)")
