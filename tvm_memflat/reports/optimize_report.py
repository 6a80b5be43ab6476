"""Text report of :func:`tvm_memflat.workflows.optimize`: before / before_ours / after."""

from __future__ import annotations

from ..workflows import OptimizeResult
from .plots import format_bytes

__all__ = ["optimize_summary"]


def _pct(new: float, old: float) -> str:
    return f"{100.0 * (new / old - 1):+.1f}%" if old else "n/a"


def optimize_summary(result: OptimizeResult) -> str:
    """What was rewritten, then the three builds side by side, then the savings."""
    lines: list[str] = []
    if result.fusion is not None:
        lines.append(result.fusion.summary())
        if not result.changed:
            lines.append("fusion did not pay: no region lowered the DRAM traffic within the "
                         "budget; the module is unchanged")
    elif not result.changed:
        lines.append("tiling did not pay: no exact rewrite lowered the device bytes within the "
                     "limits; the module is unchanged")
    lines += list(result.descriptions)
    t = result.tune_result
    if t is not None:
        c = t.chosen
        lines.append(f"tuner: {t.reason}; {len(t.points)} rewrites costed "
                     f"({t.cost_model}){' [cached]' if t.cached else ''}")
        lines.append(f"tuner: chosen {format_bytes(c.memory_bytes)} at {c.latency:.3f} ms, "
                     f"untiled {format_bytes(t.baseline.memory_bytes)} at "
                     f"{t.baseline.latency:.3f} ms"
                     + (f", limit {t.limit_ms:.3f} ms" if t.limit_ms else ""))
    b, o, a = result.before, result.before_ours, result.after
    rows = [("device_bytes", format_bytes), ("predicted_device_bytes", format_bytes),
            ("runtime_alloc_storage_bytes", format_bytes), ("peak_bytes (model)", format_bytes),
            ("macs", str), ("latency_ms", str)]
    sims = a.simulation is not None
    if sims:
        rows += [("cycles", str), ("dram_traffic_bytes", format_bytes)]
    lines.append(f"\n{'':<30}{'before':>14}{'before_ours':>14}{'after':>14}"
                 f"{'pass alone':>12}")
    for key, fmt in rows:
        attr = key.split()[0]

        def get(side, attr=attr):
            if side.simulation is not None and attr in side.simulation:
                return side.simulation[attr]
            return getattr(side, attr, None)

        vals = [get(s) for s in (b, o, a)]
        shown = [fmt(v) if v is not None else "-" for v in vals]
        change = _pct(vals[2], vals[1]) if None not in vals[1:] else ""
        lines.append(f"{key:<30}{shown[0]:>14}{shown[1]:>14}{shown[2]:>14}{change:>12}")
    lines.append(f"\ndevice bytes ({result.accounting.input} input, "
                 f"{result.accounting.output} output): pass alone "
                 f"{result.saving_pct:.1f} % saved (after vs before_ours), build alone "
                 f"{result.build_saving_pct:.1f} % (before_ours vs stock), both "
                 f"{result.total_saving_pct:.1f} %")
    err = a.prediction_error
    if err is not None:
        lines.append(f"predicted vs measured device bytes (after): {100 * err:.2f} % apart")
    if sims:
        for side_name, side in (("before_ours", o), ("after", a)):
            sim = side.simulation
            verdict = "fits" if sim["fits"] else \
                f"does NOT fit: {sim['violations']} violations, first: {sim['first_violation']}"
            lines.append(f"{side_name} on {result.config.get('spec')}: {verdict}")
        cap = result.simulations["after"].report.capacity_bytes
        for name, hw in a.simulation["sram_high_water_bytes"].items():
            lines.append(f"{'high water ' + name:<30}"
                         f"{format_bytes(o.simulation['sram_high_water_bytes'][name]):>28}"
                         f"{format_bytes(hw):>14}   of {format_bytes(cap[name])}")
        lines.append(f"bounds (after): compulsory traffic "
                     f"{format_bytes(a.simulation['compulsory_traffic_bytes'])}, per-layer "
                     f"minimum {format_bytes(a.simulation['per_layer_min_traffic_bytes'])}, "
                     f"compute bound {a.simulation['compute_bound_cycles']} cycles")
    lines.append(f"max_abs_error {result.max_abs_error:.3g} (max |ref| "
                 f"{result.max_abs_reference:.3g}); search time {result.search_s:.1f} s")
    return "\n".join(lines)
