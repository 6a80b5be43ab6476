#!/usr/bin/env python
"""The latency-budget tuner and the vta_like simulation on the five zoo nets x three specs.

Measured side by side in one run, per model:

* the pass's default (FlattenMemoryPeaks(), <= 5 % MACs): its fp32 modelled peak;
* ``tune(latency_budget="1.1x")`` with the llvm cost model calibrated on this
  machine: the chosen peak (must be at most the default's), the modelled latency
  against the limit, and the llvm latency of the untiled and the chosen module
  built by ``tvm_memflat.build``, measured in the same process (ratio <= 1.10?),
  plus the untiled module built by stock TVM for reference;
* for each spec, ``tune(spec=...)`` (fit the spec at the least latency, cost model
  alone): activation SRAM needed before/after (int8 lower bound), fits or
  shortfall, simulated cycles and DRAM traffic before/after
  (:func:`tvm_memflat.targets.vta_like.simulate`), and the tuner's time;
* the smallest activation SRAM each net fits in within 10 % extra MACs (the
  least lower bound among the costed tilings).

Prints a table and writes JSON (default ``bench_tuner.json``) and one Pareto plot
per model and spec.

    python scripts/bench_tuner.py [--models ...] [--specs ...] [--json FILE] [--plots DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _meta import ArgParser, bench_meta

SPECS = ("vta_like", "mcu_256k", "edge_npu_1m")
MAC_LIMIT_FOR_SMALLEST = 0.10
MCUNETV2_MOBILENETV2_BYTES = 172_000  # best published patch-based int8 peak


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    import tempfile

    from tvm_memflat import FlattenMemoryPeaks, zoo
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.frontend import load_model
    from tvm_memflat.reports.pareto import plot_pareto
    from tvm_memflat.spec import load_spec
    from tvm_memflat.targets.build import build
    from tvm_memflat.targets.runtime import measure_latency_ms
    from tvm_memflat.targets.stock import build_stock
    from tvm_memflat.targets.vta_like import simulate
    from tvm_memflat.tuner.cost_model import lowered
    from tvm_memflat.tuner.inputs import random_inputs
    from tvm_memflat.tuner.tuner import tune

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES), choices=zoo.NAMES)
    parser.add_argument("--specs", nargs="*", default=list(SPECS),
                        help="specs to fit (none: only the 1.1x llvm part)")
    parser.add_argument("--json", default="bench_tuner.json")
    parser.add_argument("--plots", default="bench_plots", help="folder for Pareto plots")
    parser.add_argument("--repeat", type=int, default=5, help="latency repeats (median)")
    parser.add_argument("--no-llvm", action="store_true", help="skip the 1.1x llvm part")
    args = parser.parse_args(argv)
    specs = [load_spec(s) for s in args.specs]
    cache = tempfile.mkdtemp(prefix="bench_tuner_cache_")  # measure the search, not the cache
    plots = Path(args.plots)

    rows = []
    for i, name in enumerate(args.models):
        _say(f"[{i + 1}/{len(args.models)}] {name}")
        mod = load_model(name)
        base = profile(mod, with_tvm=False)
        pass_ = FlattenMemoryPeaks()
        default_peak = profile(pass_(mod), with_tvm=False).peak_bytes
        row = {"model": name, "peak_bytes": base.peak_bytes, "macs": base.macs,
               "default_pass_peak_bytes": default_peak, "specs": {}}
        for spec in specs:
            _say(f"  tune for {spec.name}")
            t0 = time.perf_counter()
            new, res = tune(mod, spec=spec, model=name, cache_dir=cache, use_cache=False,
                            progress=lambda m: _say("    " + m))
            tuner_s = time.perf_counter() - t0
            sim_before = simulate(lowered(mod), spec)
            sim_after = simulate(lowered(new), spec)
            ok = [p for p in res.points if p.macs <= base.macs * (1 + MAC_LIMIT_FOR_SMALLEST)]
            smallest = min(ok, key=lambda p: p.memory_bytes)
            c, b = res.chosen, res.baseline
            row["specs"][spec.name] = {
                "sram_bytes": spec.activation_capacity_bytes,
                "required_before_bytes": b.memory_bytes, "required_after_bytes": c.memory_bytes,
                "fits_before": bool(b.fits), "fits_after": bool(c.fits),
                "shortfall_bytes": max(0, c.memory_bytes - spec.activation_capacity_bytes),
                "mac_overhead_pct": round(100 * (c.macs / base.macs - 1), 2),
                "cycles_before": sim_before.total_cycles, "cycles_after": sim_after.total_cycles,
                "dram_traffic_before_bytes": sim_before.dram_traffic_bytes,
                "dram_traffic_after_bytes": sim_after.dram_traffic_bytes,
                "simulated_ms_after": round(sim_after.latency_ms, 3),
                "smallest_sram_bytes_within_10pct_macs": smallest.memory_bytes,
                "smallest_mac_overhead_pct": round(100 * (smallest.macs / base.macs - 1), 2),
                "tuner_s": round(tuner_s, 1), "reason": res.reason,
                "points": len(res.points)}
            plot_pareto(res, plots / f"{name}_{spec.name}_pareto.png",
                        capacity_bytes=spec.activation_capacity_bytes)
        if not args.no_llvm:
            _say("  tune 1.1x with the calibrated llvm model, then measure")
            t0 = time.perf_counter()
            new, res = tune(mod, latency_budget="1.1x", model=name, cache_dir=cache,
                            use_cache=False, progress=lambda m: _say("    " + m))
            tuner_s = time.perf_counter() - t0
            inputs = random_inputs(mod["main"], seed=1)
            ours_before = build(mod)
            ours_after = build(new)
            stock = build_stock(mod)
            lat = {k: measure_latency_ms(e, inputs, repeat=args.repeat)
                   for k, e in (("ours_before", ours_before), ("ours_after", ours_after),
                                ("stock_before", stock))}
            after_peak = profile(new, with_tvm=False).peak_bytes
            row["llvm_1_1x"] = {
                "cost_model": res.cost_model, "limit_ms": round(res.limit_ms, 3),
                "modelled_before_ms": round(res.baseline.latency, 3),
                "modelled_after_ms": round(res.chosen.latency, 3),
                "met_by_model": res.chosen.latency <= res.limit_ms * (1 + 1e-9),
                "peak_after_bytes": after_peak,
                "peak_at_most_default": after_peak <= default_peak,
                "mac_overhead_pct": round(100 * (res.chosen.macs / base.macs - 1), 2),
                "latency_ours_before_ms": round(lat["ours_before"], 3),
                "latency_ours_after_ms": round(lat["ours_after"], 3),
                "latency_stock_before_ms": round(lat["stock_before"], 3),
                "measured_ratio": round(lat["ours_after"] / lat["ours_before"], 3),
                "measured_ratio_vs_stock": round(lat["ours_after"] / lat["stock_before"], 3),
                "tuner_s": round(tuner_s, 1)}
            plot_pareto(res, plots / f"{name}_llvm_1.1x_pareto.png")
        rows.append(row)

    _print_table(rows, specs)
    report = {**bench_meta(),
              "latency": "llvm for this CPU: ours = tvm_memflat.build with the default CPU"
                         " schedules on all cores (lowering/cpu_schedule.py), stock = TVM's"
                         f" default pipeline, unscheduled; median of {args.repeat}",
              "models": rows}
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


def _kib(n):
    return f"{n / 1024:.0f}K"


def _print_table(rows, specs):
    print(f"{'model':<14}{'spec':<13}{'need before':>12}{'after':>9}{'fits':>6}{'MAC+%':>7}"
          f"{'cycles b/a':>22}{'DRAM b/a':>18}{'smallest':>10}{'tune s':>8}")
    for r in rows:
        for spec in specs:
            s = r["specs"][spec.name]
            print(f"{r['model']:<14}{spec.name:<13}{_kib(s['required_before_bytes']):>12}"
                  f"{_kib(s['required_after_bytes']):>9}{'yes' if s['fits_after'] else 'no':>6}"
                  f"{s['mac_overhead_pct']:>7.2f}"
                  f"{s['cycles_before']:>11}/{s['cycles_after']:<10}"
                  f"{_kib(s['dram_traffic_before_bytes']):>9}/"
                  f"{_kib(s['dram_traffic_after_bytes']):<8}"
                  f"{_kib(s['smallest_sram_bytes_within_10pct_macs']):>10}{s['tuner_s']:>8.1f}")
    print()
    print(f"{'model':<14}{'default peak':>13}{'1.1x peak':>11}{'<=dflt':>7}{'model ms b/a':>18}"
          f"{'measured ms b/a':>20}{'ratio':>7}{'tune s':>8}")
    for r in rows:
        t = r.get("llvm_1_1x")
        if not t:
            continue
        print(f"{r['model']:<14}{_kib(r['default_pass_peak_bytes']):>13}"
              f"{_kib(t['peak_after_bytes']):>11}{'yes' if t['peak_at_most_default'] else 'no':>7}"
              f"{t['modelled_before_ms']:>9.1f}/{t['modelled_after_ms']:<8.1f}"
              f"{t['latency_ours_before_ms']:>10.1f}/{t['latency_ours_after_ms']:<9.1f}"
              f"{t['measured_ratio']:>7.3f}{t['tuner_s']:>8.1f}")


if __name__ == "__main__":
    sys.exit(main())
