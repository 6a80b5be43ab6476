"""Arm Vela's hill-climb allocator on our live ranges, as a baseline for benchmarks.

Optional: needs ``ethos-u-vela`` (``pip install -e '.[bench]'``). Vela's allocator
reseeds Python's global ``random``; the caller's random state is saved and
restored around it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from ..errors import MemflatError
from .allocator import LiveRange, align_up

#: Vela's own default for --hillclimb-max-iterations.
VELA_MAX_ITERATIONS = 99999


def vela_arena(ranges: Sequence[LiveRange], alignment_bytes: int = 1,
               max_iterations: int = VELA_MAX_ITERATIONS) -> tuple[int, float]:
    """Arena bytes Vela's hill climbing reaches on ``ranges``, and its run time in seconds."""
    try:
        from ethosu.vela.hillclimb_allocation import allocate_live_ranges
        from ethosu.vela.live_range import LiveRange as VelaLiveRange
    except ImportError:
        raise MemflatError("the Vela baseline needs ethos-u-vela: pip install -e '.[bench]'") \
            from None
    if not ranges:
        return 0, 0.0
    lrs = []
    for r in ranges:
        lr = VelaLiveRange(None, alignment_bytes)
        lr.start_time, lr.end_time = r.start, r.end  # inclusive, like ours
        lr.size = align_up(r.size_bytes, alignment_bytes)
        lr.name = r.name
        lrs.append(lr)
    limit = sum(lr.size for lr in lrs)  # always feasible: Vela then aims at the lower bound
    state = random.getstate()
    try:
        t0 = time.perf_counter()
        addresses = allocate_live_ranges(lrs, max_iterations, limit)
        seconds = time.perf_counter() - t0
    finally:
        random.setstate(state)
    return max(a + lr.size for a, lr in zip(addresses, lrs, strict=True)), seconds
