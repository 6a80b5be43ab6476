"""Accelerator specs: TOML files validated on load, then built into frozen dataclasses.

Parsing and validation live here; hardware modelling (cycles, traffic) does not.
Every field carries its unit in its name (``_bytes``, ``_hz``, ``_bytes_per_cycle``)
and unknown keys are errors, never silently ignored. Errors name the key path::

    spec configs/bad.toml: memory[1].size_bytes must be a positive integer, got -4
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from .errors import MemflatError

# Specs ship in the repository's top-level ``configs/`` (installed editable).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: What a memory may hold.
CONTENTS = ("activations", "weights", "accumulators", "instructions")
DTYPES = ("int8", "int16", "int32", "float16", "float32")


@dataclass(frozen=True)
class Memory:
    """One on-chip memory (SRAM)."""

    name: str
    size_bytes: int
    holds: tuple[str, ...]
    alignment_bytes: int
    bandwidth_bytes_per_cycle: int


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
            "memories": [
                {"name": m.name, "size_bytes": m.size_bytes, "holds": list(m.holds)}
                for m in self.memories
            ],
        }


# Schema: key -> (type, required). Types: "str", "pos_int", "nonneg_int", "dtype", "holds".
_TOP = {"name": ("str", True), "description": ("str", True), "source": ("str", True),
        "compute": ("table", True), "dram": ("table", True), "memory": ("array", True)}
_COMPUTE = {"kind": ("str", True), "macs_per_cycle": ("pos_int", True),
            "clock_hz": ("pos_int", True), "activation_dtype": ("dtype", True),
            "weight_dtype": ("dtype", True), "accumulator_dtype": ("dtype", True),
            "gemm_block_in": ("pos_int", False), "gemm_block_out": ("pos_int", False),
            "gemm_batch": ("pos_int", False)}
_DRAM = {"bandwidth_bytes_per_cycle": ("pos_int", True), "latency_cycles": ("nonneg_int", True)}
_MEMORY = {"name": ("str", True), "size_bytes": ("pos_int", True), "holds": ("holds", True),
           "alignment_bytes": ("pos_int", False), "bandwidth_bytes_per_cycle": ("pos_int", False)}


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

    def value(self, v, kind: str, path: str):
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
            self.fail(path, "must be a non-empty array of tables ([[memory]])")
        return v


def parse_spec(data: dict, label: str = "<dict>", path: str | None = None) -> AcceleratorSpec:
    """Validate a spec's TOML data and build the :class:`AcceleratorSpec`."""
    check = _Checker(label)
    top = check.table(data, _TOP, "")
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
        bandwidth = m.get("bandwidth_bytes_per_cycle", dram["bandwidth_bytes_per_cycle"])
        memories.append(Memory(m["name"], m["size_bytes"], m["holds"], align, bandwidth))
    if not any("activations" in m.holds for m in memories):
        check.fail("memory", "has no memory that holds activations")
    compute = Compute(comp["kind"], comp["macs_per_cycle"], comp["clock_hz"],
                      comp["activation_dtype"], comp["weight_dtype"], comp["accumulator_dtype"],
                      comp.get("gemm_block_in", 1), comp.get("gemm_block_out", 1),
                      comp.get("gemm_batch", 1))
    return AcceleratorSpec(top["name"], top["description"], top["source"], compute,
                           Dram(dram["bandwidth_bytes_per_cycle"], dram["latency_cycles"]),
                           tuple(memories), path)


def shipped_specs() -> list[str]:
    """Names of the specs shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


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
        path = CONFIG_DIR / f"{text}.toml"
        if not path.exists():
            raise MemflatError(
                f"unknown spec {text!r}: not a file, and not one of {', '.join(shipped_specs())}"
            )
    if not path.is_file():
        raise MemflatError(f"no such spec file: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MemflatError(f"spec {path}: not valid TOML: {err}") from None
    return parse_spec(data, str(path), str(path))
