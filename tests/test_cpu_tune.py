"""Tuning the CPU schedules (lowering/cpu_tune.py): MetaSchedule over our rules' tile
sizes; tuned builds bit-exact; the database on disk; resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from tvm_memflat.errors import MemflatError
from tvm_memflat.host import host_target
from tvm_memflat.lowering.cpu_schedule import RULE_ATTR, rule_counts
from tvm_memflat.lowering.cpu_tune import (
    TUNE_CHANNELS,
    TUNE_WIDTHS,
    open_database,
    tunable_kernels,
    tune_kernels,
    tuned,
)
from tvm_memflat.lowering.pipeline import BuildRecord, fused_kernels, lower
from tvm_memflat.targets.build import build
from tvm_memflat.targets.runtime import measure_runtime_storage
from tvm_memflat.tuner.inputs import random_inputs


def _net(seed=0):
    """conv3x3 16 -> relu -> depthwise 3x3 -> relu -> global mean -> dense 10."""
    bb, rng = relax.BlockBuilder(), np.random.default_rng(seed)

    def w(shape):
        return relax.const((rng.standard_normal(shape) * 0.3).astype("float32"))

    x = relax.Var("x", relax.TensorType((1, 4, 16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, w((16, 4, 3, 3)), padding=1)))
            h = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(h, w((16, 1, 3, 3)), padding=1,
                                                            groups=16)))
            h = bb.emit(relax.op.reshape(relax.op.mean(h, axis=[2, 3]), (1, 16)))
            gv = bb.emit_output(bb.emit(relax.op.matmul(h, w((16, 10)))))
        bb.emit_func_output(gv)
    return bb.get()


def test_tuning_is_bit_exact_kept_on_disk_and_resumable(tmp_path):
    mod, target = _net(), host_target()
    kernels = tunable_kernels(fused_kernels(mod, target))
    # the conv, the depthwise conv, the mean and the dense have tile sizes
    assert len(kernels) == 4, [k[0] for k in kernels]
    record = BuildRecord()
    tuned_exe = build(mod, tune_trials=12, tune_dir=tmp_path, record=record)
    summary = record.tuning
    assert summary.trials_run > 0 and summary.tuned_before == 0
    # the file: per kernel, decisions drawn from the tuning space
    (path,) = tmp_path.glob("llvm-*.json")
    data = json.loads(path.read_text())
    assert data["target"] == str(target)
    values = [v for k in data["kernels"].values() for v in k["values"]]
    assert values and all(v in (*TUNE_WIDTHS, *TUNE_CHANNELS) or v < 32 for v in values)
    # bit-exact against the unscheduled build, and the same arena
    inputs = random_inputs(mod["main"], 0)
    got_bytes, (got,) = measure_runtime_storage(tuned_exe, inputs)
    want_bytes, (want,) = measure_runtime_storage(build(mod, schedule=False), inputs)
    np.testing.assert_array_equal(got, want)
    assert got_bytes == want_bytes
    # resuming with the same budget runs nothing; the kernels come from the file
    database = open_database(target, tmp_path)
    again = tune_kernels(fused_kernels(mod, target), target, 12, database, progress=None)
    assert again.trials_run == 0 and again.tuned_before == len(database.records)
    with tuned(database):
        low = lower(mod, target)
    # (an in-place variant of a tuned depthwise kernel is tuned too)
    assert rule_counts(low).get("tuned", 0) >= len(database.records)


def test_a_tuned_kernel_replays_its_decisions():
    mod, target = _net(), host_target()
    fused = fused_kernels(mod, target)
    name, func, _ = tunable_kernels(fused)[0]
    database = open_database(target, "/nonexistent-never-written")
    database.put(func, [TUNE_WIDTHS[0], 4], 1.0, 1, name)
    scheduled = database.schedule(func)
    assert scheduled is not None
    # the width tile of 16 is the vector loop
    assert "T.vectorized(T.int64(16))" in scheduled.script()


def test_bad_tune_trials_is_refused():
    with pytest.raises(MemflatError, match="tune_trials"):
        build(_net(), tune_trials=-1)


def test_rules_are_marked_on_every_kernel():
    low = lower(_net(), host_target())
    rules = [str(f.attrs[RULE_ATTR]) for _, f in low.functions_items()
             if isinstance(f, tirx.PrimFunc)]
    assert rules and "none" not in rules
    assert tvm.target.Target("llvm").kind.name == "llvm"
