"""One replayable rewrite of the search: a tiling of a region or a channel split of a group.

:func:`~tvm_memflat.transform.flatten_memory_peaks.flatten_peaks` records each
accepted rewrite as a :class:`RewriteStep` (``Decision.step``), and every
candidate it looks at too (``Evaluated.step``, which the tuner builds its points
from). :func:`~tvm_memflat.transform.flatten_memory_peaks.replay` applies steps
to the module they were found on, in order, and rebuilds the same module: a step
names what it rewrites by the names of the module (the region's sink, or the
group's fan-in, and how many bindings it spans), not by IR objects, so it
survives the rebuild and a JSON round trip (the tuner's disk cache, reports).

JSON (:meth:`RewriteStep.to_json`)::

    {"kind": "tile", "output": "c3", "ops": 4, "parts": 8, "halo": "cache", "axis": "H"}
    {"kind": "tile", "output": "c3", "ops": 4, "parts": 8, "halo": "cache", "axis": "H",
     "strips": 2}
    {"kind": "split", "output": "b2_project", "ops": 5, "parts": 4, "halo": null, "axis": "C"}

:meth:`RewriteStep.from_json` also reads the anonymous tuples older versions
stored (``(output, ops, tiles[, halo[, axis]])``, ``halo == "channels"`` for a
split), so an old report can still be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a step does: tile a region along H or W, or split a channel group.
KINDS = ("tile", "split")
#: Halo modes of a tiling (:data:`tvm_memflat.transform.tiling.HALO_MODES`).
TILE_HALOS = ("recompute", "cache")
#: Axes a tiling may take.
TILE_AXES = ("H", "W")
#: The axis of a channel split.
SPLIT_AXIS = "C"
#: The marker older (tuple) steps used in place of a halo for channel splits.
_LEGACY_SPLIT_HALO = "channels"


def strips_phrase(axis: str, strips: int) -> str:
    """`` in 2 W-strips (recomputed halos)`` for a patch grid, else empty."""
    if strips <= 1:
        return ""
    return f" in {strips} {'W' if axis == 'H' else 'H'}-strips (recomputed halos)"


@dataclass(frozen=True, order=True)
class RewriteStep:
    """One exact rewrite, named by what it rewrites (ordered by its fields, so paths
    of steps sort deterministically).

    Attributes
    ----------
    kind
        ``"tile"``: the region ending at ``output`` computed in ``parts`` tiles along
        ``axis`` with ``halo`` halos; ``"split"``: the channel group whose fan-in is
        ``output`` computed in ``parts`` channel slices (``halo`` None, ``axis`` "C").
    output
        The region's sink, or the group's fan-in (a binding name of the module).
    ops
        Bindings in the region or group (tells regions ending at one sink apart).
    parts
        Tiles, or channel slices.
    halo
        ``"recompute"`` or ``"cache"`` for a tiling; None for a split.
    axis
        ``"H"`` or ``"W"`` for a tiling; ``"C"`` for a split.
    strips
        A tiling in patches: the region cut into ``strips`` strips along the other
        axis (halos recomputed), each in ``parts`` tiles along ``axis``. 1: no strips.
    """

    kind: str
    output: str
    ops: int
    parts: int
    halo: str | None = None
    axis: str = "H"
    strips: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"step kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "tile" and (self.halo not in TILE_HALOS or self.axis not in TILE_AXES):
            raise ValueError(f"a tiling step needs halo in {TILE_HALOS} and axis in "
                             f"{TILE_AXES}, got halo={self.halo!r}, axis={self.axis!r}")
        if self.kind == "split" and (self.halo is not None or self.axis != SPLIT_AXIS):
            raise ValueError(f"a split step has no halo and axis {SPLIT_AXIS!r}, got "
                             f"halo={self.halo!r}, axis={self.axis!r}")
        if self.kind == "split" and self.strips != 1:
            raise ValueError(f"a split step has no strips: {self}")
        if int(self.ops) < 1 or int(self.parts) < 1 or int(self.strips) < 1:
            raise ValueError(f"step ops and parts must be positive: {self}")

    # ----------------------------------------------------------------- constructors

    @classmethod
    def tile(cls, output: str, ops: int, tiles: int, halo: str = "recompute",
             axis: str = "H", strips: int = 1) -> RewriteStep:
        """The region ending at ``output`` (``ops`` bindings) in ``tiles`` tiles (in
        each of ``strips`` strips along the other axis)."""
        return cls("tile", str(output), int(ops), int(tiles), halo, axis, int(strips))

    @classmethod
    def split(cls, output: str, ops: int, slices: int) -> RewriteStep:
        """The channel group with fan-in ``output`` (``ops`` bindings) in ``slices`` slices."""
        return cls("split", str(output), int(ops), int(slices), None, SPLIT_AXIS)

    # ----------------------------------------------------------------- views

    @property
    def key(self) -> tuple[str, int]:
        """(output, ops): the region's or group's key (``Region.key``, ``ChannelGroup.key``)."""
        return (self.output, self.ops)

    @property
    def describe(self) -> str:
        """One line for people."""
        if self.kind == "split":
            return (f"split {self.ops} ops ending at {self.output} into {self.parts} "
                    "channel slices (partial convs summed)")
        return (f"tiled {self.ops} ops ending at {self.output} into {self.parts} "
                f"{self.axis}-tiles ({self.halo} halos){strips_phrase(self.axis, self.strips)}")

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> dict:
        """A JSON-ready dict (see the module doc)."""
        out = {"kind": self.kind, "output": self.output, "ops": self.ops,
               "parts": self.parts, "halo": self.halo, "axis": self.axis}
        if self.strips > 1:
            out["strips"] = self.strips
        return out

    @classmethod
    def from_json(cls, data) -> RewriteStep:
        """A step from :meth:`to_json`'s dict, a step itself, or an old tuple/list step.

        Old steps were ``(output, ops, tiles)`` (recomputed halos along H), then with
        a halo, then with an axis; a channel split had halo ``"channels"``.
        Raises ``ValueError`` for anything else.
        """
        if isinstance(data, RewriteStep):
            return data
        if isinstance(data, dict):
            known = {"kind", "output", "ops", "parts", "halo", "axis", "strips"}
            if set(data) - known or not {"kind", "output", "ops", "parts"} <= set(data):
                raise ValueError(f"not a rewrite step: {data!r}")
            kind = data["kind"]
            if kind == "split":
                return cls.split(data["output"], data["ops"], data["parts"])
            return cls.tile(data["output"], data["ops"], data["parts"],
                            data.get("halo") or "recompute", data.get("axis") or "H",
                            data.get("strips") or 1)
        if isinstance(data, (list, tuple)) and 3 <= len(data) <= 5:
            output, ops, parts = data[:3]
            halo = data[3] if len(data) > 3 else "recompute"
            if halo == _LEGACY_SPLIT_HALO:
                return cls.split(output, ops, parts)
            return cls.tile(output, ops, parts, halo, data[4] if len(data) > 4 else "H")
        raise ValueError(f"not a rewrite step: {data!r}")
