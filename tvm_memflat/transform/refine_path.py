"""Refine a rewrite path once the search is done: more tiles or strips on its regions.

A round estimates a region's tile counts against the peak *outside* the region, and
stops at the first count whose estimate reaches it: more tiles cannot go lower then
(:func:`~.flatten_memory_peaks._evaluate_region`). A later rewrite can lower that
outside peak, and the earlier region, tiled for the old one, now holds the peak in its
tiles; no later round revisits it. MobileNetV2 int8 with the input streamed is the
case seen: its third region was cut into 8 H-tiles while the fourth region held the
peak, and after the fourth was tiled the peak sat in the third's 4-row tiles
(132,981 B; 14 tiles give 127,989 B at the same MACs, cached halos).

:func:`refine_path` is coordinate descent over a finished path: for each tiling, in
path order, the finer tile counts (the search's counts clamped to the region's rows,
and one row per tile), then more strips (:data:`REFINE_STRIPS`; the rounds try 2 and
4 only, and a patch grid's recompute grows with its strips, so 3 can pay where 4 does
not), each rebuilt by :func:`~.flatten_memory_peaks.replay` and judged on the real
module (:func:`~.flatten_memory_peaks.judge`: the MAC limit, then the number the
search minimises). A count is kept when it lowers the number; in each of the two
chains the first count that does not (or goes over the MAC limit, or cannot be tiled
or replayed) ends it. Sweeps repeat while one changes something, up to
``max_sweeps``, or until ``deadline``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import tvm

from ..analysis.memory_profile import MemoryProfile
from ..errors import MemflatError
from .flatten_memory_peaks import (
    MAX_PATCH_LAYERS,
    TILE_COUNTS,
    RoundOptions,
    judge,
    replay,
    tiled_region,
)
from .rewrite_step import RewriteStep
from .tiling import AXES, TilingRefused, height

logger = logging.getLogger(__name__)

__all__ = ["REFINE_MAX_LAYERS", "REFINE_STRIPS", "Refinement", "finer_counts", "more_strips",
           "refine_path"]

#: Strip counts a refinement tries on a tiling (the rounds try 2 and 4): a patch
#: grid's recompute grows with its strips, so a count between pays where 4 does not.
REFINE_STRIPS = (2, 3, 4, 6, 8)
#: Largest tiles x strips x region layers a refinement builds. The rounds' caps
#: (``MAX_TILED_LAYERS``, ``MAX_PATCH_LAYERS``) bound what every candidate's estimate
#: profiles; a refinement builds a handful of modules, so it may go further
#: (MobileNetV2 w0.35 r144's first stage in 18 tiles and 3 strips is 2,160).
REFINE_MAX_LAYERS = 4 * MAX_PATCH_LAYERS


@dataclass(frozen=True)
class Refinement:
    """A path after :func:`refine_path`.

    ``path`` is the input path with the tile or strip counts of the steps at
    ``changed`` raised (the same path when nothing paid); ``bytes`` and ``macs`` are
    its judged number and MACs; ``module`` and ``profile`` are its rebuilt module and
    ranking profile (None when nothing changed: the caller has them); ``tried``
    counts the modules rebuilt and judged."""

    path: tuple[RewriteStep, ...]
    bytes: int
    macs: int
    changed: tuple[int, ...]
    tried: int
    module: tvm.IRModule | None = dataclasses.field(default=None, repr=False)
    profile: MemoryProfile | None = dataclasses.field(default=None, repr=False)


def finer_counts(rows: int, parts: int, layers: int, strips: int = 1,
                 tile_counts=TILE_COUNTS, max_layers: int = REFINE_MAX_LAYERS) -> list[int]:
    """The tile counts above ``parts`` to try on a region ``rows`` tall with
    ``layers`` layers in ``strips`` strips, ascending: ``tile_counts`` clamped to
    ``rows`` (as a round clamps them), and one row per tile, each within
    ``max_layers`` tiled layers (two tiles always). Pure."""
    counts = sorted({min(t, rows) for t in tile_counts} | {rows})
    return [t for t in counts if t > parts and (t <= 2 or t * strips * layers <= max_layers)]


def more_strips(cols: int, tiles: int, strips: int, layers: int,
                strip_counts=REFINE_STRIPS, max_layers: int = REFINE_MAX_LAYERS) -> list[int]:
    """The strip counts above ``strips`` to try on a tiling of ``tiles`` tiles over a
    region ``cols`` wide (along the other axis) with ``layers`` layers, ascending: at
    most one column per strip, within ``max_layers`` tiled layers. Pure."""
    return [s for s in strip_counts
            if strips < s <= cols and tiles * s * layers <= max_layers]


def refine_path(mod: tvm.IRModule, path, bytes_: int, macs: int, opts: RoundOptions,
                evaluate, *, tile_counts=TILE_COUNTS, max_sweeps: int = 2,
                deadline: float | None = None, progress=None) -> Refinement:
    """Raise the tile and strip counts of ``path``'s tilings where that lowers
    ``evaluate``'s number within ``opts.mac_limit`` (module docstring).

    Parameters
    ----------
    mod
        The module ``path`` was found on (what :func:`replay` starts from).
    path
        Its steps (:class:`~.rewrite_step.RewriteStep` or their JSON).
    bytes_, macs
        ``path``'s number and MACs, as the search judged them.
    opts
        The search's options: the MAC limit and the ranking profile's conventions.
    evaluate
        ``evaluate(mod) -> bytes``, the number the search minimises (None: the
        modelled peak, as :func:`judge`).
    deadline
        A :func:`time.perf_counter` value after which no further count is tried.
    progress
        Optional ``progress(message)``, once per accepted change.
    """
    path = tuple(map(RewriteStep.from_json, path))
    best_bytes, best_macs = bytes_, macs
    module = prof = None
    changed: set[int] = set()
    tried = 0

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    for _ in range(max_sweeps):
        improved = False
        for i, step in enumerate(path):
            if step.kind != "tile" or out_of_time():
                continue
            prefix = replay(mod, path[:i])  # unchanged while step i is refined
            region = tiled_region(prefix, step)
            rows = height(region.sink, AXES[step.axis])
            cols = height(region.sink, AXES["W" if step.axis == "H" else "H"])
            # two chains, each ending at its first count that does not pay: more
            # tiles (the step's strips kept), then more strips (its tiles as refined)
            for field in ("parts", "strips"):
                for count in _counts(field, path[i], rows, cols, region.layers,
                                     tile_counts):
                    if out_of_time():
                        break
                    cand_path = (*path[:i], dataclasses.replace(path[i], **{field: count}),
                                 *path[i + 1:])
                    try:
                        cand = replay(prefix, cand_path[i:])
                    except (MemflatError, TilingRefused) as err:
                        logger.debug("refine_path: %s with %s=%d: %s", step.describe,
                                     field, count, err)
                        break
                    tried += 1
                    judged = judge(cand, opts, evaluate)
                    if judged is None:
                        break  # over the MAC limit: a larger count only adds MACs
                    p, score = judged
                    if score >= best_bytes:
                        break
                    logger.info("refine_path: %s: %s %d -> %d, %d -> %d B", step.output,
                                field, getattr(path[i], field), count, best_bytes, score)
                    if progress is not None:
                        progress(f"refine: {step.output} with {field}={count}: "
                                 f"{best_bytes} -> {score} B")
                    path, best_bytes, best_macs, module, prof = (cand_path, score, p.macs,
                                                                 cand, p)
                    changed.add(i)
                    improved = True
        if not improved:
            break
    return Refinement(path, best_bytes, best_macs, tuple(sorted(changed)), tried, module, prof)


def _counts(field: str, step: RewriteStep, rows: int, cols: int, layers: int,
            tile_counts) -> list[int]:
    if field == "parts":
        return finer_counts(rows, step.parts, layers, step.strips, tile_counts)
    return more_strips(cols, step.parts, step.strips, layers)
