"""Accelerator specs: TOML files validated on load, then built into frozen dataclasses.

Parsing and validation live here; hardware modelling (cycles, traffic) does not.
Every field carries its unit in its name (``_bytes``, ``_hz``, ``_bytes_per_cycle``)
and unknown keys are errors, never silently ignored. Errors name the key path::

    spec bad.toml: memory[1].size_bytes must be a positive integer, got -4

The shipped specs are package data (``tvm_memflat/configs/*.toml``), read with
:mod:`importlib.resources`, so a wheel install finds them as an editable one does.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import MemflatError

#: The shipped specs: package data in ``tvm_memflat/configs/``.
_SHIPPED = resources.files(__package__).joinpath("configs")
#: The same folder as a path (a regular install unpacks the package on disk).
CONFIG_DIR = Path(str(_SHIPPED))

#: What a memory may hold.
CONTENTS = ("activations", "weights", "accumulators", "instructions")
DTYPES = ("int8", "int16", "int32", "float16", "float32")
#: ``[machine] kind``: every activation in SRAM for its whole life (MCU, edge NPU), or
#: activations in DRAM between layers, tiles streamed through on-chip buffers (VTA).
MACHINE_KINDS = ("scratchpad", "buffered")
#: ``[weights] location``: all held by one memory, or read in chunks staged in an SRAM.
WEIGHT_LOCATIONS = ("resident", "streamed")
#: ``[accounting] input`` / ``output``: occupies SRAM, or read/written as a stream.
ACCOUNTING = ("sram", "stream")


@dataclass(frozen=True)
class Memory:
    """One on-chip memory (SRAM)."""

    name: str
    size_bytes: int
    holds: tuple[str, ...]
    alignment_bytes: int
    bandwidth_bytes_per_cycle: int
    #: Written at run time (SRAM yes, flash no); read-only memories hold no activations.
    writable: bool = True
    #: Split in two halves so one fills while the other is used.
    double_buffered: bool = False


@dataclass(frozen=True)
class Compute:
    """The MAC array."""

    kind: str
    macs_per_cycle: int
    clock_hz: int
    activation_dtype: str
    weight_dtype: str
    accumulator_dtype: str
    gemm_block_in: int
    gemm_block_out: int
    gemm_batch: int


@dataclass(frozen=True)
class Dram:
    """Off-chip memory behind the accelerator's port."""

    bandwidth_bytes_per_cycle: int
    latency_cycles: int
    #: Spills may go there (DRAM yes; flash behind the port, no).
    writable: bool = False


@dataclass(frozen=True)
class Accounting:
    """Counting convention: where the network input and output live (``sram``|``stream``).

    ``sram`` occupies SRAM until its last use (the strict default); ``stream`` is read
    (written) row by row from (to) an external buffer or sensor, as MCUNetV2 and
    msf-CNN count. Set by a spec's ``[accounting]`` table, overridden by ``--input`` /
    ``--output`` and the pass's ``input=`` / ``output=``.
    """

    input: str = "sram"
    output: str = "sram"

    def __post_init__(self):
        for key in ("input", "output"):
            if getattr(self, key) not in ACCOUNTING:
                raise MemflatError(f"{key} must be one of {', '.join(ACCOUNTING)}, "
                                   f"got {getattr(self, key)!r}")

    @property
    def streamed(self) -> tuple[str, ...]:
        """The ends that take no memory: ``"input"`` and/or ``"output"`` when streamed
        (``profile(stream=)``, the search's ranking)."""
        return tuple(end for end in ("input", "output") if getattr(self, end) == "stream")

    @property
    def input_in_arena(self) -> bool:
        """The build gives the input a slot in the arena (only when it counts)."""
        return self.input == "sram"

    @classmethod
    def resolve(cls, input=None, output=None, spec=None) -> Accounting:
        """``input``/``output`` if given, else the spec's ``[accounting]``, else sram."""
        base = getattr(spec, "accounting", None)
        return cls(input or getattr(base, "input", None) or "sram",
                   output or getattr(base, "output", None) or "sram")

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output,
                "input_in_arena": self.input_in_arena}


