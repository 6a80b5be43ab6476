"""The machine we run on: its llvm target and the runtime's thread count.

``tvm_memflat.build(mod, "llvm")`` compiles for this CPU
(:func:`host_target`: llvm with ``mcpu`` set to the host's CPU, so LLVM may use its
vector units); stock TVM's ``Target("llvm")`` targets a generic x86-64 with SSE2 only.
A ``tvm.target.Target`` passed in is used as given.

TVM's thread pool sizes itself, by default, to half the hardware threads (it assumes
two per core). :func:`set_threads` sets it to what the user asks; the default,
:func:`default_threads`, is every CPU this process may run on, unless the user set
``TVM_NUM_THREADS``.
"""

from __future__ import annotations

import os

import tvm
import tvm_ffi
from tvm.target import codegen

from .errors import MemflatError


def host_cpu() -> str | None:
    """LLVM's name for this machine's CPU (``None`` if LLVM does not know it)."""
    cpu = str(codegen.llvm_get_system_cpu())
    try:
        return cpu if cpu and cpu != "generic" and codegen.llvm_is_valid_cpu(
            cpu, str(codegen.llvm_get_system_triple())) else None
    except Exception:  # noqa: BLE001 - an LLVM without this query: fall back to generic
        return None


def host_target() -> tvm.target.Target:
    """llvm for this CPU (its vector extensions enabled), with this system's triple."""
    cpu = host_cpu()
    if cpu is None:
        return tvm.target.Target("llvm")
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu,
                              "mtriple": str(codegen.llvm_get_system_triple())})


def resolve_llvm_target(target) -> tvm.target.Target:
    """``"llvm"`` -> :func:`host_target`; a ``Target`` as given."""
    if isinstance(target, tvm.target.Target):
        return target
    if target == "llvm":
        return host_target()
    return tvm.target.Target(target)


#: The user's TVM_NUM_THREADS when this module was imported (set_threads rewrites it).
_USER_THREADS = os.environ.get("TVM_NUM_THREADS", "")


def default_threads() -> int:
    """The user's ``TVM_NUM_THREADS`` if set, else the CPUs this process may run on."""
    env = _USER_THREADS.strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Size TVM's thread pool (``None``: :func:`default_threads`); returns the count.

    Applies to every kernel run in this process from then on."""
    count = default_threads() if threads is None else threads
    if not isinstance(count, int) or count < 1:
        raise MemflatError(f"threads must be a positive integer, got {threads!r}")
    # The pool caps its size at TVM_NUM_THREADS (or half the hardware threads), read
    # when it is configured: set both.
    os.environ["TVM_NUM_THREADS"] = str(count)
    tvm_ffi.get_global_func("runtime.config_threadpool")(0, count)
    return count


def threads_in_use() -> int:
    """The thread pool's current size."""
    return int(tvm.runtime.num_threads())
