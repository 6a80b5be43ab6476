"""Real int8: zoo models in ONNX QDQ form, lowered to integer kernels.

``zoo.build(name, dtype="int8")`` quantizes with onnxruntime's ``quantize_static``;
the canonical form (:mod:`tvm_memflat.frontend.qdq`) runs each DQ -> conv -> Q group
as int8 x int8 -> int32 -> requantize, so every tensor stored between kernels is
int8. Integer sums do not depend on order: the pass's rewrites are bit-exact, and
the build agrees with onnxruntime's own run of the QDQ model within one step.
Small resolutions keep these fast.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import tvm_memflat
from tvm_memflat import zoo
from tvm_memflat.frontend.canonicalize import canonical_form
from tvm_memflat.lowering.pipeline import lower
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.planner.live_ranges import lowered_schedule
from tvm_memflat.targets.build import build_and_measure
from tvm_memflat.zoo import quantize as zoo_quantize

MODELS = ("mobilenet_v2", "squeezenet1_1")


@functools.cache
def _qdq_bytes(name: str, resolution: int) -> bytes:
    return zoo.build(name, resolution=resolution, dtype="int8").SerializeToString()


def _qdq(name: str, resolution: int) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(_qdq_bytes(name, resolution))


@functools.cache
def _loaded(name: str, resolution: int):
    return tvm_memflat.load_model(_qdq(name, resolution))


def _input(resolution: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, resolution, resolution)) \
        .astype("float32")


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _output_scale(model: onnx.ModelProto) -> float:
    """Scale of the DequantizeLinear that produces the graph output."""
    out = model.graph.output[0].name
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if out in n.output)
    assert node.op_type == "DequantizeLinear"
    return float(numpy_helper.to_array(inits[node.input[1]]))


def _run(mod, x, **kw):
    _, alloc, outs = build_and_measure(mod, [x], **kw)
    return alloc, np.asarray(outs[0])


def _ops(mod) -> list:
    calls = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call)
        and isinstance(e.op, tvm.ir.Op) else None)
    return calls


# ------------------------------------------------------------------ the zoo's QDQ models


def test_int8_zoo_build_is_deterministic_per_channel_qdq():
    key_kwargs = {"resolution": 32}
    zoo_quantize._CACHE.clear()
    first = zoo.build("mobilenet_v2", dtype="int8", **key_kwargs).SerializeToString()
    zoo_quantize._CACHE.clear()  # quantized again from scratch: the same bytes
    model = zoo.build("mobilenet_v2", dtype="int8", **key_kwargs)
    assert model.SerializeToString() == first
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Add", "Gemm"} <= ops
    assert "BatchNormalization" not in ops  # folded before quantizing
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        w, scale, zp = (inits[i] for i in dq.input)
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],)  # per channel
        assert not zp.any()
        bias = producer[conv.input[2]]
        assert inits[bias.input[0]].dtype == np.int32
    for node in model.graph.node:  # activations: int8, symmetric (zero point 0)
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    # float32 stays the default and unchanged
    assert zoo.build("mobilenet_v2", resolution=32).SerializeToString() == \
        zoo.build("mobilenet_v2", resolution=32, dtype="float32").SerializeToString()
    with pytest.raises(ValueError, match="dtype"):
        zoo.build("mobilenet_v2", resolution=32, dtype="int4")


# ------------------------------------------------------------------ lowering


@pytest.mark.parametrize("name", MODELS)
def test_qdq_groups_lowered_to_integer_kernels(name):
    canon = canonical_form(from_onnx(_qdq(name, 32)))
    loaded = _loaded(name, 32)
    for mod in (canon, loaded):
        calls = _ops(mod)
        names = {c.op.name for c in calls}
        assert not names & {"relax.quantize", "relax.dequantize"}
        convs = [c for c in calls if c.op.name in ("relax.nn.conv2d", "relax.matmul")]
        assert convs
        for c in convs:
            assert [str(a.ty.dtype) for a in c.args] == ["int8", "int8"]
            assert str(c.ty.dtype) == "int32"


@pytest.mark.parametrize("importer", ["load_model", "from_onnx"])
@pytest.mark.parametrize("name", MODELS)
def test_int8_build_matches_onnxruntime_within_one_step(name, importer):
    model = _qdq(name, 32)
    mod = _loaded(name, 32) if importer == "load_model" else from_onnx(model)
    x = _input(32)
    _, y = _run(mod, x)
    ref = _ort(model, x)
    step = _output_scale(model)  # the logits are DequantizeLinear(int8 logits)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= step * 1.0001


@pytest.mark.parametrize("name", MODELS)
def test_every_stored_activation_is_int8_at_run_time(name):
    mod = _loaded(name, 32)
    # the lowered schedule the build plans: intermediates are int8 but the network
    # input's copy into the arena (float32, as the model's input is)
    schedule = lowered_schedule(lower(mod, tvm.target.Target("llvm"), input_in_arena=True))
    inter = [b for b in schedule.buffers if b.role == "intermediate"]
    assert inter
    assert {b.dtype for b in inter if b.label != "input"} == {"int8"}
    # and what the built module really allocates when it runs
    executable = tvm_memflat.build(mod)
    original = tvm.get_global_func("vm.builtin.alloc_tensor")
    seen: list = []

    def hook(*args):
        out = original(*args)
        seen.append((tuple(int(d) for d in out.shape), str(out.dtype)))
        return out

    tvm.register_global_func("vm.builtin.alloc_tensor", hook, override=True)
    try:
        vm = relax.VirtualMachine(executable, tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(_input(32)))
    finally:
        tvm.register_global_func("vm.builtin.alloc_tensor", original, override=True)
    not_int8 = [s for s in seen if s[1] != "int8"]
    # the float input's copy and the float logits (the model's own interface)
    assert sorted(not_int8) == sorted([((1, 3, 32, 32), "float32"),
                                       (tuple(int(d) for d in out.shape), "float32")])
    assert len(seen) - len(not_int8) >= 10


@pytest.mark.parametrize("convention", ["sram", "stream"])
def test_int8_device_bytes_predicted_equal_measured(convention):
    mod = _loaded("squeezenet1_1", 32)
    alloc, _ = _run(mod, _input(32), input=convention)
    assert predict_device_bytes(mod, input=convention).total_bytes == alloc.device_bytes


# ------------------------------------------------------------------ the pass on int8


@pytest.mark.parametrize("name,convention", [("mobilenet_v2", "sram"),
                                             ("squeezenet1_1", "stream")])
def test_flatten_memory_peaks_on_int8_is_bit_exact(name, convention):
    mod = _loaded(name, 64)
    x = _input(64)
    pass_ = tvm_memflat.FlattenMemoryPeaks(input=convention)
    new = pass_(mod)
    assert pass_.decisions, pass_.stop_reason
    before, y0 = _run(mod, x, input=convention)
    after, y1 = _run(new, x, input=convention)
    assert np.array_equal(y0, y1)  # integer sums: tiles, halos and splits change nothing
    assert after.device_bytes < before.device_bytes
    assert predict_device_bytes(new, input=convention).total_bytes == after.device_bytes
    schedule = lowered_schedule(lower(new, tvm.target.Target("llvm"),
                                      input_in_arena=convention == "sram"))
    # int8 between kernels, int32 only for a channel split's partial sums (summed
    # before the requantize, which is what keeps it exact)
    for b in schedule.buffers:
        if b.role == "intermediate" and b.label != "input":
            assert b.dtype == "int8" or (b.dtype == "int32" and "_c" in b.label), b
