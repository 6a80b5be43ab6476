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

from .errors import MemflatError, ScheduleViolation

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
                        "(vta_like, vta_like_fused, mcu_256k, edge_npu_1m)")
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
    _add_accounting_args(p)

    o = sub.add_parser("optimize", help="flatten memory peaks (FlattenMemoryPeaks), verify, "
                                        "measure before/after on llvm")
    _add_model_args(o)
    o.add_argument("--memory-budget", metavar="BYTES", type=_positive_int,
                   help="greedy pass: stop once the device bytes are at most this "
                        "(default: minimise)")
    o.add_argument("--latency-budget", metavar="X",
                   help="tune: lowest peak within X (1.1x of the untiled module, or 3.5ms); "
                        "with --spec and no budget the tuner fits the spec at least latency")
    o.add_argument("--target", choices=("llvm", "vta_like"), default="llvm",
                   help="vta_like: exact llvm results plus the spec's cycle/traffic simulation "
                        "(default spec vta_like)")
    o.add_argument("--halo", choices=("recompute", "cache", "auto"), default="auto",
                   help="restrict the search (the tuner's too) to this halo mode")
    o.add_argument("--max-mac-overhead", metavar="PCT", type=_percent, default=5.0,
                   help="greedy pass: largest extra MACs in percent (default 5)")
    o.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                   help="int8: optimize a zoo model's QDQ int8 form (integer kernels, int8 "
                        "activations); default float32")
    o.add_argument("--search", choices=("greedy", "front"), default="greedy",
                   help="front: beam search for the device-bytes/MACs front, its lowest point "
                        "within --max-mac-overhead (slower; never above greedy)")
    _add_accounting_args(o)
    o.add_argument("--measure", action="store_true",
                   help="tuner: also time the candidates on llvm and judge the budget on that")
    o.add_argument("--rpc", metavar="KEY@HOST:PORT",
                   help="with --measure: time candidates on the boards of a TVM RPC tracker")
    o.add_argument("--rpc-target", metavar="JSON",
                   help='with --rpc: the boards\' TVM target as JSON, e.g. '
                        '\'{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}\' (default: this host)')
    o.add_argument("--parallel", type=_positive_int, default=1,
                   help="with --rpc: candidates measured at once (default 1)")
    o.add_argument("--no-cache", action="store_true",
                   help="tuner: search again even if a cached result exists")
    o.add_argument("--tune-trials", metavar="N", type=_non_negative_int, default=0,
                   help="llvm kernels: tune their tile sizes with MetaSchedule, N trials "
                        "per built module (database on disk: $MEMFLAT_TUNE_DIR or "
                        "~/.cache/tvm_memflat/tune; resumable). Default 0: the default "
                        "CPU schedules")
    o.add_argument("--threads", metavar="N", type=_positive_int, default=None,
                   help="threads the built kernels run on (default: every core)")
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
                   help="plan after FlattenMemoryPeaks given the spec (the tuner fits it at "
                        "the least latency, as memflat optimize --spec)")
    _add_accounting_args(q)
    q.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                   help="int8: plan a zoo model's QDQ int8 form (real int8 tensors, not a "
                        "view); default float32")
    q.add_argument("--plot", metavar="FILE", help="write the SRAM occupancy map (.png or .svg)")
    q.add_argument("--json", metavar="FILE", help="write the plan as JSON")
    q.add_argument("--csv", metavar="FILE", help="write the per-layer table as CSV")
    q.add_argument("--top", type=int, default=8, help="buffers to list at each peak (default 8)")
    return parser


