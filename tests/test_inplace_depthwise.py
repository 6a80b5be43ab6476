"""In-place depthwise convolution in our build (lowering/inplace_depthwise.py).

A stride-1 depthwise conv whose input dies there writes its output over that input,
channel by channel through a one-channel temporary. The results must be bit-exact,
the prediction must equal what the built module allocates, and the saving must be
the one tensor at the peak minus the temporary (counted as the kernel's scratch).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, te, tirx, topi

import tvm_memflat
from tvm_memflat.lowering.inplace_depthwise import (
    IN_PLACE_ATTR,
    depthwise_candidates,
    in_place_kernel,
    is_depthwise,
    is_in_place_kernel,
)
from tvm_memflat.lowering.pipeline import BuildRecord, lower
from tvm_memflat.lowering.shrink_scratch import lowered_scratch_bytes
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.tuner.inputs import random_inputs

F32 = 4


def _const(rng, shape, scale=0.3):
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def dw_chain(stride=1, cin=4, c=16, hw=8, stem=None, seed=0):
    """x(1,cin,hw,hw) [-> stem conv3x3] -> e = relu(conv1x1 c + b)
    -> d = clip(depthwise3x3(e, stride) + b, 0, 6) -> y = conv1x1 cin + b.

    With the defaults e and d are 4096 B each, y 1024 B: the arena peaks at the
    depthwise (e + d live together)."""
    bb, rng = relax.BlockBuilder(), np.random.default_rng(seed)
    x = relax.Var("x", relax.TensorType((1, cin, hw, hw), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            if stem is not None:
                h = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(
                    h, _const(rng, (stem, cin, 3, 3)), padding=1)), "stem")
            k = int(h.ty.shape[1])
            e = bb.emit(relax.op.nn.conv2d(h, _const(rng, (c, k, 1, 1))), "e_conv")
            e = bb.emit(relax.op.nn.relu(relax.op.add(e, _const(rng, (1, c, 1, 1)))), "e")
            d = bb.emit(relax.op.nn.conv2d(e, _const(rng, (c, 1, 3, 3)), strides=stride,
                                           padding=1, groups=c), "d_conv")
            d = bb.emit(relax.op.clip(relax.op.add(d, _const(rng, (1, c, 1, 1))), 0, 6), "d")
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(d, _const(rng, (cin, c, 1, 1))),
                                     _const(rng, (1, cin, 1, 1))), "y")
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    return bb.get()


def dw_residual_onnx(c=16, hw=8):
    """ONNX: e = Relu(Conv1x1(x)); d = Clip(depthwise Conv3x3(e), 0, 6);
    y = Conv1x1(d) + e. The depthwise input ``e`` is read again after it."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype("float32"),
                                       name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["e0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["e0"], ["e"]),
        helper.make_node("Conv", ["e", "w2", "b2"], ["d0"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=c),
        helper.make_node("Clip", ["d0", "lo", "hi"], ["d"]),
        helper.make_node("Conv", ["d", "w3", "b3"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["p", "e"], ["y"]),
    ]
    inits = [w("w1", (c, 4, 1, 1)), w("b1", (c,)), w("w2", (c, 1, 3, 3)), w("b2", (c,)),
             w("w3", (c, c, 1, 1)), w("b3", (c,)),
             numpy_helper.from_array(np.array(0.0, "float32"), "lo"),
             numpy_helper.from_array(np.array(6.0, "float32"), "hi")]
    graph = helper.make_graph(
        nodes, "dw_residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 4, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _both(mod, inp="sram", modes=(False, True)):
    """Predicted and measured device bytes, allocation and output per mode."""
    x = random_inputs(mod["main"], 0)
    out = {}
    for mode in modes:
        predicted = predict_device_bytes(mod, input=inp, in_place_depthwise=mode)
        _, allocation, (y,) = build_and_measure(mod, x, input=inp, in_place_depthwise=mode)
        assert predicted.total_bytes == allocation.device_bytes, mode
        assert allocation.runtime_storage_bytes == predicted.arena_bytes + predicted.output_bytes
        out[mode] = (allocation, y)
    return out


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("inp,arena_saving", [("stream", 4096), ("sram", 8192 - 5120)])
def test_depthwise_at_the_peak_runs_in_place(inp, arena_saving):
    # stream: arena e(0) | e+d(1) 8192 | d(2) -> in place e(=d) 4096 everywhere.
    # sram: x slot 1024: x | x+e 5120 | e+d 8192 | d -> in place the peak is x+e 5120.
    res = _both(dw_chain(), inp)
    (off, y_off), (on, y_on) = res[False], res[True]
    assert off.depthwise_in_place == 0 and on.depthwise_in_place == 1
    np.testing.assert_array_equal(y_on, y_off)
    assert off.arena_bytes - on.arena_bytes == arena_saving
    temp = 8 * 8 * F32   # one channel of the output
    # the in-place kernel's scratch is the scheduled kernel's (padding window and
    # accumulator tile: test_cpu_schedule) plus the one-channel temporary
    assert on.max_scratch_bytes >= temp
    assert off.device_bytes - on.device_bytes == \
        arena_saving - (on.max_scratch_bytes - off.max_scratch_bytes)


def test_in_place_shows_in_the_lowered_module():
    mod = dw_chain()
    record = BuildRecord()
    low = lower(mod, tvm.target.Target("llvm"), record=record)
    assert record.depthwise_in_place == 1
    kernels = [gv.name_hint for gv, f in low.functions_items() if is_in_place_kernel(f)]
    assert len(kernels) == 1 and kernels[0].endswith("_in_place")
    calls = [b.value for blk in low["main"].body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.GlobalVar)
             and b.value.op.name_hint == kernels[0]]
    assert len(calls) == 1
    kernel = low[calls[0].op]
    assert kernel.attrs[IN_PLACE_ATTR]
    # weights, bias, then the tensor it reads and overwrites
    assert [int(d) for d in kernel.params[-1].shape] == [1, 16, 8, 8]
    assert len(kernel.params) == 3
    # its scratch: the source kernel's plus exactly one output channel
    source = lower(mod, tvm.target.Target("llvm"), in_place_depthwise=False)
    (src,) = [f for _, f in source.functions_items()
              if isinstance(f, tirx.PrimFunc) and is_depthwise(f)]
    assert lowered_scratch_bytes(kernel) - lowered_scratch_bytes(src) == 8 * 8 * F32


def test_stride_two_depthwise_is_not_in_place():
    res = _both(dw_chain(stride=2), modes=(False, True, "all"))
    assert all(a.depthwise_in_place == 0 for a, _ in res.values())
    assert len({a.device_bytes for a, _ in res.values()}) == 1
    np.testing.assert_array_equal(res[True][1], res[False][1])


def test_depthwise_whose_input_is_read_later_is_not_in_place():
    mod = tvm_memflat.load_model(dw_residual_onnx())
    low = lower(mod, tvm.target.Target("llvm"), in_place_depthwise=False)
    assert depthwise_candidates(low) == []
    res = _both(mod, modes=(False, True, "all"))
    assert all(a.depthwise_in_place == 0 for a, _ in res.values())
    assert len({a.device_bytes for a, _ in res.values()}) == 1
    np.testing.assert_array_equal(res["all"][1], res[False][1])


def test_two_depthwise_in_a_row_both_go_in_place():
    # x -> conv1x1 16 -> dw -> dw -> conv1x1: the second overwrites the first's output,
    # itself written over the conv's; all three share one storage
    bb, rng = relax.BlockBuilder(), np.random.default_rng(0)
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, _const(rng, (16, 4, 1, 1)))))
            for _ in range(2):
                h = bb.emit(relax.op.clip(relax.op.nn.conv2d(
                    h, _const(rng, (16, 1, 3, 3)), padding=1, groups=16), 0, 6))
            gv = bb.emit_output(bb.emit(relax.op.nn.conv2d(h, _const(rng, (4, 16, 1, 1)))))
        bb.emit_func_output(gv)
    res = _both(bb.get(), "stream", modes=(False, "all"))
    (off, y_off), (on, y_on) = res[False], res["all"]
    assert on.depthwise_in_place == 2
    np.testing.assert_array_equal(y_on, y_off)
    assert (off.arena_bytes, on.arena_bytes) == (2 * 4096, 4096)


