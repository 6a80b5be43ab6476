"""Fast estimate of a tiled candidate's peak and MACs from a profile of its region alone.

Profiling a whole tiled module per candidate (legalize, fuse, walk) cost most of
the pass's time, and almost all of that work repeats the untouched rest of the
network. Tiling a region only changes the live bytes *while the region runs*, so:

    peak(candidate) ~ max(peak of the base profile outside the region,
                          peak of the tiled region on its own + bytes live across it)

where the region on its own is a small module (the region's source as parameter,
its output as result) and "bytes live across" are the tensors of the base
profile live during the region that the region neither reads nor writes (other
branches waiting for a concat, a residual skip). A source tensor that is still
needed after the region is counted there too, which errs on the safe side.
MACs are exact: the base MACs minus the region's plus the tiled region's.

The estimate only ranks candidates; the pass verifies the one it accepts with a
full profile, so an estimate can never make a rewrite wrong or a peak higher.

The region on its own does not depend on the rest of the network, so its
profiles (untiled and tiled) are memoised by the region module's structure and
the tiling: the next round, and the front search's other states, ask again of
every region the last rewrite left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax

from ..analysis.memory_profile import MemoryProfile, profile
from ..analysis.structural_memo import StructuralMemo
from ..frontend.canonicalize import CANONICAL_ATTR
from ._typed_emit import emit as typed_emit
from .regions import Region, bindings
from .tiling import row_inputs, with_inputs


@dataclass(frozen=True)
class RegionEstimate:
    """Estimated peak and exact MACs of the module with one region tiled."""

    peak_bytes: int
    macs: int
    #: the estimated peak while the region runs (0: not estimated apart)
    local_peak: int = 0


class RegionModel:
    """Estimates for tilings of one region of ``mod``, whose profile is ``base``.

    The region's layers are found by identity: each profiled layer lists the
    bindings it computes (``LayerRow.members``). When they cannot be matched
    (layer names out of step with the grouping), every estimate falls back to a
    full profile of the tiled module: slower, never wrong.
    """

    def __init__(self, mod, region, base: MemoryProfile, tile_fn, *,
                 in_place_concat: bool = False, tiling: tuple | None = None):
        self.mod, self.region, self.base, self._tile_fn = mod, region, base, tile_fn
        #: what ``tile_fn`` fixes besides its last argument (e.g. halo, axis, strips):
        #: with it, the region's own profiles are memoised (None: never)
        self.tiling = tiling
        #: profile as our build lays concats out (see ``profile(in_place_concat=)``)
        self.in_place_concat = in_place_concat
        steps = [row.index for row in base.layers
                 if any(m.same_as(v) for m in row.members for v in region.vars)]
        self.exact_only = not steps
        if self.exact_only:
            self.outside_peak = 0  # no floor known: each estimate profiles the module
            return
        self.first, self.last = min(steps), max(steps)
        outside = [b for i, b in enumerate(base.live_bytes) if not self.first <= i <= self.last]
        self.outside_peak = max(outside, default=0)
        self.local = None  # the region as a module of its own, built on the first estimate

    @property
    def cannot_lower(self) -> bool:
        """The base peak lies outside the region: no tiling of it can lower the peak
        (checked before the region is profiled on its own, which is the costly part)."""
        return not self.exact_only and self.outside_peak >= self.base.peak_bytes

    def _build_local(self):
        base = self.base
        source = self._source_tensor()
        outlives = source is not None and source.last > self.last
        self.local, self.local_region = _region_module(self.region, keep_source=outlives)
        # a streamed network input stays streamed when it is the region's source
        is_param = any(self.region.source.same_as(p) for p in self.mod["main"].params)
        self.local_stream = ("input",) if is_param and "input" in base.stream else ()
        self.local_base = self._local_profile(None, lambda: profile(
            self.local, with_tvm=False, in_place_concat=self.in_place_concat,
            stream=self.local_stream))
        across = 0
        for s in range(self.first, self.last + 1):
            across = max(across, sum(
                t.bytes for t in base.tensors
                if base.counted(t) and t.first <= s <= t.last and t is not source
                and not self.first <= t.producer <= self.last))
        self.across_bytes = across

    def _source_tensor(self):
        src, base = self.region.source, self.base
        if any(src.same_as(p) for p in self.mod["main"].params):
            return next((t for t in base.tensors if t.is_input and t.name == src.name), None)
        layer = next((row.index for row in base.layers
                      if any(m.same_as(src) for m in row.members)), None)
        if layer is None:
            return None
        outs = [t for t in base.tensors if t.producer == layer and t.view_of is None]
        if not outs:  # written in place over an earlier tensor (a depthwise conv):
            views = [t for t in base.tensors if t.producer == layer]  # its storage's owner
            roots = [r for t in views for r in base.tensors
                     if r.name == t.view_of and r.view_of is None and r.producer < layer]
            outs = roots if len(views) == 1 else []
        return outs[0] if len(outs) == 1 else None

    def estimate(self, tiles: int) -> RegionEstimate:
        """The module's estimated peak and exact MACs with the region in ``tiles`` tiles."""
        if self.exact_only:
            p = profile(self._tile_fn(self.mod, self.region, tiles), with_tvm=False,
                        in_place_concat=self.in_place_concat, stream=self.base.stream)
            return RegionEstimate(p.peak_bytes, p.macs)
        if self.local is None:
            self._build_local()
        tiled = self._local_profile(tiles, lambda: profile(
            self._tile_fn(self.local, self.local_region, tiles), with_tvm=False,
            in_place_concat=self.in_place_concat, stream=self.local_stream))
        local = tiled.peak_bytes + self.across_bytes
        return RegionEstimate(max(self.outside_peak, local),
                              self.base.macs - self.local_base.macs + tiled.macs, local)

    def _local_profile(self, tiles, run) -> RegionEstimate:
        """The region module's peak and MACs untiled (``tiles`` None) or tiled: from
        the memo when a structurally equal region module was profiled so before."""
        def estimate() -> RegionEstimate:
            p = run()
            return RegionEstimate(p.peak_bytes, p.macs)

        if self.tiling is None:
            return estimate()
        return _LOCAL_PROFILES.lookup(self.local, estimate, (
            self.in_place_concat, self.local_stream, self.tiling, tiles))


#: the region modules' own estimates, by (layout, streamed ends, tiling, tiles)
_LOCAL_PROFILES = StructuralMemo(4096)


def _region_module(region, keep_source: bool):
    """``region`` as a module of its own: input = its source, output = its sink
    (and the source too when it is needed after the region, so it stays live)."""
    bb = relax.BlockBuilder()
    src = region.source
    x = relax.Var(getattr(src, "name", "region_in") or "region_in", src.ty)
    with bb.function("main", [x]):
        with bb.dataflow():
            new = {src: x}
            for var, call in zip(region.vars, region.calls, strict=True):
                ins = [new[e] for e, _ in row_inputs(call)]
                new[var] = typed_emit(bb, with_inputs(call, ins), var.name)
            h = new[region.vars[-1]]
            out = bb.emit_output(relax.Tuple([h, x]) if keep_source else h)
        bb.emit_func_output(out)
    mod = bb.get().with_attr(CANONICAL_ATTR, True)  # made of the canonical module's calls
    ops = bindings(mod["main"])[:len(region.calls)]
    local = Region(mod["main"].params[0], tuple(b.var for b in ops), tuple(b.value for b in ops))
    return mod, local
