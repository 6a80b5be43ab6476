"""Regions a tiling can rewrite: single-entry, single-exit sub-DAGs of tileable ops.

A region is a set of bindings (its *members*) computed from one tensor outside
it (its *source*) and read from outside only through its last member (its
*sink*). Inside, it may branch and join: residual adds and channel concats are
members like any other tileable op (:func:`.tiling.row_inputs`). Because only
the source enters and only the sink leaves, a tile of the sink's rows can be
computed from a slice of the source's rows alone.

Chains (each member feeding only the next) are the simplest regions and keep
their own finder, :func:`find_chains`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax

from ..analysis.tir_stats import tensor_bytes
from .tiling import is_elementwise, row_inputs, window_of

#: Largest region the sweep grows, in layers (members that are no elementwise op: a
#: conv with its bias, activation and requantize chain is one); larger regions only
#: add halo.
MAX_REGION_LAYERS = 32
#: ... and in members (bounds the cost of profiling its tiles).
MAX_REGION_OPS = 256
#: Most sources kept per sink (see :meth:`RegionIndex.regions_ending_at`).
MAX_SOURCES_PER_SINK = 4


@dataclass(frozen=True)
class Region:
    """Bindings ``vars`` (binding order) computed from ``source``; ``vars[-1]`` is the sink."""

    source: relax.Expr  # the region's one input tensor
    vars: tuple  # bound vars, in binding order
    calls: tuple  # their values

    @property
    def sink(self) -> relax.Var:
        return self.vars[-1]

    @property
    def key(self) -> tuple[str, int]:
        """(sink name, member count): names a region across rebuilds of a module."""
        return (self.sink.name, len(self.vars))

    @property
    def layers(self) -> int:
        """Members that are no elementwise op (convs, pools, joins): the layers."""
        return layer_count(self.calls)

    @property
    def is_chain(self) -> bool:
        return all(len(row_inputs(c)) == 1 for c in self.calls)


def layer_count(calls) -> int:
    """How many of ``calls`` are layers (no elementwise op), at least 1."""
    return max(1, sum(1 for c in calls if not is_elementwise(c)))


def bindings(func: relax.Function) -> list:
    return [b for block in func.body.blocks for b in block.bindings
            if isinstance(b, relax.VarBinding)]


def use_counts(func: relax.Function) -> dict:
    uses: dict = {}
    for expr in [b.value for b in bindings(func)] + [func.body.body]:
        for v in relax.analysis.free_vars(expr):
            uses[v] = uses.get(v, 0) + 1
    return uses


def find_chains(func: relax.Function) -> list[Region]:
    """Maximal chains of tileable ops whose intermediates have exactly one use."""
    uses = use_counts(func)
    out_vars = set(relax.analysis.free_vars(func.body.body))
    chains, current = [], []

    def flush():
        if current:
            first_call = current[0][1]
            _, idx = window_of(first_call)
            chains.append(Region(first_call.args[idx], tuple(v for v, _ in current),
                                 tuple(c for _, c in current)))
        current.clear()

    for b in bindings(func):
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


def sub_chains(chain: Region) -> list[Region]:
    """Candidate regions of a chain: every prefix that ends after a downsampling op,
    and the whole chain (a region should end where the tensor is small)."""
    out = []
    for j, call in enumerate(chain.calls):
        w, _ = window_of(call)
        if w.stride > 1 and j + 1 < len(chain.calls):
            out.append(Region(chain.source, chain.vars[:j + 1], chain.calls[:j + 1]))
    out.append(chain)
    return out


def _nbytes(expr) -> int:
    return tensor_bytes(expr.ty.shape.values, str(expr.ty.dtype))


class RegionIndex:
    """Bindings of one function with their producers and consumers, for region sweeps."""

    def __init__(self, func: relax.Function):
        self.func = func
        self.order = {}  # var -> binding index (params: -1)
        self.value = {}  # var -> bound call
        self.consumers: dict = {}  # var -> set of consuming vars
        for p in func.params:
            self.order[p] = -1
        for i, b in enumerate(bindings(func)):
            self.order[b.var] = i
            self.value[b.var] = b.value
            for v in relax.analysis.free_vars(b.value):
                self.consumers.setdefault(v, set()).add(b.var)
        self.outputs = set(relax.analysis.free_vars(func.body.body))
        self.inputs = {v: _data_vars(c) for v, c in self.value.items()}

    def regions_ending_at(self, sink, *, all_sources: bool = False) -> list[Region]:
        """Regions with sink ``sink``, nearest source first.

        The sweep grows the region backwards, always adding the producer of the
        latest tensor it reads; whenever it reads exactly one outside tensor, that
        tensor can be the source. It stops at a non-tileable producer, at a
        tensor also read outside the region, or at :data:`MAX_REGION_LAYERS` layers
        (:data:`MAX_REGION_OPS` members).
        Unless ``all_sources``, only the nearest source, the farthest, and those
        whose tensor is smaller than the next one further back are kept (a region
        should start where the tensor is small), at most
        :data:`MAX_SOURCES_PER_SINK` of them.
        """
        if self.inputs.get(sink) is None:
            return []
        members = {sink}
        layers = layer_count([self.value[sink]])
        reads = set(self.inputs[sink])
        found: list[tuple[Region, int]] = []
        while True:
            if len(reads) == 1:
                (src,) = reads
                found.append((self._region(src, members), _nbytes(src)))
            latest = max(reads, key=lambda v: self.order.get(v, -1))
            if (self.order.get(latest, -1) < 0 or self.inputs.get(latest) is None
                    or latest in self.outputs or len(members) >= MAX_REGION_OPS
                    or layers >= MAX_REGION_LAYERS
                    or not self.consumers.get(latest, set()) <= members):
                break
            members.add(latest)
            layers += not is_elementwise(self.value[latest])
            reads.discard(latest)
            reads |= set(v for v in self.inputs[latest] if v not in members)
        if all_sources or len(found) <= 2:
            return [r for r, _ in found]
        # the nearest, the farthest, and sources smaller than the tensor behind them
        keep = [found[0]] + [f for f, behind in zip(found[1:-1], found[2:], strict=True)
                             if f[1] < behind[1]]
        keep = keep[:MAX_SOURCES_PER_SINK - 1] + [found[-1]]
        return [r for r, _ in keep]

    def _region(self, source, members) -> Region:
        ordered = sorted(members, key=lambda v: self.order[v])
        return Region(source, tuple(ordered), tuple(self.value[v] for v in ordered))

    def sinks(self) -> list:
        """Where a region should end: after a downsampling op, where only one tensor
        is live (between two modules), and at the last op before a non-tileable one."""
        n = len(self.value)
        last_use = {v: max((self.order[u] for u in self.consumers.get(v, ())), default=-1)
                    for v in self.order}
        for v in self.outputs:
            last_use[v] = n
        delta = [0] * (n + 1)
        for v, i in self.order.items():
            if last_use[v] > max(i, 0):
                delta[max(i, 0)] += 1
                delta[min(last_use[v], n)] -= 1
        out, live_after, last_cut_bytes = [], 0, None
        down, join = set(), set()  # vars that are, or follow through elementwise ops, ...
        for v, i in sorted(self.order.items(), key=lambda x: x[1]):
            if i < 0:
                continue
            live_after += delta[i]
            ins = self.inputs.get(v)
            if ins is None:
                last_cut_bytes = None
                continue
            w = window_of(self.value[v])
            elementwise = is_elementwise(self.value[v])
            if (w is not None and w[0].stride > 1) or (elementwise and ins[0] in down):
                down.add(v)  # ... a downsampling op
            if len(ins) > 1 or (elementwise and ins[0] in join):
                join.add(v)  # ... a residual add or a concat
            consumers = self.consumers.get(v, set())
            single = next(iter(consumers)) if len(consumers) == 1 else None
            if single is not None and v not in self.outputs and single in self.value:
                if is_elementwise(self.value[single]):
                    continue  # end after the bias/activation, not between
            chain_end = single is None or v in self.outputs or self.inputs.get(single) is None
            cut = live_after == 1
            size = _nbytes(v)
            smaller = cut and last_cut_bytes is not None and size < last_cut_bytes
            if v in down or chain_end or (cut and v in join) or smaller:
                out.append(v)
            if cut:
                last_cut_bytes = size
        return out


def _data_vars(call):
    ins = row_inputs(call)
    return None if ins is None else [e for e, _ in ins]


def find_regions(func: relax.Function) -> list[Region]:
    """Candidate regions of ``func``: for every sink of :meth:`RegionIndex.sinks`,
    the regions of :meth:`RegionIndex.regions_ending_at`."""
    index = RegionIndex(func)
    return [r for sink in index.sinks() for r in index.regions_ending_at(sink)]
