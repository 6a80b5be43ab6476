"""Plain-text profile summary: configuration first, then peak, live set, top layers."""

from __future__ import annotations

from ..analysis.memory_profile import MemoryProfile
from .plots import format_bytes

__all__ = ["format_bytes", "format_count", "profile_summary"]


def format_count(n: int) -> str:
    """``15.47 G`` style counts for MACs and parameters."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def profile_summary(
    prof: MemoryProfile,
    *,
    config: dict | None = None,
    capacity_bytes: int | None = None,
    capacity_name: str | None = None,
    top: int = 8,
    live: int = 8,
) -> str:
    """Compact report of a profile, as ``memflat profile`` prints it."""
    lines = []
    for key, value in (config or {}).items():
        lines.append(f"{key:<16}{value}")
    if config:
        lines.append("")
    peak = prof.peak_layer
    lines.append(
        f"peak activation memory  {format_bytes(prof.peak_bytes)} ({prof.peak_bytes} B, "
        f"{prof.activation_dtype}) at layer {peak.index}/{len(prof.layers)} "
        f"{peak.name} ({peak.op})"
    )
    lines.append(f"MACs                    {format_count(prof.macs)} ({prof.macs})")
    if prof.weight_only_bytes:
        lines.append(f"weight transforms       {format_bytes(prof.weight_only_bytes)} computed at "
                     "run time from weights kept as parameters (in the live bytes; marked "
                     "[weights] below)")
    if prof.tvm is not None:
        t = prof.tvm
        runtime = (f", runtime alloc_storage {format_bytes(t.runtime_storage_bytes)}"
                   if t.runtime_storage_bytes is not None else "")
        lines.append(
            f"TVM-allocated           {format_bytes(t.total_bytes)} = planned storage "
            f"{format_bytes(t.planned_storage_bytes)} in {len(t.storage_blocks)} block(s) + "
            f"output {format_bytes(t.output_bytes)} + largest kernel scratch "
            f"{format_bytes(t.max_scratch_bytes)} ({t.max_scratch_kernel}){runtime}"
        )
        lines.append("                        (stock TVM 0.27, llvm, with operator fusion)")
    if capacity_bytes is not None:
        excess = prof.peak_bytes - capacity_bytes
        verdict = "fits" if excess <= 0 else "does NOT fit"
        lines.append(
            f"{capacity_name or 'SRAM'}: required {format_bytes(prof.peak_bytes)} / available "
            f"{format_bytes(capacity_bytes)} / excess {format_bytes(max(excess, 0))} -> {verdict}"
        )
    lines.append("")
    live_set = prof.live_at_peak()
    lines.append(f"tensors live at the peak ({len(live_set)}):")
    for t in live_set[:live]:
        share = 100.0 * t.bytes / max(prof.peak_bytes, 1)
        lines.append(f"  {t.name:<32} {format_bytes(t.bytes):>11} {share:5.1f} %  "
                     f"{'x'.join(map(str, t.shape)):<16} from {t.producer_name}"
                     + (" [weights]" if t.weight_only else ""))
    if len(live_set) > live:
        lines.append(f"  ... and {len(live_set) - live} more")
    lines.append("")
    lines.append(f"top {min(top, len(prof.layers))} layers by live bytes:")
    lines.append(f"  {'#':>4} {'layer':<32} {'op':<24} {'live':>11} {'% peak':>7} {'output':>11}")
    for r in prof.top_layers(top):
        lines.append(
            f"  {r.index:>4} {r.name[:32]:<32} {r.op[:24]:<24} {format_bytes(r.live_bytes):>11} "
            f"{100.0 * r.live_bytes / max(prof.peak_bytes, 1):6.1f}% "
            f"{format_bytes(r.output_bytes):>11}"
        )
    return "\n".join(lines)
