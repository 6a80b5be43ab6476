"""Building blocks that several zoo architectures share.

Each function appends one torchvision block to a `GraphBuilder` and names its
nodes after torchvision's module paths, as the architecture modules do. The
weights are drawn in the order the nodes are built, which is torch's module
order.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._graph import OLD_STYLE_DROPOUT, GraphBuilder

#: ``gamma`` of the last batch norm of a residual branch: keeps the running sum O(1).
RESIDUAL_BN_SCALE = 0.5

#: Gain of the projection conv after a squeeze-and-excitation gate: the gate (a
#: (hard) sigmoid around 0.5) halves the map, the doubled gain restores it.
SE_PROJECT_GAIN = 2.0

#: Batch-norm epsilon of torchvision's ``BasicConv2d`` (GoogLeNet, Inception V3).
BASIC_CONV_BN_EPS = 0.001


def classifier(
    g: GraphBuilder,
    x: str,
    num_classes: int,
    fc: str = "fc",
    dropout: str = "dropout",
    ratio: float = OLD_STYLE_DROPOUT,
) -> str:
    """The usual head: global average pool, flatten, dropout and a linear layer.

    Nodes ``avgpool`` (``GlobalAveragePool``), ``flatten``, ``dropout`` (a node
    in old style only, see `GraphBuilder.dropout`) and the ``Gemm`` ``fc``.

    Returns
    -------
    str
        The logits, ``(N, num_classes)``.
    """
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.dropout(x, dropout, ratio)
    return g.gemm(x, fc, num_classes)


def resnet_stem(g: GraphBuilder, out_channels: int, conv: str, bn: str, act: str, pool: str) -> str:
    """ResNet's stem on the graph input: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (padding 1).

    ``conv``, ``bn``, ``act`` and ``pool`` name the four nodes (DenseNet uses
    the same stem under other names).
    """
    x = g.conv(
        g.input,
        conv,
        out_channels,
        7,
        stride=2,
        padding=3,
        bn=True,
        act="relu",
        bn_name=bn,
        act_name=act,
    )
    return g.maxpool(x, pool, 3, 2, padding=1)


def basic_conv2d(
    g: GraphBuilder,
    x: str,
    name: str,
    out_channels: int,
    kernel: int | Sequence[int],
    stride: int = 1,
    padding: int | Sequence[int] = 0,
) -> str:
    """torchvision's ``BasicConv2d`` (GoogLeNet, Inception V3): conv (no bias), BN, ReLU.

    Nodes ``name.conv``, ``name.bn`` (eps `BASIC_CONV_BN_EPS`) and ``name.relu``.
    """
    return g.conv(
        x,
        f"{name}.conv",
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        bn=True,
        act="relu",
        bn_name=f"{name}.bn",
        act_name=f"{name}.relu",
        eps=BASIC_CONV_BN_EPS,
    )


def residual_relu(
    g: GraphBuilder,
    x: str,
    y: str,
    name: str,
    stride: int,
    shortcut: str,
    act_name: str,
    *,
    shortcut_first: bool = False,
) -> str:
    """Close a residual block: add the branch ``y`` to the block input ``x``, then ReLU.

    Where the block changes the stride or the channels, the shortcut is a
    strided 1x1 conv and BN (torchvision's ``downsample`` or ``proj``:
    ``shortcut.0`` and ``shortcut.1``), built after the branch as in torch.

    Parameters
    ----------
    g : GraphBuilder
        The builder.
    x, y : str
        Block input and the branch's output.
    name : str
        Module path of the block; the addition is ``name.add``.
    stride : int
        Stride of the branch.
    shortcut : str
        Module path of the projection shortcut.
    act_name : str
        Name of the final ``Relu``.
    shortcut_first : bool, optional
        The addition reads the shortcut first (RegNet) instead of the branch (ResNet).

    Returns
    -------
    str
        Output tensor name.
    """
    out = g.channels(y)
    identity = x
    if stride != 1 or g.channels(x) != out:
        identity = g.conv_norm_act(x, shortcut, out, 1, stride)
    terms = (identity, y) if shortcut_first else (y, identity)
    return g.relu(g.add(*terms, f"{name}.add"), act_name)


def inverted_residual(
    g: GraphBuilder,
    x: str,
    name: str,
    out_channels: int,
    expanded: int,
    kernel: int,
    stride: int,
    act: str,
    *,
    se_channels: int | None = None,
    se_act: str = "relu",
    se_scale_act: str = "sigmoid",
    eps: float = 1e-5,
    v2_layout: bool = False,
) -> str:
    """torchvision's MobileNet V2/V3 ``InvertedResidual`` and EfficientNet's ``MBConv``.

    A 1x1 expansion to ``expanded`` channels with ``act`` (left out when
    ``expanded`` is the input's channel count), a depthwise ``kernel`` x
    ``kernel`` conv with ``stride`` and ``act``, optionally a
    squeeze-and-excitation block, and a linear 1x1 projection to
    ``out_channels``. With stride 1 and as many output as input channels the
    input is added back (the projection's BN ``gamma`` is then
    `RESIDUAL_BN_SCALE`; stochastic depth is the identity in inference).

    The layers are the entries ``name.block.<i>`` (each a
    ``Conv2dNormActivation``, see `GraphBuilder.conv_norm_act`, or the
    ``SqueezeExcitation``); the addition is ``name.add``.

    Parameters
    ----------
    g : GraphBuilder
        The builder.
    x : str
        Block input.
    name : str
        Module path of the block.
    out_channels, expanded, kernel, stride : int
        Output and hidden channels, depthwise kernel and stride.
    act : str
        Activation of the expansion and the depthwise conv (see `GraphBuilder.activation`).
    se_channels : int, optional
        Squeeze channels of a squeeze-and-excitation block after the depthwise
        conv (none by default); the projection then has gain `SE_PROJECT_GAIN`.
    se_act, se_scale_act : str, optional
        Its activations (see `GraphBuilder.squeeze_excitation`).
    eps : float, optional
        Batch-norm epsilon.
    v2_layout : bool, optional
        MobileNet V2's module layout: the entries are ``name.conv.<i>``, the
        projection's conv and BN are two entries of their own, and the
        addition reads the block input first.

    Returns
    -------
    str
        Output tensor name.
    """
    cin = g.channels(x)
    use_res = stride == 1 and cin == out_channels
    seq = f"{name}.conv" if v2_layout else f"{name}.block"
    y = x
    i = 0
    if expanded != cin:
        y = g.conv_norm_act(y, f"{seq}.{i}", expanded, 1, act=act, eps=eps)
        i += 1
    y = g.conv_norm_act(
        y, f"{seq}.{i}", expanded, kernel, stride, groups=expanded, act=act, eps=eps
    )
    i += 1
    if se_channels is not None:
        y = g.squeeze_excitation(y, f"{seq}.{i}", se_channels, act=se_act, scale_act=se_scale_act)
        i += 1
    # V2: the projection's conv and BN are entries i and i + 1 of name.conv
    path, start = (seq, i) if v2_layout else (f"{seq}.{i}", 0)
    y = g.conv_norm_act(
        y,
        path,
        out_channels,
        1,
        start=start,
        eps=eps,
        gain=1.0 if se_channels is None else SE_PROJECT_GAIN,
        bn_scale=RESIDUAL_BN_SCALE if use_res else 1.0,
    )
    if not use_res:
        return y
    if v2_layout:
        return g.add(x, y, f"{name}.add")
    return g.add(y, x, f"{name}.add")
