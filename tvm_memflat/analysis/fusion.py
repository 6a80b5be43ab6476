"""Layers as TVM's operator fusion forms them.

A *layer* is one binding of ``main`` after TVM's CPU legalization and fusion
(``LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR`` — the
front half of ``relax.get_default_pipeline(Target("llvm"))``, with concatenations
kept unfused as in the project's build pipeline), so conv + bias + relu is one
layer and the tensors fusion removes are never counted.
This module runs those passes on a copy; it never changes the caller's module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from ..frontend.canonicalize import canonical_form
from ..fusion_passes.legalize_cache import cached_legalize_ops
from ..fusion_passes.opaque_marks import with_concat_opaque
from .structural_memo import StructuralMemo
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


def fusion_passes(target: tvm.target.Target, *, cached: bool = True,
                  concat_opaque: bool = True) -> list:
    """TVM's llvm library dispatch and legalization passes, ending in ``FuseOps`` and
    ``FuseTIR``: with ``cached``, ``LegalizeOps`` memoised per operator signature
    (:mod:`tvm_memflat.fusion_passes.legalize_cache`); with ``concat_opaque``, our marks
    after ``AnnotateTIROpPattern`` (see :func:`fuse`). What :func:`fuse` runs, and the
    front half of the build's lowering."""
    passes = cpu_pipeline.library_dispatch_passes(target) + cpu_pipeline.legalize_passes(target)
    if cached:
        passes = [cached_legalize_ops() if p.info.name == "LegalizeOps" else p for p in passes]
    return with_concat_opaque(passes) if concat_opaque else passes


def fuse(mod: tvm.IRModule, target=None, cached: bool = True,
         concat_opaque: bool = True) -> FusedModules:
    """Legalize and fuse ``mod`` as TVM's llvm default pipeline does.

    ``cached`` legalizes through :mod:`tvm_memflat.fusion_passes.legalize_cache`
    (same result, each operator signature lowered once per process).
    ``concat_opaque`` keeps concatenations out of fused groups, as
    :func:`tvm_memflat.build` does (so a concat can be written in place; the marks
    are :mod:`tvm_memflat.fusion_passes.opaque_marks`): otherwise FuseOps may fold
    a small slice taken early into a concat run much later, keeping the whole
    sliced tensor alive in between.
    On the five zoo networks this changes no peak (checked 2026-11-23).
    The module is fused in the pass's canonical form
    (:func:`~tvm_memflat.frontend.canonicalize.canonical_form`).
    """
    target = target or default_target()
    mod = canonical_form(mod)
    if cached and concat_opaque:
        hit = _LAST_FUSED.get(mod, str(target))
        if hit is not None:
            return hit
    passes = fusion_passes(target, cached=cached, concat_opaque=concat_opaque)
    fuse_ops, fuse_tir = passes[-2:]  # keep the modules in between to read names from
    assert (fuse_ops.info.name, fuse_tir.info.name) == ("FuseOps", "FuseTIR")
    with target:
        legalized = tvm.transform.Sequential(passes[:-2])(mod)
        grouped = fuse_ops(legalized)
        kernels = fuse_tir(grouped)
    fused = FusedModules(legalized, grouped, kernels, target)
    if cached and concat_opaque:
        _LAST_FUSED.put(mod, str(target), fused)
    return fused


class _IdentityMemo:
    """The last few results keyed by the very module object (``same_as``) and a target:
    a search profiles a candidate and then predicts its build, and both begin by
    fusing the same module (:func:`tvm_memflat.lowering.pipeline.lower_kernels` takes
    the kernels from here). Holding the module keeps its handle from being reused."""

    def __init__(self, size: int):
        self.size = size
        self._items: list = []  # (module, target, value), newest last

    def get(self, mod, target: str):
        for seen, seen_target, value in reversed(self._items):
            if seen_target == target and seen.same_as(mod):
                return value
        return None

    def put(self, mod, target: str, value) -> None:
        self._items = [*self._items[-(self.size - 1):], (mod, target, value)]


_LAST_FUSED = _IdentityMemo(2)


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
    members: tuple = ()  # bindings of the module as given that this kernel computes


_DIGITS = re.compile(r"\d+$")
_AUTO_NAME = re.compile(r"^(lv|gv)\d*$")  # names TVM invents for bindings


def _op_name(gv_name: str) -> str:
    return _DIGITS.sub("", gv_name)


def _call_tir_bindings(func: relax.Function) -> list:
    return [b for block in func.body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and b.value.op.same_as(_CALL_TIR)]