def test_depthwise_off_the_peak_is_left_alone_unless_forced():
    # a 64-channel stem makes x+stem the peak: in place would only add its temporary
    mod = dw_chain(stem=64)
    res = _both(mod, "stream", modes=(False, True, "all"))
    (off, y_off), (on, y_on), (forced, y_forced) = res[False], res[True], res["all"]
    assert on.depthwise_in_place == 0 and forced.depthwise_in_place == 1
    assert on.device_bytes == off.device_bytes
    assert forced.arena_bytes == off.arena_bytes
    # only the scratch grows: the in-place kernel's, which holds one channel more
    assert forced.max_scratch_bytes > off.max_scratch_bytes
    assert forced.device_bytes - off.device_bytes == \
        forced.max_scratch_bytes - off.max_scratch_bytes
    np.testing.assert_array_equal(y_forced, y_off)
    np.testing.assert_array_equal(y_on, y_off)


def test_network_input_is_never_overwritten():
    # the depthwise reads main's parameter directly: with the input streamed (no arena
    # slot) the caller's tensor must stay intact, so nothing is in place
    bb, rng = relax.BlockBuilder(), np.random.default_rng(0)
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.nn.conv2d(x, _const(rng, (8, 1, 3, 3)), padding=1, groups=8))
            y = bb.emit(relax.op.nn.conv2d(relax.op.nn.relu(d), _const(rng, (4, 8, 1, 1))))
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    mod = bb.get()
    low = lower(mod, tvm.target.Target("llvm"), input_in_arena=False, in_place_depthwise=False)
    assert depthwise_candidates(low) == []
    # with its own arena slot (input="sram") the copy may be overwritten
    low = lower(mod, tvm.target.Target("llvm"), input_in_arena=True, in_place_depthwise=False)
    assert len(depthwise_candidates(low)) == 1
    xs = random_inputs(mod["main"], 0)
    arg = tvm.runtime.tensor(xs[0])
    ex = tvm_memflat.build(mod, in_place_depthwise="all")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](arg).numpy()
    np.testing.assert_array_equal(arg.numpy(), xs[0])    # the caller's input untouched
    ref = relax.VirtualMachine(tvm_memflat.build(mod, in_place_depthwise=False), tvm.cpu())
    np.testing.assert_array_equal(y, ref["main"](tvm.runtime.tensor(xs[0])).numpy())


