"""Front end: ONNX files and zoo names to static-shape Relax IRModules."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import MemflatError
from .onnx_loader import load_onnx, parse_input_shapes

__all__ = ["load_model", "load_onnx", "parse_input_shapes", "model_label"]


def model_label(source) -> str:
    """A short name for reports: the zoo name or the file's stem."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(source)))[0]
    return "model"


def load_model(source, input_shapes: Mapping[str, tuple[int, ...]] | None = None, *,
               dtype: str = "float32"):
    """Load ``source`` (an ``.onnx`` path, a zoo name or a ``ModelProto``) into Relax.

    ``dtype="int8"``: a zoo name is loaded in its QDQ int8 form
    (``zoo.build(name, dtype="int8")``); a file or ``ModelProto`` is what it is, so
    ``int8`` applies to zoo names only (give a quantized model itself)."""
    from .. import zoo

    if dtype not in ("float32", "int8"):
        raise MemflatError(f"dtype must be float32 or int8, got {dtype!r}")
    is_zoo = isinstance(source, str) and source in (*zoo.NAMES, *zoo.FAMILIES,
                                                    *zoo.COMPARISONS)
    if dtype == "int8" and not is_zoo:
        raise MemflatError(f"--dtype int8 applies to zoo names; {source!r} is loaded as it is "
                           "(give the quantized QDQ .onnx itself, without --dtype)")
    if is_zoo:
        try:
            return load_onnx(zoo.build(source, dtype=dtype), input_shapes)
        except ValueError as err:  # e.g. a zoo net without an int8 form
            raise MemflatError(f"{source}: {err}") from None
    if isinstance(source, str) and not source.endswith(".onnx") and not os.path.exists(source):
        raise MemflatError(
            f"no such file or zoo model: {source!r} "
            f"(zoo models: {', '.join((*zoo.NAMES, *zoo.FAMILIES, *zoo.COMPARISONS))})"
        )
    return load_onnx(source, input_shapes)
