"""Load an ONNX model into a static-shape Relax IRModule with weights as constants.

Every user mistake is reported as one :class:`~tvm_memflat.errors.MemflatError` line:
missing file, not ONNX, fails ``onnx.checker``, dynamic input dims without a given
shape, unsupported operators (all named at once), external data outside the model's
folder. Two foldings make real-world exports buildable and cheap:

* static shape arithmetic (``Shape -> Gather -> ... -> Slice``) is folded in ONNX
  once every input shape is known, because otherwise the importer emits
  ``dynamic_strided_slice`` with unknown shapes, which then fails to build;
* constants are folded after import (by the pass's canonical form,
  :mod:`.canonicalize`: numpy first, Relax ``FoldConstant`` for the rest), because
  otherwise a ``Gemm`` weight is transposed at every run (VGG16's fc6: 392 MiB of
  activations).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .._onnx_fold import fold_batchnorm_into_conv
from ..errors import MemflatError
from .canonicalize import marked_canonical

# Nodes whose outputs we evaluate at load time when all their inputs are known.
# Only small results are folded: this is for shape arithmetic, not for weights.
_FOLD_MAX_ELEMENTS = 4096
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` strings (the CLI's ``--input-shape``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise MemflatError(
                f"bad --input-shape {spec!r}: expected NAME=DxDx...; e.g. input=1x3x224x224"
            ) from None
        shapes[name] = shape
    return shapes


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file, refusing external data outside its folder."""
    path = Path(path)
    if not path.exists():
        raise MemflatError(f"no such file: {path}")
    if path.is_dir():
        raise MemflatError(f"expected an ONNX file, got a directory: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and friends
        raise MemflatError(f"not an ONNX model (cannot parse protobuf): {path}") from None
    if not model.HasField("graph") or not model.opset_import:
        raise MemflatError(f"not an ONNX model (no graph or opset): {path}")
    _load_external_data(model, path.parent)
    check_model(model, str(path))
    return model


def _load_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    base = base_dir.resolve()
    external = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(base):
            raise MemflatError(
                f"external data {location!r} of tensor {tensor.name!r} points outside the "
                f"model's folder {base}; refusing to read it"
            )
        if not target.is_file():
            raise MemflatError(f"external data file of tensor {tensor.name!r} is missing: {target}")
    if external:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t


def check_model(model: onnx.ModelProto, label: str = "model") -> None:
    """Run ``onnx.checker`` and turn its failure into one line."""
    try:
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
    except Exception as err:  # onnx.checker.ValidationError, and protobuf errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MemflatError(f"{label} fails onnx.checker: {first}") from None


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def resolve_input_shapes(
    model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Static shape of every graph input, from the model or from ``given``."""
    given = dict(given or {})
    inputs = _graph_inputs(model)
    names = {i.name for i in inputs}
    unknown = sorted(set(given) - names)
    if unknown:
        raise MemflatError(
            f"--input-shape names unknown input(s) {unknown}; "
            f"the model's inputs are {sorted(names)}"
        )
    shapes = {}
    for inp in inputs:
        ttype = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise MemflatError(f"input {inp.name!r} is not a tensor; only tensors are supported")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in ttype.shape.dim]
        if inp.name in given:
            shape = given[inp.name]
            if ttype.HasField("shape") and len(shape) != len(dims):
                raise MemflatError(
                    f"--input-shape {inp.name} has rank {len(shape)}, the model says {len(dims)}"
                )
            clash = [(a, b) for a, b in zip(dims, shape, strict=False) if a is not None and a != b]
            if clash:
                raise MemflatError(
                    f"--input-shape {inp.name}={'x'.join(map(str, shape))} contradicts the "
                    f"model's fixed dims {_show_dims(ttype)}"
                )
        elif not ttype.HasField("shape") or None in dims:
            example = "x".join(str(d or 1) for d in dims) or "1x3x224x224"
            raise MemflatError(
                f"input {inp.name!r} has dynamic shape {_show_dims(ttype)}; "
                f"give it with --input-shape {inp.name}={example}"
            )
        else:
            shape = tuple(dims)
        shapes[inp.name] = tuple(int(d) for d in shape)
    return shapes


def _show_dims(ttype) -> str:
    if not ttype.HasField("shape"):
        return "[?]"
    return "[" + ",".join(
        str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
        for d in ttype.shape.dim
    ) + "]"


def drop_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without graph inputs that are also initializers.

    Old exporters (IR version < 4, the ONNX model zoo's opset-9 files) list every
    initializer as a graph input too. Such an input has a default value and is
    never fed, so it is a weight: left in, it would become a parameter of
    ``main`` once a folding removed its initializer.
    """
    initializers = {t.name for t in model.graph.initializer}
    if not any(i.name in initializers for i in model.graph.input):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [i for i in out.graph.input if i.name not in initializers]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    return out


def check_supported_ops(model: onnx.ModelProto) -> None:
    """Name every operator the Relax ONNX importer cannot convert, all at once."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = set(_get_convert_map()) | {"Constant", "If"}
    missing = sorted({n.op_type for n in model.graph.node if n.op_type not in supported})
    if missing:
        raise MemflatError(f"unsupported ONNX operator(s): {', '.join(missing)}")


def fold_static_shape_arithmetic(
    model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """Evaluate small constant subgraphs (shape arithmetic) into initializers.

    With every input shape fixed, ``Shape`` of a tensor of static shape is a
    constant, and so is everything computed only from constants. Such nodes are
    evaluated with ONNX's reference evaluator and replaced by initializers.
    Large constant computations (weights) are left to Relax's ``FoldConstant``.
    """
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for inp in graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for d in input_shapes[inp.name]:
                dims.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a helper here: without it we fold less
        inferred = model
    static_shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            static_shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)

    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer
             if t.data_location != onnx.TensorProto.EXTERNAL
             and _numel(t.dims) <= _FOLD_MAX_ELEMENTS}
    kept, folded = [], []
    for node in graph.node:
        value = None
        if node.op_type == "Shape" and node.input[0] in static_shapes and len(node.output) == 1:
            shape = np.array(static_shapes[node.input[0]], dtype=np.int64)
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            value = [shape[start:end]]
        elif (node.op_type not in _NONDETERMINISTIC and node.domain in ("", "ai.onnx")
              and node.input and all(i == "" or i in known for i in node.input)
              and not any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute)):
            value = _evaluate(node, known, model, ReferenceEvaluator)
        if value is not None and all(v.size <= _FOLD_MAX_ELEMENTS for v in value):
            for name, v in zip(node.output, value, strict=False):
                known[name] = v
                folded.append(numpy_helper.from_array(np.asarray(v), name))
        else:
            kept.append(node)
    if not folded:
        return model
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    return model


def _numel(dims) -> int:
    return int(np.prod(list(dims))) if len(dims) else 1


def _evaluate(node, known, model, evaluator_cls):
    try:
        sub = onnx.helper.make_graph(
            [node], "fold",
            [], [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                 for o in node.output],
            initializer=[numpy_helper.from_array(np.asarray(known[i]), i)
                         for i in node.input if i],
        )
        sub_model = onnx.helper.make_model(sub, opset_imports=model.opset_import)
        outputs = evaluator_cls(sub_model).run(None, {})
        return [np.asarray(o) for o in outputs]
    except Exception:  # an op the reference evaluator cannot run: leave it to TVM
        return None


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def to_relax(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]]):
    """Import a checked, shape-resolved ONNX model into Relax and fold constants.

    Binding variables are renamed after the ONNX tensors they compute, so that
    reports name layers the way the model's author did.
    """
    from tvm import relax

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=None)
    dtypes = {}
    for inp in _graph_inputs(model):
        elem = inp.type.tensor_type.elem_type
        dtypes[inp.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32"
    importer = _importer_class()({k: list(v) for k, v in input_shapes.items()}, dtypes)
    try:
        mod = importer.from_onnx(model.graph, opset)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MemflatError(f"TVM's ONNX importer failed: {first}") from None
    names = {}
    for onnx_name, value in importer._nodes.items():  # noqa: SLF001 - only way to keep names
        # converters return either the expression they built or the var it is bound to
        if isinstance(value, (relax.Call, relax.TupleGetItem, relax.DataflowVar)):
            names.setdefault(value, _SAFE_NAME.sub("_", onnx_name).strip("_") or "t")
    mod = _rename_bindings(mod, names)
    # the pass's canonical form: constants folded (numpy first, FoldConstant for the
    # rest), importer idioms normalised, and marked, so the analyses of this module
    # and of its rewrites skip the visit
    mod = marked_canonical(mod)
    _require_static(mod)
    relax.analysis.well_formed(mod)
    return mod


def _importer_class():
    """TVM's ONNX importer, with ``Clip`` of constant bounds imported as ``R.clip``.

    TVM imports Clip as TE ``call_tir`` kernels (max, then min), which no
    Relax-level analysis or rewrite can look into; ``R.clip`` is the same
    elementwise function as a Relax op, so it stays tileable and still fuses.
    """
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend

    def scalar(expr):
        if isinstance(expr, tvm.ir.expr.Constant):
            value = expr.value.numpy()
            if value.size == 1 and not np.isnan(value).any():
                return float(value.reshape(()))
        return None

    class _Importer(onnx_frontend.ONNXGraphImporter):
        def _convert_operator(self, op_name, inputs, attrs, opset):
            if op_name == "Clip" and opset >= 11 and len(inputs) >= 1:
                bounds = [inputs[i] if len(inputs) > i else None for i in (1, 2)]
                values = [None if b is None else scalar(b) for b in bounds]
                x = inputs[0]
                if (all(b is None or v is not None for b, v in zip(bounds, values, strict=True))
                        and isinstance(x.ty, relax.TensorType)
                        and str(x.ty.dtype).startswith("float")):
                    lo = -np.inf if values[0] is None else values[0]
                    hi = np.inf if values[1] is None else values[1]
                    return self.bb.emit(relax.op.clip(x, lo, hi))
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return _Importer


def _rename_bindings(mod, names):
    from tvm import relax

    if not names:
        return mod

    @relax.expr_functor.mutator
    class _Renamer(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            name = names.get(binding.value) or names.get(binding.var)
            if name is None:
                return super().visit_var_binding_(binding)
            cls = relax.DataflowVar if isinstance(binding.var, relax.DataflowVar) else relax.Var
            new_var = cls(name, binding.var.ty)
            self.set_var_remap(binding.var, new_var)
            self.builder_.emit_normalized(relax.VarBinding(new_var, value))

    renamer = _Renamer(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            renamer.builder_.update_func(gv, renamer.visit_expr(func))
    return renamer.builder_.get()


def _require_static(mod) -> None:
    from tvm import relax

    dynamic = []

    def visit(expr):
        ty = getattr(expr, "ty", None)
        if isinstance(expr, relax.Var) and isinstance(ty, relax.TensorType):
            if ty.shape is None or not all(isinstance(d, (int,)) or hasattr(d, "value")
                                           for d in ty.shape.values):
                dynamic.append(expr.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    if dynamic:
        raise MemflatError(
            f"could not resolve static shapes for {len(dynamic)} tensor(s) "
            f"(first: {dynamic[0]}); give every input shape with --input-shape"
        )


def load_onnx(
    source: str | os.PathLike | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
):
    """Load an ONNX file or ``ModelProto`` into a static-shape Relax IRModule.

    Parameters
    ----------
    source
        Path to an ``.onnx`` file, or an in-memory model.
    input_shapes
        Shapes for inputs whose dims are symbolic, e.g. ``{"input": (1, 3, 224, 224)}``.

    Returns
    -------
    tvm.IRModule
        ``main`` takes the graph inputs; weights are bound as constants.
    """
    if isinstance(source, onnx.ModelProto):
        model = source
        check_model(model)
    else:
        model = read_onnx(source)
    model = drop_initializer_inputs(model)
    shapes = resolve_input_shapes(model, input_shapes)
    check_supported_ops(model)
    model = fold_static_shape_arithmetic(model, shapes)
    model = fold_batchnorm_into_conv(model)
    return to_relax(model, shapes)
