"""The baseline build: stock TVM's fusing llvm pipeline, ``relax.get_default_pipeline``.

What it allocates is counted statically by
:func:`tvm_memflat.analysis.tvm_allocation.tvm_allocation` and at run time by
:func:`tvm_memflat.targets.runtime.measure_runtime_storage`.
"""

from __future__ import annotations

import tvm
from tvm import relax


def build_stock(mod: tvm.IRModule, target=None):
    """Compile with stock TVM's fusing llvm pipeline (our baseline)."""
    target = target or tvm.target.Target("llvm")
    return tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))
