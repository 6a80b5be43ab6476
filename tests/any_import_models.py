"""Small ONNX graphs, one per pattern the importers emit, for the any-import tests.

Each is a 1x3x32x32 network whose memory peak sits in its high-resolution stem
(the input and a 16-channel 32x32 map), so a tiling there must pay, followed by
the pattern under test at full resolution, two stride-2 convs and a classifier.
Built in code with seeded weights (CI has no torch).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H = 32
C = 16


class _G:
    """Nodes and initializers of one graph, with fresh names."""

    def __init__(self, seed: int, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.opset = opset
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def init(self, array, prefix="w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, fan_in: int) -> str:
        return self.init((self.rng.uniform(-1, 1, shape) * np.sqrt(6 / fan_in))
                         .astype("float32"))

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def conv(self, x, cin, cout, k=3, stride=1, groups=1, bias=True) -> str:
        w = self.weight((cout, cin // groups, k, k), cin // groups * k * k)
        ins = [x, w] + ([self.init((self.rng.standard_normal(cout) * 0.1).astype("float32"),
                                   "b")] if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride] * 2,
                         pads=[k // 2] * 4, group=groups)

    def bn(self, x, c) -> str:
        r = self.rng
        params = [self.init(r.uniform(0.5, 1.5, c).astype("float32"), "gamma"),
                  self.init((r.standard_normal(c) * 0.1).astype("float32"), "beta"),
                  self.init((r.standard_normal(c) * 0.1).astype("float32"), "mean"),
                  self.init(r.uniform(0.5, 2.0, c).astype("float32"), "var")]
        return self.node("BatchNormalization", [x, *params], epsilon=1e-5)

    def relu(self, x) -> str:
        return self.node("Relu", [x])

    def se(self, x, c, gate="Sigmoid") -> str:
        """Squeeze-and-excitation: pool, two 1x1 convs, a gate that scales ``x``."""
        s = self.node("GlobalAveragePool", [x])
        s = self.relu(self.conv(s, c, c // 4, k=1))
        s = self.conv(s, c // 4, c, k=1)
        s = self.node(gate, [s])
        return self.node("Mul", [x, s])

    def hardswish(self, x) -> str:
        if self.opset >= 14:
            return self.node("HardSwish", [x])
        return self.node("Mul", [x, self.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])

    def head(self, x, c) -> str:
        """Two stride-2 convs, global pool, flatten, Gemm to 10 classes."""
        x = self.relu(self.conv(x, c, 24, stride=2))
        x = self.relu(self.conv(x, 24, 32, stride=2))
        x = self.node("GlobalAveragePool", [x])
        x = self.node("Flatten", [x], axis=1)
        w = self.init((self.rng.standard_normal((10, 32)) * 0.2).astype("float32"))
        b = self.init(np.zeros(10, "float32"), "b")
        return self.node("Gemm", [x, w, b], transB=1)

    def model(self, y: str, *, initializers_as_inputs: bool = False) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, H])]
        if initializers_as_inputs:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.inits]
        self.nodes[-1].output[0] = "y"
        for node in self.nodes:  # rename uses of the last output
            for i, name in enumerate(node.input):
                if name == y:
                    node.input[i] = "y"
        graph = helper.make_graph(self.nodes, "g", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                                  initializer=self.inits)
        ir = 4 if self.opset < 11 else 8
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                 ir_version=ir)


def bias_bn() -> onnx.ModelProto:
    """Conv with bias -> BN -> ReLU, conv -> BN -> ReLU (BatchNormalization not folded)."""
    g = _G(10)
    x = g.relu(g.bn(g.conv("x", 3, C), C))
    x = g.relu(g.bn(g.conv(x, C, C, bias=False), C))
    return g.model(g.head(x, C))


def squeeze_excite() -> onnx.ModelProto:
    """A 32x32 squeeze-and-excitation block (GlobalAveragePool, 1x1 convs, Sigmoid, Mul)."""
    g = _G(11)
    x = g.relu(g.conv("x", 3, C))
    x = g.se(x, C)
    x = g.relu(g.conv(x, C, C))
    return g.model(g.head(x, C))


def dense_block() -> onnx.ModelProto:
    """A DenseNet block: each layer (BN-ReLU-conv) reads the concat of all before it."""
    g = _G(12)
    feats = [g.conv("x", 3, C)]
    width = C
    for _ in range(3):
        x = feats[0] if len(feats) == 1 else g.node("Concat", feats, axis=1)
        f = g.conv(g.relu(g.bn(x, width)), width, 8, bias=False)
        feats.append(f)
        width += 8
    x = g.node("Concat", feats, axis=1)
    x = g.conv(g.relu(g.bn(x, width)), width, C, k=1, bias=False)  # transition
    return g.model(g.head(x, C))


def channel_shuffle() -> onnx.ModelProto:
    """A ShuffleNetV2 unit: channel Split, a branch, Concat, Reshape-Transpose-Reshape."""
    g = _G(13)
    x = g.relu(g.conv("x", 3, C))
    split = g.name("split")
    a, b = f"{split}_a", f"{split}_b"
    g.nodes.append(helper.make_node("Split", [x, g.init(np.array([C // 2, C // 2]), "sizes")],
                                    [a, b], axis=1))
    y = g.relu(g.conv(b, C // 2, C // 2, k=1))
    y = g.conv(y, C // 2, C // 2, groups=C // 2)
    y = g.relu(g.conv(y, C // 2, C // 2, k=1))
    x = g.node("Concat", [a, y], axis=1)
    x = g.node("Reshape", [x, g.init(np.array([1, 2, C // 2, H, H]), "shape")])
    x = g.node("Transpose", [x], perm=[0, 2, 1, 3, 4])
    x = g.node("Reshape", [x, g.init(np.array([1, C, H, H]), "shape")])
    return g.model(g.head(x, C))


def hardswish_block() -> onnx.ModelProto:
    """MobileNetV3: HardSwish, a 5x5 depthwise conv, an SE with HardSigmoid, Clip (ReLU6)."""
    g = _G(14)
    x = g.hardswish(g.bn(g.conv("x", 3, C, bias=False), C))
    x = g.hardswish(g.bn(g.conv(x, C, C, k=5, groups=C, bias=False), C))
    x = g.se(x, C, gate="HardSigmoid")
    x = g.node("Clip", [g.conv(x, C, C, k=1), g.init(np.float32(0), "lo"),
                        g.init(np.float32(6), "hi")])
    return g.model(g.head(x, C))


def old_style() -> onnx.ModelProto:
    """What old exporters wrote: opset 9, initializers also graph inputs, BN not folded,
    a residual ``Sum``, ``Dropout``, ``Reshape`` with a constant shape instead of Flatten."""
    g = _G(15, opset=9)
    stem = g.relu(g.bn(g.conv("x", 3, C), C))
    x = g.relu(g.bn(g.conv(stem, C, C), C))
    x = g.bn(g.conv(x, C, C), C)
    x = g.relu(g.node("Sum", [x, stem]))
    x = g.relu(g.conv(x, C, 24, stride=2))
    x = g.relu(g.conv(x, 24, 32, stride=2))
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Dropout", [x], ratio=0.5)
    x = g.node("Reshape", [x, g.init(np.array([1, 32]), "shape")])
    w = g.init((g.rng.standard_normal((10, 32)) * 0.2).astype("float32"))
    y = g.node("Gemm", [x, w, g.init(np.zeros(10, "float32"), "b")], transB=1)
    return g.model(y, initializers_as_inputs=True)


PATTERNS = {
    "bias_bn": bias_bn,
    "squeeze_excite": squeeze_excite,
    "dense_block": dense_block,
    "channel_shuffle": channel_shuffle,
    "hardswish": hardswish_block,
    "old_style": old_style,
}


def shape_computed_shuffle() -> onnx.ModelProto:
    """A channel split and shuffle as torch.onnx.export writes ShuffleNetV2's: the split's
    bounds computed at run time (Shape, Gather, Div, Slice), which TVM's importer keeps
    as dynamic shape arithmetic (``shape_of``, ``scatter_elements``,
    ``dynamic_strided_slice``) that leaves every later tensor without a static shape."""
    g = _G(16)
    x = g.relu(g.conv("x", 3, C))
    shape = g.node("Shape", [x])
    chans = g.node("Gather", [shape, g.init(np.array([1]), "idx")], axis=0)
    half = g.node("Div", [chans, g.init(np.array([2]), "two")])
    a = g.node("Slice", [x, g.init(np.array([0]), "s"), half, g.init(np.array([1]), "ax")])
    b = g.node("Slice", [x, half, chans, g.init(np.array([1]), "ax")])
    b = g.relu(g.conv(b, C // 2, C // 2, k=1))
    y = g.node("Concat", [a, b], axis=1)
    y = g.node("Reshape", [y, g.init(np.array([1, 2, C // 2, H, H]), "shape")])
    y = g.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = g.node("Reshape", [y, g.init(np.array([1, C, H, H]), "shape")])
    return g.model(g.head(y, C))
