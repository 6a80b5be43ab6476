"""GEMM-core arithmetic shared by the cycle model and the per-call tiler: how many
``gemm_batch × gemm_block_in × gemm_block_out`` blocks a GEMM takes, and the vector
unit's width (see :mod:`tvm_memflat.hardware.cost_model` for the model)."""

from __future__ import annotations

import math

from ..planner.live_ranges import GemmShape
from ..spec import Compute


def vector_width(compute: Compute) -> int:
    """Elements the compute unit processes per cycle outside the GEMM core."""
    return compute.gemm_block_out if compute.gemm_block_out > 1 else compute.macs_per_cycle


def gemm_blocks(gemm: GemmShape, compute: Compute) -> int:
    """``gemm_batch × gemm_block_in × gemm_block_out`` block operations one GEMM needs."""
    bi, bo = compute.gemm_block_in, compute.gemm_block_out
    kc, n, groups = gemm.k_channels, gemm.n, gemm.groups
    if groups > 1 and kc < bi and n < bo:   # block-diagonal packing of small groups
        per_tap = math.ceil(groups / min(bi // kc, bo // n))
    else:
        per_tap = groups * math.ceil(kc / bi) * math.ceil(n / bo)
    return math.ceil(gemm.m / compute.gemm_batch) * gemm.taps * per_tap


def block_macs(compute: Compute) -> int:
    return compute.gemm_batch * compute.gemm_block_in * compute.gemm_block_out
