"""Tuner: cost models, latency measurement (local and RPC) and the latency-budget search."""
