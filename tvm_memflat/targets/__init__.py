"""Targets: build a Relax module with tvm_memflat's pipeline for llvm or vta_like."""
