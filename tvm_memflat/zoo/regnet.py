"""RegNetY-400MF as in ``torchvision.models.regnet_y_400mf``."""

from __future__ import annotations

import math

import numpy as np
import onnx

from ._blocks import RESIDUAL_BN_SCALE, SE_PROJECT_GAIN, classifier, residual_relu
from ._graph import GraphBuilder, make_divisible

INPUT_SHAPE = (1, 3, 224, 224)

STEM_WIDTH = 32
# BlockParams.from_init_params(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25)
DEPTH = 16
W_0 = 48
W_A = 27.89
W_M = 2.09
GROUP_WIDTH = 8
SE_RATIO = 0.25


def block_params(
    depth: int = DEPTH,
    w_0: int = W_0,
    w_a: float = W_A,
    w_m: float = W_M,
    group_width: int = GROUP_WIDTH,
) -> tuple[list[int], list[int], list[int]]:
    """torchvision's ``BlockParams.from_init_params`` (bottleneck multiplier 1).

    Returns
    -------
    depths, widths, group_widths : list of int
        Per stage; ``([1, 3, 6, 6], [48, 104, 208, 440], [8, 8, 8, 8])`` for
        RegNetY-400MF.
    """
    quant = 8
    # torch computes in float32: arange(depth) * w_a + w_0
    widths_cont = np.arange(depth, dtype=np.float32) * np.float32(w_a) + np.float32(w_0)
    capacity = np.round(np.log(widths_cont / np.float32(w_0)) / np.float32(math.log(w_m)))
    block_widths = [
        int(v)
        for v in np.round(np.float32(w_0) * np.power(np.float32(w_m), capacity) / quant) * quant
    ]
    depths: list[int] = []
    widths: list[int] = []
    for w in block_widths:
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(w)
            depths.append(1)
    groups = [min(group_width, w) for w in widths]
    widths = [make_divisible(w, gw) for w, gw in zip(widths, groups, strict=True)]
    return depths, widths, groups


def _res_bottleneck(
    g: GraphBuilder, x: str, name: str, width_out: int, stride: int, group_width: int
) -> str:
    """torchvision's ``ResBottleneckBlock`` with its ``BottleneckTransform`` ``f``."""
    width_in = g.channels(x)
    groups = width_out // group_width
    y = g.conv_norm_act(x, f"{name}.f.a", width_out, 1, act="relu")
    y = g.conv_norm_act(y, f"{name}.f.b", width_out, 3, stride, groups=groups, act="relu")
    # the SE width is relative to the block's input width
    y = g.squeeze_excitation(
        y, f"{name}.f.se", int(round(SE_RATIO * width_in)), act="relu", scale_act="sigmoid"
    )
    y = g.conv_norm_act(
        y, f"{name}.f.c", width_out, 1, gain=SE_PROJECT_GAIN, bn_scale=RESIDUAL_BN_SCALE
    )
    return residual_relu(
        g, x, y, name, stride, f"{name}.proj", f"{name}.activation", shortcut_first=True
    )


def regnet_y_400mf(
    seed: int = 400,
    num_classes: int = 1000,
    *,
    resolution: int = INPUT_SHAPE[-1],
    old_style: bool = False,
) -> onnx.ModelProto:
    """Build RegNetY-400MF (depths [1, 3, 6, 6], widths [48, 104, 208, 440]).

    Parameters
    ----------
    seed : int, optional
        Seed of the weight generator.
    num_classes : int, optional
        Classifier outputs.
    resolution : int, optional
        Side of the square input.
    old_style : bool, optional
        Opset-9 idioms (``Sum`` residual adds, ``Reshape``, a ``Dropout``
        before ``fc``; see `GraphBuilder`); same function.

    Returns
    -------
    onnx.ModelProto
        NCHW float32 model, input ``"input"`` ``(1, 3, resolution, resolution)``,
        output ``"logits"`` ``(1, num_classes)``.

    Notes
    -----
    The 3x3 convs are grouped with group width 8; every block has
    squeeze-and-excitation (``Relu`` and ``Sigmoid``) with
    ``round(0.25 * width_in)`` squeeze channels.
    """
    g = GraphBuilder("regnet_y_400mf", (1, 3, resolution, resolution), seed, old_style=old_style)
    x = g.conv_norm_act(g.input, "stem", STEM_WIDTH, 3, 2, act="relu")
    depths, widths, groups = block_params()
    for s, (depth, width, gw) in enumerate(zip(depths, widths, groups, strict=True), 1):
        for i in range(depth):
            name = f"trunk_output.block{s}.block{s}-{i}"
            x = _res_bottleneck(g, x, name, width, 2 if i == 0 else 1, gw)
    x = classifier(g, x, num_classes)  # its dropout: old style only
    return g.finish(x, "torchvision regnet_y_400mf (random weights)")
