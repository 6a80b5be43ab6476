#!/usr/bin/env python
"""vta_like: per-call tiling of the zoo nets on the buffered VTA-like spec.

Per net (fp32 zoo graph, and its int8 QDQ form with ``--int8``), in one run:

* the vta_like build (``tvm_memflat.build(mod, target="vta_like")``): every call
  tiled (``hardware.call_tiling.plan_buffered``) and the tiling written into its
  kernel's TIR (``targets.tile_tir``); the simulator's replay of the tiled kernels
  the build runs (``targets.tile_sim.replay_kernel``; a kernel left untiled is
  replayed from its tiling record, and the row says how many layers were read from
  TIR; violations raise, so a finished row has 0); its outputs against the llvm
  build's on the same random input (bit-exact, or the largest difference); DRAM
  traffic against the compulsory traffic (weights,
  input, output once) and the per-layer minimum (every activation and weight off
  chip once per layer), cycles against the compute bound (GEMM blocks and vector
  work at the utilisation the channel counts allow) and what holds the cycles
  back (DRAM time or utilisation), and the calls whose buffers force re-reads;
* with ``--exhaustive``, every distinct GEMM call checked against the exhaustive
  reference (``targets.tile_sim.exhaustive_tiling``, each tiling of the space
  replayed): the chooser's traffic must equal the least traffic there.

With ``--fused vta_like_fused``, each net is also built for that spec (vta_like's
buffers plus an on-chip path from the accumulator to the input buffer): the
intermediates :func:`tvm_memflat.hardware.call_tiling.keep_on_chip` keeps on chip,
the activation DRAM traffic against the layer-by-layer build's, violations, TIR
replay and exactness. With ``--fuse`` the regions
:func:`tvm_memflat.tuner.fusion.fuse_regions` chooses (cycles within ``--budget``,
default 1.1x, of the module as given on that spec) are fused first, and the
tuner's time and choices are reported; without it the zoo net is built as given.
Prints a table; writes JSON marked with the commit and the machine.

* latency on this CPU, in one process: the tiled build (the CPU schedule inside each
  tile: :func:`tvm_memflat.targets.tile_tir.tile_kernel`) and the untiled build
  with the default CPU schedules run in turn in each of ``--runs`` rounds (medians,
  and the median of the per-round ratio, which a slow spell of a shared machine
  moves least); the untiled build with no CPU schedule (``schedule=False``, a few
  runs) for scale; the table shows tiled / untiled scheduled (ratio).

    python scripts/bench_vta.py [--models ...] [--int8] [--exhaustive] [--runs N]
                                [--fused vta_like_fused [--fuse] [--budget 1.1]]
                                [--json FILE]
"""

from __future__ import annotations

import json
import sys
import time

from _meta import ArgParser, bench_meta

FIVE = ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18", "inception_v3")


def _outputs(executable, inputs):
    import tvm
    from tvm import relax

    out = relax.VirtualMachine(executable, tvm.cpu())["main"](
        *[tvm.runtime.tensor(x) for x in inputs])
    return [o.numpy() for o in out] if isinstance(out, (list, tuple)) or \
        not hasattr(out, "numpy") else [out.numpy()]


def _median_ms(executable, inputs, runs: int) -> float:
    return _side_by_side({"x": executable}, inputs, runs)["x"]


def _side_by_side(executables: dict, inputs, runs: int) -> dict:
    """Median ms of each executable over ``runs`` rounds, the executables run in turn
    within each round (so a slow spell of this shared machine falls on all of them);
    with two, also the median over rounds of the first's time over the second's."""
    import numpy as np
    import tvm
    from tvm import relax

    args = [tvm.runtime.tensor(x) for x in inputs]
    vms = {k: relax.VirtualMachine(e, tvm.cpu()) for k, e in executables.items()}
    times: dict = {k: [] for k in vms}
    for vm in vms.values():
        vm["main"](*args)   # warm up
    for _ in range(runs):
        for k, vm in vms.items():
            t0 = time.perf_counter()
            vm["main"](*args)
            times[k].append(1000 * (time.perf_counter() - t0))
    out = {k: float(np.median(v)) for k, v in times.items()}
    if len(vms) == 2:
        a, b = (np.array(v) for v in times.values())
        out["ratio"] = float(np.median(a / b))
    return out


