"""The baseline build: stock TVM's fusing llvm pipeline, ``relax.get_default_pipeline``.

What it allocates is counted statically by
:func:`tvm_memflat.analysis.tvm_allocation.tvm_allocation` and at run time by
:func:`tvm_memflat.targets.runtime.measure_runtime_storage`.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..host import resolve_llvm_target


def build_stock(mod: tvm.IRModule, target=None):
    """Compile with stock TVM's fusing llvm pipeline (our baseline), by default for this
    machine's CPU as :func:`tvm_memflat.build` does
    (:func:`~tvm_memflat.host.host_target`), so both round alike: LLVM
    contracts a multiply and an add into one fused multiply-add where the CPU has one.
    Pass ``tvm.target.Target("llvm")`` for TVM's generic x86-64."""
    target = resolve_llvm_target(target or "llvm")
    return tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))