class _Matcher:
    """Find which bindings of the legalized ``main`` each fused group computes.

    FuseOps gives a group's output a fresh ``lv`` name and reuses one function for
    structurally equal groups, so neither names nor positions identify the ops
    of a group (a fire module interleaves its branches' ops). Instead each group
    function is replayed on the legalized dataflow: its first op is the
    legalized call of the same operator reading the same tensors and constants
    (FuseOps passes the very constant objects), and so on.
    LegalizeOps keeps the vars of the module as given, so the members found are
    the caller's own bindings.
    """

    def __init__(self, legalized_main: relax.Function):
        # var -> [(binding var, op name, argument fields)] of the calls reading it, read
        # off the IR once (each FFI access costs; a module has thousands of calls)
        self.consumers: dict = {}
        for b in _call_tir_bindings(legalized_main):
            fields = tuple(b.value.args[1].fields)
            entry = (b.var, _op_name(b.value.args[0].name_hint), fields)
            for a in fields:
                if isinstance(a, relax.Var):
                    self.consumers.setdefault(a, []).append(entry)
        self.env: dict = {}  # grouped-main var -> legalized var
        self.taken: set = set()  # legalized bindings already given to a layer
        self._bodies: dict = {}  # group function -> its calls, read off once

    def actual(self, expr):
        return self.env.get(expr, expr) if isinstance(expr, relax.Var) else expr

    def _find(self, prim_name: str, args: list):
        first = next((a for a in args if isinstance(a, relax.Var)), None)
        for var, name, fields in self.consumers.get(first, ()):
            if name != prim_name or len(fields) != len(args):
                continue
            if var not in self.taken and all(
                    f.same_as(a) for f, a in zip(fields, args, strict=True)):
                self.taken.add(var)
                return var
        return None

    def group(self, func: relax.Function, call_args) -> tuple:
        """Legalized vars computed by ``func`` called on ``call_args`` (``()`` if lost)."""
        env = {p: self.actual(a) for p, a in zip(func.params, call_args, strict=True)}
        body = self._bodies.get(func)
        if body is None:  # FuseOps reuses one function for structurally equal groups
            body = self._bodies[func] = [
                (b.var, _op_name(b.value.args[0].name_hint), tuple(b.value.args[1].fields))
                for b in _call_tir_bindings(func)]
        members = []
        for var, name, fields in body:
            args = [env.get(a, a) if isinstance(a, relax.Var) else a for a in fields]
            found = self._find(name, args)
            if found is None:
                return ()
            env[var] = found
            members.append(found)
        return tuple(members)

    def inner_ops(self, func: relax.Function) -> list[str]:
        """The operators of ``func``'s calls, as :meth:`group` read them off."""
        return [name for _, name, _ in self._bodies[func]]

    def single(self, value) -> tuple:
        args = [self.actual(a) for a in value.args[1].fields]
        found = self._find(_op_name(value.args[0].name_hint), args)
        return (found,) if found is not None else ()


def _group_names(fused: FusedModules) -> list[tuple[str, str, tuple]]:
    """(layer name, op, member vars) of every kernel call in the grouped ``main``, in order.

    The members are the bindings of the module as given that the layer computes
    (see :class:`_Matcher`); the layer is named after the first of them with a
    model-given name, else after FuseOps' own binding name.
    """
    match = _Matcher(fused.legalized["main"])
    out = []
    for block in fused.grouped["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            if value.op.same_as(_CALL_TIR):
                ops = [_op_name(value.args[0].name_hint)]
                members = match.single(value)
            elif isinstance(value.op, tvm.ir.GlobalVar) and isinstance(
                    fused.grouped[value.op], relax.Function):
                func = fused.grouped[value.op]
                members = match.group(func, value.args)
                ops = match.inner_ops(func)
            else:
                continue
            if members:
                match.env[binding.var] = members[-1]
            name = next((v.name for v in members if not _AUTO_NAME.match(v.name)),
                        binding.var.name)
            out.append((name, "+".join(ops), members))
    return out


_KERNEL_FACTS = StructuralMemo(1 << 14)


def _kernel_facts(prim) -> tuple[KernelStats, bool]:
    """``prim``'s :class:`KernelStats` and whether it only reshapes (``has_reshape_pattern``).

    Candidates of the pass repeat the same kernels; walking each one's TIR again
    cost a tenth of the pass's time. Structural hashes collide (two different
    tensor shapes hashed alike on 0.27), so a hit is confirmed by equality."""
    return _KERNEL_FACTS.lookup(prim, lambda: (
        kernel_stats(prim), bool(relax.analysis.has_reshape_pattern(prim))))


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
            stats, reshapes = _kernel_facts(prim)
            name, op, members = next(names_iter, (kb.var.name, _op_name(gv.name_hint), ()))
            args = tuple(a for a in value.args[1].fields
                         if not isinstance(a, tvm.ir.expr.Constant))
            is_view = reshapes and len(args) == 1
            steps.append(Step(kb.var, name, op, args, gv.name_hint, stats, is_view, None, None,
                              members))
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
