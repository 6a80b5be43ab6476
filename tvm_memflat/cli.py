"""The ``memflat`` command line.

Bad input (missing file, not ONNX, dynamic shapes without ``--input-shape``,
unknown spec key, bad output path) prints one line on stderr and exits with
status 2, before any output file is written. Set ``MEMFLAT_DEBUG=1`` to get
tracebacks for unexpected internal errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import MemflatError

PLOT_SUFFIXES = (".png", ".svg")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with status 2."""

    def error(self, message):  # noqa: D102 - argparse hook
        self.exit(2, f"memflat: error: {message} (see memflat {self.prog.split()[-1]} --help)\n")


def progress(message: str) -> None:
    """Progress on long work, on stderr when it is a terminal (so that a failure
    in a script still leaves exactly one line on stderr)."""
    if sys.stderr.isatty() or os.environ.get("MEMFLAT_PROGRESS"):
        print(message, file=sys.stderr, flush=True)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="an .onnx file or a zoo name (vgg16, squeezenet1_1, mobilenet_v2, "
                        "resnet18, inception_v3)")
    p.add_argument("--spec", metavar="SPEC",
                   help="accelerator spec: a TOML path or a name in configs/ "
                        "(vta_like, mcu_256k, edge_npu_1m)")
    p.add_argument("--input-shape", metavar="NAME=1x3x224x224", action="append", default=[],
                   help="static shape for an input with symbolic dims (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="memflat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("profile", help="per-layer activation memory, peak, MACs, TVM allocation")
    _add_model_args(p)
    p.add_argument("--dtype", choices=("float32", "int8"), default=None,
                   help="activation bytes per element: the model's own (float32) or 1 (int8); "
                        "default: float32, or the spec's activation dtype with --spec")
    p.add_argument("--plot", metavar="FILE", help="write the memory timeline (.png or .svg)")
    p.add_argument("--json", metavar="FILE", help="write the machine-readable report")
    p.add_argument("--measure", action="store_true",
                   help="also build with stock TVM and record alloc_storage at run time")
    p.add_argument("--top", type=int, default=8, help="layers to list (default 8)")

    o = sub.add_parser("optimize", help="flatten memory peaks (FlattenMemoryPeaks), verify, "
                                        "measure before/after on llvm")
    _add_model_args(o)
    o.add_argument("--memory-budget", metavar="BYTES", type=_positive_int,
                   help="stop once the modelled fp32 peak is at most this (default: minimise)")
    o.add_argument("--latency-budget", metavar="X",
                   help="tune: lowest peak within X (1.1x of the untiled module, or 3.5ms); "
                        "with --spec and no budget the tuner fits the spec at least latency")
    o.add_argument("--target", choices=("llvm", "vta_like"), default="llvm",
                   help="vta_like: exact llvm results plus the spec's cycle/traffic simulation "
                        "(default spec vta_like)")
    o.add_argument("--halo", choices=("recompute", "cache", "auto"), default="auto")
    o.add_argument("--measure", action="store_true",
                   help="tuner: also time the candidates on llvm and judge the budget on that")
    o.add_argument("--rpc", metavar="KEY@HOST:PORT",
                   help="with --measure: time candidates on the boards of a TVM RPC tracker")
    o.add_argument("--parallel", type=_positive_int, default=1,
                   help="with --rpc: candidates measured at once (default 1)")
    o.add_argument("--no-cache", action="store_true",
                   help="tuner: search again even if a cached result exists")
    o.add_argument("--out", metavar="DIR",
                   help="write optimized.py, report.json and the plots (timeline.png, "
                        "occupancy.png with a spec, pareto.png when tuned) here")
    o.add_argument("--json", metavar="FILE", help="write the before/after report")
    o.add_argument("--plot", metavar="FILE", help="write the before/after timeline overlay")
    o.add_argument("--pareto", metavar="FILE", help="write the tuner's memory/latency plot")
    o.add_argument("--occupancy", metavar="FILE", help="write the SRAM occupancy map (spec)")

    q = sub.add_parser("plan", help="place every lowered buffer in the spec's SRAMs: offsets, "
                                    "spills, DRAM traffic")
    _add_model_args(q)
    q.add_argument("--optimized", action="store_true",
                   help="plan after FlattenMemoryPeaks (with the spec's activation SRAM as "
                        "the memory budget)")
    q.add_argument("--plot", metavar="FILE", help="write the SRAM occupancy map (.png or .svg)")
    q.add_argument("--json", metavar="FILE", help="write the plan as JSON")
    q.add_argument("--csv", metavar="FILE", help="write the per-layer table as CSV")
    q.add_argument("--top", type=int, default=8, help="buffers to list at each peak (default 8)")
    return parser


def _echo_config(config: dict, width: int) -> None:
    """Reports start by echoing the configuration they ran with, one key per line."""
    for key, value in config.items():
        print(f"{key:<{width}}{value}")
    print("", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _check_outputs(args) -> None:
    """Refuse bad output paths before any work, so nothing is half-written."""
    for opt in ("plot", "pareto", "occupancy"):
        plot = getattr(args, opt, None)
        if plot and Path(plot).suffix.lower() not in PLOT_SUFFIXES:
            raise MemflatError(f"--{opt} file must end in .png or .svg: {plot}")
    for opt in ("plot", "json", "csv", "pareto", "occupancy"):
        path = getattr(args, opt, None)
        if path:
            parent = Path(path).resolve().parent
            if parent.exists() and not parent.is_dir():
                raise MemflatError(f"--{opt} folder is not a directory: {parent}")
            if Path(path).is_dir():
                raise MemflatError(f"--{opt} must be a file, got a directory: {path}")


def cmd_profile(args) -> int:
    from .frontend import load_model, model_label, parse_input_shapes
    from .spec import load_spec

    _check_outputs(args)
    shapes = parse_input_shapes(args.input_shape)
    spec = load_spec(args.spec) if args.spec else None
    dtype = args.dtype or (spec.activation_dtype if spec and spec.activation_dtype == "int8"
                           else "float32")
    config = {"model": args.model, "spec": spec.name if spec else "(none)",
              "activations": dtype, "layers": "TVM 0.27 fused groups (llvm default pipeline)"}
    _echo_config(config, width=16)

    from .analysis.fusion import fuse
    from .analysis.memory_profile import profile
    from .reports.summary import profile_summary

    t0 = time.perf_counter()
    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes)
    progress("fusing and profiling ...")
    fused = fuse(mod)
    label = model_label(args.model)
    native = profile(mod, model=label, fused=fused)
    shown = native if dtype == "float32" else profile(mod, model=label, fused=fused,
                                                      activation_dtype="int8", with_tvm=False)
    if args.measure:
        native = _with_runtime_measurement(mod, native)
        if dtype == "float32":
            shown = native
    elapsed = time.perf_counter() - t0

    capacity = spec.activation_capacity_bytes if spec else None
    print(profile_summary(shown, capacity_bytes=capacity,
                          capacity_name=f"{spec.name} activation SRAM" if spec else None,
                          top=args.top))
    if dtype != "float32":
        print(f"\nfloat32 view: peak {native.peak_bytes} B; TVM-allocated "
              f"{native.tvm_allocated_bytes} B")
    print(f"\nprofiled in {elapsed:.1f} s")

    report = shown.to_dict()
    report["float32_peak_bytes"] = native.peak_bytes
    report["tvm_allocated_bytes"] = native.tvm_allocated_bytes
    report["tvm_allocation"] = native.tvm.to_dict() if native.tvm else None
    report["config"] = config
    if spec:
        excess = shown.peak_bytes - capacity
        report["spec"] = {**spec.to_dict(), "required_bytes": shown.peak_bytes,
                          "available_bytes": capacity, "excess_bytes": max(excess, 0),
                          "fits": excess <= 0}
    _write_outputs(args, shown, report, capacity, spec)
    return 0


def _with_runtime_measurement(mod, prof):
    import dataclasses

    from .analysis.tvm_allocation import build_stock, measure_runtime_storage, random_inputs

    progress("building with stock TVM and measuring alloc_storage ...")
    measured, _ = measure_runtime_storage(build_stock(mod), random_inputs(mod["main"]))
    return dataclasses.replace(prof, tvm=dataclasses.replace(prof.tvm,
                                                             runtime_storage_bytes=measured))


def _write_outputs(args, prof, report, capacity, spec) -> None:
    from ._io import write_json_atomic

    if args.plot:
        from .reports.plots import plot_timeline

        plot_timeline(prof, args.plot, capacity_bytes=capacity,
                      capacity_label=f"{spec.name} activation SRAM" if spec else "SRAM")
        print(f"wrote {args.plot}")
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")


def cmd_optimize(args) -> int:
    from .frontend import load_model, model_label, parse_input_shapes
    from .spec import load_spec
    from .transform import FlattenMemoryPeaks
    from .transform.flatten_memory_peaks import step_parts

    _check_outputs(args)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise MemflatError(f"--out must be a directory: {args.out}")
    if args.rpc and not args.measure:
        raise MemflatError("--rpc needs --measure (it says where candidates are timed)")
    shapes = parse_input_shapes(args.input_shape)
    spec = load_spec(args.spec or "vta_like") if (args.spec or args.target == "vta_like") \
        else None
    tuned = args.latency_budget is not None or (spec is not None and args.memory_budget is None)
    if args.pareto and not tuned:
        raise MemflatError("--pareto needs the tuner: give --latency-budget or --spec")
    if args.occupancy and spec is None:
        raise MemflatError("--occupancy needs --spec (or --target vta_like)")
    if args.measure and not tuned:
        raise MemflatError("--measure applies to the tuner: give --latency-budget or --spec")
    budget = None
    if args.latency_budget is not None:
        from .tuner.tuner import LatencyBudget

        budget = LatencyBudget.parse(args.latency_budget)
    rpc = None
    if args.rpc:
        from .tuner.measure import RPCConfig

        rpc = RPCConfig.parse(args.rpc)
    pass_ = FlattenMemoryPeaks(spec, memory_budget=args.memory_budget, halo=args.halo)
    config = {"model": args.model, "spec": spec.name if spec else "(none)",
              "target": args.target, "halo": args.halo}
    if tuned:
        config.update({"search": "tuner over FlattenMemoryPeaks' tilings",
                       "latency_budget": budget.text if budget else "(none: fit the spec)",
                       "cost": f"spec {spec.name} cycle model" if spec else
                               "llvm cost model calibrated on this machine",
                       "measure": f"llvm via RPC {rpc}" if rpc else
                                  "llvm, local" if args.measure else "no"})
    else:
        config.update({"memory_budget": pass_.memory_budget or "(minimise peak)",
                       "mac_overhead_limit": f"{100 * pass_.max_mac_overhead:.0f} %"})
    config.update({"baseline": "stock TVM 0.27, llvm, with operator fusion",
                   "ours": f"tvm_memflat.build (target {args.target})"})
    _echo_config(config, width=20)

    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes)
    label = model_label(args.model)
    t0 = time.perf_counter()
    result = None
    if tuned:
        from .tuner.tuner import tune

        new, result = tune(mod, spec=spec, latency_budget=budget, model=label,
                           measure=args.measure, rpc=rpc, parallel=args.parallel,
                           use_cache=not args.no_cache, progress=progress)
        steps = [f"tiled {ops} ops ending at {out} into {tiles} {axis}-tiles ({halo} halos)"
                 for out, ops, tiles, halo, axis in map(step_parts, result.chosen.path)]
    else:
        progress("flattening memory peaks ...")
        new = pass_(mod)
        steps = [d.describe for d in pass_.decisions]
    pass_s = time.perf_counter() - t0
    return _finish_optimize(args, mod, new, label, spec, config, pass_, result, steps, pass_s)


