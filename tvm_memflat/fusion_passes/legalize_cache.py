"""LegalizeOps with a memo: each distinct operator signature is lowered to TIR once.

Profiling a candidate rewrite legalizes the whole module again, and TVM builds a
fresh TE PrimFunc for every call (about 2 ms each): most of the pass's time went
there, although a tiled module repeats the same few signatures over and over.
:func:`cached_legalize_ops` is TVM's own ``LegalizeOps`` with every registered
``FLegalize`` wrapped: a call whose signature (operator, attributes, argument
types, values of scalar constants) was seen before reuses the PrimFunc made
then. Tuple arguments count by their fields (a concat's tensors, a strided
slice's literal axes, begins and ends), so the halo joins and row slices of a
tiled module are memoised too. Only results of the plain shape
``call_tir(prim_func, (args of the call, or fields of its tuple args))`` are
memoised; anything else (extra bindings, TIR arguments, packed calls) is
legalized afresh every time, so the output is the same module TVM would build.
"""

from __future__ import annotations

from collections import OrderedDict

import tvm
import tvm_ffi
from tvm import relax

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_LITERALS = (relax.ShapeExpr, tvm.ir.expr.StringImm, tvm.tirx.IntImm, tvm.tirx.FloatImm)
_MAX_ENTRIES = 8192


class _Entry:
    __slots__ = ("func", "name", "arg_paths", "ty_args", "witness")

    def __init__(self, func, name, arg_paths, ty_args, witness):
        #: where each argument of the call_tir sits in the call: ``(i,)`` for its
        #: ``i``-th argument, ``(i, j)`` for field ``j`` of its tuple argument ``i``
        self.func, self.name, self.arg_paths, self.ty_args = func, name, arg_paths, ty_args
        self.witness = witness

    def args_of(self, call) -> list:
        return [call.args[p[0]] if len(p) == 1 else call.args[p[0]].fields[p[1]]
                for p in self.arg_paths]


def _witness(call):
    """What a memo hit must match exactly: structural hashes collide (measured on 0.27:
    ``R.Tensor((1, 32, 43, 147))`` and ``R.Tensor((1, 32, 37, 112))`` hash alike), so a
    hit is checked with structural equality before it is used."""
    args: list = []
    for a in call.args:
        _witness_of(a, args)
    return [call.attrs, call.ty, *args]


def _witness_of(a, out: list) -> None:
    if isinstance(a, relax.Tuple):  # field by field (the key holds the tuple's length)
        for f in a.fields:
            _witness_of(f, out)
    elif isinstance(a, tvm.ir.expr.Constant) and isinstance(a.ty, relax.TensorType):
        out.append(a.ty if a.ty.ndim else a)  # scalars are folded in: their value counts
    else:
        out.append(a.ty if isinstance(a, relax.Var) else a)


_memo: OrderedDict = OrderedDict()
_stats = {"hits": 0, "misses": 0}
#: The builder of the LegalizeOps run under way and the GlobalVar each memo entry got
#: in it: ``add_func`` hashes the whole PrimFunc to deduplicate it, so an entry used
#: again in the same run reuses its GlobalVar. Holding the builder keeps its handle
#: from being reused by the next run's.
_run: list = [None, {}]


def _arg_key(arg):
    if isinstance(arg, relax.Tuple):
        keys = tuple(_arg_key(f) for f in arg.fields)
        return None if any(k is None for k in keys) else ("tuple", keys)
    if isinstance(arg, relax.Var):
        return ("var", tvm_ffi.structural_hash(arg.ty))
    if isinstance(arg, tvm.ir.expr.Constant) and not isinstance(arg.ty, relax.TensorType):
        return ("lit", tvm_ffi.structural_hash(arg))  # FloatImm, IntImm, dtype literals
    if isinstance(arg, tvm.ir.expr.Constant):
        ty = arg.ty
        # Scalar constants are folded into the PrimFunc as immediates: key their value.
        value = arg.value.numpy().item() if ty.ndim == 0 else None
        return ("const", tvm_ffi.structural_hash(ty), value)
    if isinstance(arg, _LITERALS):
        return ("lit", tvm_ffi.structural_hash(arg))
    return None


