#!/usr/bin/env python
"""The SRAM planner on the zoo: our arena vs lower bound, no reuse, TVM and Vela.

For each zoo net (original, and after FlattenMemoryPeaks unless --no-optimized),
lowered by tvm_memflat's pipeline (fused, concatenations in place, kernel scratch
shrunk), measured side by side in one run on the very same live ranges:

* host plan (fp32, 64-byte alignment, no capacity): lower bound, our arena, the
  arena with no reuse, TVM's ``StaticPlanBlockMemory`` total on the same lowered
  module, and Arm Vela's hill-climb allocator (ethos-u-vela 5.2.0), with times;
* per spec (vta_like, mcu_256k, edge_npu_1m): the activation memory's lower bound,
  our arena, Vela's arena on the same ranges, fits, spilled bytes and DRAM traffic.

    python scripts/bench_planner.py [--models ...] [--no-optimized] [--json bench_planner.json]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _meta import ArgParser, bench_meta

SPECS = ("vta_like", "mcu_256k", "edge_npu_1m")


def tvm_block_total(lowered) -> int:
    """Storage bytes ``StaticPlanBlockMemory`` allocates for the same lowered module."""
    import tvm
    from tvm import relax

    from tvm_memflat.analysis.tvm_allocation import storage_blocks

    with tvm.target.Target("llvm"):
        planned = relax.transform.StaticPlanBlockMemory()(lowered)
    return sum(storage_blocks(planned["main"]))


def main(argv=None) -> int:
    import tvm

    from tvm_memflat import FlattenMemoryPeaks, load_spec, zoo
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.frontend import load_model
    from tvm_memflat.lowering.pipeline import lower
    from tvm_memflat.planner.allocator import allocate, no_reuse_arena
    from tvm_memflat.planner.apply_arena import HOST_ALIGNMENT_BYTES
    from tvm_memflat.planner.live_ranges import lowered_schedule
    from tvm_memflat.planner.vela_baseline import vela_arena
    from tvm_memflat.workflows import plan

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES), choices=zoo.NAMES)
    parser.add_argument("--no-optimized", action="store_true",
                        help="skip the FlattenMemoryPeaks variants (they take minutes)")
    parser.add_argument("--json", default="bench_planner.json")
    args = parser.parse_args(argv)
    target = tvm.target.Target("llvm")
    specs = [load_spec(s) for s in SPECS]

    rows = []
    for name in args.models:
        mod = load_model(name)
        variants = [("original", mod)]
        if not args.no_optimized:
            print(f"{name}: FlattenMemoryPeaks ...", file=sys.stderr, flush=True)
            variants.append(("optimized", FlattenMemoryPeaks()(mod)))
        for variant, m in variants:
            print(f"{name} ({variant}): lower, plan ...", file=sys.stderr, flush=True)
            lowered = lower(m, target)
            t0 = time.perf_counter()
            schedule = lowered_schedule(lowered)
            schedule_s = time.perf_counter() - t0
            ranges = schedule.live_ranges()
            t0 = time.perf_counter()
            host = allocate(ranges, alignment_bytes=HOST_ALIGNMENT_BYTES)
            ours_s = time.perf_counter() - t0
            vela, vela_s = vela_arena(ranges, HOST_ALIGNMENT_BYTES)
            row = {"model": name, "variant": variant, "buffers": len(ranges),
                   "steps": len(schedule.steps), "schedule_s": round(schedule_s, 3),
                   "host": {"lower_bound_bytes": host.lower_bound_bytes,
                            "arena_bytes": host.arena_bytes,
                            "no_reuse_bytes": no_reuse_arena(ranges, HOST_ALIGNMENT_BYTES),
                            "tvm_static_plan_bytes": tvm_block_total(lowered),
                            "vela_hillclimb_bytes": vela,
                            "ratio_to_lower_bound": round(host.arena_bytes
                                                          / max(host.lower_bound_bytes, 1), 5),
                            "ours_s": round(ours_s, 4), "vela_s": round(vela_s, 4)},
                   "specs": {}}
            for spec in specs:
                t0 = time.perf_counter()
                result = plan(m, spec=spec)  # the library workflow `memflat plan` runs
                plan_s = time.perf_counter() - t0
                plan_ = result.spec_plan
                act = plan_.activation
                act_ranges = _act_ranges(schedule, spec)
                t0 = time.perf_counter()
                ours_act = allocate(act_ranges, alignment_bytes=act.alignment_bytes)
                ours_act_s = time.perf_counter() - t0
                v_arena, v_s = vela_arena(act_ranges, act.alignment_bytes)
                row["specs"][spec.name] = {
                    "memory": act.memory, "capacity_bytes": act.size_bytes,
                    # activations alone, no capacity: like for like with Vela
                    "lower_bound_bytes": ours_act.lower_bound_bytes,
                    "arena_bytes_no_capacity": ours_act.arena_bytes,
                    "vela_hillclimb_bytes": v_arena, "ours_s": round(ours_act_s, 4),
                    # the whole memory (with scratch/weights when shared), with capacity
                    "memory_lower_bound_bytes": act.plan.lower_bound_bytes,
                    "fits": plan_.fits,
                    "arena_bytes": plan_.arena_bytes, "spilled_bytes": plan_.spilled_bytes,
                    "dram_traffic_bytes": plan_.dram_traffic_bytes,
                    "planner_s": round(plan_.planner_s, 4), "workflow_s": round(plan_s, 3),
                    "vela_s": round(v_s, 4)}
            rows.append(row)

    head = (f"{'model':<14}{'variant':<10}{'bufs':>5}{'lower bnd':>11}{'ours':>11}{'ratio':>8}"
            f"{'no reuse':>11}{'TVM':>11}{'Vela':>11}{'ours s':>8}{'Vela s':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        h = r["host"]
        print(f"{r['model']:<14}{r['variant']:<10}{r['buffers']:>5}{h['lower_bound_bytes']:>11}"
              f"{h['arena_bytes']:>11}{h['ratio_to_lower_bound']:>8.4f}{h['no_reuse_bytes']:>11}"
              f"{h['tvm_static_plan_bytes']:>11}{h['vela_hillclimb_bytes']:>11}"
              f"{h['ours_s']:>8.3f}{h['vela_s']:>8.3f}")
    print()
    head2 = (f"{'model':<14}{'variant':<10}{'spec':<13}{'capacity':>10}{'lower bnd':>11}"
             f"{'ours':>11}{'Vela':>11}{'fits':>6}{'spilled':>10}{'DRAM traffic':>13}")
    print(head2)
    print("-" * len(head2))
    for r in rows:
        for spec_name, s in r["specs"].items():
            print(f"{r['model']:<14}{r['variant']:<10}{spec_name:<13}{s['capacity_bytes']:>10}"
                  f"{s['lower_bound_bytes']:>11}{s['arena_bytes_no_capacity']:>11}"
                  f"{s['vela_hillclimb_bytes']:>11}{'yes' if s['fits'] else 'no':>6}"
                  f"{s['spilled_bytes']:>10}{s['dram_traffic_bytes']:>13}")
    ratios = [r["host"]["ratio_to_lower_bound"] for r in rows]
    ratios += [s["arena_bytes_no_capacity"] / max(s["lower_bound_bytes"], 1)
               for r in rows for s in r["specs"].values()]
    summary = {
        "plans": len(ratios),
        "mean_ratio_to_lower_bound": round(float(np.mean(ratios)), 5),
        "plans_at_lower_bound": sum(1 for x in ratios if x <= 1.0),
        "never_worse_than_tvm": all(r["host"]["arena_bytes"] <= r["host"]["tvm_static_plan_bytes"]
                                    for r in rows),
        "never_worse_than_vela": all(
            r["host"]["arena_bytes"] <= r["host"]["vela_hillclimb_bytes"]
            and all(s["arena_bytes_no_capacity"] <= s["vela_hillclimb_bytes"]
                    for s in r["specs"].values()) for r in rows),
        "ours_total_s": round(sum(r["host"]["ours_s"] for r in rows), 3),
        "vela_total_s": round(sum(r["host"]["vela_s"] for r in rows), 3),
    }
    print(f"\n{summary}")
    write_json_atomic(args.json, {
        **bench_meta(),
        "pipeline": "tvm_memflat lowering (fused, concat in place, scratch shrunk)",
        "summary": summary, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def _act_ranges(schedule, spec):
    from tvm_memflat.planner.sram_plan import activation_ranges

    return activation_ranges(schedule, spec.compute.activation_dtype)


if __name__ == "__main__":
    sys.exit(main())
