"""Binding-name conventions: how rewrites name what they emit, and how readers find it.

The rewrites leave their structure in the names of the bindings they emit, and
later stages read it back from there (a Relax binding has no other place for
it). Every such convention lives here, in one module that the emitters
(:mod:`tvm_memflat.transform.tile_region`, :mod:`tvm_memflat.transform.split_channels`)
and the readers (channel-group families, the fusion marks of
:mod:`tvm_memflat.fusion_passes.opaque_marks`, the build's in-place concatenation)
both import, so that a name is never built in one place and re-parsed by a
hand-written pattern in another.

* **H- and W-tiles** of a region ending at ``sink``: member ``j`` of tile ``t`` is
  ``<sink>_t<t>_<j>`` (along H) or ``<sink>_w<t>_<j>`` (along W); the slices a
  tile reads are ``<sink>_t<t>_in``, the cached halos it carries
  ``<sink>_t<t>_halo<j>``.
* **Patches** (H-tiles inside W-strips): strip ``s`` is ``<sink>_w<s>``, and its
  H-tiles are named as the tiles of that name: ``<sink>_w<s>_t<t>_<j>``.
* **Channel splits** of a group whose fan-in is ``f``: member ``j`` of slice
  ``g`` is ``<f>_c<g>_<j>``, the slice's partial fan-in conv ``<f>_c<g>``, and the
  running sums ``<f>_chsum<g>`` (kept out of FuseOps' groups by the build).
* **Concatenation kernels** are the PrimFuncs TVM's ``LegalizeOps`` names
  ``concatenate*``.

Pure Python: no TVM import, so anything may import it.
"""

from __future__ import annotations

import re

#: The tile-number tag in the names of a tile's bindings, per axis: ``conv_t3_5`` is
#: member 5 in H-tile 3, ``conv_w1_0`` member 0 in W-tile 1.
TILE_TAG = {"H": "t", "W": "w"}

#: A tile number inside a binding name (``_t3_``, ``_w1_``).
TILE_NUMBER = re.compile(rf"_[{''.join(TILE_TAG.values())}]\d+_")

#: Suffix (before the slice number) of the running sums of a channel split.
SPLIT_SUM_MARK = "_chsum"

#: A running sum of a channel split: a name ending in ``_chsum<g>``.
SPLIT_SUM = re.compile(re.escape(SPLIT_SUM_MARK) + r"\d*$")

#: Name LegalizeOps gives the PrimFunc of ``R.concat`` (deduplicated as concatenate1, ...).
CONCAT_KERNEL_PREFIX = "concatenate"


# --------------------------------------------------------------------------- tiles


def tile_prefix(sink: str, axis: str) -> str:
    """What every binding of ``sink``'s tiles along ``axis`` (``"H"`` or ``"W"``) starts with."""
    return f"{sink}_{TILE_TAG[axis]}"


def tile_member(sink: str, axis: str, tile: int, member: int) -> str:
    """Member ``member`` of tile ``tile``: ``<sink>_t<tile>_<member>`` (``_w`` along W)."""
    return f"{tile_prefix(sink, axis)}{tile}_{member}"


def tile_input(sink: str, axis: str, tile: int) -> str:
    """The rows (columns) tile ``tile`` reads: ``<sink>_t<tile>_in``."""
    return f"{tile_prefix(sink, axis)}{tile}_in"


def tile_halo(sink: str, axis: str, tile: int, member: int) -> str:
    """The cached halo of ``member`` carried on after tile ``tile``:
    ``<sink>_t<tile>_halo<member>``."""
    return f"{tile_prefix(sink, axis)}{tile}_halo{member}"


def tile_strip(sink: str, axis: str, strip: int) -> str:
    """Strip ``strip`` along ``axis`` of a patch grid: ``<sink>_w<strip>``. Its H-tiles
    are named as tiles of this name (member ``j`` of H-tile ``t``:
    ``<sink>_w<strip>_t<t>_<j>``), and the strip's rows are concatenated into it."""
    return f"{tile_prefix(sink, axis)}{strip}"


def untiled(name: str) -> str:
    """``name`` with any tile number wildcarded: the same binding in every H- or W-tile
    of a region (``x_t3_14`` and ``x_w4_14`` both give ``x_t*_14``)."""
    return TILE_NUMBER.sub("_t*_", name)


# --------------------------------------------------------------------------- channel splits


def split_prefix(fan_in: str) -> str:
    """What every binding a channel split of ``fan_in``'s group emits starts with."""
    return f"{fan_in}_c"


def split_member(fan_in: str, part: int, member: int) -> str:
    """Member ``member`` (fan-out slice, per-channel ops) of channel slice ``part``."""
    return f"{split_prefix(fan_in)}{part}_{member}"


def split_partial(fan_in: str, part: int) -> str:
    """The partial fan-in conv of channel slice ``part``: ``<fan_in>_c<part>``."""
    return f"{split_prefix(fan_in)}{part}"


def split_sum(fan_in: str, part: int) -> str:
    """The running sum after slice ``part``: ``<fan_in>_chsum<part>``."""
    return f"{fan_in}{SPLIT_SUM_MARK}{part}"


def is_split_sum(name: str) -> bool:
    """``name`` is a running sum of a channel split."""
    return SPLIT_SUM.search(name) is not None


def is_concat_kernel(name: str) -> bool:
    """``name`` is a PrimFunc ``LegalizeOps`` made for a concatenation."""
    return name.startswith(CONCAT_KERNEL_PREFIX)
