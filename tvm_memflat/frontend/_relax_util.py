"""Small readers of Relax expressions shared by the canonical form and the QDQ lowering."""

from __future__ import annotations

import tvm
from tvm import relax

_Constant = tvm.ir.expr.Constant


def op_name(expr) -> str | None:
    """The operator name of a call to a Relax op, else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def static_shape(expr) -> list[int] | None:
    """``expr``'s static tensor shape, else None."""
    ty = getattr(expr, "ty", None)
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        try:
            return [int(v) for v in ty.shape.values]
        except (TypeError, AttributeError):
            return None
    return None


def tensor_dtype(expr) -> str | None:
    """``expr``'s tensor dtype, else None."""
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None
