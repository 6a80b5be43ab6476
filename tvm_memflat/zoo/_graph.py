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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

RELU_GAIN = math.sqrt(2.0)

_CLIP_MIN = "relu6.min"
_CLIP_MAX = "relu6.max"


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

    Notes
    -----
    Every layer method takes the name of its input tensor and returns the
    name of its output tensor. A node's output tensor has the node's name.
    """

    def __init__(self, name: str, input_shape: Sequence[int], seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.model = onnx.ModelProto()
        self.model.ir_version = IR_VERSION
        self.model.producer_name = "tvm_memflat.zoo"
        self.model.opset_import.append(helper.make_opsetid("", OPSET))
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
        self._claim(name)
        array = np.ascontiguousarray(array, dtype=np.float32)
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = TensorProto.FLOAT
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
        act : {None, "relu", "relu6"}, optional
            Append ``Relu`` or ``Clip(0, 6)``.
        bn_name, act_name : str, optional
            Names of the BN and activation nodes; default ``name + ".bn"`` and
            ``name + ".relu"`` / ``".relu6"``.
        eps : float, optional
            Batch-norm epsilon.
        gain : float, optional
            Weight std is ``gain / sqrt(fan_in)``; default ``sqrt(2)`` before a
            ReLU, else 1.
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
        if act == "relu":
            y = self.relu(y, act_name or f"{name}.relu")
        elif act == "relu6":
            y = self.relu6(y, act_name or f"{name}.relu6")
        elif act is not None:
            raise ValueError(f"unknown activation {act!r}")
        return y

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
        """ReLU6 as ``Clip(x, 0, 6)``; the bounds are two shared scalar initializers."""
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
        n, c, h, w = self.shapes[x]
        shape = (
            n,
            c,
            _pool_out(h, kernel, stride, padding, ceil_mode),
            _pool_out(w, kernel, stride, padding, ceil_mode),
        )
        return self._node(
            "MaxPool",
            [x],
            name,
            shape,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
            ceil_mode=int(ceil_mode),
        )

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
        n, c, h, w = self.shapes[x]
        shape = (
            n,
            c,
            _pool_out(h, kernel, stride, padding, False),
            _pool_out(w, kernel, stride, padding, False),
        )
        return self._node(
            "AveragePool",
            [x],
            name,
            shape,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
            count_include_pad=int(count_include_pad),
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
        """Elementwise ``Add`` of two same-shape tensors."""
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"{name}: cannot add {self.shapes[a]} and {self.shapes[b]}")
        return self._node("Add", [a, b], name, self.shapes[a])

    def flatten(self, x: str, name: str) -> str:
        """``Flatten`` (axis 1) to ``(N, C*H*W)``."""
        s = self.shapes[x]
        return self._node("Flatten", [x], name, (s[0], int(np.prod(s[1:]))), axis=1)

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
        act : {None, "relu"}, optional
            Append a ``Relu``.
        act_name : str, optional
            Name of the activation node; default ``name + ".relu"``.
        gain : float, optional
            Weight std is ``gain / sqrt(in_features)``; default ``sqrt(2)``
            before a ReLU, else 1.

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
        if act == "relu":
            y = self.relu(y, act_name or f"{name}.relu")
        elif act is not None:
            raise ValueError(f"unknown activation {act!r}")
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
            The finished model (the builder must not be used afterwards).
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
        if doc:
            self.model.doc_string = doc
        return self.model
