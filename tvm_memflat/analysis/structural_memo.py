"""A bounded memo keyed by IR objects, found by structural hash and confirmed by
structural equality.

Structural hashes collide on TVM 0.27 (``R.Tensor((1, 32, 43, 147))`` and
``R.Tensor((1, 32, 37, 112))`` hash alike), so a hit is used only when the object
stored with it is the same object or structurally equal. The searches ask the
same questions of kernel after kernel and region after region that repeat across
candidates: the analysis (kernel facts), the planner (lowered kernel facts) and
the region model (a region's own profiles) keep their answers here.
"""

from __future__ import annotations

from collections import OrderedDict

import tvm_ffi


class StructuralMemo:
    """``value = memo.lookup(obj, compute, extra)``: ``compute()`` once per structurally
    distinct ``obj`` (and hashable ``extra``), at most ``max_keys`` keys kept (the
    least recently used go first)."""

    def __init__(self, max_keys: int):
        self.max_keys = max_keys
        self._buckets: OrderedDict = OrderedDict()

    def lookup(self, obj, compute, extra=()):
        key = (tvm_ffi.structural_hash(obj), extra)
        bucket = self._buckets.get(key)
        if bucket is not None:
            for seen, value in bucket:
                if seen.same_as(obj) or tvm_ffi.structural_equal(seen, obj):
                    self._buckets.move_to_end(key)
                    return value
        value = compute()
        self._buckets.setdefault(key, []).append((obj, value))
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return value
