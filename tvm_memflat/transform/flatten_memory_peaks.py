"""FlattenMemoryPeaks: tile the regions around activation-memory peaks along H.

The pass profiles the module (:func:`tvm_memflat.analysis.memory_profile.profile`),
finds chains of tileable ops (:mod:`.tiling`) that hold tensors live at the peak,
and rewrites the best one into H-tiles with recomputed halos: each tile slices the
rows it needs from the chain's input, runs the chain with its own border padding,
and the tiles are concatenated into the chain's output. It keeps a rewrite only
if the modelled peak drops and the MAC overhead stays within the limit, and
repeats on the new peak. Every rewrite is exact; what cannot be tiled exactly is
left alone (and logged), never approximated.

This version tiles chains (single-use intermediates) with recomputed halos; DAG
regions, cached halos, channel splits and in-place tile writes are future work
(see the issue notes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
from tvm import relax

from ..analysis.memory_profile import MemoryProfile, profile
from .region_model import RegionModel
from .tiling import input_rows, split_rows, window_of, with_h_padding

logger = logging.getLogger(__name__)

DEFAULT_MAC_OVERHEAD = 0.05
TILE_COUNTS = (2, 4, 8, 16)


@dataclass(frozen=True)
class Chain:
    """Bindings ``vars[0] .. vars[-1]`` of tileable ops, each feeding only the next."""

    source: relax.Expr  # the chain's input tensor
    vars: tuple  # bound vars, in order
    calls: tuple  # their values


@dataclass(frozen=True)
class Decision:
    """One accepted rewrite, and why it was made."""

    chain_output: str
    chain_length: int
    tiles: int
    peak_before: int
    peak_after: int
    macs_after: int


def _bindings(func: relax.Function):
    return [b for block in func.body.blocks for b in block.bindings
            if isinstance(b, relax.VarBinding)]


def _use_counts(func: relax.Function) -> dict:
    uses: dict = {}
    exprs = [b.value for b in _bindings(func)] + [func.body.body]
    for expr in exprs:
        for v in relax.analysis.free_vars(expr):
            uses[v] = uses.get(v, 0) + 1
    return uses


def find_chains(func: relax.Function) -> list[Chain]:
    """Maximal chains of tileable ops whose intermediates have exactly one use."""
    uses = _use_counts(func)
    out_vars = set(relax.analysis.free_vars(func.body.body))
    chains, current = [], []

    def flush():
        if current:
            first_call = current[0][1]
            _, idx = window_of(first_call)
            chains.append(Chain(first_call.args[idx], tuple(v for v, _ in current),
                                tuple(c for _, c in current)))
        current.clear()

    for b in _bindings(func):
        info = window_of(b.value)
        if info is None:
            flush()
            continue
        data = b.value.args[info[1]]
        continues = (current and data.same_as(current[-1][0])
                     and uses.get(current[-1][0], 0) == 1 and current[-1][0] not in out_vars)
        if not continues:
            flush()
        current.append((b.var, b.value))
    flush()
    return chains


def _height(expr) -> int:
    return int(expr.ty.shape.values[2])


def sub_chains(chain: Chain) -> list[Chain]:
    """Candidate regions of a chain: every prefix that ends after a downsampling op,
    and the whole chain (a region should end where the tensor is small)."""
    out = []
    for j, call in enumerate(chain.calls):
        w, _ = window_of(call)
        if w.stride > 1 and j + 1 < len(chain.calls):
            out.append(Chain(chain.source, chain.vars[:j + 1], chain.calls[:j + 1]))
    out.append(chain)
    return out


@relax.expr_functor.mutator
class _ChainTiler(relax.PyExprMutator):
    """Replace the last call of one chain by the concat of its H-tiles."""

    def __init__(self, mod, chain: Chain, tiles: int):
        super().__init__(mod)
        self.chain, self.tiles = chain, tiles

    def visit_call_(self, call):
        if call.same_as(self.chain.calls[-1]):
            return self._tile()
        return super().visit_call_(call)

    def _tile(self):
        bb, chain = self.builder_, self.chain
        source = self.visit_expr(chain.source)
        heights = [_height(chain.source)] + [_height(v) for v in chain.vars]
        windows = [window_of(c)[0] for c in chain.calls]
        name = chain.vars[-1].name
        outs = []
        for t, (o0, o1) in enumerate(split_rows(heights[-1], self.tiles)):
            spans, lo, hi = [], o0, o1
            for j in range(len(chain.calls) - 1, -1, -1):  # rows each op needs, backwards
                span = input_rows(windows[j], lo, hi, heights[j])
                spans.append(span)
                lo, hi = span.lo, span.hi
            spans.reverse()
            h = bb.emit(relax.op.strided_slice(source, axes=[2], begin=[spans[0].lo],
                                               end=[spans[0].hi + 1]), f"{name}_t{t}_in")
            for j, call in enumerate(chain.calls):
                h = bb.emit(with_h_padding(call, h, spans[j].pad_top, spans[j].pad_bottom),
                            f"{name}_t{t}_{j}")
            outs.append(h)
        return relax.op.concat(outs, axis=2)


def tile_chain(mod: tvm.IRModule, chain: Chain, tiles: int) -> tvm.IRModule:
    """``mod`` with ``chain`` computed in ``tiles`` H-tiles (exact)."""
    tiler = _ChainTiler(mod, chain, tiles)
    func = tiler.visit_expr(mod["main"])
    tiler.builder_.update_func(mod.get_global_var("main"),
                               relax.analysis.remove_all_unused(func))
    return tiler.builder_.get()


def _candidates(mod: tvm.IRModule, prof: MemoryProfile) -> list[Chain]:
    live = {t.name for t in prof.live_at_peak()} | {prof.peak_layer.name}
    live |= set(prof.peak_layer.inputs)
    out = []
    for chain in find_chains(mod["main"]):
        names = {v.name for v in chain.vars} | {getattr(chain.source, "name", "")}
        if names & live:
            out.extend(sub_chains(chain))
    return out


@dataclass(frozen=True)
class Evaluated:
    """One candidate rewrite the search looked at: ``chain`` in ``tiles`` tiles.

    ``peak_bytes`` is the region model's estimate (:mod:`.region_model`) and
    ``macs`` is exact; the accepted candidate of each round is re-profiled whole.
    """

    chain: Chain
    tiles: int
    peak_bytes: int
    macs: int

    @property
    def step(self) -> tuple[str, int, int]:
        """What to replay: (chain output, chain length, tiles)."""
        return (self.chain.vars[-1].name, len(self.chain.vars), self.tiles)


def _evaluate_chain(mod, chain, base, mac_limit, tile_counts) -> list[Evaluated]:
    """Estimate ``chain`` tiled ``tile_counts`` ways, in increasing order.

    More tiles only add recompute, so the search stops at the first count over
    the MAC limit, or once the peak has started to drop and then stops dropping
    (a count may need to be large before the peak moves at all).
    """
    model = RegionModel(mod, chain, base, tile_chain)
    out, last_peak = [], None
    for tiles in sorted(tile_counts):
        if tiles > _height(chain.vars[-1]):
            break
        est = model.estimate(tiles)
        out.append(Evaluated(chain, tiles, est.peak_bytes, est.macs))
        if est.macs > mac_limit:
            break
        if last_peak is not None and last_peak < base.peak_bytes and est.peak_bytes >= last_peak:
            break
        last_peak = est.peak_bytes
    return out


#: How many of a round's best estimates are verified with a full profile before giving up.
VERIFY_TRIES = 3


def flatten_peaks(mod: tvm.IRModule, *, max_mac_overhead: float = DEFAULT_MAC_OVERHEAD,
                  memory_budget: int | None = None, max_rounds: int = 8,
                  tile_counts=TILE_COUNTS, on_round=None,
                  progress=None) -> tuple[tvm.IRModule, list[Decision]]:
    """Greedily tile the chains at the peak while the peak drops within the MAC limit.

    Each round estimates every candidate with the region model, then profiles
    the best estimates in full (up to :data:`VERIFY_TRIES`) and accepts the
    first whose real peak drops within the MAC limit.

    Parameters
    ----------
    on_round
        Optional ``on_round(path, evaluated)`` called once per round with the
        replay steps accepted so far and every candidate estimated in that round
        (the tuner builds its candidate set from these).
    progress
        Optional ``progress(message)`` for long searches.

    Returns the rewritten module and the accepted decisions (empty: unchanged).
    """
    prof = profile(mod, with_tvm=False)
    mac_limit = prof.macs * (1 + max_mac_overhead)
    decisions: list[Decision] = []
    path: list[tuple[str, int, int]] = []
    for round_index in range(max_rounds):
        if memory_budget is not None and prof.peak_bytes <= memory_budget:
            break
        evaluated = []
        for chain in _candidates(mod, prof):
            evaluated += _evaluate_chain(mod, chain, prof, mac_limit, tile_counts)
        if on_round is not None:
            on_round(tuple(path), evaluated)
        ranked = sorted((e for e in evaluated
                         if e.macs <= mac_limit and e.peak_bytes < prof.peak_bytes),
                        key=lambda e: (e.peak_bytes, e.macs))
        accepted = None
        for e in ranked[:VERIFY_TRIES]:
            cand = tile_chain(mod, e.chain, e.tiles)
            p = profile(cand, with_tvm=False)
            if p.macs <= mac_limit and p.peak_bytes < prof.peak_bytes:
                accepted = (e, cand, p)
                break
        if accepted is None:
            logger.info("FlattenMemoryPeaks: no exact tiling lowers the peak of %d B at %s",
                        prof.peak_bytes, prof.peak_layer.name)
            break
        best, cand, p = accepted
        chain, tiles = best.chain, best.tiles
        decisions.append(Decision(chain.vars[-1].name, len(chain.vars), tiles,
                                  prof.peak_bytes, p.peak_bytes, p.macs))
        path.append(best.step)
        logger.info("FlattenMemoryPeaks: %d tiles over %d ops ending at %s: peak %d -> %d B",
                    tiles, len(chain.vars), chain.vars[-1].name, prof.peak_bytes, p.peak_bytes)
        if progress is not None:
            progress(f"round {round_index + 1}: {len(evaluated)} candidates, "
                     f"peak {prof.peak_bytes} -> {p.peak_bytes} B "
                     f"({tiles} tiles ending at {chain.vars[-1].name})")
        mod, prof = cand, p
    return mod, decisions


def replay(mod: tvm.IRModule, steps) -> tvm.IRModule:
    """Apply recorded ``(chain output, chain length, tiles)`` steps to ``mod`` again.

    Used to rebuild a tuned module from its cached decisions without searching.
    """
    for output, length, tiles in steps:
        match = next((sub for chain in find_chains(mod["main"]) for sub in sub_chains(chain)
                      if sub.vars[-1].name == output and len(sub.vars) == length), None)
        if match is None:
            from ..errors import MemflatError

            raise MemflatError(f"cannot replay tiling step {output!r} ({length} ops, "
                               f"{tiles} tiles): no such chain in the module")
        mod = tile_chain(mod, match, tiles)
    return mod


@tvm.transform.module_pass(opt_level=0, name="FlattenMemoryPeaks")
class FlattenMemoryPeaks:
    """Restructure a Relax module at its activation-memory peaks, exactly.

    Parameters
    ----------
    spec
        Accelerator spec (name, path or :class:`~tvm_memflat.spec.AcceleratorSpec`);
        with no ``memory_budget`` its activation capacity is the budget.
    memory_budget
        Stop once the modelled peak is at or below this many bytes.
    latency_budget
        ``"1.1x"`` of the untiled module or an absolute ``"3.5ms"``: the tuner
        (:func:`tvm_memflat.tuner.tuner.tune`) picks the lowest peak within it, with
        the spec's cycle model when a spec is given, else the llvm model calibrated
        on this machine. Replaces the MAC-overhead limit.
    halo
        ``"recompute"`` or ``"auto"`` (recompute); ``"cache"`` is not implemented yet.
    max_mac_overhead
        Largest accepted extra MACs, as a fraction (default 5 %).
    """

    def __init__(self, spec=None, *, memory_budget=None, latency_budget=None, halo="auto",
                 max_mac_overhead=DEFAULT_MAC_OVERHEAD):
        from ..errors import MemflatError

        if halo not in ("auto", "recompute", "cache"):
            raise MemflatError(f"halo must be recompute, cache or auto, got {halo!r}")
        if halo == "cache":
            raise MemflatError("halo='cache' is not implemented yet; use recompute or auto")
        if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget <= 0):
            raise MemflatError(f"memory_budget must be a positive number of bytes: {memory_budget}")
        if spec is not None:
            from ..spec import AcceleratorSpec, load_spec

            spec = spec if isinstance(spec, AcceleratorSpec) else load_spec(spec)
            if memory_budget is None:
                memory_budget = spec.activation_capacity_bytes
        if latency_budget is not None:
            from ..tuner.tuner import LatencyBudget

            latency_budget = LatencyBudget.parse(latency_budget)  # bad text: error now
        self.spec = spec
        self.memory_budget = memory_budget
        self.latency_budget = latency_budget
        self.tune_result = None
        self.max_mac_overhead = max_mac_overhead
        self.decisions: list[Decision] = []

    def transform_module(self, mod, ctx):  # noqa: D102 - tvm.transform hook
        if self.latency_budget is not None:
            from ..tuner.tuner import tune

            new, self.tune_result = tune(mod, spec=self.spec,
                                         latency_budget=self.latency_budget)
            return new
        new, self.decisions = flatten_peaks(mod, max_mac_overhead=self.max_mac_overhead,
                                            memory_budget=self.memory_budget)
        return new