def _signature(call):
    keys = [_arg_key(a) for a in call.args]
    if any(k is None for k in keys):
        return None
    attrs = tvm_ffi.structural_hash(call.attrs) if call.attrs is not None else 0
    return (call.op.name, attrs, tuple(keys), tvm_ffi.structural_hash(call.ty))


def _requested_name(bb, name: str) -> str:
    """The name a legalizer asked ``bb.add_func`` for, from the unique one it got.

    The builder makes a taken name unique by appending a count (``relu`` ->
    ``relu2``). A hit adds its PrimFunc under the asked-for name, so the builder
    makes it unique in the module at hand and the module's function names are the
    ones TVM's own LegalizeOps gives, whatever the memo saw before."""
    base = name.rstrip("0123456789")
    if base == name or not base:
        return name
    return base if base in bb.get() else name


def _as_entry(bb, call, result):
    """An entry for ``result`` if it is ``call_tir(gv, (args of call...))``, else None."""
    if not (isinstance(result, relax.Call) and result.op.same_as(_CALL_TIR)):
        return None
    if len(result.args) != 2 or not isinstance(result.args[1], relax.Tuple):
        return None
    leaves = [f for a in call.args for f in (a.fields if isinstance(a, relax.Tuple) else (a,))
              if isinstance(f, relax.Var)]
    if len(set(leaves)) != len(leaves):
        return None  # add(x, x): which argument a field stands for is ambiguous
    paths = []
    for field in result.args[1].fields:
        path = _path_of(call, field)
        if path is None:
            return None
        paths.append(path)
    gv = result.args[0]
    func = bb.get()[gv]
    return _Entry(func, _requested_name(bb, gv.name_hint), tuple(paths), result.ty_args,
                  _witness(call))


def _path_of(call, field) -> tuple | None:
    """Where ``field`` sits in ``call``'s arguments (see ``_Entry.arg_paths``)."""
    for i, a in enumerate(call.args):
        if a.same_as(field):
            return (i,)
    for i, a in enumerate(call.args):
        if isinstance(a, relax.Tuple):
            for j, f in enumerate(a.fields):
                if f.same_as(field):
                    return (i, j)
    return None


def _same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None) or (x is not None and not tvm_ffi.structural_equal(x, y)):
            return False
    return True


def _wrap(legalize):
    def cached(bb, call):
        key = _signature(call)
        entry = _memo.get(key) if key is not None else None
        if entry is not None and not _same(entry.witness, _witness(call)):
            entry = None  # a hash collision, not the same signature
        if entry is None:
            _stats["misses"] += 1
            result = legalize(bb, call)
            if key is not None:
                entry = _as_entry(bb, call, result)
                if entry is not None:
                    _memo[key] = entry
                    if len(_memo) > _MAX_ENTRIES:
                        _memo.popitem(last=False)
            return result
        _stats["hits"] += 1
        _memo.move_to_end(key)
        if _run[0] is None or not _run[0].same_as(bb):
            _run[:] = [bb, {}]
        seen = _run[1].get(id(entry))
        if seen is None or seen[0] is not entry:  # (an evicted entry's id reused)
            seen = _run[1][id(entry)] = (entry, bb.add_func(entry.func, entry.name))
        gv = seen[1]
        args = relax.Tuple(entry.args_of(call))
        return relax.Call(_CALL_TIR, [gv, args], None, entry.ty_args)

    return cached


def _legalize_map() -> dict:
    out = {}
    for name in tvm.ir.Op.list_op_names():
        legalize = tvm.ir.Op.get(name).get_attr("FLegalize")
        if legalize is not None:
            out[str(name)] = _wrap(legalize)
    return out


_MAP: dict | None = None


def cached_legalize_ops() -> tvm.transform.Pass:
    """``relax.transform.LegalizeOps`` whose per-signature PrimFuncs are memoised."""
    global _MAP
    if _MAP is None:
        _MAP = _legalize_map()
    return relax.transform.LegalizeOps(customize_legalize_map=_MAP)


def cache_stats() -> dict:
    """Hits and misses since the process started (for tests and progress output)."""
    return dict(_stats, entries=len(_memo))
