"""Running a compiled module: what it allocates at run time, its outputs, its latency.

:func:`measure_runtime_storage` wraps ``vm.builtin.alloc_storage`` before the VM is
created (the VM looks builtins up then), runs ``main`` once and returns the bytes
recorded with the outputs; :func:`measure_latency_ms` times ``main`` locally.
Both work on any ``relax.VMExecutable``: stock TVM's
(:func:`tvm_memflat.targets.stock.build_stock`) or ours (:func:`tvm_memflat.build`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import tvm
from tvm import relax


@contextlib.contextmanager
def record_alloc_storage():
    """Record the byte size of every ``vm.builtin.alloc_storage`` call in the block.

    Yields the list the sizes are appended to. The original builtin is restored
    on exit, also when the block raises.
    """
    original = tvm.get_global_func("vm.builtin.alloc_storage")
    sizes: list[int] = []

    def hook(vm, shape, *rest):
        sizes.append(int(shape[0]))
        return original(vm, shape, *rest)

    tvm.register_global_func("vm.builtin.alloc_storage", hook, override=True)
    try:
        yield sizes
    finally:
        tvm.register_global_func("vm.builtin.alloc_storage", original, override=True)


def measure_runtime_storage(executable, inputs: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    """Run ``executable`` once; return the bytes ``alloc_storage`` got, and the outputs."""
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    with record_alloc_storage() as sizes:
        # The VM looks builtins up when it is created: wrap first, then create it.
        vm = relax.VirtualMachine(executable, dev)
        out = vm["main"](*args)
    return sum(sizes), _to_numpy(out)


def measure_latency_ms(executable, inputs: list[np.ndarray], repeat: int = 3) -> float:
    """Median wall time of ``main`` over ``repeat`` runs after one warm-up, in ms."""
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    vm["main"](*args)
    result = vm.time_evaluator("main", dev, number=1, repeat=repeat)(*args)
    return 1000.0 * float(np.median(result.results))


def _to_numpy(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]