def _fused(mod, spec, ref, base, fuse: bool = False, budget: float = 1.1) -> dict:
    """The same module built for a spec with an on-chip path: what stays on chip and
    the activation traffic against the layer-by-layer build ``base``. With ``fuse``,
    the regions :func:`~tvm_memflat.tuner.fusion.fuse_regions` chooses are fused
    first (the tuner's time is reported)."""
    import numpy as np

    from tvm_memflat import build
    from tvm_memflat.tuner.inputs import random_inputs

    fusion = None
    if fuse:
        from tvm_memflat.tuner.fusion import fuse_regions

        mod, fusion = fuse_regions(mod, spec, latency_budget=budget, progress=lambda m: print(
            f"  {m}", file=sys.stderr, flush=True) if not m.startswith("  ") else None)
    t0 = time.perf_counter()
    result = build(mod, target="vta_like", spec=spec)
    build_s = time.perf_counter() - t0
    report = result.report
    ours = _outputs(result.executable, random_inputs(mod["main"], seed=0))
    act, act0 = report.activation_traffic_bytes, base.activation_traffic_bytes
    return {"spec": spec.name, "violations": len(report.violations),
            "dram_traffic_bytes": report.dram_traffic_bytes,
            "activation_traffic_bytes": act,
            "activation_traffic_saved": 1 - act / act0,
            "kept_on_chip": len(result.plan.kept_on_chip),
            "weights_kept": len(result.plan.weights_kept),
            "cycles": report.total_cycles,
            "layers_from_tir": report.layers_from_tir, "layers": len(report.layers),
            "bit_exact_vs_llvm": all(np.array_equal(a, b) for a, b in zip(ours, ref,
                                                                           strict=True)),
            "max_abs_diff_vs_llvm": max(float(np.max(np.abs(a.astype("float64")
                                                             - b.astype("float64"))))
                                        for a, b in zip(ours, ref, strict=True)),
            "lbl_cycles": base.total_cycles,
            "fusion": fusion.to_dict() if fusion is not None else None,
            "build_s": round(build_s, 2)}


