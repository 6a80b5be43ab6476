"""Depth-first fusion on a buffered spec with an on-chip path (``vta_like_fused``).

On such a spec a layer's result can stay on chip as the next layer's input
(:func:`tvm_memflat.hardware.call_tiling.keep_on_chip`), but only when it fits the
input buffer whole, next to its neighbours. A zoo net's intermediates mostly do
not: a 112×112×32 int8 map is 392 KiB against 32 KiB. Tiling a region of the graph
(:func:`tvm_memflat.transform.tile_region.tile_region`) makes each tile's
intermediates small enough; the region then runs tile by tile with them on chip
(depth-first), at the price of the slices that feed the tiles and the halo rows
computed twice. The tiles share their layer's weights, which the plan keeps in the
weight memory from the first tile to the last when they fit beside the tiles
(:func:`tvm_memflat.hardware.call_tiling.keep_weights_on_chip`); else they are
loaded once per tile.

:func:`fuse_regions` chooses, round by round, the region, the tile grid (rows per
tile, strips across) and the halo mode (DeFiNES' three modes: a region left layer
by layer, fused with recomputed halos, fused with cached halos) whose build moves
the fewest DRAM bytes on the spec, within a latency budget on the spec's cycles.
Every candidate is lowered and planned for real (:func:`plan_module`, the plan the
``vta_like`` build runs and the simulator checks); the ranking of regions (their
internal tensor bytes) only decides which are tried.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import tvm

from ..analysis.tir_stats import tensor_bytes
from ..errors import MemflatError
from ..frontend.canonicalize import canonicalize
from ..hardware.call_tiling import BufferedPlan, TilingError, onchip_path, plan_buffered
from ..host import host_target
from ..lowering.pipeline import BUFFERED_LOWERING, lower
from ..planner.live_ranges import lowered_schedule
from ..spec import AcceleratorSpec, load_spec
from ..transform.regions import Region, bindings, find_regions
from ..transform.rewrite_step import RewriteStep
from ..transform.tile_region import tile_region
from ..transform.tiling import TilingRefused

#: Tile grids tried per region: (output rows per tile, strips across the width).
GRIDS = ((2, 2), (2, 4), (4, 4))
#: Deeper regions recompute halos that grow with every layer: not tried.
MAX_LAYERS = 8
#: A round must lower the total DRAM traffic by at least this fraction.
MIN_GAIN = 0.005


@dataclass(frozen=True)
class FusionStep:
    """One region fused: how, and what the module moves and takes after it."""

    step: RewriteStep
    layers: int
    rows_per_tile: int
    halo: str
    traffic_bytes: int
    activation_traffic_bytes: int
    cycles: int
    kept_on_chip: int
    #: weights the module's plan keeps in the weight memory across a region's tiles
    weights_kept: int
    #: why this one: its gain over the module before it, against the other candidates
    why: str

    def to_dict(self) -> dict:
        out = asdict(self)
        out["step"] = self.step.to_json()
        return out


@dataclass(frozen=True)
class FusionResult:
    """What :func:`fuse_regions` chose, against the module as given on the same spec."""

    spec: str
    budget: float
    base_traffic_bytes: int
    base_activation_traffic_bytes: int
    base_cycles: int
    steps: tuple[FusionStep, ...]
    evaluated: int
    seconds: float
    reason: str

    @property
    def activation_traffic_bytes(self) -> int:
        return self.steps[-1].activation_traffic_bytes if self.steps else \
            self.base_activation_traffic_bytes

    @property
    def traffic_bytes(self) -> int:
        return self.steps[-1].traffic_bytes if self.steps else self.base_traffic_bytes

    @property
    def cycles(self) -> int:
        return self.steps[-1].cycles if self.steps else self.base_cycles

    def to_dict(self) -> dict:
        return {"spec": self.spec, "latency_budget": self.budget,
                "base_traffic_bytes": self.base_traffic_bytes,
                "base_activation_traffic_bytes": self.base_activation_traffic_bytes,
                "base_cycles": self.base_cycles, "traffic_bytes": self.traffic_bytes,
                "activation_traffic_bytes": self.activation_traffic_bytes,
                "cycles": self.cycles, "evaluated": self.evaluated,
                "seconds": round(self.seconds, 1), "reason": self.reason,
                "steps": [s.to_dict() for s in self.steps]}

    def summary(self) -> str:
        """A few lines: each fused region with its mode, then the totals."""
        lines = [f"depth-first fusion on {self.spec} (cycles within {self.budget:g}x): "
                 f"{self.reason}"]
        for s in self.steps:
            lines.append(f"  {s.step.output} ({s.layers} layers): {s.step.parts} tiles of "
                         f"{s.rows_per_tile} rows x {s.step.strips} strips, {s.halo} halos, "
                         f"{s.weights_kept} weights kept across tiles; {s.why}")
        act0 = self.base_activation_traffic_bytes
        lines.append(f"  activation traffic {act0} -> {self.activation_traffic_bytes} B "
                     f"({100 * (1 - self.activation_traffic_bytes / act0):.1f} % less), total "
                     f"{self.base_traffic_bytes} -> {self.traffic_bytes} B, cycles "
                     f"x{self.cycles / self.base_cycles:.3f}")
        return "\n".join(lines)


def plan_module(mod: tvm.IRModule, spec: AcceleratorSpec) -> BufferedPlan:
    """``mod`` lowered as the ``vta_like`` build lowers it, every call tiled for
    ``spec`` (intermediates kept on chip where the spec's path allows)."""
    low = lower(mod, host_target(), **BUFFERED_LOWERING)
    return plan_buffered(lowered_schedule(low), spec)


def _internal_bytes(region: Region) -> int:
    """Bytes of the region's tensors other than its sink: what fusion could keep on chip."""
    total = 0
    for var in region.vars[:-1]:
        ty = var.ty
        if getattr(ty, "shape", None) is not None and hasattr(ty.shape, "values"):
            total += tensor_bytes(ty.shape.values, str(ty.dtype))
    return total


def _grids(region: Region) -> list[tuple[int, int, int]]:
    """(tiles, strips, rows per tile) for the region's sink (N, C, H, W)."""
    if len(region.sink.ty.shape.values) != 4:
        return []
    height, width = (int(d) for d in region.sink.ty.shape.values[2:])
    out = []
    for rows, strips in GRIDS:
        tiles = math.ceil(height / rows)
        if 2 <= tiles <= height and strips <= width // 2:
            out.append((tiles, strips, rows))
    return out


def fuse_regions(mod: tvm.IRModule, spec: AcceleratorSpec | str = "vta_like_fused", *,
                 latency_budget: float = 1.1, halo: str = "auto", candidates: int = 3,
                 rounds: int = 6, progress=None) -> tuple[tvm.IRModule, FusionResult]:
    """Fuse regions of ``mod`` depth-first for ``spec`` (see the module doc).

    Per round, the ``candidates`` regions (of 2 to :data:`MAX_LAYERS` layers, made
    of the module's own bindings, not of an earlier round's tiles) with the most
    bytes inside are tried in each grid of :data:`GRIDS` with recomputed halos, and the
    best of them also with cached halos (``halo`` "auto"; "recompute" or "cache"
    restricts the mode). The candidate with the least total DRAM traffic whose
    cycles stay within ``latency_budget`` times the module's as given is taken if it
    lowers the traffic by :data:`MIN_GAIN` or more; else the search stops.
    """
    spec = spec if isinstance(spec, AcceleratorSpec) else load_spec(spec)
    if spec.machine_kind != "buffered" or onchip_path(spec) is None:
        raise MemflatError(f"spec {spec.name!r} has no on-chip path from the accumulator "
                           "to the activation memory: fusion cannot keep anything on chip")
    if halo not in ("auto", "recompute", "cache"):
        raise MemflatError(f"halo must be recompute, cache or auto, got {halo!r}")
    if latency_budget < 1.0:
        raise MemflatError(f"latency budget {latency_budget}x is below the module as given")
    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    canonical = canonicalize(mod)  # the form the regions are found in, as the pass's
    if canonical.refused is not None:
        raise MemflatError(f"cannot fuse this module: {canonical.refused}")
    mod = canonical.mod
    base = plan_module(mod, spec)
    limit = latency_budget * base.cycles
    own = {b.var.name for b in bindings(mod["main"])}
    current, best_plan, steps, evaluated = mod, base, [], 0
    reason = f"{rounds} rounds done"
    for r in range(rounds):
        regions = [g for g in find_regions(current["main"]) if 2 <= g.layers <= MAX_LAYERS
                   and all(v.name in own for v in g.vars)]
        regions.sort(key=_internal_bytes, reverse=True)
        tried: list = []
        for region in regions[:candidates]:
            for tiles, strips, rows in _grids(region):
                modes = ("cache",) if halo == "cache" else ("recompute",)
                for mode in modes:
                    got = _try(current, region, tiles, strips, mode, spec)
                    evaluated += 1
                    say(f"  {region.sink.name} ({region.layers} layers) {tiles}x{strips} {mode}: "
                        + ("refused" if got is None else
                           f"traffic x{got[1].traffic_bytes / best_plan.traffic_bytes:.3f}, "
                           f"cycles x{got[1].cycles / base.cycles:.3f}"))
                    if got is not None:
                        tried.append((got[1].traffic_bytes, got[1].cycles, region, tiles,
                                      strips, rows, mode, got))
            say(f"fusion round {r + 1}: {len(tried)} candidates costed "
                f"({evaluated} so far, {time.perf_counter() - t0:.0f} s)")
        within = [t for t in tried if t[1] <= limit]
        if within and halo == "auto":  # the best grid again with cached halos
            _, _, region, tiles, strips, rows, _, _ = min(within, key=lambda t: t[:2])
            got = _try(current, region, tiles, strips, "cache", spec)
            evaluated += 1
            if got is not None and got[1].cycles <= limit:
                within.append((got[1].traffic_bytes, got[1].cycles, region, tiles, strips,
                               rows, "cache", got))
        if not within:
            reason = (f"round {r + 1}: no candidate within {latency_budget:g}x the cycles"
                      if tried else f"round {r + 1}: no region could be fused")
            break
        traffic, cycles, region, tiles, strips, rows, mode, (new, plan) = min(
            within, key=lambda t: t[:2])
        gain = 1 - traffic / best_plan.traffic_bytes
        if gain < MIN_GAIN:
            reason = (f"round {r + 1}: the best candidate saves {100 * gain:.2f} % of the "
                      f"traffic (< {100 * MIN_GAIN:g} %)" if gain >= 0 else
                      f"round {r + 1}: the best candidate moves {-100 * gain:.2f} % more "
                      "traffic")
            break
        step = RewriteStep("tile", region.sink.name, len(region.vars), tiles, mode, "H", strips)
        steps.append(FusionStep(
            step, region.layers, rows, mode, traffic, plan.activation_traffic_bytes, cycles,
            len(plan.kept_on_chip), len(plan.weights_kept),
            f"{100 * gain:.1f} % less traffic than before it, cycles x{cycles / base.cycles:.3f}"
            f"; best of {len(within)} within the budget ({len(tried)} costed)"))
        say(f"fusion round {r + 1}: fused {region.sink.name} ({region.layers} layers), "
            f"{tiles} tiles x {strips} strips, {mode}: {100 * gain:.1f} % less traffic")
        current, best_plan = new, plan
    result = FusionResult(spec.name, latency_budget, base.traffic_bytes,
                          base.activation_traffic_bytes, base.cycles, tuple(steps), evaluated,
                          time.perf_counter() - t0, reason)
    return current, result


def _try(mod, region, tiles, strips, mode, spec):
    """(module, plan) of ``region`` tiled so, or None if it cannot be (refused, or a
    call that no tile of fits)."""
    try:
        new = tile_region(mod, region, tiles, mode, strips=strips)
        return new, plan_module(new, spec)
    except (TilingRefused, TilingError):
        return None
