"""A small builder for random-weight CNN graphs in ONNX.

`GraphBuilder` appends nodes and initializers straight into an
``onnx.ModelProto`` while tracking the (static) shape of every tensor it
creates, so the architecture modules only state channel counts, kernels and
strides. Node and tensor names follow torchvision's module paths
(``"layer1.0.conv1"``, ``"layer1.0.bn1.running_mean"``, ...), which keeps
reports readable.

Weights are drawn from one ``numpy.random.Generator`` seeded locally, in a
fixed order, so a build is byte-identical across calls and processes.
Weights are Kaiming-uniform (the PyTorch default distribution) with a
standard deviation of ``gain / sqrt(fan_in)``; batch-norm layers are close
to the identity. Together this keeps activations of order one through the
whole depth for a standard-normal input.

With ``old_style=True`` the builder writes the same network the way older
exporters did (the ONNX model zoo's opset-9 files): opset 9 and IR version 4,
every initializer also declared as a graph input, ``Clip`` bounds as
attributes, ``Reshape`` with a constant shape initializer instead of
``Flatten``, residual additions as ``Sum``, `GraphBuilder.dropout` as a
``Dropout`` node (the architectures put one before every classifier, at
torchvision's module path where it has dropout), ceil-mode max pools as
explicit extra end padding
(``ceil_mode`` needs opset 10) and hard-swish as ``x * HardSigmoid(x)``
(``HardSwish`` needs opset 14). Weights are drawn in the same order, so both
styles compute the same function (an architecture may add ``LRN`` nodes in
old style, which changes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17
OLD_OPSET = 9
OLD_IR_VERSION = 4  # the IR version of opset 9 (initializers may also be graph inputs)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

RELU_GAIN = math.sqrt(2.0)

_CLIP_MIN = "relu6.min"
_CLIP_MAX = "relu6.max"

#: ``HardSigmoid`` attributes of PyTorch's ``hardsigmoid(x) = relu6(x + 3) / 6``.
HARDSIGMOID_ALPHA = 1.0 / 6.0
HARDSIGMOID_BETA = 0.5

#: Dropout ratio of the ``Dropout`` node an old-style graph gets before a
#: classifier that has none in torchvision (inference ignores it).
OLD_STYLE_DROPOUT = 0.5

ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round ``value`` to a multiple of ``divisor``.

    The result is at least ``min_value`` (default ``divisor``) and never more
    than 10 % below ``value``.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """Return ``value`` as an ``(h, w)`` pair."""
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


def _pool_out(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output length of a pooling/convolution window along one axis."""
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"window {kernel} larger than padded input {size} + 2*{pad}")
    if ceil_mode:
        out = -(-span // stride) + 1
        # PyTorch and onnxruntime drop a last window that starts in the right padding;
        # ONNX shape inference (opset 17) does not, so such a graph is ambiguous.
        if (out - 1) * stride >= size + pad:
            raise ValueError(
                f"ceil_mode pooling of size {size} (kernel {kernel}, stride {stride}, pad {pad})"
                f" is ambiguous: ONNX shape inference gives {out}, onnxruntime {out - 1}"
            )
        return out
    return span // stride + 1


class GraphBuilder:
    """Build a single-input, single-output NCHW float32 ONNX graph.

    Parameters
    ----------
    name : str
        Graph name (also used as ``doc_string`` prefix).
    input_shape : tuple of int
        Shape of the graph input ``"input"``, e.g. ``(1, 3, 224, 224)``.
    seed : int
        Seed of the local ``numpy.random.default_rng`` that draws all weights.
    old_style : bool, optional
        Write opset-9 idioms (see the module docstring); weights are the same.

    Notes
    -----
    Every layer method takes the name of its input tensor and returns the
    name of its output tensor. A node's output tensor has the node's name
    (`split` names its outputs ``name + ".0"``, ``name + ".1"``, ...).
    """

    def __init__(
        self, name: str, input_shape: Sequence[int], seed: int, *, old_style: bool = False
    ) -> None:
        self.name = name
        self.old_style = old_style
        self.rng = np.random.default_rng(seed)
        self.model = onnx.ModelProto()
        self.model.ir_version = OLD_IR_VERSION if old_style else IR_VERSION
        self.model.producer_name = "tvm_memflat.zoo"
        self.model.opset_import.append(helper.make_opsetid("", OLD_OPSET if old_style else OPSET))
        self.graph = self.model.graph
        self.graph.name = name
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.input = INPUT_NAME
        self.shapes[INPUT_NAME] = tuple(int(d) for d in input_shape)
        self.graph.input.append(
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(input_shape))
        )
        self._names: set[str] = {INPUT_NAME}
        self._has_clip_bounds = False

    # ------------------------------------------------------------------ helpers
    def shape(self, x: str) -> tuple[int, ...]:
        """Return the static shape of tensor ``x``.

        Parameters
        ----------
        x : str
            Tensor name.

        Returns
        -------
        tuple of int
            The shape, batch first.
        """
        return self.shapes[x]

    def channels(self, x: str) -> int:
        """Return the channel count (axis 1) of tensor ``x``."""
        return self.shapes[x][1]

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate tensor/node name {name!r}")
        self._names.add(name)
        return name

    def _node(
        self, op: str, inputs: Sequence[str], name: str, shape: tuple[int, ...], **attrs: object
    ) -> str:
        self._claim(name)
        self.graph.node.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        self.shapes[name] = shape
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add a float32 initializer holding ``array``.

        Parameters
        ----------
        name : str
            Initializer name.
        array : numpy.ndarray
            Values; converted to C-contiguous float32.

        Returns
        -------
        str
            ``name``.
        """
        return self._constant(
            name, np.ascontiguousarray(array, dtype=np.float32), TensorProto.FLOAT
        )

    def int_initializer(self, name: str, values: Sequence[int]) -> str:
        """Add a 1-D int64 initializer (a shape or split sizes); returns ``name``."""
        return self._constant(name, np.asarray(values, dtype=np.int64), TensorProto.INT64)

    def _constant(self, name: str, array: np.ndarray, data_type: int) -> str:
        """Append ``array`` (already of the dtype of ``data_type``) as initializer ``name``."""
        self._claim(name)
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = data_type
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
        return name

    def _uniform(self, shape: Sequence[int], std: float) -> np.ndarray:
        """Zero-mean uniform float32 values with standard deviation ``std``."""
        values = self.rng.random(int(np.prod(shape)), dtype=np.float32)
        values -= np.float32(0.5)
        values *= np.float32(2.0 * math.sqrt(3.0) * std)
        return values.reshape(shape)

    def _weight(self, name: str, shape: Sequence[int], fan_in: int, gain: float) -> str:
        return self.initializer(name, self._uniform(shape, gain / math.sqrt(fan_in)))

    def _bias(self, name: str, n: int) -> str:
        return self.initializer(name, self._uniform((n,), 0.01))

    # ------------------------------------------------------------------ layers
    def conv(
        self,
        x: str,
        name: str,
        out_channels: int,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool | None = None,
        bn: bool = False,
        act: str | None = None,
        *,
        bn_name: str | None = None,
        act_name: str | None = None,
        eps: float = 1e-5,
        gain: float | None = None,
        bn_scale: float = 1.0,
    ) -> str:
        """Convolution, optionally followed by batch norm and an activation.

        Parameters
        ----------
        x : str
            Input tensor (NCHW).
        name : str
            Name of the Conv node; its weights are ``name + ".weight"`` / ``".bias"``.
        out_channels : int
            Output channels.
        kernel, stride, padding : int or (int, int)
            Window size, stride and symmetric zero padding per spatial axis.
        groups : int, optional
            Convolution groups (``groups == in_channels`` for depthwise).
        bias : bool, optional
            Whether the convolution has a bias; default: ``not bn``.
        bn : bool, optional
            Append a ``BatchNormalization`` node.
        act : {None, "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu"}, optional
            Append that activation (see `activation`).
        bn_name, act_name : str, optional
            Names of the BN and activation nodes; default ``name + ".bn"`` and
            ``name + "." + act`` (``".relu"``, ``".relu6"``, ...).
        eps : float, optional
            Batch-norm epsilon.
        gain : float, optional
            Weight std is ``gain / sqrt(fan_in)``; default ``sqrt(2)`` before an
            activation, else 1.
        bn_scale : float, optional
            Multiplies the batch-norm ``gamma`` (use < 1 on residual branches).

        Returns
        -------
        str
            Output tensor name.
        """
        n, cin, h, w = self.shapes[x]
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        if cin % groups or out_channels % groups:
            raise ValueError(f"{name}: channels {cin}->{out_channels} not divisible by {groups}")
        if bias is None:
            bias = not bn
        if gain is None:
            gain = RELU_GAIN if act else 1.0
        fan_in = cin // groups * kh * kw
        inputs = [
            x,
            self._weight(f"{name}.weight", (out_channels, cin // groups, kh, kw), fan_in, gain),
        ]
        if bias:
            inputs.append(self._bias(f"{name}.bias", out_channels))
        out_shape = (
            n,
            out_channels,
            _pool_out(h, kh, sh, ph, False),
            _pool_out(w, kw, sw, pw, False),
        )
        y = self._node(
            "Conv",
            inputs,
            name,
            out_shape,
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            pads=[ph, pw, ph, pw],
            dilations=[1, 1],
            group=groups,
        )
        if bn:
            y = self.batchnorm(y, bn_name or f"{name}.bn", eps=eps, scale=bn_scale)
        if act is not None:
            y = self.activation(y, act, act_name or f"{name}.{act}")
        return y

    def conv_norm_act(
        self,
        x: str,
        name: str,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: str | None = None,
        *,
        start: int = 0,
        eps: float = 1e-5,
        gain: float | None = None,
        bn_scale: float = 1.0,
    ) -> str:
        """Convolution (no bias), batch norm and optional activation named as torch layers.

        torchvision's ``Conv2dNormActivation``: the three are consecutive entries
        of the ``Sequential`` at module path ``name``, ``name.<start>`` (conv),
        ``name.<start + 1>`` (BN) and ``name.<start + 2>`` (activation).

        Parameters
        ----------
        x : str
            Input tensor (NCHW).
        name : str
            Module path of the ``Sequential``.
        out_channels, kernel, stride, groups : int
            As in `conv` (square kernel and stride).
        padding : int, optional
            Default ``(kernel - 1) // 2``, torchvision's default.
        act : str, optional
            Activation (see `activation`); none by default.
        start : int, optional
            Index of the conv in the ``Sequential``.
        eps, gain, bn_scale : float, optional
            As in `conv`.

        Returns
        -------
        str
            Output tensor name.
        """
        if padding is None:
            padding = (kernel - 1) // 2
        return self.conv(
            x,
            f"{name}.{start}",
            out_channels,
            kernel,
            stride=stride,
            padding=padding,
            groups=groups,
            bn=True,
            act=act,
            bn_name=f"{name}.{start + 1}",
            act_name=f"{name}.{start + 2}",
            eps=eps,
            gain=gain,
            bn_scale=bn_scale,
        )

    def batchnorm(self, x: str, name: str, eps: float = 1e-5, scale: float = 1.0) -> str:
        """Inference-mode batch norm that is close to the identity.

        ``gamma`` is about ``scale``, ``beta`` and ``running_mean`` are small,
        ``running_var`` is about 1.

        Parameters
        ----------
        x : str
            Input tensor.
        name : str
            Node name; parameters are ``name + ".weight"``, ``".bias"``,
            ``".running_mean"`` and ``".running_var"``.
        eps : float, optional
            Epsilon.
        scale : float, optional
            Nominal ``gamma``.

        Returns
        -------
        str
            Output tensor name.
        """
        c = self.shapes[x][1]
        gamma = self._uniform((c,), 0.05)
        gamma += np.float32(1.0)
        gamma *= np.float32(scale)
        beta = self._uniform((c,), 0.05)
        mean = self._uniform((c,), 0.05)
        var = self._uniform((c,), 0.05)
        var += np.float32(1.0)
        inputs = [
            x,
            self.initializer(f"{name}.weight", gamma),
            self.initializer(f"{name}.bias", beta),
            self.initializer(f"{name}.running_mean", mean),
            self.initializer(f"{name}.running_var", var),
        ]
        return self._node("BatchNormalization", inputs, name, self.shapes[x], epsilon=float(eps))

    def relu(self, x: str, name: str) -> str:
        """``Relu`` node named ``name``."""
        return self._node("Relu", [x], name, self.shapes[x])

    def relu6(self, x: str, name: str) -> str:
        """ReLU6 as ``Clip(x, 0, 6)``; the bounds are two shared scalar initializers.

        In old style the bounds are ``Clip``'s ``min``/``max`` attributes (opset < 11).
        """
        if self.old_style:
            return self._node("Clip", [x], name, self.shapes[x], min=0.0, max=6.0)
        if not self._has_clip_bounds:
            self.initializer(_CLIP_MIN, np.array(0.0, dtype=np.float32))
            self.initializer(_CLIP_MAX, np.array(6.0, dtype=np.float32))
            self._has_clip_bounds = True
        return self._node("Clip", [x, _CLIP_MIN, _CLIP_MAX], name, self.shapes[x])

    def maxpool(
        self,
        x: str,
        name: str,
        kernel: int,
        stride: int,
        padding: int = 0,
        ceil_mode: bool = False,
    ) -> str:
        """``MaxPool`` with a square window.

        Parameters
        ----------
        x : str
            Input tensor.
        name : str
            Node name.
        kernel, stride, padding : int
            Window, stride and symmetric padding.
        ceil_mode : bool, optional
            Round the output size up (torchvision's SqueezeNet).

        Returns
        -------
        str
            Output tensor name.
        """
        shape = self._pool_shape(x, kernel, stride, padding, ceil_mode)
        if not self.old_style:
            pads = [padding] * 4
            return self._pool(
                "MaxPool", x, name, shape, kernel, stride, pads, ceil_mode=int(ceil_mode)
            )
        # MaxPool-8 has no ceil_mode: pad the end so that floor mode gives the
        # same windows (padding never wins a max).
        h, w = self.shapes[x][2:]
        extra_h = (shape[2] - 1) * stride + kernel - (h + 2 * padding)
        extra_w = (shape[3] - 1) * stride + kernel - (w + 2 * padding)
        pads = [padding, padding, padding + extra_h, padding + extra_w]
        return self._pool("MaxPool", x, name, shape, kernel, stride, pads)

    def avgpool(
        self,
        x: str,
        name: str,
        kernel: int,
        stride: int,
        padding: int = 0,
        count_include_pad: bool = True,
    ) -> str:
        """``AveragePool`` with a square window.

        Parameters
        ----------
        x : str
            Input tensor.
        name : str
            Node name.
        kernel, stride, padding : int
            Window, stride and symmetric padding.
        count_include_pad : bool, optional
            Divide by the full window size, as PyTorch's ``avg_pool2d`` does
            by default.

        Returns
        -------
        str
            Output tensor name.
        """
        shape = self._pool_shape(x, kernel, stride, padding, False)
        pads = [padding] * 4
        return self._pool(
            "AveragePool",
            x,
            name,
            shape,
            kernel,
            stride,
            pads,
            count_include_pad=int(count_include_pad),
        )

    def _pool_shape(
        self, x: str, kernel: int, stride: int, padding: int, ceil_mode: bool
    ) -> tuple[int, ...]:
        """Output shape of a square pooling window over NCHW tensor ``x``."""
        n, c, h, w = self.shapes[x]
        return (
            n,
            c,
            _pool_out(h, kernel, stride, padding, ceil_mode),
            _pool_out(w, kernel, stride, padding, ceil_mode),
        )

    def _pool(
        self,
        op: str,
        x: str,
        name: str,
        shape: tuple[int, ...],
        kernel: int,
        stride: int,
        pads: list[int],
        **attrs: object,
    ) -> str:
        """A pooling node with a square ``kernel`` and ``stride``."""
        return self._node(
            op,
            [x],
            name,
            shape,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=pads,
            **attrs,
        )

    def global_avgpool(self, x: str, name: str) -> str:
        """``GlobalAveragePool`` (torch ``AdaptiveAvgPool2d((1, 1))``)."""
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", [x], name, (n, c, 1, 1))

    def concat(self, xs: Sequence[str], name: str) -> str:
        """Concatenate NCHW tensors along channels."""
        first = self.shapes[xs[0]]
        for x in xs[1:]:
            s = self.shapes[x]
            if s[0] != first[0] or s[2:] != first[2:]:
                raise ValueError(f"{name}: cannot concat shapes {first} and {s}")
        c = sum(self.shapes[x][1] for x in xs)
        return self._node("Concat", list(xs), name, (first[0], c, *first[2:]), axis=1)

    def add(self, a: str, b: str, name: str) -> str:
        """Elementwise ``Add`` of two same-shape tensors (``Sum`` in old style)."""
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"{name}: cannot add {self.shapes[a]} and {self.shapes[b]}")
        return self._node("Sum" if self.old_style else "Add", [a, b], name, self.shapes[a])

    def mul(self, a: str, b: str, name: str) -> str:
        """Elementwise ``Mul``; ``a`` may broadcast against ``b`` (e.g. ``(N, C, 1, 1)``)."""
        sa, sb = self.shapes[a], self.shapes[b]
        if len(sa) != len(sb) or any(
            1 not in (p, q) and p != q for p, q in zip(sa, sb, strict=True)
        ):
            raise ValueError(f"{name}: cannot multiply {sa} and {sb}")
        shape = tuple(max(p, q) for p, q in zip(sa, sb, strict=True))
        return self._node("Mul", [a, b], name, shape)

    def flatten(self, x: str, name: str) -> str:
        """``Flatten`` (axis 1) to ``(N, C*H*W)``.

        In old style: ``Reshape`` with the constant shape initializer ``name + ".shape"``.
        """
        s = self.shapes[x]
        out = (s[0], int(np.prod(s[1:])))
        if self.old_style:
            shape = self.int_initializer(f"{name}.shape", out)
            return self._node("Reshape", [x, shape], name, out)
        return self._node("Flatten", [x], name, out, axis=1)

    def reshape(self, x: str, name: str, shape: Sequence[int]) -> str:
        """``Reshape`` to the static ``shape`` (constant initializer ``name + ".shape"``)."""
        shape = tuple(int(d) for d in shape)
        if math.prod(shape) != math.prod(self.shapes[x]) or min(shape) < 1:
            raise ValueError(f"{name}: cannot reshape {self.shapes[x]} to {shape}")
        init = self.int_initializer(f"{name}.shape", shape)
        return self._node("Reshape", [x, init], name, shape)

    def transpose(self, x: str, name: str, perm: Sequence[int]) -> str:
        """``Transpose`` with permutation ``perm``."""
        s = self.shapes[x]
        return self._node(
            "Transpose", [x], name, tuple(s[p] for p in perm), perm=[int(p) for p in perm]
        )

    def expand(self, x: str, name: str, shape: Sequence[int]) -> str:
        """``Expand`` (broadcast) to the static ``shape`` (initializer ``name + ".shape"``)."""
        shape = tuple(int(d) for d in shape)
        s = self.shapes[x]
        if len(s) != len(shape) or any(p not in (1, q) for p, q in zip(s, shape, strict=True)):
            raise ValueError(f"{name}: cannot expand {s} to {shape}")
        init = self.int_initializer(f"{name}.shape", shape)
        return self._node("Expand", [x, init], name, shape)

    def split(self, x: str, name: str, parts: int) -> list[str]:
        """Split the channels into ``parts`` equal chunks (torch ``x.chunk(parts, 1)``).

        One ``Split`` node named ``name`` with outputs ``name + ".0"``, ... At
        opset 17 the sizes are implied by the number of outputs; in old style
        they are the ``split`` attribute.
        """
        n, c, *rest = self.shapes[x]
        if c % parts:
            raise ValueError(f"{name}: {c} channels do not split into {parts}")
        self._claim(name)
        outs = [self._claim(f"{name}.{i}") for i in range(parts)]
        attrs: dict[str, object] = {"axis": 1}
        if self.old_style:
            attrs["split"] = [c // parts] * parts
        self.graph.node.append(helper.make_node("Split", [x], outs, name=name, **attrs))
        for out in outs:
            self.shapes[out] = (n, c // parts, *rest)
        return outs

    def channel_shuffle(self, x: str, name: str, groups: int) -> str:
        """torchvision's ``channel_shuffle``: Reshape, Transpose, Reshape (constant shapes).

        Nodes ``name + ".view"``, ``name + ".transpose"`` and ``name``.
        """
        n, c, h, w = self.shapes[x]
        if c % groups:
            raise ValueError(f"{name}: {c} channels do not split into {groups} groups")
        y = self.reshape(x, f"{name}.view", (n, groups, c // groups, h, w))
        y = self.transpose(y, f"{name}.transpose", (0, 2, 1, 3, 4))
        return self.reshape(y, name, (n, c, h, w))

    def reduce_mean(self, x: str, name: str) -> str:
        """Spatial mean to ``(N, C)`` as ``ReduceMean(axes=[2, 3], keepdims=0)``.

        This is how torch exports ``x.mean([2, 3])``.
        """
        n, c = self.shapes[x][:2]
        return self._node("ReduceMean", [x], name, (n, c), axes=[2, 3], keepdims=0)

    def dropout(self, x: str, name: str, ratio: float) -> str:
        """Inference-mode dropout: the identity (no node), or a ``Dropout`` node in old style."""
        if not self.old_style:
            return x
        return self._node("Dropout", [x], name, self.shapes[x], ratio=float(ratio))

    def lrn(
        self,
        x: str,
        name: str,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        bias: float = 1.0,
    ) -> str:
        """``LRN`` across channels (Caffe's ``LRN`` layer, as in the old BVLC models)."""
        return self._node(
            "LRN",
            [x],
            name,
            self.shapes[x],
            size=int(size),
            alpha=float(alpha),
            beta=float(beta),
            bias=float(bias),
        )

    # -------------------------------------------------------------- activations
    def activation(self, x: str, act: str, name: str) -> str:
        """Apply activation ``act`` (one of `ACTIVATIONS`); the output tensor is ``name``."""
        if act == "relu":
            return self.relu(x, name)
        if act == "relu6":
            return self.relu6(x, name)
        if act == "hardswish":
            return self.hardswish(x, name)
        if act == "hardsigmoid":
            return self.hardsigmoid(x, name)
        if act == "sigmoid":
            return self.sigmoid(x, name)
        if act == "silu":
            return self.silu(x, name)
        raise ValueError(f"unknown activation {act!r}")

    def sigmoid(self, x: str, name: str) -> str:
        """``Sigmoid`` node named ``name``."""
        return self._node("Sigmoid", [x], name, self.shapes[x])

    def hardsigmoid(self, x: str, name: str) -> str:
        """PyTorch's ``hardsigmoid``: ``HardSigmoid(alpha=1/6, beta=0.5)``.

        (ONNX's default ``alpha`` is 0.2.)
        """
        return self._node(
            "HardSigmoid",
            [x],
            name,
            self.shapes[x],
            alpha=HARDSIGMOID_ALPHA,
            beta=HARDSIGMOID_BETA,
        )

    def hardswish(self, x: str, name: str) -> str:
        """``HardSwish`` (opset 14); in old style ``Mul(x, HardSigmoid(x))``.

        ``x * clip(x / 6 + 1 / 2, 0, 1) == x * relu6(x + 3) / 6``; the
        ``HardSigmoid`` node is ``name + ".hardsigmoid"``, the ``Mul`` is ``name``.
        """
        if self.old_style:
            return self.mul(x, self.hardsigmoid(x, f"{name}.hardsigmoid"), name)
        return self._node("HardSwish", [x], name, self.shapes[x])

    def silu(self, x: str, name: str) -> str:
        """SiLU as ``Mul(x, Sigmoid(x))``, how torch exports it.

        The ``Sigmoid`` node is ``name + ".sigmoid"``, the ``Mul`` is ``name``.
        """
        return self.mul(x, self.sigmoid(x, f"{name}.sigmoid"), name)

    def squeeze_excitation(
        self,
        x: str,
        name: str,
        squeeze_channels: int,
        act: str = "relu",
        scale_act: str = "sigmoid",
    ) -> str:
        """torchvision's ``SqueezeExcitation``.

        ``GlobalAveragePool`` (``name.avgpool``), 1x1 conv with bias (``name.fc1``),
        ``act`` (``name.activation``), 1x1 conv with bias (``name.fc2``),
        ``scale_act`` (``name.scale_activation``) and ``Mul(scale, x)`` (``name``).

        Parameters
        ----------
        x : str
            Input tensor (NCHW).
        name : str
            Module path of the block.
        squeeze_channels : int
            Channels of ``fc1``'s output.
        act, scale_act : str, optional
            Activations after ``fc1`` and ``fc2`` (see `activation`).

        Returns
        -------
        str
            Output tensor name (``name``), same shape as ``x``.
        """
        c = self.shapes[x][1]
        s = self.global_avgpool(x, f"{name}.avgpool")
        s = self.conv(s, f"{name}.fc1", squeeze_channels, 1, bias=True)
        s = self.activation(s, act, f"{name}.activation")
        s = self.conv(s, f"{name}.fc2", c, 1, bias=True)
        s = self.activation(s, scale_act, f"{name}.scale_activation")
        return self.mul(s, x, name)

    def gemm(
        self,
        x: str,
        name: str,
        out_features: int,
        act: str | None = None,
        *,
        act_name: str | None = None,
        gain: float | None = None,
    ) -> str:
        """Fully connected layer as ``Gemm(x, W, b, transB=1)``, torch ``nn.Linear`` layout.

        Parameters
        ----------
        x : str
            Input tensor of shape ``(N, in_features)``.
        name : str
            Node name; weights are ``name + ".weight"`` (``(out, in)``) and ``".bias"``.
        out_features : int
            Output features.
        act : str, optional
            Append that activation (see `activation`), e.g. ``"relu"``.
        act_name : str, optional
            Name of the activation node; default ``name + "." + act``.
        gain : float, optional
            Weight std is ``gain / sqrt(in_features)``; default ``sqrt(2)``
            before an activation, else 1.

        Returns
        -------
        str
            Output tensor name.
        """
        n, fin = self.shapes[x]
        if gain is None:
            gain = RELU_GAIN if act else 1.0
        w = self._weight(f"{name}.weight", (out_features, fin), fin, gain)
        b = self._bias(f"{name}.bias", out_features)
        y = self._node("Gemm", [x, w, b], name, (n, out_features), transB=1)
        if act is not None:
            y = self.activation(y, act, act_name or f"{name}.{act}")
        return y

    # ------------------------------------------------------------------ finish
    def finish(self, y: str, doc: str = "") -> onnx.ModelProto:
        """Rename tensor ``y`` to ``"logits"``, declare it the graph output, return the model.

        Parameters
        ----------
        y : str
            The final tensor; it must be produced by a node and consumed by none.
        doc : str, optional
            ``doc_string`` of the model.

        Returns
        -------
        onnx.ModelProto
            The finished model (the builder must not be used afterwards). In
            old style every initializer is also declared as a graph input,
            after ``"input"``.
        """
        for node in self.graph.node:
            if y in node.input:
                raise ValueError(f"output tensor {y!r} is consumed by {node.name!r}")
        for node in reversed(self.graph.node):
            if y in node.output:
                node.output[list(node.output).index(y)] = OUTPUT_NAME
                break
        else:
            raise ValueError(f"no node produces {y!r}")
        self.shapes[OUTPUT_NAME] = self.shapes.pop(y)
        self.graph.output.append(
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, list(self.shapes[OUTPUT_NAME])
            )
        )
        if self.old_style:
            self.graph.input.extend(
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in self.graph.initializer
            )
            doc = f"{doc} [old-style export: opset {OLD_OPSET}]" if doc else doc
        if doc:
            self.model.doc_string = doc
        return self.model