@dataclass(frozen=True)
class OnchipPath:
    """A move between two on-chip memories that does not go through DRAM."""

    source: str
    dest: str
    bandwidth_bytes_per_cycle: int


@dataclass(frozen=True)
class AcceleratorSpec:
    """An accelerator: its memories, compute and DRAM port. Immutable."""

    name: str
    description: str
    source: str
    compute: Compute
    dram: Dram
    memories: tuple[Memory, ...]
    path: str | None = None
    #: ``"scratchpad"`` or ``"buffered"`` (:data:`MACHINE_KINDS`).
    machine_kind: str = "scratchpad"
    #: ``"resident"`` or ``"streamed"`` (:data:`WEIGHT_LOCATIONS`).
    weights_location: str = "streamed"
    #: Resident: the memory holding every weight; streamed: the one staging the chunks.
    weights_memory: str | None = None
    accounting: Accounting = field(default_factory=Accounting)
    #: Buffered machines only: on-chip moves that exist (none: results go via DRAM).
    onchip_paths: tuple[OnchipPath, ...] = ()

    def memory(self, name: str) -> Memory:
        """The memory called ``name``."""
        for m in self.memories:
            if m.name == name:
                return m
        raise KeyError(name)

    def memories_for(self, content: str) -> tuple[Memory, ...]:
        """Memories that may hold ``content`` (one of :data:`CONTENTS`)."""
        return tuple(m for m in self.memories if content in m.holds)

    @property
    def activation_capacity_bytes(self) -> int:
        """On-chip bytes available to activations."""
        return sum(m.size_bytes for m in self.memories_for("activations"))

    @property
    def activation_dtype(self) -> str:
        return self.compute.activation_dtype

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "activation_capacity_bytes": self.activation_capacity_bytes,
            "activation_dtype": self.activation_dtype,
            "machine_kind": self.machine_kind,
            "weights_location": self.weights_location,
            "weights_memory": self.weights_memory,
            "accounting": {"input": self.accounting.input, "output": self.accounting.output},
            "dram_writable": self.dram.writable,
            "memories": [
                {"name": m.name, "size_bytes": m.size_bytes, "holds": list(m.holds),
                 "writable": m.writable, "double_buffered": m.double_buffered}
                for m in self.memories
            ],
            "onchip_paths": [{"from": p.source, "to": p.dest,
                              "bandwidth_bytes_per_cycle": p.bandwidth_bytes_per_cycle}
                             for p in self.onchip_paths],
        }


# Schema: key -> (type, required). Types: "str", "pos_int", "nonneg_int", "bool", "dtype",
# "holds", "table", "array", or a tuple of the allowed strings.
_TOP = {"name": ("str", True), "description": ("str", True), "source": ("str", True),
        "machine": ("table", False), "compute": ("table", True), "dram": ("table", True),
        "memory": ("array", True), "weights": ("table", False),
        "accounting": ("table", False), "onchip_path": ("array", False)}
_MACHINE = {"kind": (MACHINE_KINDS, True)}
_WEIGHTS = {"location": (WEIGHT_LOCATIONS, True), "memory": ("str", False)}
_ACCOUNTING = {"input": (ACCOUNTING, False), "output": (ACCOUNTING, False)}
_ONCHIP_PATH = {"from": ("str", True), "to": ("str", True),
                "bandwidth_bytes_per_cycle": ("pos_int", True)}
_COMPUTE = {"kind": ("str", True), "macs_per_cycle": ("pos_int", True),
            "clock_hz": ("pos_int", True), "activation_dtype": ("dtype", True),
            "weight_dtype": ("dtype", True), "accumulator_dtype": ("dtype", True),
            "gemm_block_in": ("pos_int", False), "gemm_block_out": ("pos_int", False),
            "gemm_batch": ("pos_int", False)}
_DRAM = {"bandwidth_bytes_per_cycle": ("pos_int", True), "latency_cycles": ("nonneg_int", True),
         "writable": ("bool", False)}
