"""SRAM planning: live ranges of lowered buffers placed at offsets in a spec's memories."""