def _finish_optimize(args, mod, new, label, spec, config, pass_, result, steps, pass_s) -> int:
    """Verify, measure before/after, print the comparison and write every output."""
    import numpy as np

    from .analysis.memory_profile import profile
    from .analysis.tvm_allocation import (
        build_stock,
        measure_latency_ms,
        measure_runtime_storage,
        random_inputs,
    )
    from .reports.summary import format_bytes
    from .targets.build import build_and_measure
    from .transform.flatten_memory_peaks import step_parts

    before, after = profile(mod, model=label), profile(new, model=label)
    if result is None and pass_.memory_budget is not None \
            and after.peak_bytes > pass_.memory_budget:
        raise MemflatError(
            f"memory budget {pass_.memory_budget} B cannot be met: the lowest peak reached is "
            f"{after.peak_bytes} B (fp32) within the MAC overhead limit")
    progress("building before (stock TVM) and after (tvm_memflat.build), verifying, timing ...")
    inputs = random_inputs(mod["main"], seed=1)
    stock = build_stock(mod)
    runtime, ref_out = measure_runtime_storage(stock, inputs)
    b = {"build": "stock TVM (fused)", "peak_bytes": before.peak_bytes,
         "tvm_allocated_bytes": runtime + before.tvm.max_scratch_bytes,
         "runtime_alloc_storage_bytes": runtime,
         "max_scratch_bytes": before.tvm.max_scratch_bytes, "macs": before.macs,
         "latency_ms": round(measure_latency_ms(stock, inputs), 3),
         "peak_layer": before.peak_layer.name}
    ours, allocation, got_out = build_and_measure(new, inputs)
    a = {"build": f"tvm_memflat.build ({args.target})", "peak_bytes": after.peak_bytes,
         "tvm_allocated_bytes": allocation.total_bytes,
         "runtime_alloc_storage_bytes": allocation.runtime_storage_bytes,
         "max_scratch_bytes": allocation.max_scratch_bytes,
         "arena_bytes": allocation.arena_bytes,
         "concats_in_place": allocation.concats_removed, "macs": after.macs,
         "latency_ms": round(measure_latency_ms(ours, inputs), 3),
         "peak_layer": after.peak_layer.name}
    sims = {}
    if args.target == "vta_like":
        from .targets.build import build

        progress("simulating before and after on the spec ...")
        for side, m, out in (("before", mod, b), ("after", new, a)):
            vta = build(m, target="vta_like", spec=spec)
            if side == "after":
                _, vta_out = measure_runtime_storage(vta.executable, inputs)
                if any(not np.array_equal(x, y) for x, y in zip(vta_out, got_out, strict=True)):
                    raise RuntimeError("vta_like and llvm builds disagree")
            sims[side] = vta
            out.update({"cycles": vta.report.total_cycles,
                        "simulated_latency_ms": round(vta.report.latency_ms, 4),
                        "dram_traffic_bytes": vta.report.dram_traffic_bytes,
                        "sram_high_water_bytes": vta.report.high_water_bytes,
                        "fits": vta.report.fits})
    err = max(float(np.abs(x - y).max()) for x, y in zip(ref_out, got_out, strict=True))
    ref = max(float(np.abs(x).max()) for x in ref_out)

    if not steps:
        print("tiling did not pay: no exact rewrite lowered the peak within the limits; "
              "the module is unchanged")
    for line in steps:
        print(line)
    if result is not None:
        c = result.chosen
        print(f"tuner: {result.reason}; {len(result.points)} tilings costed "
              f"({result.cost_model}){' [cached]' if result.cached else ''}")
        print(f"tuner: chosen {format_bytes(c.memory_bytes)} at {c.latency:.3f} ms, untiled "
              f"{format_bytes(result.baseline.memory_bytes)} at "
              f"{result.baseline.latency:.3f} ms"
              + (f", limit {result.limit_ms:.3f} ms" if result.limit_ms else ""))
    keys = [("peak_bytes", format_bytes), ("tvm_allocated_bytes", format_bytes),
            ("runtime_alloc_storage_bytes", format_bytes), ("macs", str), ("latency_ms", str)]
    if sims:
        keys += [("cycles", str), ("dram_traffic_bytes", format_bytes)]
    print(f"\n{'':<28}{'before':>14}{'after':>14}{'change':>10}")
    for key, fmt in keys:
        change = 100.0 * (a[key] / b[key] - 1) if b[key] else 0.0
        print(f"{key:<28}{fmt(b[key]):>14}{fmt(a[key]):>14}{change:>+9.1f}%")
    if sims:
        for name, hw in a["sram_high_water_bytes"].items():
            cap = sims["after"].report.capacity_bytes[name]
            print(f"{'high water ' + name:<28}{format_bytes(b['sram_high_water_bytes'][name]):>14}"
                  f"{format_bytes(hw):>14}   of {format_bytes(cap)}")
    print(f"max_abs_error               {err:.3g} (max |ref| {ref:.3g}); "
          f"search time {pass_s:.1f} s")
    if err > 1e-4 * max(ref, 1e-12):
        raise RuntimeError(f"optimized module differs from the original: {err}")

    report = {"config": {k: str(v) for k, v in config.items()}, "before": b, "after": a,
              "max_abs_error": err, "max_abs_reference": ref, "pass_s": round(pass_s, 2),
              "decisions": [vars(d) for d in pass_.decisions] if result is None else
              [dict(zip(("region_output", "region_ops", "tiles", "halo", "axis"), step_parts(s),
                        strict=True)) for s in result.chosen.path]}
    if result is not None:
        report["tuner"] = result.to_dict()
    if sims:
        report["simulation"] = {side: v.report.to_dict() for side, v in sims.items()}
    _write_optimize_outputs(args, before, after, new, report, spec, pass_, result, sims)
    return 0


