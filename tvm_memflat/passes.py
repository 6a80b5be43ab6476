"""The public Relax pass: ``tvm_memflat.FlattenMemoryPeaks``.

A thin module pass above both the greedy search
(:func:`tvm_memflat.transform.flatten_memory_peaks.flatten_peaks`) and the tuner
(:func:`tvm_memflat.tuner.tuner.tune`), so neither imports the other. One
behaviour per option:

* ``latency_budget`` — the tuner: the lowest memory within the budget (on the
  spec's cycle model when a spec is given, else the llvm model calibrated on
  this machine);
* ``spec`` and no budget — the tuner: the spec fitted at the least latency,
  the same call ``memflat optimize --spec`` makes;
* ``memory_budget`` — the greedy search, stopping once the module's device bytes
  (predicted from the build's own lowered schedule and offset plan,
  :func:`tvm_memflat.planner.device_bytes.predict_device_bytes`, under the
  ``input``/``output`` convention) are at or below it;
* nothing — the greedy search, as low as it goes within ``max_mac_overhead``;
  ``search="front"``: the beam search over rewrite sequences instead
  (:func:`tvm_memflat.transform.search_front.search_front`), keeping the front of
  (device bytes, MACs) in ``front`` and returning its lowest point within
  ``max_mac_overhead`` (never above greedy's, and slower: see docs/fit.md).

``halo`` restricts either search to that halo mode. Declared with
``opt_level=0``: ``tvm.transform.Sequential`` skips passes above the context's
level (2 by default).
"""

from __future__ import annotations

import logging

import tvm

from .analysis.device_bytes import Accounting
from .errors import MemflatError
from .frontend.canonicalize import canonicalize
from .planner.device_bytes import predict_device_bytes
from .spec import AcceleratorSpec, load_spec
from .transform.flatten_memory_peaks import DEFAULT_MAC_OVERHEAD, Decision, flatten_peaks
from .transform.search_front import Front, search_front
from .transform.tiling import HALO_MODES
from .tuner.tuner import LatencyBudget, TuneResult, tune

__all__ = ["FlattenMemoryPeaks", "SEARCHES"]

#: The searches the pass runs without a tuner: greedy rounds, or the beam search.
SEARCHES = ("greedy", "front")

logger = logging.getLogger(__name__)


