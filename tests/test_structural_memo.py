"""StructuralMemo: one computation per structurally distinct object, confirmed by
structural equality when hashes collide, and bounded."""

import tvm_ffi
from tvm import relax

from tvm_memflat.analysis.structural_memo import StructuralMemo


def _ty(*shape):
    return relax.TensorType(shape, "float32")


def test_equal_objects_compute_once_and_distinct_extras_apart():
    memo = StructuralMemo(8)
    calls = []
    a, b = _ty(1, 8, 4, 4), _ty(1, 8, 4, 4)
    assert not a.same_as(b)
    assert memo.lookup(a, lambda: calls.append("a") or 1) == 1
    assert memo.lookup(b, lambda: calls.append("b") or 2) == 1
    assert memo.lookup(b, lambda: calls.append("c") or 3, extra=("x",)) == 3
    assert calls == ["a", "c"]


def test_a_hash_collision_is_not_a_hit():
    # on TVM 0.27 these two shapes hash alike; the memo must tell them apart
    a, b = _ty(1, 32, 43, 147), _ty(1, 32, 37, 112)
    assert not tvm_ffi.structural_equal(a, b)
    memo = StructuralMemo(8)
    assert memo.lookup(a, lambda: "a") == "a"
    assert memo.lookup(b, lambda: "b") == "b"
    assert memo.lookup(a, lambda: "again") == "a"
    # the premise on TVM 0.27 (tests.test_legalize_cache checks it too)
    assert tvm_ffi.structural_hash(a) == tvm_ffi.structural_hash(b)


def test_least_recently_used_keys_go_first():
    memo = StructuralMemo(2)
    x, y, z = _ty(1), _ty(2), _ty(3)
    memo.lookup(x, lambda: "x")
    memo.lookup(y, lambda: "y")
    memo.lookup(x, lambda: "x2")  # x is now the most recent
    memo.lookup(z, lambda: "z")   # y goes
    assert memo.lookup(x, lambda: "x3") == "x"
    assert memo.lookup(y, lambda: "y2") == "y2"
