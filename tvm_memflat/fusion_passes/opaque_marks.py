"""Marks that keep kernels out of FuseOps' groups (``op_pattern = kOpaque``).

* Concatenations stay their own kernel, so the build can write each part straight
  into its slice (:mod:`tvm_memflat.lowering.concat_in_place`); fused into a
  following add or relu they could not be removed, and fused early they would
  keep a whole sliced tensor alive until the concat runs.
* The running sums of channel splits (``*_chsum<g>``, :mod:`tvm_memflat.naming`):
  fused, the first slice's conv would run only at the last sum and keep its
  input alive across every other slice.

:func:`with_concat_opaque` inserts both right after ``AnnotateTIROpPattern``.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from ..naming import is_concat_kernel, is_split_sum

#: FuseOps' pattern kinds (include/tvm/relax/op_attr_types.h): kOpaque never fuses.
_OPAQUE = 8


@tvm.transform.module_pass(opt_level=0, name="MarkConcatOpaque")
def mark_concat_opaque(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Keep every concatenate kernel out of FuseOps' groups."""
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and is_concat_kernel(gv.name_hint):
            mod[gv] = func.with_attr("op_pattern", _OPAQUE)
    return mod


@relax.expr_functor.mutator
class _SplitSumMarker(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.mod, self.opaque = mod, {}

    def visit_var_binding_(self, binding):
        value = binding.value
        if (is_split_sum(binding.var.name) and isinstance(value, relax.Call)
                and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
            gv = value.args[0]
            if gv not in self.opaque:
                func = self.mod[gv].with_attr("op_pattern", _OPAQUE)
                self.opaque[gv] = self.builder_.add_func(func, f"{gv.name_hint}_split_sum")
            args = [self.visit_expr(a) for a in value.args[1:]]
            new = relax.Call(value.op, [self.opaque[gv], *args], value.attrs, value.ty_args)
            emit = (self.builder_.emit if isinstance(binding.var, relax.DataflowVar)
                    else self.builder_.emit_output)
            self.set_var_remap(binding.var, emit(new, binding.var.name))
            return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="MarkSplitSumsOpaque")
def mark_split_sums_opaque(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Keep the running sums of channel splits (bindings named ``*_chsum<g>``) out of
    FuseOps' groups: fused with them, the first slice's conv would run only at the
    last sum, and its input would stay live across every other slice."""
    if not any(is_split_sum(b.var.name) for block in mod["main"].body.blocks
               for b in block.bindings):
        return mod
    marker = _SplitSumMarker(mod)
    func = marker.visit_expr(mod["main"])
    marker.builder_.update_func(mod.get_global_var("main"), func)
    return marker.builder_.get()


def with_concat_opaque(passes: list) -> list:
    """``passes`` with :func:`mark_concat_opaque` and :func:`mark_split_sums_opaque`
    right after AnnotateTIROpPattern (so FuseOps sees the marking)."""
    i = next(i for i, p in enumerate(passes) if p.info.name == "AnnotateTIROpPattern")
    return [*passes[:i + 1], mark_concat_opaque, mark_split_sums_opaque, *passes[i + 1:]]
