"""Seeded random inputs for running compiled modules (timing, checking results).

Below the targets and the CLI, which use it too, because the tuner needs it to
time its candidates.
"""

from __future__ import annotations

import numpy as np
from tvm import relax


def random_inputs(func: relax.Function, seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal arrays for every tensor parameter of ``func``
    (integers in [-3, 3] for integer parameters)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for p in func.params:
        shape = tuple(int(d) for d in p.ty.shape.values)
        dtype = str(p.ty.dtype)
        if dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(rng.integers(-3, 4, size=shape).astype(dtype))
    return arrays
