"""``emit`` with Relax's type inference of conv2d and pooling calls memoised.

Relax infers the type of a ``conv2d`` or a 2-D pool in about half a millisecond
(measured on 0.27, against a few microseconds for an elementwise op), and the
search emits tens of thousands of them: every tile of every candidate tiling is
one. A tiled module repeats the same few signatures (operator, attributes,
argument types), so :func:`emit` infers each signature once per process and
gives the next call with it the type inferred then; the normaliser keeps a type
already set. The type is the one TVM inferred for a structurally equal call, so
the module is the same one plain ``emit`` builds. Other operators, and calls
whose arguments are not all typed Vars and Constants, go to plain ``emit``.
"""

from __future__ import annotations

from collections import OrderedDict

import tvm
import tvm_ffi
from tvm import relax

#: Operators whose type inference costs enough to memoise.
SLOW_TO_TYPE = frozenset({"relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"})
_MAX_ENTRIES = 4096
_memo: OrderedDict = OrderedDict()


def _signature(call) -> tuple | None:
    if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op)
            and call.op.name in SLOW_TO_TYPE and not call.ty_args):
        return None
    if not all(isinstance(a, (relax.Var, tvm.ir.expr.Constant)) for a in call.args):
        return None
    tys = [a.ty for a in call.args]
    return (call.op.name, tvm_ffi.structural_hash(call.attrs),
            tuple(tvm_ffi.structural_hash(t) for t in tys)), [call.attrs, *tys]


def emit(bb: relax.BlockBuilder, call, name: str = ""):
    """``bb.emit(call, name)``, with ``call``'s type taken from an earlier call of the
    same signature when there was one (see the module doc)."""
    sig = _signature(call)
    if sig is None:
        return bb.emit(call, name)
    key, witness = sig
    hit = _memo.get(key)
    # structural hashes collide (two tensor shapes hashed alike on 0.27): confirm
    if hit is not None and all(tvm_ffi.structural_equal(a, b)
                               for a, b in zip(hit[0], witness, strict=True)):
        _memo.move_to_end(key)
        relax.expr._update_type(call, hit[1])
        return bb.emit(call, name)
    var = bb.emit(call, name)
    _memo[key] = (witness, var.ty)
    if len(_memo) > _MAX_ENTRIES:
        _memo.popitem(last=False)
    return var
