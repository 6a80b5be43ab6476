"""Test helpers: build and run on llvm, cached within a test run."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def run_llvm(mod, *inputs, pipeline=None):
    """Compile ``mod`` for llvm and run ``main`` on numpy inputs; return the numpy output."""
    target = tvm.target.Target("llvm")
    kw = {"relax_pipeline": pipeline} if pipeline is not None else {}
    ex = tvm.compile(mod, target, **kw)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.array(x, order="C")) for x in inputs])
    return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]
