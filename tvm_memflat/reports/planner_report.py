"""Text and CSV reports of an SRAM plan, in the spirit of Vela's summary."""

from __future__ import annotations

from ..hardware.call_tiling import BufferedPlan
from ..planner.live_ranges import LoweredSchedule
from ..planner.sram_plan import SpecPlan
from .plots import format_bytes


def plan_summary(plan: SpecPlan, schedule: LoweredSchedule, *, top: int = 8) -> str:
    """Per memory: required / available / excess, lower bound, arena, overhead, spills,
    the buffers live at the peak; then DRAM traffic."""
    lines = [f"{'memory':<20}{'holds':<26}{'required':>12}{'available':>12}{'excess':>12}"
             f"{'lower bnd':>12}{'arena':>12}{'ovh %':>7}{'spilled':>11}"]
    lines.append("-" * len(lines[0]))
    for m in plan.memories:
        p = m.plan
        excess = max(0, m.required_bytes - m.size_bytes)
        lines.append(f"{m.memory:<20}{','.join(h[:3] for h in m.holds):<26}"
                     f"{format_bytes(m.required_bytes):>12}{format_bytes(m.size_bytes):>12}"
                     f"{format_bytes(excess):>12}{format_bytes(p.lower_bound_bytes):>12}"
                     f"{format_bytes(p.arena_bytes):>12}{p.overhead_pct:>7.2f}"
                     f"{format_bytes(p.spilled_bytes):>11}")
    for m in plan.memories:
        if not m.plan.placements:
            continue
        step, live = _peak(m)
        kernel = schedule.steps[step].kernel if step < len(schedule.steps) else "?"
        lines.append(f"\n{m.memory}: peak {format_bytes(sum(s for _, s in live))} at step "
                     f"{step} ({kernel}); live there:")
        for name, size in sorted(live, key=lambda t: -t[1])[:top]:
            base = name.split("@")[0]
            lines.append(f"  {m.labels.get(base, base)[:40]:<42}{format_bytes(size):>12}")
    weights = sum(t.weight_read_bytes for t in plan.traffic)
    act_r = sum(t.activation_read_bytes for t in plan.traffic)
    act_w = sum(t.activation_write_bytes for t in plan.traffic)
    lines.append(f"\nDRAM traffic: {format_bytes(plan.dram_traffic_bytes)} "
                 f"(weights read {format_bytes(weights)}, activations read "
                 f"{format_bytes(act_r)}, written {format_bytes(act_w)})")
    if plan.activation_view:
        lines.append(f"activations: float tensors counted at {plan.activation_dtype} "
                     "(a view: no quantized model was planned)")
    if plan.fits:
        lines.append(f"fits {plan.spec}: every memory holds what is placed in it")
    else:
        lines.append(f"does NOT fit {plan.spec}:")
        lines += [f"  {reason}" for reason in plan.why]
        lines.append("  tile the network (memflat plan --optimized), quantize it, "
                     "or pick a larger spec")
    lines.append(f"planned in {plan.planner_s * 1000:.0f} ms")
    return "\n".join(lines)


def _peak(m) -> tuple[int, list[tuple[str, int]]]:
    per_step: dict[int, list[tuple[str, int]]] = {}
    for p in m.plan.placements:
        for s in range(p.start, p.end + 1):
            per_step.setdefault(s, []).append((p.name, p.size_bytes))
    step = max(per_step, key=lambda s: (sum(b for _, b in per_step[s]), -s))
    return step, per_step[step]


def plan_csv_rows(plan: SpecPlan, schedule: LoweredSchedule) -> list[dict]:
    """One row per kernel step: live bytes per memory, weights, DRAM traffic, % of peak."""
    live = {m.memory: [0] * len(schedule.steps) for m in plan.memories}
    for m in plan.memories:
        for p in m.plan.placements:
            for s in range(p.start, min(p.end, len(schedule.steps) - 1) + 1):
                live[m.memory][s] += p.size_bytes
    act = plan.activation.memory
    peak = max(live[act]) or 1
    rows = []
    for step, t in zip(schedule.steps, plan.traffic, strict=True):
        row = {"step": step.step, "kernel": step.kernel, "macs": step.macs}
        for m in plan.memories:
            row[f"{m.memory}_live_bytes"] = live[m.memory][step.step]
        row["pct_of_activation_peak"] = round(100.0 * live[act][step.step] / peak, 2)
        row.update({"weight_read_bytes": t.weight_read_bytes, "weight_chunks": t.weight_chunks,
                    "activation_read_bytes": t.activation_read_bytes,
                    "activation_write_bytes": t.activation_write_bytes,
                    "dram_traffic_bytes": t.total_bytes})
        rows.append(row)
    return rows


