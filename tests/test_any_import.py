"""The pass on the modules users bring: TVM's ONNX importer (weights bound or kept as
parameters), our loader, and TVM's PyTorch importer when torch is installed.

For every pattern in :mod:`tests.any_import_models` and every import path: at least
one region is rewritten (canonicalisation alone does not count), the device bytes
predicted for our build drop and equal what the built module allocates, and the
rewritten module computes what the module as imported computes (stock TVM build),
which itself matches onnxruntime.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import tvm_memflat
from tvm_memflat.frontend.canonicalize import canonicalize
from tvm_memflat.planner.device_bytes import predict_device_bytes
from tvm_memflat.targets.build import build_and_measure

from . import any_import_models, onnx_models
from .util import run_llvm

PATHS = ("loader", "onnx", "onnx_params")
TOL = 1e-4  # design.md: max abs error <= 1e-4 x max |reference output|


def _import(path: str, model):
    if path == "loader":
        return tvm_memflat.load_model(model)
    return from_onnx(model, keep_params_in_input=path == "onnx_params")


_RESULTS: dict = {}


def _flatten(pattern: str, path: str):
    """(imported module, weights kept as parameters, pass, rewritten module), cached
    within the run."""
    key = (pattern, path)
    if key not in _RESULTS:
        mod = _import(path, any_import_models.PATTERNS[pattern]())
        weights = []
        if path == "onnx_params":
            mod, params = relax.frontend.detach_params(mod)
            weights = [p.numpy() for p in params["main"]]
        pass_ = tvm_memflat.FlattenMemoryPeaks()
        with tvm.transform.PassContext():
            new = tvm.transform.Sequential([pass_])(mod)
        _RESULTS[key] = (mod, weights, pass_, new)
    return _RESULTS[key]


def _output(outputs):
    got = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return got.numpy() if hasattr(got, "numpy") else np.asarray(got)


#: TVM's ONNX importer lists every weight twice in ``main``'s parameters for an
#: old-style graph (initializers also graph inputs) with keep_params_in_input=True: a
#: module stock TVM cannot build either; the pass refuses it (tested below).
_INVALID_IMPORTS = {("old_style", "onnx_params")}
CASES = [(pattern, path) for pattern in sorted(any_import_models.PATTERNS) for path in PATHS
         if (pattern, path) not in _INVALID_IMPORTS]


@pytest.mark.parametrize(("pattern", "path"), CASES)
def test_pass_rewrites_lowers_device_bytes_and_stays_exact(pattern, path):
    model = any_import_models.PATTERNS[pattern]()
    mod, weights, pass_, new = _flatten(pattern, path)
    assert pass_.decisions, f"no region rewritten: {pass_.stop_reason}"
    assert not new.same_as(mod)
    if path == "onnx_params":  # the signature is kept: input first, then every weight
        assert [p.name for p in new["main"].params] == [p.name for p in mod["main"].params]
        assert int(new["main"].attrs["num_input"]) == 1
    before = predict_device_bytes(mod).total_bytes
    after = predict_device_bytes(new).total_bytes
    assert after < before
    x = np.random.default_rng(3).standard_normal(
        (1, 3, any_import_models.H, any_import_models.H)).astype("float32")
    args = [x, *weights]
    reference = _output(run_llvm(mod, *args))  # the module as imported, stock TVM build
    oracle = onnx_models.onnxruntime_outputs(model, {"x": x})[0]
    assert np.abs(reference - oracle).max() <= TOL * np.abs(oracle).max()
    _, allocation, outputs = build_and_measure(new, args)
    got = _output(outputs)
    assert np.abs(got - reference).max() <= TOL * np.abs(reference).max()
    assert allocation.device_bytes == after  # the one number: predicted == measured


@pytest.mark.parametrize("pattern", sorted(any_import_models.PATTERNS))
def test_device_bytes_agree_across_import_paths(pattern):
    # Weights bound (our loader, from_onnx): the same canonical module, so within 1 %.
    # Weights kept as parameters: batch norms stay per-channel ops on run-time vectors
    # (not folded into W), and the search may take another path: within 10 %.
    after = {path: predict_device_bytes(_flatten(pattern, path)[3]).total_bytes
             for path in PATHS if (pattern, path) not in _INVALID_IMPORTS}
    assert abs(after["loader"] - after["onnx"]) <= 0.01 * after["loader"], after
    if "onnx_params" in after:
        assert abs(after["onnx_params"] - after["onnx"]) <= 0.10 * after["onnx"], after


def test_a_module_listing_a_parameter_twice_is_refused_with_the_reason():
    mod, _, pass_, new = _flatten("old_style", "onnx_params")
    assert new.same_as(mod) and not pass_.decisions
    assert "twice" in pass_.stop_reason and "keep_params_in_input=False" in pass_.stop_reason


def test_batch_norm_is_folded_into_the_conv_and_importer_idioms_are_normalised():
    c = canonicalize(from_onnx(any_import_models.hardswish_block()))
    changes = dict(c.changes)
    assert changes["batch_norm folded into the conv before it"] == 2
    assert changes["call_tir kernel back to its Relax op"] == 2  # Clip's max and min
    ops = set()
    relax.analysis.post_order_visit(c.mod["main"], lambda e: ops.add(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    assert "relax.nn.batch_norm" not in ops and "relax.call_tir" not in ops
    assert "relax.clip" in ops
    again = canonicalize(c.mod)
    assert not again.changed and again.mod.same_as(c.mod)  # a fixed point


def test_old_style_sum_dropout_and_shape_constants_are_normalised():
    c = canonicalize(from_onnx(any_import_models.old_style()))
    changes = dict(c.changes)
    assert changes["N-ary sum into adds"] == 1
    assert changes["dropout removed (inference)"] == 1


def test_channel_shuffle_becomes_a_channel_gather_and_split_a_slice():
    c = canonicalize(from_onnx(any_import_models.channel_shuffle()))
    changes = dict(c.changes)
    assert changes["channel shuffle into take"] == 1
    assert changes["split into strided_slice"] == 2


def test_dynamic_shapes_come_back_unchanged_with_a_logged_reason(caplog):
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 3, 16, 16), "float32"))
    w = relax.const(np.ones((8, 3, 3, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, w, padding=1)))
            gv = bb.emit_output(relax.op.nn.max_pool2d(y, pool_size=2, strides=2))
        bb.emit_func_output(gv)
    mod = bb.get()
    pass_ = tvm_memflat.FlattenMemoryPeaks()
    with caplog.at_level(logging.WARNING, logger="tvm_memflat.passes"):
        out = tvm.transform.Sequential([pass_])(mod)
    assert out.same_as(mod)
    assert "static shape" in pass_.stop_reason
    assert any("static shape" in r.getMessage() for r in caplog.records)


def test_a_module_without_a_region_comes_back_as_given():
    # canonicalisation changes this module (batch norms folded), but no region pays:
    # the caller gets their own module back, not the canonical one
    mod = from_onnx(onnx_models.conv_bn_relu())
    pass_ = tvm_memflat.FlattenMemoryPeaks(max_mac_overhead=0.0)
    out = tvm.transform.Sequential([pass_])(mod)
    if not pass_.decisions:
        assert out.same_as(mod)
        assert pass_.canonical_changes and pass_.stop_reason


def test_torch_export_path_rewrites_and_stays_exact():
    torch_ = pytest.importorskip("torch")
    from tvm.relax.frontend.torch import from_exported_program

    class Net(torch_.nn.Module):
        def __init__(self):
            super().__init__()
            nn = torch_.nn
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(16), nn.Hardswish())
            self.se_fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                       nn.Conv2d(4, 16, 1), nn.Hardsigmoid())
            self.body = nn.Sequential(nn.Conv2d(16, 24, 3, 2, 1), nn.BatchNorm2d(24), nn.ReLU6(),
                                      nn.Conv2d(24, 32, 3, 2, 1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

        def forward(self, x):
            x = self.stem(x)
            return self.body(x * self.se_fc(x))

    torch_.manual_seed(0)
    net = Net().eval()
    x = torch_.randn(1, 3, 32, 32)
    with torch_.no_grad():
        expected = net(x).numpy()
    for keep in (False, True):
        ep = torch_.export.export(net, (x,))
        mod = from_exported_program(ep, keep_params_as_input=keep,
                                    unwrap_unit_return_tuple=True)
        weights = []
        if keep:
            mod, params = relax.frontend.detach_params(mod)
            weights = [p.numpy() for p in params["main"]]
        pass_ = tvm_memflat.FlattenMemoryPeaks()
        new = tvm.transform.Sequential([pass_])(mod)
        assert pass_.decisions, pass_.stop_reason
        assert predict_device_bytes(new).total_bytes < predict_device_bytes(mod).total_bytes
        args = [x.numpy(), *weights]
        _, _, outputs = build_and_measure(new, args)
        got = _output(outputs)
        assert np.abs(got - expected).max() <= TOL * np.abs(expected).max()


def test_readme_python_snippet_works_as_written_with_from_onnx():
    # the README's Python section, up to the workflow call: from_onnx, profile, the
    # pass in a Sequential, and the device bytes before and after
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    snippet = block.split("# The whole `memflat optimize`", 1)[0]
    assert "from_onnx(" in snippet and "FlattenMemoryPeaks()" in snippet
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["flatten"].decisions
    after = scope["tvm_memflat"].profile(scope["flat"]).device.total_bytes
    assert after < scope["prof"].device.total_bytes


def test_weight_transforms_at_run_time_are_reported_apart_from_activations():
    # with the weights kept as parameters, a batch norm's scale and shift are computed
    # at run time from them: profiled as weight-only tensors, never as the input
    mod, _, _, _ = _flatten("bias_bn", "onnx_params")
    prof = tvm_memflat.profile(mod, with_tvm=False, predict=False)
    weight_only = [t for t in prof.tensors if t.weight_only]
    assert weight_only and prof.weight_only_bytes == sum(t.bytes for t in weight_only)
    assert all(t.shape[-2:] == (1, 1) or len(t.shape) == 1 for t in weight_only)
    assert prof.input_bytes == 3 * any_import_models.H ** 2 * 4  # the image only
    bound = tvm_memflat.profile(_flatten("bias_bn", "onnx")[0], with_tvm=False, predict=False)
    assert bound.weight_only_bytes == 0


def test_shape_arithmetic_of_an_exporter_is_folded_until_the_module_is_static():
    # torch.onnx.export's shufflenet: TVM's importer leaves shape arithmetic that makes
    # every later tensor dynamic; folded on constants, the module is static again
    model = any_import_models.shape_computed_shuffle()
    mod = from_onnx(model)
    canonical = canonicalize(mod)
    assert canonical.refused is None, canonical.refused
    changes = dict(canonical.changes)
    assert changes["shape of a static tensor made a constant"] >= 1
    assert changes["strided slice with constant bounds made static"] == 2
    assert changes["channel shuffle into take"] == 1
    pass_ = tvm_memflat.FlattenMemoryPeaks()
    new = tvm.transform.Sequential([pass_])(mod)
    assert pass_.decisions, pass_.stop_reason
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype("float32")
    oracle = onnx_models.onnxruntime_outputs(model, {"x": x})[0]
    _, allocation, outputs = build_and_measure(new, [x])
    assert np.abs(_output(outputs) - oracle).max() <= TOL * np.abs(oracle).max()
    assert allocation.device_bytes == predict_device_bytes(new).total_bytes
    assert allocation.device_bytes < predict_device_bytes(canonical.mod).total_bytes