_MEMORY = {"name": ("str", True), "size_bytes": ("pos_int", True), "holds": ("holds", True),
           "alignment_bytes": ("pos_int", False), "bandwidth_bytes_per_cycle": ("pos_int", False),
           "writable": ("bool", False), "double_buffered": ("bool", False)}


class _Checker:
    def __init__(self, label: str):
        self.label = label

    def fail(self, path: str, message: str):
        raise MemflatError(f"spec {self.label}: {path} {message}")

    def table(self, data, schema: dict, path: str) -> dict:
        if not isinstance(data, dict):
            self.fail(path or "top level", "must be a table")
        prefix = f"{path}." if path else ""
        for key in data:
            if key not in schema:
                self.fail(f"{prefix}{key}", f"is not a known key (known: {', '.join(schema)})")
        out = {}
        for key, (kind, required) in schema.items():
            if key not in data:
                if required:
                    self.fail(f"{prefix}{key}", "is missing")
                continue
            out[key] = self.value(data[key], kind, f"{prefix}{key}")
        return out

    def value(self, v, kind, path: str):
        if isinstance(kind, tuple):
            if v not in kind:
                self.fail(path, f"must be one of {', '.join(map(repr, kind))}, got {v!r}")
            return v
        if kind == "bool" and not isinstance(v, bool):
            self.fail(path, f"must be true or false, got {v!r}")
        if kind in ("str",) and not (isinstance(v, str) and v.strip()):
            self.fail(path, f"must be a non-empty string, got {v!r}")
        if kind in ("pos_int", "nonneg_int"):
            if not isinstance(v, int) or isinstance(v, bool):
                self.fail(path, f"must be an integer, got {type(v).__name__} {v!r}")
            if v < 0 or (kind == "pos_int" and v == 0):
                self.fail(path, f"must be a {'positive' if kind == 'pos_int' else 'non-negative'}"
                          f" integer, got {v}")
        if kind == "dtype" and v not in DTYPES:
            self.fail(path, f"must be one of {', '.join(DTYPES)}, got {v!r}")
        if kind == "holds":
            if not isinstance(v, list) or not v or any(x not in CONTENTS for x in v):
                self.fail(path, f"must be a non-empty list drawn from {', '.join(CONTENTS)}, "
                          f"got {v!r}")
            return tuple(v)
        if kind == "table" and not isinstance(v, dict):
            self.fail(path, "must be a table")
        if kind == "array" and not (isinstance(v, list) and v and all(isinstance(x, dict)
                                                                      for x in v)):
            self.fail(path, f"must be a non-empty array of tables ([[{path}]])")
        return v


