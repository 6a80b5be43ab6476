"""Lower ONNX QDQ int8 graphs (``R.quantize`` / ``R.dequantize``) to integer kernels.

TVM's ONNX importer turns ``QuantizeLinear`` / ``DequantizeLinear`` into
``R.quantize`` / ``R.dequantize`` and leaves every operator between them in float:
run as imported, each layer would store float32 activations. :func:`lower_qdq`
rewrites every ``quantize(f(dequantize(x_i8), ...), s_y)`` group so that its kernel
reads int8 and writes int8 (all zero points must be 0: symmetric quantization, as
:mod:`tvm_memflat.zoo.quantize` produces; a group with a non-zero point is left as
it is). ``requant(v, m)`` below is ``astype(clip(round(v * m), -128, 127), int8)``
(round half to even, as onnxruntime):

* **conv** ``DQ(x) -> conv2d(., DQ(W_i8)) [+ DQ(b_i32)] -> Q``:
  ``conv2d(x_i8, W_i8, out_dtype=int32) [+ b_i32]``, then
  ``requant(astype(acc, f32), s_x * s_w[c] / s_y)`` with a ``(1, C, 1, 1)``
  constant. int8 x int8 with int32 accumulation is exact; the bias is added in
  int32 when its scale is ``s_x * s_w`` (onnxruntime's), else in float.
* **gemm** ``DQ(x) -> matmul(., permute_dims(DQ(W_i8))) [+ DQ(b_i32)] -> Q``: the
  same with ``matmul(x_i8, W_i8^T, out_dtype=int32)``.
* **elementwise** ``Q(g(DQ(x)))`` for ``g`` = identity, relu, clip, and
  ``Q(DQ(a) + DQ(b))`` (residual): the float function on ``astype(x, f32) * s_x``,
  then ``astype(clip(round(v / s_y)), int8)``: exactly the QDQ formula, all
  elementwise, so FuseOps puts it into the producer's kernel (or one kernel for
  the add) and only int8 is stored.
* **max pool, concat, reshape/flatten** on int8 directly (they commute with a
  positive scale and with rounding), followed by an elementwise requantize only
  where an input's scale differs from the output's.
* **global average pool** ``Q(mean(DQ(x), [2, 3]))``: a depthwise conv of ``x_i8``
  with an all-ones ``H x W`` int8 kernel (``out_dtype=int32``, an exact integer
  sum), then ``requant(astype(sum, f32), s_x / (H * W * s_y))``.

What remains of the QDQ ops becomes elementwise arithmetic: the network input's
quantize ``astype(clip(round(x / s), -128, 127), int8)``, the output's dequantize
``astype(q, f32) * s``. Integer sums do not depend on order, so every rewrite of
the lowered module (tiles, halos, channel splits summed in int32) is bit-exact.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax

from ._relax_util import op_name as _op
from ._relax_util import static_shape as _shape
from ._relax_util import tensor_dtype as _dtype

__all__ = ["has_qdq", "lower_qdq"]

_Constant = tvm.ir.expr.Constant
_QUANTIZE = "relax.quantize"
_DEQUANTIZE = "relax.dequantize"
_INT8 = "int8"


def _value(expr):
    if isinstance(expr, _Constant):
        return expr.value.numpy()
    return None


def _f32(x) -> relax.Constant:
    return relax.const(np.array(x, dtype="float32"), "float32")


def has_qdq(mod: tvm.IRModule) -> bool:
    """``main`` has a ``R.quantize`` or ``R.dequantize``."""
    found = []

    def visit(e):
        if _op(e) in (_QUANTIZE, _DEQUANTIZE):
            found.append(e)

    main = next((f for gv, f in mod.functions_items() if gv.name_hint == "main"), None)
    if isinstance(main, relax.Function):
        relax.analysis.post_order_visit(main, visit)
    return bool(found)


def lower_qdq(mod: tvm.IRModule) -> tuple[tvm.IRModule, Counter]:
    """``mod`` with its QDQ groups lowered to integer kernels (module docstring), and
    what was rewritten (``"int8 conv2d": 52``). Without QDQ ops ``mod`` is returned."""
    counts: Counter = Counter()
    if not has_qdq(mod):
        return mod, counts
    gv = mod.get_global_var("main")
    func = mod[gv]
    bound = {b.var: b.value for blk in func.body.blocks for b in blk.bindings}
    mutator = _Lowering(mod, bound, counts)
    new_func = relax.analysis.remove_all_unused(mutator.visit_expr(func))
    mutator.builder_.update_func(gv, new_func)
    out = mutator.builder_.get()
    out = relax.transform.DeadCodeElimination()(out)
    return out, counts


def _through(expr, bound):
    """The value bound to ``expr`` (a Var), or ``expr`` itself (an inline call)."""
    return bound.get(expr, expr) if isinstance(expr, relax.Var) else expr


def _scalar_param(expr) -> float | None:
    v = _value(expr)
    if v is None or v.size != 1:
        return None
    return float(np.asarray(v, dtype=np.float64).reshape(()))


@relax.expr_functor.mutator
class _Lowering(relax.PyExprMutator):
    def __init__(self, mod, bound, counts):
        super().__init__(mod)
        self.bound = bound
        self.counts = counts
        self.name = "qdq"

    # ------------------------------------------------------------ views

    def act_view(self, expr):
        """``expr`` = ``dequantize(q, s, 0)`` of an int8 activation: (q, s) else None."""
        call = _through(expr, self.bound)
        if _op(call) != _DEQUANTIZE or _dtype(call) != "float32":
            return None
        q, scale, zp = call.args
        if isinstance(q, _Constant) or _dtype(q) != _INT8:
            return None
        s, z = _scalar_param(scale), _scalar_param(zp)
        if s is None or z != 0 or not s > 0:
            return None
        return q, np.float32(s)

    def const_view(self, expr):
        """``expr`` = ``dequantize(W, s, 0)`` of a constant: (W, s per ``axis``, axis)."""
        call = _through(expr, self.bound)
        if _op(call) != _DEQUANTIZE:
            return None
        w, scale, zp = (_value(a) for a in call.args)
        if w is None or scale is None or zp is None or np.any(zp != 0):
            return None
        return w, np.asarray(scale, dtype=np.float32), int(call.attrs.axis)

    def new_q(self, q):
        """The lowered module's var for the original int8 activation ``q``."""
        return self.visit_expr(q)

    def emit(self, expr):
        # named after the tensor being computed (``features_0_1_QuantizeLinear_Output_q``)
        return self.builder_.emit(expr, f"{self.name}_q")

    def visit_var_binding_(self, binding):
        self.name = binding.var.name
        super().visit_var_binding_(binding)

    # ------------------------------------------------------------ building blocks

    def to_int8(self, v_f32):
        """``astype(clip(round(v), -128, 127), int8)``."""
        r = self.emit(relax.op.round(v_f32))
        c = self.emit(relax.op.clip(r, -128.0, 127.0))
        return relax.op.astype(c, _INT8)

    def requant_acc(self, acc, multiplier, shape_ndim, channels=None):
        """int32 ``acc`` times per-channel (or scalar) ``multiplier`` to int8."""
        f = self.emit(relax.op.astype(acc, "float32"))
        m = np.asarray(multiplier, dtype=np.float32)
        if m.size > 1:
            m = m.reshape([1, channels] + [1] * (shape_ndim - 2))
        else:
            m = m.reshape(())
        f = self.emit(relax.op.multiply(f, _f32(m)))
        return self.to_int8(f)

    def dequant(self, q, s):
        """``astype(q, f32) * s`` (elementwise)."""
        f = self.emit(relax.op.astype(self.new_q(q), "float32"))
        return self.emit(relax.op.multiply(f, _f32(s)))

    def quant(self, v, sy):
        """``astype(clip(round(v / s_y)), int8)`` (the QDQ formula)."""
        return self.to_int8(self.emit(relax.op.divide(v, _f32(sy))))

    def rescale(self, q, sx, sy):
        """int8 ``q`` of scale ``sx`` at scale ``sy`` (``q`` itself when equal)."""
        if sx == sy:
            return self.new_q(q)
        return self.emit(self.quant(self.dequant(q, sx), sy))

    # ------------------------------------------------------------ rules

    def visit_call_(self, call):
        name = _op(call)
        if name == _QUANTIZE:
            out = self.lower_quantize(call)
            if out is not None:
                return out
            return self.plain_quantize(call)
        if name == _DEQUANTIZE and self.act_view(call) is not None:
            q, s = self.act_view(call)
            self.counts["dequantize as astype * scale"] += 1
            f = self.emit(relax.op.astype(self.new_q(q), "float32"))
            return relax.op.multiply(f, _f32(s))
        return super().visit_call_(call)

    def plain_quantize(self, call):
        x, scale, zp = call.args
        s, z = _scalar_param(scale), _scalar_param(zp)
        if s is None or z != 0 or str(call.attrs.out_dtype) != _INT8 or isinstance(x, _Constant):
            return super().visit_call_(call)
        self.counts["quantize as round(x / scale)"] += 1
        return self.quant(self.visit_expr(x), np.float32(s))

    def lower_quantize(self, call):
        y, scale, zp = call.args
        sy, z = _scalar_param(scale), _scalar_param(zp)
        if sy is None or z != 0 or str(call.attrs.out_dtype) != _INT8 or not sy > 0:
            return None
        sy = np.float32(sy)
        producer = _through(y, self.bound)
        name = _op(producer)
        for rule in (self.rule_conv, self.rule_gemm, self.rule_elementwise, self.rule_add,
                     self.rule_pool, self.rule_mean, self.rule_concat, self.rule_reshape):
            out = rule(producer, name, sy)
            if out is not None:
                return out
        return None

    def _bias(self, expr, channels, acc_scale):
        """A bias ``(C,)``/``(1, C, 1, 1)`` as (int32 values, None) when its scale is
        ``acc_scale`` (per channel), else (None, float values); None if not a bias."""
        view = self.const_view(expr)
        if view is None:
            inner = _through(expr, self.bound)
            if _op(inner) == "relax.reshape":
                view = self.const_view(inner.args[0])
        if view is not None:
            b, sb, _ = view
            if b.size != channels:
                return None
            b = b.reshape(-1)
            sb = np.broadcast_to(sb.reshape(-1), (channels,))
            if b.dtype == np.int32 and np.allclose(sb, acc_scale, rtol=1e-6, atol=0):
                return b.astype(np.int32), None
            return None, (b.astype(np.float64) * sb).astype(np.float32)
        v = _value(expr)
        if v is not None and v.size == channels and v.dtype == np.float32:
            return None, v.reshape(-1)
        return None

    def _split_bias(self, producer, name, core_op):
        """``core [+ bias]``: (core call, bias expr or None)."""
        if name == core_op:
            return producer, None
        if name == "relax.add":
            a, b = producer.args
            for core, bias in ((a, b), (b, a)):
                inner = _through(core, self.bound)
                if _op(inner) == core_op:
                    return inner, bias
        return None, None

    def _finish_int(self, acc, bias, channels, sx, sw, sy, ndim):
        acc_scale = (np.float32(sx) * sw).astype(np.float32)
        bias_int = bias_float = None
        if bias is not None:
            split = self._bias(bias, channels, acc_scale)
            if split is None:
                return None
            bias_int, bias_float = split
        acc = self.emit(acc)
        shape = [1, channels] + [1] * (ndim - 2)
        if bias_int is not None:
            acc = self.emit(relax.op.add(acc, relax.const(bias_int.reshape(shape), "int32")))
        if bias_float is None:
            return self.requant_acc(acc, acc_scale / sy, ndim, channels)
        f = self.emit(relax.op.astype(acc, "float32"))
        f = self.emit(relax.op.multiply(f, _f32(acc_scale.reshape(shape))))
        f = self.emit(relax.op.add(f, _f32(bias_float.reshape(shape))))
        return self.quant(f, sy)

    def rule_conv(self, producer, name, sy):
        conv, bias = self._split_bias(producer, name, "relax.nn.conv2d")
        if conv is None:
            return None
        a = conv.attrs
        x_view, w_view = self.act_view(conv.args[0]), self.const_view(conv.args[1])
        if x_view is None or w_view is None:
            return None
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        (q, sx), (w, sw, axis) = x_view, w_view
        channels = w.shape[0]
        if w.dtype != np.int8 or (sw.size > 1 and axis != 0):
            return None
        sw = np.broadcast_to(sw.reshape(-1), (channels,))
        acc = relax.op.nn.conv2d(
            self.new_q(q), relax.const(w, _INT8), strides=[int(v) for v in a.strides],
            padding=[int(v) for v in a.padding], dilation=[int(v) for v in a.dilation],
            groups=int(a.groups), data_layout="NCHW", kernel_layout="OIHW",
            out_layout="NCHW", out_dtype="int32")
        out = self._finish_int(acc, bias, channels, sx, sw, sy, 4)
        if out is not None:
            self.counts["int8 conv2d (int32 accumulation)"] += 1
        return out

    def rule_gemm(self, producer, name, sy):
        mm, bias = self._split_bias(producer, name, "relax.matmul")
        if mm is None:
            return None
        x_view = self.act_view(mm.args[0])
        wexpr = _through(mm.args[1], self.bound)
        transpose = _op(wexpr) == "relax.permute_dims"
        if transpose:
            axes = wexpr.attrs.axes
            if axes is not None and [int(v) for v in axes] != [1, 0]:
                return None
            wexpr = wexpr.args[0]
        w_view = self.const_view(wexpr)
        if x_view is None or w_view is None or len(_shape(mm.args[0]) or []) != 2:
            return None
        (q, sx), (w, sw, axis) = x_view, w_view
        if w.dtype != np.int8 or w.ndim != 2:
            return None
        # the output channel axis of W: 0 before the transpose (Gemm transB), else 1
        out_axis = 0 if transpose else 1
        if sw.size > 1 and axis != out_axis:
            return None
        wt = np.ascontiguousarray(w.T if transpose else w)
        channels = wt.shape[1]
        sw = np.broadcast_to(sw.reshape(-1), (channels,))
        acc = relax.op.matmul(self.new_q(q), relax.const(wt, _INT8), out_dtype="int32")
        out = self._finish_int(acc, bias, channels, sx, sw, sy, 2)
        if out is not None:
            self.counts["int8 matmul (int32 accumulation)"] += 1
        return out

    def rule_elementwise(self, producer, name, sy):
        view = self.act_view(producer)
        if view is not None:  # Q(DQ(x)): a rescale
            q, sx = view
            self.counts["requantize"] += 1
            return self.rescale(q, sx, sy)
        if name not in ("relax.nn.relu", "relax.clip"):
            return None
        view = self.act_view(producer.args[0])
        if view is None:
            return None
        q, sx = view
        f = self.dequant(q, sx)
        if name == "relax.nn.relu":
            if sx == sy:  # max(q, 0) exactly
                self.counts["int8 relu"] += 1
                return relax.op.nn.relu(self.new_q(q))
            f = self.emit(relax.op.nn.relu(f))
        else:
            f = self.emit(relax.Call(producer.op, [f, *producer.args[1:]], producer.attrs))
        self.counts[f"requantize through {name.split('.')[-1]}"] += 1
        return self.quant(f, sy)

    def rule_add(self, producer, name, sy):
        if name != "relax.add":
            return None
        views = [self.act_view(a) for a in producer.args]
        if any(v is None for v in views) or _shape(producer.args[0]) != _shape(producer.args[1]):
            return None
        (qa, sa), (qb, sb) = views
        f = self.emit(relax.op.add(self.dequant(qa, sa), self.dequant(qb, sb)))
        self.counts["int8 add (elementwise requantize)"] += 1
        return self.quant(f, sy)

    def rule_pool(self, producer, name, sy):
        if name != "relax.nn.max_pool2d":
            return None
        view = self.act_view(producer.args[0])
        if view is None:
            return None
        q, sx = view
        pooled = relax.Call(producer.op, [self.new_q(q)], producer.attrs)
        self.counts["int8 max_pool2d"] += 1
        if sx == sy:
            return pooled
        pooled = self.emit(pooled)
        return self.quant(self.emit(relax.op.multiply(
            self.emit(relax.op.astype(pooled, "float32")), _f32(sx))), sy)

    def rule_mean(self, producer, name, sy):
        if name != "relax.mean" or not bool(producer.attrs.keepdims):
            return None
        shape = _shape(producer.args[0])
        axes = producer.attrs.axis
        if shape is None or len(shape) != 4 or axes is None:
            return None
        if sorted(int(a) % 4 for a in axes) != [2, 3]:
            return None
        view = self.act_view(producer.args[0])
        if view is None:
            return None
        q, sx = view
        _, c, h, w = shape
        ones = np.ones((c, 1, h, w), dtype=np.int8)
        acc = self.emit(relax.op.nn.conv2d(self.new_q(q), relax.const(ones, _INT8), groups=c,
                                           out_dtype="int32"))
        self.counts["global average pool as int8 depthwise sum"] += 1
        return self.requant_acc(acc, np.float32(sx) / np.float32(h * w) / sy, 4)

    def rule_concat(self, producer, name, sy):
        if name != "relax.concat" or not isinstance(producer.args[0], relax.Tuple):
            return None
        views = [self.act_view(a) for a in producer.args[0].fields]
        if not views or any(v is None for v in views):
            return None
        parts = [self.rescale(q, sx, sy) for q, sx in views]
        self.counts["int8 concat"] += 1
        return relax.op.concat(parts, axis=int(producer.attrs.axis))

    def rule_reshape(self, producer, name, sy):
        if name not in ("relax.reshape", "relax.flatten"):
            return None
        view = self.act_view(producer.args[0])
        if view is None:
            return None
        q, sx = view
        self.counts["int8 reshape"] += 1
        return relax.Call(producer.op, [self.rescale(q, sx, sy), *producer.args[1:]],
                          producer.attrs)
