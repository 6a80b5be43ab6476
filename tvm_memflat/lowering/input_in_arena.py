"""InputInArena: the network input gets a slot in the activation arena.

Under the ``input = "sram"`` counting convention (design.md §2) the network input
occupies SRAM from the start of the run until its last consumer. A host build
receives the input from the caller, outside any storage the module allocates; left
there, the device would have to hold it *beside* the arena for the whole run, even
after its last use. This rewrite gives each tensor parameter of ``main`` a slot of
its own among the intermediates: the first kernel copies the caller's tensor into
it (on a device: the DMA or sensor writes the input there) and every reader reads
the slot. The offset planner then reuses the input's bytes once it is dead, and
what ``alloc_storage`` hands out at run time is what the device holds.

Runs on lowered Relax (destination-passing kernel calls, ``R.builtin.alloc_tensor``).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..frontend.canonicalize import num_inputs
from .concat_in_place import copy_module, flat_bindings, rebuild
from .tir_views import copy_kernel

#: Name of the copy kernel added per input shape.
INPUT_COPY_KERNEL = "memflat_input_copy"


def static_tensor_type(ty) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype) of a tensor type with a static shape, else None."""
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values), str(ty.dtype)
    except (TypeError, AttributeError):
        return None


def input_into_arena(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose ``main`` copies every static tensor network input (not the
    weights an importer kept as parameters after ``num_input``, see
    :func:`~tvm_memflat.frontend.canonicalize.num_inputs`) into an allocated tensor
    first, and reads that copy everywhere else.

    The parameters keep their names and types (the caller's signature is unchanged);
    the old parameter variables become the allocated slots, so no use is rewritten.
    """
    func = mod["main"]
    params, head, kernels = [], [], {}
    builder = relax.BlockBuilder(copy_module(mod))
    n_inputs = num_inputs(func)
    for i, p in enumerate(func.params):
        info = static_tensor_type(p.ty)
        if info is None or i >= n_inputs:
            params.append(p)
            continue
        shape, dtype = info
        if info not in kernels:
            kernels[info] = builder.add_func(copy_kernel(shape, dtype), INPUT_COPY_KERNEL)
        outside = relax.Var(p.name, p.ty)
        params.append(outside)
        alloc = relax.op.builtin.alloc_tensor(relax.ShapeExpr(list(shape)), dtype, 0)
        head.append(relax.VarBinding(p, alloc))
        head.append(relax.VarBinding(relax.Var("_", relax.ObjectType()),
                                     relax.Call(kernels[info], [outside, p])))
    if not kernels:
        return mod
    new_mod = builder.get()
    body = rebuild(func, head + flat_bindings(func))
    new_mod["main"] = relax.Function(params, body.body, func.ret_ty, func.is_pure, func.attrs)
    return new_mod
