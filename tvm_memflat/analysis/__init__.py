"""Pure analyses of Relax modules: schedule, lifetimes, memory profile, MACs."""

from .memory_profile import LayerRow, MemoryProfile, TensorLife, profile
from .tvm_allocation import TVMAllocation, tvm_allocation

__all__ = ["LayerRow", "MemoryProfile", "TensorLife", "TVMAllocation", "profile",
           "tvm_allocation"]