def parse_spec(data: dict, label: str = "<dict>", path: str | None = None) -> AcceleratorSpec:
    """Validate a spec's TOML data and build the :class:`AcceleratorSpec`."""
    check = _Checker(label)
    top = check.table(data, _TOP, "")
    kind = check.table(top.get("machine", {"kind": "scratchpad"}), _MACHINE, "machine")["kind"]
    comp = check.table(top["compute"], _COMPUTE, "compute")
    dram = check.table(top["dram"], _DRAM, "dram")
    memories, names = [], set()
    for i, raw in enumerate(top["memory"]):
        m = check.table(raw, _MEMORY, f"memory[{i}]")
        if m["name"] in names:
            check.fail(f"memory[{i}].name", f"repeats {m['name']!r}")
        names.add(m["name"])
        align = m.get("alignment_bytes", 1)
        if align & (align - 1):
            check.fail(f"memory[{i}].alignment_bytes", f"must be a power of two, got {align}")
        writable = m.get("writable", True)
        written = [h for h in m["holds"] if h in ("activations", "accumulators")]
        if not writable and written:
            check.fail(f"memory[{i}].writable", f"is false, but the memory holds {written[0]}")
        bandwidth = m.get("bandwidth_bytes_per_cycle", dram["bandwidth_bytes_per_cycle"])
        memories.append(Memory(m["name"], m["size_bytes"], m["holds"], align, bandwidth,
                               writable, m.get("double_buffered", False)))
    if not any("activations" in m.holds for m in memories):
        check.fail("memory", "has no memory that holds activations")
    location, weights_memory = _weights(check, top.get("weights"), memories)
    acc = check.table(top.get("accounting", {}), _ACCOUNTING, "accounting")
    paths = []
    for i, raw in enumerate(top.get("onchip_path", [])):
        p = check.table(raw, _ONCHIP_PATH, f"onchip_path[{i}]")
        if kind != "buffered":
            check.fail(f"onchip_path[{i}]", 'applies to machine.kind = "buffered" only')
        for key in ("from", "to"):
            if p[key] not in names:
                check.fail(f"onchip_path[{i}].{key}", f"names no memory: {p[key]!r}")
        paths.append(OnchipPath(p["from"], p["to"], p["bandwidth_bytes_per_cycle"]))
    compute = Compute(comp["kind"], comp["macs_per_cycle"], comp["clock_hz"],
                      comp["activation_dtype"], comp["weight_dtype"], comp["accumulator_dtype"],
                      comp.get("gemm_block_in", 1), comp.get("gemm_block_out", 1),
                      comp.get("gemm_batch", 1))
    # Without the key, DRAM is a spill target on a buffered machine only.
    dram_writable = dram.get("writable", kind == "buffered")
    return AcceleratorSpec(top["name"], top["description"], top["source"], compute,
                           Dram(dram["bandwidth_bytes_per_cycle"], dram["latency_cycles"],
                                dram_writable),
                           tuple(memories), path, kind, location, weights_memory,
                           Accounting(acc.get("input", "sram"), acc.get("output", "sram")),
                           tuple(paths))


def _weights(check: _Checker, raw, memories: list[Memory]) -> tuple[str, str | None]:
    """``[weights]``: where weights live, and which memory holds them (or stages chunks).

    Without the table: streamed, staged in the first memory that holds weights (if any).
    """
    w = check.table(raw if raw is not None else {"location": "streamed"}, _WEIGHTS, "weights")
    holders = [m for m in memories if "weights" in m.holds]
    if "memory" not in w:
        if raw is not None and w["location"] == "resident" and not holders:
            check.fail("weights.memory", "is missing, and no [[memory]] holds weights")
        return w["location"], holders[0].name if holders else None
    mem = next((m for m in memories if m.name == w["memory"]), None)
    if mem is None or mem not in holders:
        check.fail("weights.memory", f"must name a memory that holds weights "
                   f"({', '.join(m.name for m in holders) or 'none does'}), got {w['memory']!r}")
    if w["location"] == "streamed" and not mem.writable:
        check.fail("weights.memory", f"names read-only {mem.name!r}: streamed weights are "
                   "staged in a writable memory")
    return w["location"], mem.name


def shipped_specs() -> list[str]:
    """Names of the specs shipped with the package (``tvm_memflat/configs/``)."""
    return sorted(r.name[:-len(".toml")] for r in _SHIPPED.iterdir()
                  if r.name.endswith(".toml") and r.is_file())


def load_spec(name_or_path: str | Path) -> AcceleratorSpec:
    """Load a spec by shipped name (``vta_like``) or TOML path, validated.

    Raises
    ------
    MemflatError
        Missing file, bad TOML, unknown/missing key, wrong type or value.
    """
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        resource = _SHIPPED.joinpath(f"{text}.toml")
        if not resource.is_file():
            raise MemflatError(
                f"unknown spec {text!r}: not a file, and not one of {', '.join(shipped_specs())}"
            )
        return _parse_text(resource.read_text(encoding="utf-8"), str(resource))
    if not path.is_file():
        raise MemflatError(f"no such spec file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MemflatError(f"spec {path}: not valid TOML: {err}") from None
    return _parse_text(text, str(path))


def _parse_text(text: str, label: str) -> AcceleratorSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MemflatError(f"spec {label}: not valid TOML: {err}") from None
    return parse_spec(data, label, label)
