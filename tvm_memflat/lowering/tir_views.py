"""PrimFunc variants that write their output into a slice of a larger buffer.

A kernel ``f(inputs..., out[shape])`` becomes ``f'(inputs..., full[full_shape])``
whose body is unchanged: the original output buffer is re-declared as a strided
``T.match_buffer`` view of ``full[begin : begin + shape]``. TVM's own
``LowerMatchBuffer`` turns the view into offset/stride arithmetic, so a producer
writes straight into its slice of a concatenation and the concat copy vanishes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx


def _i64(value: int):
    return tirx.IntImm("int64", int(value))


def buffer_shape(buf) -> tuple[int, ...]:
    """Static shape of a TIR buffer parameter."""
    return tuple(int(d) for d in buf.shape)


def copy_kernel(shape: Sequence[int], dtype: str) -> tirx.PrimFunc:
    """``dst[...] = src[...]`` for one static shape: a network input into its arena slot
    (:mod:`.input_in_arena`), or a concatenation's input copied into its slice
    (:mod:`.concat_in_place`, through :func:`write_into_slice`)."""
    src = te.placeholder(tuple(int(d) for d in shape), dtype, name="src")
    dst = te.compute(src.shape, lambda *i: src(*i), name="dst")
    return te.create_prim_func([src, dst])


def write_into_slice(func: tirx.PrimFunc, full_shape: Sequence[int],
                     begin: Sequence[int]) -> tirx.PrimFunc:
    """Variant of ``func`` whose last (DPS output) parameter is the whole buffer.

    Parameters
    ----------
    func
        An S-TIR PrimFunc (after LegalizeOps/FuseTIR) whose last parameter is its output.
    full_shape
        Shape of the buffer the output is a slice of (same rank and dtype).
    begin
        Start index of the slice in every dimension.

    Returns
    -------
    tirx.PrimFunc
        Same body; the output is a strided view of ``full[begin : begin + shape]``.
    """
    return view_of_slice(func, len(func.params) - 1, full_shape, begin)


def view_of_slice(func: tirx.PrimFunc, index: int, full_shape: Sequence[int],
                  begin: Sequence[int]) -> tirx.PrimFunc:
    """Variant of ``func`` whose parameter ``index`` is the whole buffer it is a slice
    of: the body reads (or writes) the strided view ``full[begin : begin + shape]``.
    The output (:func:`write_into_slice`), or an input that a concatenation's producer
    wrote into its slice and that another kernel also reads."""
    out = func.params[index]
    shape = buffer_shape(out)
    full_shape = tuple(int(d) for d in full_shape)
    begin = tuple(int(b) for b in begin)
    if len(full_shape) != len(shape) or len(begin) != len(shape):
        raise ValueError(f"rank mismatch: slice {shape} of {full_shape} at {begin}")
    if any(b < 0 or b + s > f for b, s, f in zip(begin, shape, full_shape, strict=True)):
        raise ValueError(f"slice {shape} at {begin} does not fit in {full_shape}")
    strides = [int(np.prod(full_shape[i + 1:], dtype=np.int64)) for i in range(len(full_shape))]
    # LowerMatchBuffer binds the view's offset from the region below
    view = tirx.decl_buffer([_i64(d) for d in shape], out.dtype, name=out.name,
                            strides=[_i64(s) for s in strides],
                            elem_offset=tirx.Var(f"{out.name}_elem_offset", "int64"),
                            offset_factor=1)
    full = tirx.decl_buffer([_i64(d) for d in full_shape], out.dtype, name=f"{out.name}_full")
    # TIR buffers are variables in 0.27: substituting the variable re-points every
    # load, store and block read/write region at the strided view.
    body = tvm_ffi.structural_map(
        func.body, [(tvm.ir.expr.Var, lambda v: view if v.same_as(out) else v)]
    )
    region = tirx.BufferRegion(full, [tvm.ir.Range.from_min_extent(_i64(b), _i64(s))
                                      for b, s in zip(begin, shape, strict=True)])
    if not isinstance(body, s_tir.SBlockRealize):
        raise ValueError("expected an S-TIR PrimFunc whose body is the root block")
    root = body.block
    new_root = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, root.body,
                            root.init, root.alloc_buffers,
                            [*root.match_buffers, s_tir.MatchBufferRegion(view, region)],
                            root.annotations)
    new_body = s_tir.SBlockRealize(body.iter_values, body.predicate, new_root)
    params = list(func.params)
    params[index] = full
    return tirx.PrimFunc(params, new_body, func.ret_type, func.attrs)


def written_shape(func: tirx.PrimFunc) -> tuple[int, ...]:
    """The shape ``func`` writes: its last (DPS output) parameter's, or, when it writes
    its slice of that buffer in place (:func:`write_into_slice`), the slice's."""
    out = func.params[-1]
    body = func.body
    if isinstance(body, s_tir.SBlockRealize):
        for match in body.block.match_buffers:
            if match.source.source.same_as(out):
                return buffer_shape(match.buffer)
    return buffer_shape(out)


def _dims(values: Sequence[int], sep: str) -> str:
    return sep.join(map(str, values))


class SliceVariants:
    """Kernel variants with strided views on some parameters, each added once to
    ``builder`` (a ``relax.BlockBuilder`` over the module being rewritten) under a name
    that says where its views point: ``<kernel>_from<arg>_<full shape>_at_<begin>`` per
    input read from a slice, ``_into_<full shape>_at_<begin>`` for an output written
    into one. :mod:`.concat_in_place` and :mod:`.slice_views` share it."""

    def __init__(self, builder):
        self.builder = builder
        self._made: dict[tuple, tvm.ir.GlobalVar] = {}

    def get(self, name: str, kernel, reads: tuple = (),
            into: tuple | None = None) -> tvm.ir.GlobalVar:
        """The variant of ``kernel()`` (called only when new) named from ``name``.

        ``reads``: ``((parameter index, full shape, begin), ...)`` of inputs read from
        slices (:func:`view_of_slice`); ``into``: ``(full shape, begin)`` of the output's
        slice (:func:`write_into_slice`), or None."""
        key = (name, tuple(reads), into)
        if key not in self._made:
            func = kernel()
            for a, shape, at in reads:
                func = view_of_slice(func, a, shape, at)
                name += f"_from{a}_{_dims(shape, 'x')}_at_{_dims(at, '_')}"
            if into is not None:
                full_shape, begin = into
                func = write_into_slice(func, full_shape, begin)
                name += f"_into_{_dims(full_shape, 'x')}_at_{_dims(begin, '_')}"
            self._made[key] = self.builder.add_func(func, name)
        return self._made[key]


def accept_byte_offsets(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every buffer parameter accepting a non-zero ``byte_offset``.

    The VM places a tensor at an offset in a storage by setting the DLTensor's
    ``byte_offset``; kernels declared with ``elem_offset == 0`` reject that. A
    symbolic ``elem_offset`` makes the kernel read it from its argument instead.
    """
    mapping = {}
    params = []
    for p in func.params:
        if isinstance(p.ty, tirx.BufferType) and isinstance(p.elem_offset, tirx.IntImm):
            q = tirx.decl_buffer(list(p.shape), p.dtype, name=p.name,
                                 strides=list(p.strides) or None,
                                 elem_offset=tirx.Var(f"{p.name}_elem_offset", "int64"),
                                 offset_factor=1)
            mapping[p] = q
            p = q
        params.append(p)
    if not mapping:
        return func
    body = tvm_ffi.structural_map(
        func.body, [(tvm.ir.expr.Var, lambda v: mapping.get(v, v))]
    )
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)
