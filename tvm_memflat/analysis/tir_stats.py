"""Per-PrimFunc facts read from TIR: multiply-accumulates and kernel scratch.

Both are read from the legalized (S-TIR) PrimFuncs, so they describe exactly the
kernels TVM will run, fused or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import ir, s_tir, tirx

# In TVM 0.27 ``tirx.BufferLoad`` is a constructor function returning ``ir.TensorLoad``.
_LOAD = ir.TensorLoad


def dtype_bytes(dtype: str) -> int:
    """Bytes one element of ``dtype`` takes (sub-byte types round up)."""
    return (tvm.DataType(dtype).bits + 7) // 8


def tensor_bytes(shape, dtype: str) -> int:
    """Bytes of a dense tensor of static ``shape`` (a scalar for ``()``)."""
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) * dtype_bytes(dtype)


def buffer_bytes(buf) -> int:
    """Size of a TIR buffer in bytes (static shapes only)."""
    elems = int(np.prod([int(d) for d in buf.shape])) if len(buf.shape) else 1
    dtype = tvm.DataType(str(buf.dtype))
    return elems * ((dtype.bits * dtype.lanes + 7) // 8)


@dataclass(frozen=True)
class ScratchBuffer:
    """A buffer a kernel allocates for itself (e.g. ``pad_temp``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int


@dataclass(frozen=True)
class KernelStats:
    """What one PrimFunc computes and allocates internally."""

    macs: int
    scratch: tuple[ScratchBuffer, ...]

    @property
    def scratch_bytes(self) -> int:
        """All scratch buffers of the kernel are live together while it runs."""
        return sum(b.bytes for b in self.scratch)


def _uncast(expr):
    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _has_product_of_loads(expr) -> bool:
    found = []

    def on_mul(node):
        # int8 kernels multiply widened loads: Cast(int32, A[...]) * Cast(int32, B[...])
        if isinstance(_uncast(node.a), _LOAD) or isinstance(_uncast(node.b), _LOAD):
            loads = []
            tvm_ffi.structural_walk(node, [(_LOAD, loads.append)], order="post")
            if len(loads) >= 2:
                found.append(node)

    tvm_ffi.structural_walk(expr, [(tirx.Mul, on_mul)], order="post")
    return bool(found)


def kernel_stats(prim_func) -> KernelStats:
    """MACs and scratch of one PrimFunc.

    A block counts as multiply-accumulate work when it reduces (has a
    ``CommReduce`` iteration variable) a product of two buffer loads; its MACs
    are the product of its iteration extents. This matches the usual definition
    (conv: Cout·Hout·Wout·Cin/groups·Kh·Kw; dense: In·Out) and leaves out
    pooling, means and softmax, which reduce without multiplying.
    """
    macs = [0]
    scratch: list[ScratchBuffer] = []

    def on_block(block):
        for buf in block.alloc_buffers:
            scratch.append(ScratchBuffer(buf.name, tuple(int(d) for d in buf.shape),
                                         str(buf.dtype), buffer_bytes(buf)))
        iters = list(block.iter_vars)
        if not any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in iters):
            return
        if isinstance(block.body, tirx.BufferStore) and _has_product_of_loads(block.body.value):
            macs[0] += int(np.prod([int(iv.dom.extent) for iv in iters]))

    def on_alloc(stmt):
        buf = stmt.buffer
        scratch.append(ScratchBuffer(buf.name, tuple(int(d) for d in buf.shape),
                                     str(buf.dtype), buffer_bytes(buf)))

    tvm_ffi.structural_walk(
        prim_func.body, [(s_tir.SBlock, on_block), (tirx.AllocBuffer, on_alloc)], order="post"
    )
    return KernelStats(macs=macs[0], scratch=tuple(scratch))
