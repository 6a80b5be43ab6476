"""ONNX front end: numerics against onnxruntime, foldings, error messages."""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat.errors import MemflatError
from tvm_memflat.frontend import load_model, load_onnx, parse_input_shapes

from . import onnx_models
from .util import run_llvm


def _check_against_ort(model, mod, shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    ref = onnx_models.onnxruntime_outputs(model, {"x": x})[0]
    got = run_llvm(mod, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_small_cnn_matches_onnxruntime():
    model = onnx_models.small_cnn()
    mod = load_onnx(model)
    _check_against_ort(model, mod, (1, 3, 16, 16))


def test_bindings_are_named_after_onnx_tensors():
    mod = load_onnx(onnx_models.small_cnn())
    names = {b.var.name for blk in mod["main"].body.blocks for b in blk.bindings}
    assert {"r1", "r2", "p", "y", "logits"} <= names


def test_gemm_weight_transpose_is_folded():
    mod = load_onnx(onnx_models.small_cnn())
    ops = [b.value.op.name for blk in mod["main"].body.blocks for b in blk.bindings
           if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]
    assert "relax.permute_dims" not in ops  # FoldConstant removed the run-time transpose
    assert "relax.matmul" in ops


def test_dynamic_dims_need_input_shape():
    with pytest.raises(MemflatError, match=r"input 'x' has dynamic shape \[N,3,H,16\].*"
                                           r"--input-shape x="):
        load_onnx(onnx_models.dynamic_cnn())


def test_dynamic_dims_with_input_shape_match_onnxruntime():
    model = onnx_models.dynamic_cnn()
    mod = load_onnx(model, {"x": (1, 3, 16, 16)})
    _check_against_ort(model, mod, (1, 3, 16, 16))


def test_input_shape_errors():
    model = onnx_models.dynamic_cnn()
    with pytest.raises(MemflatError, match="unknown input"):
        load_onnx(model, {"nope": (1, 3, 16, 16)})
    with pytest.raises(MemflatError, match="rank 3"):
        load_onnx(model, {"x": (1, 3, 16)})
    with pytest.raises(MemflatError, match="contradicts"):
        load_onnx(model, {"x": (1, 4, 16, 16)})
    with pytest.raises(MemflatError, match="bad --input-shape"):
        parse_input_shapes(["x=1x3xbad"])
    assert parse_input_shapes(["x=1x3x8x8"]) == {"x": (1, 3, 8, 8)}


def test_static_shape_arithmetic_is_folded_and_builds():
    model = onnx_models.shape_arithmetic_cnn()
    from tvm.relax.frontend.onnx import from_onnx

    with pytest.raises(Exception):  # noqa: B017 - TVM alone cannot import this export
        from_onnx(model)
    mod = load_onnx(model)
    ops = {b.value.op.name for blk in mod["main"].body.blocks for b in blk.bindings
           if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)}
    assert "relax.dynamic_strided_slice" not in ops
    assert "relax.shape_of" not in ops
    _check_against_ort(model, mod, (1, 3, 12, 12))


def test_unsupported_ops_are_all_named():
    with pytest.raises(MemflatError, match="unsupported ONNX operator.*Celu, LpNormalization"):
        load_onnx(onnx_models.unsupported_ops())


def test_checker_failure():
    with pytest.raises(MemflatError, match="fails onnx.checker"):
        load_onnx(onnx_models.checker_failure())


def test_external_data_inside_folder_loads(tmp_path):
    path = onnx_models.with_external_data(str(tmp_path), "weights.bin")
    mod = load_model(path)
    _check_against_ort(onnx_models.small_cnn(), mod, (1, 3, 16, 16))


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = onnx_models.with_external_data(str(folder), location)
    with pytest.raises(MemflatError, match="outside the model's folder"):
        load_model(path)


def test_unknown_name_or_missing_file():
    with pytest.raises(MemflatError, match="no such file or zoo model"):
        load_model("not_a_model")
    with pytest.raises(MemflatError, match="no such file"):
        load_model("/nonexistent/model.onnx")


def test_batchnorm_is_folded_into_conv_exactly():
    model = onnx_models.conv_bn_relu()
    mod = load_onnx(model)
    ops = {b.value.op.name for blk in mod["main"].body.blocks for b in blk.bindings
           if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)}
    assert "relax.nn.batch_norm" not in ops
    names = {b.var.name for blk in mod["main"].body.blocks for b in blk.bindings}
    assert {"n1", "r1", "y"} <= names  # the fused conv takes the batch norm's name
    _check_against_ort(model, mod, (1, 3, 10, 10))
