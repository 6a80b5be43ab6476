"""Rewrites of Relax modules that keep the function they compute.

The public pass, ``tvm_memflat.FlattenMemoryPeaks``, is :mod:`tvm_memflat.passes`:
it sits above both this search and the tuner.
"""

from .flatten_memory_peaks import flatten_peaks, replay
from .regions import Region, find_chains, find_regions
from .rewrite_step import RewriteStep
from .tile_region import tile_chain, tile_region

__all__ = ["Region", "RewriteStep", "find_chains", "find_regions", "flatten_peaks", "replay",
           "tile_chain", "tile_region"]