def _write_optimize_outputs(args, before, after, new, report, spec, pass_, result, sims):
    from ._io import write_json_atomic, write_text_atomic

    out = Path(args.out) if args.out else None
    targets = {"plot": args.plot or (out / "timeline.png" if out else None),
               "json": args.json or (out / "report.json" if out else None),
               "pareto": args.pareto or (out / "pareto.png" if out and result else None),
               "occupancy": args.occupancy or (out / "occupancy.png" if out and spec else None)}
    capacity = spec.activation_capacity_bytes if spec else pass_.memory_budget
    if targets["plot"]:
        from .reports.plots import plot_timeline

        plot_timeline(before, targets["plot"], compare=after, labels=("original", "optimized"),
                      capacity_bytes=capacity,
                      capacity_label=f"{spec.name} activation SRAM" if spec else "budget")
        print(f"wrote {targets['plot']}")
    if targets["pareto"]:
        from .reports.pareto import plot_pareto

        plot_pareto(result, targets["pareto"],
                    capacity_bytes=spec.activation_capacity_bytes if spec else None)
        print(f"wrote {targets['pareto']}")
    if targets["occupancy"]:
        from .reports.occupancy import plot_occupancy

        if sims:
            plan = sims["after"].plan
        else:
            import tvm

            from .lowering.pipeline import lower
            from .planner.live_ranges import lowered_schedule
            from .planner.sram_plan import plan_for_spec

            plan = plan_for_spec(lowered_schedule(lower(new, tvm.target.Target("llvm"))), spec)
        plot_occupancy(plan, targets["occupancy"])
        print(f"wrote {targets['occupancy']}")
    if out:
        path = out / "optimized.py"
        write_text_atomic(path, "# FlattenMemoryPeaks output; weights are omitted (metadata)\n"
                          + new.script())
        print(f"wrote {path}")
    if targets["json"]:
        write_json_atomic(targets["json"], report)
        print(f"wrote {targets['json']}")


