"""Zoo models quantized to int8 in ONNX QDQ form by onnxruntime's ``quantize_static``.

The float model's batch norms are folded into the convolutions first (as every
deployment flow does; :func:`~tvm_memflat._onnx_fold.fold_batchnorm_into_conv`),
then ``quantize_static`` writes ``QuantizeLinear``/``DequantizeLinear`` pairs:

* weights int8, per output channel, symmetric (zero point 0); biases int32 with
  scale ``input_scale * weight_scale[c]``;
* activations int8, per tensor, symmetric (zero point 0, so zero padding of the
  int8 tensor is zero padding of the real one), calibrated with MinMax on
  :data:`CALIBRATION_SAMPLES` standard-normal inputs drawn from
  ``np.random.default_rng(0)``.

Everything runs in memory and a temporary directory; two calls give byte-identical
models (results are cached per model and arguments within a process, and every
call returns a fresh copy).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import onnx

__all__ = ["CALIBRATION_SAMPLES", "CALIBRATION_SEED", "quantize_qdq"]

#: Seeded random inputs the activation ranges are calibrated on.
CALIBRATION_SAMPLES = 4
CALIBRATION_SEED = 0

_CACHE: dict[tuple, bytes] = {}


def quantize_qdq(key: tuple, build_float: Callable[[], onnx.ModelProto]) -> onnx.ModelProto:
    """The QDQ int8 form of ``build_float()``, cached under ``key`` in this process."""
    blob = _CACHE.get(key)
    if blob is None:
        blob = _quantize(build_float()).SerializeToString(deterministic=True)
        _CACHE[key] = blob
    return onnx.ModelProto.FromString(blob)


def _quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from .._onnx_fold import fold_batchnorm_into_conv

    model = fold_batchnorm_into_conv(model)
    inputs = [i for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"expected one graph input, got {len(inputs)}")
    name = inputs[0].name
    shape = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(CALIBRATION_SEED)
    samples = [rng.standard_normal(shape).astype(np.float32) for _ in range(CALIBRATION_SAMPLES)]

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {name: x}

    import logging

    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)  # "please consider pre-processing": batch norms are folded
    try:
        with tempfile.TemporaryDirectory(prefix="memflat_qdq_") as tmp:
            src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(model, src)
            quantize_static(
                src, dst, _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
            out = onnx.load(dst)
    finally:
        log.setLevel(level)
    out.doc_string = (model.doc_string + " " if model.doc_string else "") + \
        "int8 QDQ (onnxruntime quantize_static, per-channel symmetric weights, " \
        "symmetric activations calibrated on seeded random inputs)"
    return out