def buffered_summary(plan: BufferedPlan, bounds, *, top: int = 8) -> str:
    """A buffered spec's plan: per memory the largest tile footprint against its size,
    DRAM traffic against the compulsory and per-layer minimum, the calls that re-read
    the most, and the per-call tiles."""
    lines = [f"{'memory':<20}{'largest tile set':>18}{'available':>12}{'excess':>10}"]
    lines.append("-" * len(lines[0]))
    high = plan.high_water_bytes
    for name, size in plan.capacity_bytes.items():
        used = high.get(name, 0)
        lines.append(f"{name:<20}{format_bytes(used):>18}{format_bytes(size):>12}"
                     f"{format_bytes(max(0, used - size)):>10}")
    t = plan.traffic_bytes
    lines.append(f"\nDRAM traffic {format_bytes(t)}: x{t / bounds.per_layer_min_traffic_bytes:.3f}"
                 f" the per-layer minimum {format_bytes(bounds.per_layer_min_traffic_bytes)}"
                 f" (every activation and weight off chip once per layer), "
                 f"x{t / bounds.compulsory_traffic_bytes:.2f} the compulsory "
                 f"{format_bytes(bounds.compulsory_traffic_bytes)} (weights, input, output once)")
    lines.append(f"cycles {plan.cycles}: x{plan.cycles / max(1, bounds.compute_bound_cycles):.2f}"
                 f" the compute bound {bounds.compute_bound_cycles} (GEMM blocks and vector "
                 "work at the utilisation the channel counts allow)")
    extra = sorted(plan.calls, key=lambda c: c.min_traffic_bytes - c.cost.traffic_bytes)
    extra = [c for c in extra if c.cost.traffic_bytes > c.min_traffic_bytes][:top]
    if extra:
        lines.append("\nre-reads forced by the buffers (traffic above the call's minimum):")
        for c in extra:
            lines.append(f"  step {c.step:>4} {c.kernel[:34]:<36}"
                         f"+{format_bytes(c.cost.traffic_bytes - c.min_traffic_bytes):>10}  "
                         f"{c.reason}")
    lines.append(f"\n{'step':>4} {'kernel':<36}{'tiling':<44}{'traffic':>10}{'x min':>7}"
                 f"{'cycles':>11}")
    for c in plan.calls:
        lines.append(f"{c.step:>4} {c.kernel[:35]:<36}{c.describe()[:43]:<44}"
                     f"{format_bytes(c.cost.traffic_bytes):>10}"
                     f"{c.cost.traffic_bytes / max(1, c.min_traffic_bytes):>7.2f}"
                     f"{c.cost.cycles:>11}")
    if plan.kept_on_chip:
        lines.append(f"fits {plan.spec}: every call's tiles fit their buffers; "
                     f"{len(plan.kept_on_chip)} activations stay on chip between their "
                     "layers (in:chip / out:chip: over the on-chip path, in the "
                     f"reservation), the others in DRAM; activation traffic "
                     f"{format_bytes(plan.activation_traffic_bytes)}")
    else:
        lines.append(f"fits {plan.spec}: every call's tiles fit their buffers "
                     "(activations stay in DRAM between layers)")
    if plan.weights_kept:
        held = max(k.reserved_bytes for k in plan.weights_kept)
        lines.append(f"{len(plan.weights_kept)} weights shared by several calls (a region's "
                     f"tiles) stay in the weight memory from their first call to their last"
                     f" (w:chip), loaded once: "
                     f"{format_bytes(sum(k.saved_bytes for k in plan.weights_kept))} less "
                     f"traffic; the largest holds {format_bytes(held)}")
    return "\n".join(lines)


def buffered_csv_rows(plan: BufferedPlan) -> list[dict]:
    """One row per kernel call: its tiling, tile bytes per buffer, traffic and cycles."""
    rows = []
    for c in plan.calls:
        row = {"step": c.step, "kernel": c.kernel, "kind": c.shape.kind,
               "rows": c.tiling.rows, "cols": c.tiling.cols,
               "group_block": c.tiling.group_block, "out_block": c.tiling.out_block,
               "in_block": c.tiling.in_block, "order": c.tiling.order}
        row.update({f"{m}_bytes": c.footprint_bytes.get(m, 0) for m in plan.capacity_bytes})
        row.update({"traffic_bytes": c.cost.traffic_bytes,
                    "min_traffic_bytes": c.min_traffic_bytes, "cycles": c.cost.cycles,
                    "compute_cycles": c.cost.compute_cycles, "reason": c.reason,
                    "input_on_chip": c.shape.input_on_chip,
                    "output_on_chip": c.shape.output_on_chip,
                    "reserved_bytes": c.shape.reserved_bytes,
                    "weight_on_chip": c.shape.weight_on_chip,
                    "weight_reserved_bytes": c.shape.weight_reserved_bytes})
        rows.append(row)
    return rows