@tvm.transform.module_pass(opt_level=0, name="FlattenMemoryPeaks")
class FlattenMemoryPeaks:
    """Restructure a Relax module at its activation-memory peaks, exactly.

    Parameters
    ----------
    spec
        Accelerator spec (name, path or :class:`~tvm_memflat.spec.AcceleratorSpec`).
        Without a ``memory_budget``, the tuner fits it at the least latency (as
        ``memflat optimize --spec``); its ``[accounting]`` gives the default
        ``input``/``output``.
    memory_budget
        Stop once the device bytes are at or below this many bytes (greedy search).
        Cannot be combined with ``latency_budget``.
    latency_budget
        ``"1.1x"`` of the untiled module or an absolute ``"3.5ms"``: the tuner picks
        the lowest memory within it. Replaces the MAC-overhead limit.
    halo
        ``"recompute"``: rows shared by two tiles are computed by both; ``"cache"``:
        they are computed once and carried to the next tile; ``"auto"``: both are
        searched (the tuner: its own default, see ``tvm_memflat.tuner.tuner``).
    input, output
        ``"sram"`` or ``"stream"``: whether the network input (output) counts in the
        device bytes the greedy search minimises. Default: the spec's
        ``[accounting]``, else ``"sram"``.
    max_mac_overhead
        Largest accepted extra MACs of the greedy search, as a fraction (default 5 %).
    search
        ``"greedy"`` (default: one module, the first rewrite that lowers its peak,
        round after round) or ``"front"`` (beam search, then its lowest points
        refined with finer tiles and more strips; ``front`` holds its Pareto front
        after a run).
    progress
        Optional ``progress(message)``, called once per round of the greedy search
        that pays, and once per depth of the front search and per refinement that pays
        (default: the log).

    The module may come from any of TVM's importers (``from_onnx``,
    ``from_exported_program``, weights bound or kept as parameters after
    ``num_input``) or from :func:`tvm_memflat.load_model`: the pass first brings it
    to one canonical form (:func:`tvm_memflat.frontend.canonicalize.canonicalize`)
    and searches that. If no region is rewritten, the module comes back exactly as
    given (canonicalisation alone is not a change); so does a module the pass cannot
    take (dynamic shapes, no ``main``), with the reason logged and in ``stop_reason``.

    After a run, ``decisions`` holds the greedy search's accepted rewrites and
    ``tune_result`` the tuner's record (whichever ran; the other stays empty);
    ``canonical_changes`` what canonicalisation normalised, ``stop_reason`` why the
    search stopped.
    """

    def __init__(self, spec=None, *, memory_budget=None, latency_budget=None, halo="auto",
                 input=None, output=None, max_mac_overhead=DEFAULT_MAC_OVERHEAD,
                 search="greedy", progress=None):
        if search not in SEARCHES:
            raise MemflatError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        if halo not in (*HALO_MODES, "auto"):
            raise MemflatError(f"halo must be recompute, cache or auto, got {halo!r}")
        if memory_budget is not None and (isinstance(memory_budget, bool)
                                          or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise MemflatError(f"memory_budget must be a positive number of bytes: {memory_budget}")
        if memory_budget is not None and latency_budget is not None:
            raise MemflatError("give memory_budget (greedy search) or latency_budget (tuner), "
                               "not both")
        if spec is not None and not isinstance(spec, AcceleratorSpec):
            spec = load_spec(spec)
        if latency_budget is not None:
            latency_budget = LatencyBudget.parse(latency_budget)  # bad text: error now
        accounting = Accounting.resolve(input, output, spec)  # bad place: error now
        self.spec = spec
        self.memory_budget = memory_budget
        self.latency_budget = latency_budget
        self.halo = halo
        self.input, self.output = accounting.input, accounting.output
        self.max_mac_overhead = max_mac_overhead
        self.search = search
        #: optional ``progress(message)`` for the front search (the CLI shows it)
        self.progress = progress
        self.front: Front | None = None
        self.decisions: list[Decision] = []
        self.tune_result: TuneResult | None = None
        #: a spec with an on-chip path: the regions fused (tuner.fusion.FusionResult)
        self.fusion = None
        self.canonical_changes: tuple[tuple[str, int], ...] = ()
        self.stop_reason: str = ""

    @property
    def fuses(self) -> bool:
        """A buffered spec with an on-chip path, no memory budget: the regions are
        fused depth-first for the least DRAM traffic (:mod:`tvm_memflat.tuner.fusion`),
        not tiled for memory."""
        from .hardware.call_tiling import onchip_path

        return (self.spec is not None and self.spec.machine_kind == "buffered"
                and onchip_path(self.spec) is not None and self.memory_budget is None)

    @property
    def fusion_budget(self) -> float:
        """The fusion's cycle budget: the relative latency budget, 1.1x by default."""
        if self.latency_budget is None:
            return 1.1
        if self.latency_budget.relative is None:
            raise MemflatError(f"fusing for spec {self.spec.name!r} takes a relative latency "
                               f"budget (like 1.1x), not {self.latency_budget.text!r}")
        return self.latency_budget.relative

    @property
    def uses_tuner(self) -> bool:
        """A latency budget, or a spec without a memory budget: the tuner decides."""
        return self.latency_budget is not None or (self.spec is not None
                                                   and self.memory_budget is None)

    def device_bytes(self, mod: tvm.IRModule) -> int:
        """What the greedy search minimises and ``memory_budget`` is judged on."""
        return predict_device_bytes(mod, input=self.input, output=self.output).total_bytes

    def transform_module(self, mod, ctx):  # noqa: D102 - tvm.transform hook
        canonical = canonicalize(mod)
        self.canonical_changes = canonical.changes
        if canonical.refused is not None:
            self.stop_reason = f"module returned unchanged: {canonical.refused}"
            logger.warning("FlattenMemoryPeaks: %s", self.stop_reason)
            return mod
        search_mod = canonical.marked()  # no second visit of an unchanged module
        if self.fuses:
            from .tuner.fusion import fuse_regions

            new, self.fusion = fuse_regions(
                search_mod, self.spec, latency_budget=self.fusion_budget, halo=self.halo,
                progress=self.progress or (lambda m: logger.info("FlattenMemoryPeaks: %s", m)))
            self.stop_reason = f"fusion: {self.fusion.reason}"
            return new if self.fusion.steps else mod
        if self.uses_tuner:
            new, self.tune_result = tune(search_mod, spec=self.spec,
                                         latency_budget=self.latency_budget, halo=self.halo)
            self.stop_reason = f"tuner: {self.tune_result.reason}"
            return new if self.tune_result.chosen.path else mod
        stream = Accounting(self.input, self.output).streamed
        try:
            if self.search == "front":
                new, self.decisions = self._front(search_mod, stream)
            else:
                new, self.decisions = flatten_peaks(
                    search_mod, max_mac_overhead=self.max_mac_overhead,
                    memory_budget=self.memory_budget, halo=self.halo,
                    evaluate=self.device_bytes, on_stop=self._stopped, stream=stream,
                    progress=self.progress or (
                        lambda m: logger.info("FlattenMemoryPeaks: %s", m)))
        except NotImplementedError as err:  # an op our analysis cannot profile yet
            self.stop_reason = f"module returned unchanged: {err}"
            logger.warning("FlattenMemoryPeaks: %s", self.stop_reason)
            return mod
        return new if self.decisions else mod

    def _front(self, mod, stream):
        self.front = search_front(mod, max_mac_overhead=self.max_mac_overhead, halo=self.halo,
                                  evaluate=self.device_bytes, stream=stream,
                                  progress=self.progress or (
                                      lambda m: logger.info("FlattenMemoryPeaks: %s", m)))
        point = self.front.best_within(self.max_mac_overhead)
        if self.memory_budget is not None:  # the fewest MACs within the budget, if any
            within = [p for p in self.front.points if p.bytes <= self.memory_budget]
            point = min(within, key=lambda p: (p.macs, p.bytes)) if within else point
        self.stop_reason = (f"front of {len(self.front.points)} points "
                            f"({self.front.explored} modules verified): {self.front.stop}")
        return point.module, list(point.decisions)

    def _stopped(self, reason: str) -> None:
        self.stop_reason = reason