def _row(name: str, dtype: str, exhaustive: bool, spec, runs: int = 3,
         fused=None, fuse: bool = False, budget: float = 1.1) -> dict:
    import numpy as np

    from tvm_memflat import build, load_model, zoo
    from tvm_memflat.targets.tile_sim import exhaustive_tiling
    from tvm_memflat.targets.vta_like import traffic_bounds
    from tvm_memflat.tuner.inputs import random_inputs

    mod = load_model(zoo.build(name, dtype=dtype))
    t0 = time.perf_counter()
    result = build(mod, target="vta_like", spec=spec)
    build_s = time.perf_counter() - t0
    schedule, plan, report = result.record.schedule, result.plan, result.report
    # the tiled build against the llvm build (default CPU schedules), same input
    inputs = random_inputs(mod["main"], seed=0)
    llvm = build(mod, "llvm")
    ours, ref = _outputs(result.executable, inputs), _outputs(llvm, inputs)
    # latency on this CPU: the tiled kernels (scheduled inside their tiles) and the
    # untiled ones with the default CPU schedules, in turn in each round; the untiled
    # kernels with no CPU schedule (slow: a few runs) for scale
    latency = {}
    if runs:
        pair = _side_by_side({"tiled": result.executable, "untiled": llvm}, inputs, runs)
        latency = {"tiled_ms": pair["tiled"], "untiled_scheduled_ms": pair["untiled"],
                   "tiled_over_untiled": pair["ratio"], "latency_rounds": runs,
                   "untiled_unscheduled_ms": _median_ms(build(mod, "llvm", schedule=False),
                                                        inputs, min(runs, 3))}
    exact = all(np.array_equal(a, b) for a, b in zip(ours, ref, strict=True))
    max_diff = max(float(np.max(np.abs(a.astype("float64") - b.astype("float64"))))
                   for a, b in zip(ours, ref, strict=True))
    untiled = {k: v.reason for k, v in result.record.kernels.items() if not v.tiled}
    bounds = traffic_bounds(schedule, spec, plan)
    dram = sum(layer.dram_cycles for layer in report.layers)
    compute = sum(layer.compute_cycles for layer in report.layers)
    rereads = sorted(((c.cost.traffic_bytes - c.min_traffic_bytes, c) for c in plan.calls
                      if c.cost.traffic_bytes > c.min_traffic_bytes), key=lambda t: -t[0])
    row = {
        "model": name, "dtype": dtype, "calls": len(plan.calls),
        "violations": len(report.violations),
        "dram_traffic_bytes": report.dram_traffic_bytes,
        "activation_traffic_bytes": report.activation_traffic_bytes,
        "closed_form_traffic_bytes": plan.traffic_bytes,
        "compulsory_traffic_bytes": bounds.compulsory_traffic_bytes,
        "per_layer_min_traffic_bytes": bounds.per_layer_min_traffic_bytes,
        "traffic_over_per_layer_min": report.dram_traffic_bytes
        / bounds.per_layer_min_traffic_bytes,
        "traffic_over_compulsory": report.dram_traffic_bytes / bounds.compulsory_traffic_bytes,
        "weight_traffic_bytes": sum(c.cost.weight_traffic_bytes for c in plan.calls),
        "cycles": report.total_cycles, "closed_form_cycles": plan.cycles,
        "compute_bound_cycles": bounds.compute_bound_cycles,
        "cycles_over_compute_bound": report.total_cycles / bounds.compute_bound_cycles,
        "peak_rate_cycles": sum(-(-s.macs // spec.compute.macs_per_cycle)
                                for s in schedule.steps),
        "dram_cycles": dram, "compute_cycles": compute,
        "held_back_by": "DRAM" if dram > compute else "compute (utilisation)",
        "latency_ms": report.latency_ms,
        "high_water_bytes": dict(report.high_water_bytes),
        "capacity_bytes": dict(report.capacity_bytes),
        "build_s": round(build_s, 2),
        "layers_from_tir": report.layers_from_tir, "layers": len(report.layers),
        "untiled_kernels": untiled,
        "bit_exact_vs_llvm": exact, "max_abs_diff_vs_llvm": max_diff, **latency,
        "top_rereads": [{"step": c.step, "kernel": c.kernel, "extra_bytes": extra,
                         "reason": c.reason} for extra, c in rereads[:5]],
    }
    if fused is not None:
        row["fused"] = _fused(mod, fused, ref, report, fuse, budget)
    if exhaustive:
        # Where the chosen tiling moves exactly the call's per-layer minimum (input,
        # weights and output once: no tiling can move less), it is optimal without a
        # search; every other distinct GEMM call is searched exhaustively.
        seen: dict = {}
        t0 = time.perf_counter()
        for c in plan.calls:
            if c.shape.kind != "gemm" or c.shape in seen:
                continue
            if c.cost.traffic_bytes == c.min_traffic_bytes:
                seen[c.shape] = "at_bound"
                continue
            ref = exhaustive_tiling(c.shape, spec)
            seen[c.shape] = "match" if ref and ref[1].traffic_bytes == c.cost.traffic_bytes \
                else f"mismatch: {c.cost.traffic_bytes} vs {ref[1].traffic_bytes if ref else None}"
        verdicts = list(seen.values())
        row["exhaustive"] = {"distinct_gemm_calls": len(seen),
                             "at_lower_bound": verdicts.count("at_bound"),
                             "searched": len(seen) - verdicts.count("at_bound"),
                             "mismatches": sum(v.startswith("mismatch") for v in verdicts),
                             "seconds": round(time.perf_counter() - t0, 1)}
    return row


def _fused_table(rows: list[dict]) -> str:
    head = (f"{'model':<16}{'dtype':<8}{'act MB lbl':>11}{'act MB fused':>13}{'saved':>7}"
            f"{'kept':>6}{'regions':>8}{'traffic MB':>11}{'Mcycles':>9}{'x lbl':>7}{'viol':>5}"
            f"{'from TIR':>9}{'exact':>6}{'tuner s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        f = r["fused"]
        fu = f["fusion"]
        lines.append(f"{r['model']:<16}{r['dtype']:<8}{r['activation_traffic_bytes'] / 1e6:>11.2f}"
                     f"{f['activation_traffic_bytes'] / 1e6:>13.2f}"
                     f"{100 * f['activation_traffic_saved']:>6.1f}%{f['kept_on_chip']:>6}"
                     f"{len(fu['steps']) if fu else '-'!s:>8}"
                     f"{f['dram_traffic_bytes'] / 1e6:>11.2f}{f['cycles'] / 1e6:>9.2f}"
                     f"{f['cycles'] / f['lbl_cycles']:>7.3f}"
                     f"{f['violations']:>5}{str(f['layers_from_tir']) + '/' + str(f['layers']):>9}"
                     f"{'yes' if f['bit_exact_vs_llvm'] else 'NO':>6}"
                     f"{fu['seconds'] if fu else '-'!s:>8}")
    return "\n".join(lines)


def _ms(r: dict) -> str:
    if "tiled_ms" not in r:
        return "-"
    return (f"{r['tiled_ms']:.1f}/{r['untiled_scheduled_ms']:.1f} "
            f"({r['tiled_over_untiled']:.2f}x)")


def _table(rows: list[dict]) -> str:
    head = (f"{'model':<16}{'dtype':<8}{'calls':>6}{'viol':>5}{'traffic MB':>11}"
            f"{'x min':>7}{'x comp':>7}{'Mcycles':>9}{'x bound':>8}  {'held back by':<22}"
            f"{'from TIR':>9}{'exact':>6}{'build s':>8}{'tiled/sched. ms':>22}"
            f"{'exhaustive':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ex = r.get("exhaustive")
        ex_s = f"{ex['distinct_gemm_calls'] - ex['mismatches']}/{ex['distinct_gemm_calls']}" \
            if ex else "-"
        lines.append(f"{r['model']:<16}{r['dtype']:<8}{r['calls']:>6}{r['violations']:>5}"
                     f"{r['dram_traffic_bytes'] / 1e6:>11.2f}"
                     f"{r['traffic_over_per_layer_min']:>7.3f}{r['traffic_over_compulsory']:>7.2f}"
                     f"{r['cycles'] / 1e6:>9.2f}{r['cycles_over_compute_bound']:>8.2f}  "
                     f"{r['held_back_by']:<22}"
                     f"{str(r['layers_from_tir']) + '/' + str(r['layers']):>9}"
                     f"{'yes' if r['bit_exact_vs_llvm'] else 'NO':>6}{r['build_s']:>8.1f}"
                     f"{_ms(r):>22}{ex_s:>12}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(FIVE))
    parser.add_argument("--int8", action="store_true", help="also the int8 QDQ form of each")
    parser.add_argument("--exhaustive", action="store_true",
                        help="check every distinct GEMM call against the exhaustive reference")
    parser.add_argument("--spec", default="vta_like")
    parser.add_argument("--fused", metavar="SPEC",
                        help="also build for this spec with an on-chip path (vta_like_fused) "
                             "and compare its activation traffic with --spec's")
    parser.add_argument("--fuse", action="store_true",
                        help="with --fused: fuse regions first (tuner.fusion.fuse_regions)")
    parser.add_argument("--budget", type=float, default=1.1,
                        help="with --fuse: cycles within this factor of the module as given")
    parser.add_argument("--runs", type=int, default=15,
                        help="timed rounds, tiled and untiled in turn (medians; 0: no "
                             "timing)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from tvm_memflat.errors import MemflatError
    from tvm_memflat.spec import load_spec

    problem = ("--fuse needs --fused SPEC (a spec with an on-chip path)"
               if args.fuse and not args.fused else
               f"--budget must be at least 1 (the module as given), got {args.budget:g}"
               if args.budget < 1.0 else
               f"--runs must be 0 (no timing) or more, got {args.runs}"
               if args.runs < 0 else None)
    try:
        spec = load_spec(args.spec)
        fused = load_spec(args.fused) if args.fused else None
    except MemflatError as err:
        problem = problem or str(err)
    if problem:
        print(f"bench_vta: error: {problem}", file=sys.stderr)
        return 2
    rows = []
    for i, name in enumerate(args.models):
        for dtype in ("float32", "int8") if args.int8 else ("float32",):
            print(f"[{i + 1}/{len(args.models)}] {name} {dtype} ...", file=sys.stderr,
                  flush=True)
            rows.append(_row(name, dtype, args.exhaustive, spec, args.runs, fused, args.fuse,
                             args.budget))
            print(_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(_table(rows))
    if fused is not None:
        print(f"\nlayer by layer on {spec.name} (lbl) vs {fused.name}: activation DRAM traffic")
        print(_fused_table(rows))
    for r in rows:
        for rr in r["top_rereads"][:2]:
            print(f"  {r['model']} {r['dtype']}: step {rr['step']} {rr['kernel']} "
                  f"+{rr['extra_bytes']} B ({rr['reason']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {**bench_meta(), "spec": args.spec, "fused_spec": args.fused,
                                "fuse_regions": args.fuse, "fusion_budget": args.budget},
                       "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