def cmd_plan(args) -> int:
    import tvm

    from .frontend import load_model, parse_input_shapes
    from .lowering.pipeline import lower
    from .planner.live_ranges import lowered_schedule
    from .planner.sram_plan import plan_for_spec
    from .reports.planner_report import plan_csv_rows, plan_summary
    from .spec import load_spec

    _check_outputs(args)
    shapes = parse_input_shapes(args.input_shape)
    spec = load_spec(args.spec or "vta_like")
    config = {"model": args.model, "spec": f"{spec.name} ({spec.path})",
              "activations": f"{spec.compute.activation_dtype} in "
                             f"{spec.memories_for('activations')[0].name}",
              "optimized": "FlattenMemoryPeaks" if args.optimized else "no",
              "pipeline": "tvm_memflat lowering (fused, concat in place, scratch shrunk)"}
    _echo_config(config, width=14)
    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes)
    if args.optimized:
        from .transform import FlattenMemoryPeaks

        progress("flattening memory peaks ...")
        mod = FlattenMemoryPeaks(spec)(mod)
    progress("lowering and planning ...")
    schedule = lowered_schedule(lower(mod, tvm.target.Target("llvm")))
    plan = plan_for_spec(schedule, spec)
    print(plan_summary(plan, schedule, top=args.top))
    from ._io import write_json_atomic, write_text_atomic

    if args.plot:
        from .reports.occupancy import plot_occupancy

        plot_occupancy(plan, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        write_json_atomic(args.json, {"config": config, **plan.to_dict()})
        print(f"wrote {args.json}")
    if args.csv:
        import csv
        import io

        buf = io.StringIO()
        rows = plan_csv_rows(plan, schedule)
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(args.csv, buf.getvalue())
        print(f"wrote {args.csv}")
    return 0


COMMANDS = {"profile": cmd_profile, "optimize": cmd_optimize, "plan": cmd_plan}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``memflat``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MemflatError as err:
        print(f"memflat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memflat: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an internal error: one line unless debugging
        if os.environ.get("MEMFLAT_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"memflat: internal error: {type(err).__name__}: {first} "
              "(set MEMFLAT_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
