"""Hardware models: the cycle and DRAM-traffic arithmetic of an accelerator spec,
below the tuner and the targets that use it."""
