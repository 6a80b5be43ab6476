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


def load_model(source, input_shapes: Mapping[str, tuple[int, ...]] | None = None):
    """Load ``source`` (an ``.onnx`` path, a zoo name or a ``ModelProto``) into Relax."""
    from .. import zoo

    if isinstance(source, str) and source in (*zoo.NAMES, *zoo.FAMILIES, *zoo.COMPARISONS):
        return load_onnx(zoo.build(source), input_shapes)
    if isinstance(source, str) and not source.endswith(".onnx") and not os.path.exists(source):
        raise MemflatError(
            f"no such file or zoo model: {source!r} "
            f"(zoo models: {', '.join((*zoo.NAMES, *zoo.FAMILIES, *zoo.COMPARISONS))})"
        )
    return load_onnx(source, input_shapes)
