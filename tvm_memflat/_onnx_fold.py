"""ONNX graph rewrites in numpy shared by the loader and the zoo's quantizer (base
layer: no TVM)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def fold_batchnorm_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold inference-time ``BatchNormalization`` into the ``Conv`` feeding it.

    Batch norm at inference is affine per channel, so ``bn(conv(x, W, b))`` equals
    ``conv(x, W·s, (b − mean)·s + beta)`` with ``s = gamma / sqrt(var + eps)``.
    Every deployment flow does this; without it TVM's FuseOps keeps batch_norm
    out of the conv's kernel and both full-size tensors are live at once. Done in
    numpy here because Relax's ``FoldBatchnormToConv2D`` + ``FoldConstant`` JIT-
    compile one kernel per constant (26 s for MobileNetV2). The fused conv takes
    the batch norm's output name.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    replace, drop = {}, set()
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        params = bn.input[1:5]
        if (conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0]) != 1
                or bn.input[0] in graph_outputs or not all(p in inits for p in params)
                or conv.input[1] not in inits
                or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64)
                                  for p in params)
        w = numpy_helper.to_array(inits[conv.input[1]])
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        scale = gamma / np.sqrt(var + eps)
        w_new = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        b_new = ((b - mean) * scale + beta).astype(w.dtype)
        w_name, b_name = f"{bn.output[0]}__folded_w", f"{bn.output[0]}__folded_b"
        new_conv = onnx.helper.make_node("Conv", [conv.input[0], w_name, b_name],
                                         [bn.output[0]], name=conv.name or bn.name)
        new_conv.attribute.extend(conv.attribute)
        replace[id(bn)] = (new_conv, [numpy_helper.from_array(w_new, w_name),
                                      numpy_helper.from_array(b_new, b_name)])
        drop.add(id(conv))
    if not replace:
        return model
    nodes, new_inits = [], []
    for node in graph.node:
        if id(node) in drop:
            continue
        if id(node) in replace:
            node, extra = replace[id(node)]
            new_inits.extend(extra)
        nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(new_inits)
    used = {i for n in out.graph.node for i in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out
