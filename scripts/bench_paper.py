#!/usr/bin/env python
"""FlattenMemoryPeaks on the five zoo nets, against the seed paper (62.9 % at 8.6 %).

For each model, measured side by side in one run: modelled peak before/after,
TVM-allocated bytes (run-time ``vm.builtin.alloc_storage`` + the largest kernel
scratch) of the original built by stock TVM with fusion (the baseline) and of the
optimized module built by ``tvm_memflat.build`` (in-place concatenation, one
offset-planned arena) — plus, for reference, the original built by
``tvm_memflat.build`` and the optimized one built by stock TVM — MAC overhead,
llvm latency baseline vs ours (``time_evaluator``, same process), pass time, and
the max abs error on a random input. Prints a table, writes JSON and one
before/after timeline overlay per model.

    python scripts/bench_paper.py [--models ...] [--json bench_paper.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

PAPER_SAVING_PCT, PAPER_OVERHEAD_PCT = 62.9, 8.6


def main(argv=None) -> int:
    from tvm_memflat import FlattenMemoryPeaks, zoo
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.analysis.tvm_allocation import (
        build_stock,
        measure_latency_ms,
        measure_runtime_storage,
        random_inputs,
    )
    from tvm_memflat.frontend import load_model
    from tvm_memflat.targets.build import build_and_measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES), choices=zoo.NAMES)
    parser.add_argument("--json", default="bench_paper.json")
    parser.add_argument("--plots", default="bench_plots", help="folder for overlay plots")
    parser.add_argument("--repeat", type=int, default=3, help="latency repeats (median)")
    parser.add_argument("--halos", nargs="+", default=["auto", "recompute", "cache"],
                        choices=("auto", "recompute", "cache"))
    args = parser.parse_args(argv)

    rows = []
    for m, name in enumerate(args.models):
        mod = load_model(name)
        before = profile(mod, model=name)
        x = random_inputs(mod["main"], seed=1)
        ex_before = build_stock(mod)
        rt_before, (y_before,) = measure_runtime_storage(ex_before, x)
        _, ours_before, (y_ours_before,) = build_and_measure(mod, x)
        lat_before = measure_latency_ms(ex_before, x, args.repeat)
        stock_total = rt_before + before.tvm.max_scratch_bytes
        for halo in args.halos:
            print(f"[{m + 1}/{len(args.models)}] {name}, halo={halo}: pass, build, run, time ...",
                  file=sys.stderr, flush=True)
            pass_ = FlattenMemoryPeaks(halo=halo)
            t0 = time.perf_counter()
            new = pass_(mod)
            pass_s = time.perf_counter() - t0
            after = profile(new, model=name)
            ex_after, ours_after, (y_after,) = build_and_measure(new, x)
            rt_stock_after, _ = measure_runtime_storage(build_stock(new), x)
            rt_after = ours_after.runtime_storage_bytes
            lat_after = measure_latency_ms(ex_after, x, args.repeat)
            rows.append(_row(name, halo, before, after, rt_before, stock_total, ours_before,
                             ours_after, rt_after, rt_stock_after, lat_before, lat_after,
                             pass_s, pass_, y_before, y_after, y_ours_before, args.plots))
    _print_and_write(rows, args)
    return 0


def _row(name, halo, before, after, rt_before, stock_total, ours_before, ours_after, rt_after,
         rt_stock_after, lat_before, lat_after, pass_s, pass_, y_before, y_after, y_ours_before,
         plots):
    """One (model, halo) row of the table and JSON."""
    from tvm_memflat.reports.plots import plot_timeline

    plot = Path(plots) / f"{name}_overlay.png" if halo == "auto" else \
        Path(plots) / f"{name}_{halo}_overlay.png"
    plot_timeline(before, plot, compare=after, labels=("original", "FlattenMemoryPeaks"))
    side = {}
    for key, prof, rt, total, lat, build_name in (
            ("before", before, rt_before, stock_total, lat_before, "stock TVM (fused)"),
            ("after", after, rt_after, ours_after.total_bytes, lat_after,
             "tvm_memflat.build")):
        side[key] = {"peak_bytes": prof.peak_bytes,
                     "tvm_allocated_bytes": total, "build": build_name,
                     "runtime_alloc_storage_bytes": rt,
                     "macs": prof.macs, "latency_ms": round(lat, 2),
                     "peak_layer": prof.peak_layer.name}
    side["before"]["max_scratch_bytes"] = before.tvm.max_scratch_bytes
    side["after"]["max_scratch_bytes"] = ours_after.max_scratch_bytes
    reference = {
        "original_tvm_memflat_build": ours_before.to_dict(),
        "optimized_stock_runtime_alloc_storage_bytes": rt_stock_after,
        "optimized_stock_static_tvm_allocated_bytes": after.tvm_allocated_bytes,
    }
    assert np.array_equal(y_ours_before, y_before), "tvm_memflat.build changed the output"
    return {
        "model": name, "halo": halo, "before": side["before"], "after": side["after"],
        "peak_reduction_pct": round(100 * (1 - after.peak_bytes / before.peak_bytes), 2),
        "tvm_allocated_reduction_pct": round(
            100 * (1 - ours_after.total_bytes / stock_total), 2),
        "runtime_storage_reduction_pct": round(100 * (1 - rt_after / rt_before), 2),
        "mac_overhead_pct": round(100 * (after.macs / before.macs - 1), 3),
        "latency_ratio": round(lat_after / lat_before, 3),
        "pass_s": round(pass_s, 2),
        "max_abs_error": float(np.abs(y_after - y_before).max()),
        "max_abs_ref": float(np.abs(y_before).max()),
        "decisions": [vars(d) for d in pass_.decisions],
        "plot": str(plot),
        "reference_builds": reference,
    }


def _print_and_write(rows, args):
    from tvm_memflat._io import write_json_atomic

    head = (f"{'model':<14} {'halo':<9} {'peak before':>12} {'after':>12} {'red %':>7} "
            f"{'MAC +%':>7} "
            f"{'TVM-alloc red %':>15} {'runtime red %':>13} {'lat ratio':>9} {'pass s':>7} "
            f"{'max err':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<14} {r['halo']:<9} {r['before']['peak_bytes']:>12} "
              f"{r['after']['peak_bytes']:>12} "
              f"{r['peak_reduction_pct']:>7.1f} {r['mac_overhead_pct']:>7.2f} "
              f"{r['tvm_allocated_reduction_pct']:>15.1f} "
              f"{r['runtime_storage_reduction_pct']:>13.1f} {r['latency_ratio']:>9.3f} "
              f"{r['pass_s']:>7.1f} {r['max_abs_error']:>9.2e}")
    averages = {}
    for halo in args.halos:
        sel = [r for r in rows if r["halo"] == halo]
        avg = {k: round(float(np.mean([r[k] for r in sel])), 2) for k in
               ("peak_reduction_pct", "mac_overhead_pct", "tvm_allocated_reduction_pct",
                "runtime_storage_reduction_pct", "latency_ratio", "pass_s")}
        averages[halo] = avg
        print(f"{'average':<14} {halo:<9} {'':>12} {'':>12} {avg['peak_reduction_pct']:>7.1f} "
              f"{avg['mac_overhead_pct']:>7.2f} {avg['tvm_allocated_reduction_pct']:>15.1f} "
              f"{avg['runtime_storage_reduction_pct']:>13.1f} {avg['latency_ratio']:>9.3f}")
    print(f"seed paper: {PAPER_SAVING_PCT} % saving at {PAPER_OVERHEAD_PCT} % overhead")
    write_json_atomic(args.json, {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "baseline": "stock TVM 0.27, relax.get_default_pipeline(llvm) (with FuseOps)",
        "ours": "FlattenMemoryPeaks, then tvm_memflat.build (concat in place, offset arena)",
        "halos": args.halos, "paper": {"saving_pct": PAPER_SAVING_PCT,
                                       "overhead_pct": PAPER_OVERHEAD_PCT},
        "average": averages, "models": rows,
    })
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
