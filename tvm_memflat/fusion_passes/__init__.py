"""TVM passes that both the profiler and the build run around FuseOps.

The profiler (:mod:`tvm_memflat.analysis.fusion`) forms layers exactly as the
build (:mod:`tvm_memflat.lowering.pipeline`) fuses kernels, so both run the same
additions to TVM's CPU legalization: LegalizeOps memoised per operator
signature (:mod:`.legalize_cache`) and the marks that keep concatenations and the
running sums of channel splits out of FuseOps' groups (:mod:`.opaque_marks`).
They sit below both users in the layering (``docs/architecture.md``).
"""
