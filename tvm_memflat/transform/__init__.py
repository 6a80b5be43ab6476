"""Rewrites of Relax modules that keep the function they compute."""

from .flatten_memory_peaks import FlattenMemoryPeaks, find_chains, flatten_peaks, tile_chain

__all__ = ["FlattenMemoryPeaks", "find_chains", "flatten_peaks", "tile_chain"]
