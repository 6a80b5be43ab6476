"""Rewrites of Relax modules that keep the function they compute."""

from .flatten_memory_peaks import FlattenMemoryPeaks, flatten_peaks
from .regions import Region, find_chains, find_regions
from .tile_region import tile_chain, tile_region

__all__ = ["FlattenMemoryPeaks", "Region", "find_chains", "find_regions", "flatten_peaks",
           "tile_chain", "tile_region"]
