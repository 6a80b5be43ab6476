"""Targets: build a Relax module with tvm_memflat's pipeline (llvm today)."""