def _add_accounting_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", choices=("sram", "stream"), default=None,
                   help="counting convention: the network input occupies SRAM until its last "
                        "use (sram) or is streamed from outside (stream); default: the spec's "
                        "[accounting], else sram")
    p.add_argument("--output", choices=("sram", "stream"), default=None,
                   help="the same for the network output")


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def _echo_config(config: dict, width: int) -> None:
    """Reports start by echoing the configuration they ran with, one key per line."""
    for key, value in config.items():
        print(f"{key:<{width}}{value}")
    print("", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
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
    from .spec import Accounting, load_spec

    _check_outputs(args)
    shapes = parse_input_shapes(args.input_shape)
    spec = load_spec(args.spec) if args.spec else None
    dtype = args.dtype or (spec.activation_dtype if spec and spec.activation_dtype == "int8"
                           else "float32")
    acc = Accounting.resolve(args.input, args.output, spec)
    config = {"model": args.model, "spec": spec.name if spec else "(none)",
              "activations": dtype, "layers": "TVM 0.27 fused groups (llvm default pipeline)",
              "input": acc.input, "output": acc.output}
    _echo_config(config, width=16)

    from .analysis.fusion import fuse
    from .reports.summary import profile_summary
    from .workflows import profile

    t0 = time.perf_counter()
    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes)
    progress("fusing and profiling ...")
    fused = fuse(mod)
    label = model_label(args.model)
    native = profile(mod, model=label, fused=fused, input=acc.input, output=acc.output)
    shown = native if dtype == "float32" else profile(mod, model=label, fused=fused,
                                                      activation_dtype="int8", with_tvm=False,
                                                      predict=False)
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
    d = native.device
    print(f"\ndevice bytes of tvm_memflat.build ({acc.input} input, {acc.output} output), "
          f"predicted from its lowered schedule: {d.total_bytes} B (arena {d.arena_bytes} B"
          f"{', input inside' if d.input_in_arena else ''}, output {d.output_bytes} B, "
          f"kernel workspace {d.scratch_bytes} B)")
    print(f"\nprofiled in {elapsed:.1f} s")

    report = shown.to_dict()
    report["float32_peak_bytes"] = native.peak_bytes
    report["tvm_allocated_bytes"] = native.tvm_allocated_bytes
    report["tvm_allocation"] = native.tvm.to_dict() if native.tvm else None
    report["predicted_device_bytes"] = d.total_bytes
    report["device"] = d.to_dict()
    report["config"] = {**config, **acc.to_dict()}
    if spec:
        excess = shown.peak_bytes - capacity
        report["spec"] = {**spec.to_dict(), "required_bytes": shown.peak_bytes,
                          "available_bytes": capacity, "excess_bytes": max(excess, 0),
                          "fits": excess <= 0}
    _write_outputs(args, shown, report, capacity, spec)
    return 0


def _with_runtime_measurement(mod, prof):
    import dataclasses

    from .targets.runtime import measure_runtime_storage
    from .targets.stock import build_stock
    from .tuner.inputs import random_inputs

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


def _labelled(args) -> str:
    from .frontend import model_label

    label = model_label(args.model)
    return f"{label} (int8 QDQ)" if getattr(args, "dtype", "float32") == "int8" else label


def cmd_optimize(args) -> int:
    from .frontend import load_model, parse_input_shapes
    from .reports.optimize_report import optimize_summary
    from .workflows import optimize

    _check_outputs(args)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise MemflatError(f"--out must be a directory: {args.out}")
    if args.rpc and not args.measure:
        raise MemflatError("--rpc needs --measure (it says where candidates are timed)")
    if args.rpc_target and not args.rpc:
        raise MemflatError("--rpc-target needs --rpc (it is the boards' target)")
    tuned = args.latency_budget is not None or (
        (args.spec or args.target == "vta_like") and args.memory_budget is None)
    if args.pareto and not tuned:
        raise MemflatError("--pareto needs the tuner: give --latency-budget or --spec")
    if args.occupancy and not (args.spec or args.target == "vta_like"):
        raise MemflatError("--occupancy needs --spec (or --target vta_like)")
    if args.measure and not tuned:
        raise MemflatError("--measure applies to the tuner: give --latency-budget or --spec")
    rpc = None
    if args.rpc:
        from .tuner.measure import RPCConfig

        rpc = RPCConfig.parse(args.rpc, target=args.rpc_target)
    shapes = parse_input_shapes(args.input_shape)
    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes, dtype=args.dtype)
    result = optimize(mod, spec=args.spec, latency_budget=args.latency_budget,
                      memory_budget=args.memory_budget, halo=args.halo, input=args.input,
                      output=args.output, target=args.target,
                      max_mac_overhead=args.max_mac_overhead / 100.0, measure=args.measure,
                      rpc=rpc, parallel=args.parallel, use_cache=not args.no_cache,
                      label=_labelled(args), progress=progress, search=args.search,
                      tune_trials=args.tune_trials, threads=args.threads)
    _echo_config(result.config, width=20)
    print(optimize_summary(result))
    if result.simulations:
        print(f"\nafter on {result.simulations['after'].report.spec}, per layer:")
        print(result.simulations["after"].report.table())
    _write_optimize_outputs(args, result)
    return 0


