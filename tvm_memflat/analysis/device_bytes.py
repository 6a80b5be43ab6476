"""Device bytes: the one memory number (``shared/docs/design.md`` §2).

The activation memory a compiled module holds at its run-time peak: everything
``vm.builtin.alloc_storage`` hands out (the arena, the output included), plus the
largest workspace one kernel allocates inside itself, plus the network input when
the counting convention keeps it in SRAM and the build does not place it inside
the arena, minus the output when the convention does not count it.

This module is the arithmetic only (pure data). The prediction, from the build's
own lowered schedule and offset plan, is
:func:`tvm_memflat.planner.device_bytes.predict_device_bytes`; the measurement,
from a run of the built module, is :func:`tvm_memflat.targets.build.build_and_measure`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..spec import Accounting

__all__ = ["Accounting", "DeviceBytes"]


@dataclass(frozen=True)
class DeviceBytes:
    """The parts of device bytes, and their total under ``accounting``."""

    arena_bytes: int           # the one alloc_storage of intermediates (input slot included
                               # when ``input_in_arena``)
    output_bytes: int          # the outputs, allocated apart (the caller keeps them)
    scratch_bytes: int         # the largest workspace one kernel allocates for itself
    input_bytes: int           # the network inputs
    input_in_arena: bool
    accounting: Accounting = Accounting()
    #: what ``alloc_storage`` handed out when the module ran (None: predicted only)
    runtime_alloc_storage_bytes: int | None = None

    @property
    def alloc_storage_bytes(self) -> int:
        """What ``alloc_storage`` hands out: measured if run, else arena + output."""
        if self.runtime_alloc_storage_bytes is not None:
            return self.runtime_alloc_storage_bytes
        return self.arena_bytes + self.output_bytes

    @property
    def total_bytes(self) -> int:
        """Device bytes under :attr:`accounting`."""
        total = self.alloc_storage_bytes + self.scratch_bytes
        if self.accounting.input == "sram" and not self.input_in_arena:
            total += self.input_bytes
        if self.accounting.output == "stream":
            total -= self.output_bytes
        return total

    def to_dict(self) -> dict:
        out = asdict(self)
        out["accounting"] = self.accounting.to_dict()
        out["total_bytes"] = self.total_bytes
        return out
