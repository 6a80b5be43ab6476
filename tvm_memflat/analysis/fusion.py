"""Layers as TVM's operator fusion forms them.

A *layer* is one binding of ``main`` after TVM's CPU legalization and fusion
(``LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR`` — the
front half of ``relax.get_default_pipeline(Target("llvm"))``), so conv + bias +
relu is one layer and the tensors fusion removes are never counted.
This module runs those passes on a copy; it never changes the caller's module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from .legalize_cache import cached_legalize_ops
from .tir_stats import KernelStats, kernel_stats

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def default_target():
    """The llvm target every analysis uses unless told otherwise."""
    return tvm.target.Target("llvm")


@dataclass(frozen=True)
class FusedModules:
    """The module after ``FuseOps`` (names, op groups) and after ``FuseTIR`` (kernels)."""

    legalized: tvm.IRModule
    grouped: tvm.IRModule
    kernels: tvm.IRModule
    target: tvm.target.Target


def fuse(mod: tvm.IRModule, target=None, cached: bool = True) -> FusedModules:
    """Legalize and fuse ``mod`` exactly as TVM's llvm default pipeline does.

    ``cached`` legalizes through :mod:`.legalize_cache` (same result, each operator
    signature lowered once per process).
    """
    target = target or default_target()
    passes = cpu_pipeline.library_dispatch_passes(target) + cpu_pipeline.legalize_passes(target)
    if cached:
        passes = [cached_legalize_ops() if p.info.name == "LegalizeOps" else p for p in passes]
    fuse_ops, fuse_tir = passes[-2:]  # keep the modules in between to read names from
    assert (fuse_ops.info.name, fuse_tir.info.name) == ("FuseOps", "FuseTIR")
    with target:
        legalized = tvm.transform.Sequential(passes[:-2])(mod)
        grouped = fuse_ops(legalized)
        kernels = fuse_tir(grouped)
    return FusedModules(legalized, grouped, kernels, target)


@dataclass(frozen=True)
class Step:
    """One binding of the fused ``main``: a kernel call, or a free alias (tuple access).

    ``args`` are the Relax values read (constants excluded), ``value`` the var bound.
    """

    var: relax.Var
    name: str
    op: str
    args: tuple
    kernel: str | None
    stats: KernelStats | None
    is_view: bool
    alias_of: object | None  # for TupleGetItem / Tuple / Var bindings
    tuple_index: int | None


_DIGITS = re.compile(r"\d+$")
_AUTO_NAME = re.compile(r"^(lv|gv)\d*$")  # names TVM invents for bindings


def _op_name(gv_name: str) -> str:
    return _DIGITS.sub("", gv_name)


def _inner_ops(func: relax.Function) -> list[str]:
    return [_op_name(b.value.args[0].name_hint)
            for block in func.body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and b.value.op.same_as(_CALL_TIR)]


def _legalized_ops(main: relax.Function) -> list[tuple[str, str]]:
    return [(b.var.name, _op_name(b.value.args[0].name_hint))
            for block in main.body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and b.value.op.same_as(_CALL_TIR)]


def _group_names(fused: FusedModules) -> list[tuple[str, str]]:
    """(layer name, op) of every kernel call in the grouped ``main``, in order.

    FuseOps renames a group's output ``lv``/``gv`` and reuses one function for
    structurally equal groups, so names cannot be read from the group function.
    Instead the legalized (pre-fusion) schedule is walked in step: each group
    consumes as many legalized kernel calls as it has ops, and is named after the
    first of them with a model-given name. If the op names stop matching, the
    rest fall back to the grouped module's own names.
    """
    legal = _legalized_ops(fused.legalized["main"])
    pos, aligned, out = 0, True, []
    for block in fused.grouped["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            if value.op.same_as(_CALL_TIR):
                ops = [_op_name(value.args[0].name_hint)]
            elif isinstance(value.op, tvm.ir.GlobalVar) and isinstance(
                    fused.grouped[value.op], relax.Function):
                ops = _inner_ops(fused.grouped[value.op])
            else:
                continue
            name = binding.var.name
            run = legal[pos:pos + len(ops)]
            aligned = aligned and [op for _, op in run] == ops
            if aligned:
                pos += len(ops)
                name = next((n for n, _ in run if not _AUTO_NAME.match(n)), name)
            out.append((name, "+".join(ops)))
    return out


_STATS_MEMO: dict[int, KernelStats] = {}


def _kernel_stats_memo(prim) -> KernelStats:
    # Candidates of the pass repeat the same kernels; walking each one's TIR again
    # cost a tenth of the pass's time.
    key = tvm_ffi.structural_hash(prim)
    if key not in _STATS_MEMO:
        _STATS_MEMO[key] = kernel_stats(prim)
    return _STATS_MEMO[key]


def steps_of(fused: FusedModules) -> list[Step]:
    """The schedule: ``main``'s bindings in execution order, with kernel facts.

    Kernels and their order come from the FuseTIR module; layer names and op
    groups from the FuseOps module (FuseTIR drops trivial aliases, so the two are
    matched call by call, not binding by binding).
    """
    kernel_main = fused.kernels["main"]
    k_bindings = [b for blk in kernel_main.body.blocks for b in blk.bindings]
    names = _group_names(fused)
    n_calls = sum(1 for b in k_bindings
                  if isinstance(b.value, relax.Call) and b.value.op.same_as(_CALL_TIR))
    if len(names) != n_calls:  # never seen; keep going with TVM's own names
        names = []
    names_iter = iter(names)
    steps = []
    for kb in k_bindings:
        value = kb.value
        if isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR):
            gv = value.args[0]
            prim = fused.kernels[gv]
            stats = _kernel_stats_memo(prim)
            name, op = next(names_iter, (kb.var.name, _op_name(gv.name_hint)))
            args = tuple(a for a in value.args[1].fields
                         if not isinstance(a, tvm.ir.expr.Constant))
            is_view = bool(relax.analysis.has_reshape_pattern(prim)) and len(args) == 1
            steps.append(Step(kb.var, name, op, args, gv.name_hint, stats, is_view, None, None))
        elif isinstance(value, relax.TupleGetItem):
            steps.append(Step(kb.var, kb.var.name, "tuple_get_item", (value.tuple_value,), None,
                              None, True, value.tuple_value, int(value.index)))
        elif isinstance(value, (relax.Tuple, relax.Var)):
            fields = tuple(value.fields) if isinstance(value, relax.Tuple) else (value,)
            steps.append(Step(kb.var, kb.var.name, "tuple" if isinstance(value, relax.Tuple)
                              else "alias", fields, None, None, True, value, None))
        else:
            op = value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") \
                else type(value).__name__
            raise NotImplementedError(f"cannot profile binding {kb.var.name} = {op}")
    return steps