def _write_optimize_outputs(args, result) -> None:
    from ._io import write_json_atomic, write_text_atomic

    out = Path(args.out) if args.out else None
    spec = result.spec
    targets = {"plot": args.plot or (out / "timeline.png" if out else None),
               "json": args.json or (out / "report.json" if out else None),
               "pareto": args.pareto or (out / "pareto.png" if out and result.tune_result
                                         else None),
               "occupancy": args.occupancy or (out / "occupancy.png" if out and spec else None)}
    capacity = spec.activation_capacity_bytes if spec else args.memory_budget
    if targets["plot"]:
        from .reports.plots import plot_timeline

        plot_timeline(result.before_profile, targets["plot"], compare=result.after_profile,
                      labels=("original", "optimized"), capacity_bytes=capacity,
                      capacity_label=f"{spec.name} activation SRAM" if spec else "budget")
        print(f"wrote {targets['plot']}")
    if targets["pareto"]:
        from .reports.pareto import plot_pareto

        plot_pareto(result.tune_result, targets["pareto"],
                    capacity_bytes=spec.activation_capacity_bytes if spec else None)
        print(f"wrote {targets['pareto']}")
    if targets["occupancy"]:
        from .reports.occupancy import plot_occupancy
        from .workflows import plan

        plan_ = (result.simulations["after"].plan if result.simulations else
                 plan(result.module, spec=spec, input=result.accounting.input,
                      output=result.accounting.output).spec_plan)
        plot_occupancy(plan_, targets["occupancy"])
        print(f"wrote {targets['occupancy']}")
    if out:
        path = out / "optimized.py"
        write_text_atomic(path, "# FlattenMemoryPeaks output; weights are omitted (metadata)\n"
                          + result.module.script())
        print(f"wrote {path}")
    if targets["json"]:
        write_json_atomic(targets["json"], result.to_json())
        print(f"wrote {targets['json']}")


def cmd_plan(args) -> int:
    from .frontend import load_model, parse_input_shapes
    from .reports.planner_report import (
        buffered_csv_rows,
        buffered_summary,
        plan_csv_rows,
        plan_summary,
    )
    from .workflows import plan

    _check_outputs(args)
    shapes = parse_input_shapes(args.input_shape)
    progress(f"loading {args.model} ...")
    mod = load_model(args.model, shapes, dtype=args.dtype)
    result = plan(mod, spec=args.spec or "vta_like", optimized=args.optimized,
                  input=args.input, output=args.output, progress=progress)
    config = {**result.config, "model": _labelled(args)}
    _echo_config(config, width=14)
    for step in result.steps:
        print(step.describe)
    if result.buffered:
        print(buffered_summary(result.spec_plan, result.bounds, top=args.top))
    else:
        print(plan_summary(result.spec_plan, result.schedule, top=args.top))
    from ._io import write_json_atomic, write_text_atomic

    if args.plot:
        from .reports.occupancy import plot_occupancy

        plot_occupancy(result.spec_plan, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        write_json_atomic(args.json, {**result.to_json(), "config": config})
        print(f"wrote {args.json}")
    if args.csv:
        import csv
        import io

        buf = io.StringIO()
        rows = (buffered_csv_rows(result.spec_plan) if result.buffered else
                plan_csv_rows(result.spec_plan, result.schedule))
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
    except ScheduleViolation as err:
        print(f"memflat: schedule violation (a bug, please report): {err}", file=sys.stderr)
        return 1
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