# --------------------------------------------------------------------------- kernel


def _te_depthwise(flip: bool, batch: int = 1):
    """A depthwise conv (topi, pad_temp at the root) + an epilogue reading the input:
    at the same channel (in place is exact) or at the mirrored one (it is not)."""
    c, h = 6, 7
    data = te.placeholder((batch, c, h, h), "float32", name="data")
    w = te.placeholder((c, 1, 3, 3), "float32", name="w")
    conv = topi.nn.depthwise_conv2d_nchw(data, w, 1, 1, 1)
    out = te.compute(conv.shape, lambda n, k, i, j: conv[n, k, i, j]
                     + data[n, c - 1 - k if flip else k, i, j], name="out")
    return te.create_prim_func([data, w, out])


def _run(func, *arrays):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), "llvm")
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib["main"](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize("batch", [1, 2])
def test_in_place_kernel_is_exact_and_counts_one_channel_of_scratch(batch):
    func = _te_depthwise(flip=False, batch=batch)
    variant = in_place_kernel(func, 0)
    assert variant is not None and is_in_place_kernel(variant)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 6, 7, 7)).astype("float32")
    w = rng.standard_normal((6, 1, 3, 3)).astype("float32")
    ref = _run(func, x, w, np.zeros_like(x))
    np.testing.assert_array_equal(_run(variant, w, x.copy()), ref)
    # unfused (pad, conv, epilogue): the original holds the padded input and the conv
    # result whole; in place each is one channel, plus the one-channel temporary
    assert lowered_scratch_bytes(func) == batch * 6 * (9 * 9 + 7 * 7) * F32
    assert lowered_scratch_bytes(variant) == (9 * 9 + 7 * 7 + 7 * 7) * F32


def test_in_place_kernel_refuses_a_kernel_reading_other_channels():
    assert in_place_kernel(_te_depthwise(flip=True), 0) is None


# --------------------------------------------------------------------------- MobileNetV2


@pytest.fixture(scope="module")
def mobilenet_v2_64():
    return tvm_memflat.load_model(tvm_memflat.zoo.build("mobilenet_v2", resolution=64))


def test_mobilenet_v2_every_stride_one_depthwise_in_place_is_exact(mobilenet_v2_64):
    mod = mobilenet_v2_64
    res = _both(mod, modes=(False, True, "all"))
    (off, y_off), (on, y_on), (forced, y_forced) = res[False], res[True], res["all"]
    # 17 inverted residual blocks, 4 with a stride-2 depthwise
    assert forced.depthwise_in_place == 13
    np.testing.assert_array_equal(y_forced, y_off)
    np.testing.assert_array_equal(y_on, y_off)
    # its arena peaks at a stride-2 depthwise (96 x 32 x 32 expanded + its output), which
    # cannot go in place: the build keeps the kernels, forcing only adds temporaries
    assert on.depthwise_in_place == 0 and on.device_bytes == off.device_bytes
    assert forced.arena_bytes == off.arena_bytes
    # the largest temporary is one 32 x 32 channel (the scheduled kernel's own
    # scratch, its padding window and accumulator, comes on top of it)
    assert 32 * 32 * F32 < forced.max_scratch_bytes < 32 * 32 * F32 + off.max_scratch_bytes
