#!/usr/bin/env python
"""llvm latency: onnxruntime, stock TVM, and ours with the default CPU schedules.

Per zoo net, in one run, same random input, same thread count:

* ``ort``: onnxruntime's CPU execution provider on the zoo's ONNX model;
* ``stock``: stock TVM 0.27 as a user gets it, ``tvm.compile(mod, Target("llvm"))``
  with the default pipeline (generic x86-64, legalized loops, one thread);
* ``unscheduled``: ``tvm_memflat.build(mod, "llvm", schedule=False)`` (this CPU,
  legalized loops);
* ``before`` / ``after``: ``tvm_memflat.build(mod, "llvm")`` with the default CPU
  schedules (:mod:`tvm_memflat.lowering.cpu_schedule`), on the original module and
  on ``FlattenMemoryPeaks()``'s rewrite of it.

``before`` and ``after`` are timed in turn, round by round (as are the tuned pair),
so that a slow spell of a shared machine slows both alike and their ratio holds.
onnxruntime is timed alone, just before (again before the tuned pair): beside our
runs, its spinning worker threads and TVM's would take the 2 cores from each other.
The unscheduled and stock builds, a hundred times slower, are timed alone.

Also the arena measured at run time (``alloc_storage``) with and without the
schedules, the schedules' largest kernel scratch, which rules scheduled how many
kernels, and whether each output is bit-exact against the unscheduled build.
Prints a table; writes JSON marked with the commit and the machine.

With ``--tune-trials N``, the nets of ``--tune-models`` are also built tuned
(``tvm_memflat.build(..., tune_trials=N)``, a fresh database per net), before and
after, with the trials, the tuning time, and whether they are bit-exact.

    python scripts/bench_llvm.py [--models ...] [--threads N] [--repeat R]
                                 [--no-stock] [--tune-trials N] [--json FILE]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from _meta import ArgParser, bench_meta


def _time_ms(run, repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _time_side_by_side(runs: dict, repeat: int) -> dict:
    """Median ms of each of ``runs``, timed in turn within every round (one warm-up each),
    so that a slow spell of the machine slows all of them, not one: their ratios hold."""
    for run in runs.values():
        run()
    times: dict = {key: [] for key in runs}
    for _ in range(repeat):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[key].append(1000 * (time.perf_counter() - t0))
    return {key: statistics.median(t) for key, t in times.items()}


def _vm_runner(executable, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(x, tvm.cpu())
    return lambda: vm["main"](arg)


def _row(name: str, args) -> dict:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from tvm_memflat import FlattenMemoryPeaks, build, zoo
    from tvm_memflat.frontend import load_onnx
    from tvm_memflat.host import host_target
    from tvm_memflat.lowering.cpu_schedule import rule_counts
    from tvm_memflat.lowering.pipeline import BuildRecord, lower
    from tvm_memflat.targets.runtime import measure_runtime_storage

    model = zoo.build(name)
    mod = load_onnx(model)
    x = np.random.default_rng(0).standard_normal(zoo.input_shape(name)).astype("float32")
    row: dict = {"model": name, "threads": args.threads}

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    row["ort_ms"] = _time_ms(lambda: session.run(None, feed), args.repeat)
    reference = session.run(None, feed)[0]

    if args.stock:
        generic = tvm.target.Target("llvm")
        stock = tvm.compile(mod, generic, relax_pipeline=relax.get_default_pipeline(generic))
        row["stock_ms"] = _time_ms(_vm_runner(stock, x), max(1, args.repeat // 3))

    outputs, builds, runs = {}, {}, {}
    t0 = time.perf_counter()
    rewritten = FlattenMemoryPeaks()(mod)
    row["pass_s"] = round(time.perf_counter() - t0, 1)
    for key, module, schedule in (("unscheduled", mod, False), ("before", mod, True),
                                  ("after", rewritten, True)):
        record = BuildRecord()
        t0 = time.perf_counter()
        executable = build(mod if key != "after" else rewritten, "llvm", schedule=schedule,
                           threads=args.threads, record=record)
        row[f"{key}_build_s"] = round(time.perf_counter() - t0, 1)
        runtime_bytes, (out,) = measure_runtime_storage(executable, [x])
        outputs[key] = out
        builds[key] = (runtime_bytes, record)
        if schedule:
            runs[key] = _vm_runner(executable, x)
        else:
            row[f"{key}_ms"] = _time_ms(_vm_runner(executable, x), max(1, args.repeat // 3))
        del module
    # before and after in turn, round by round
    row.update({f"{key}_ms": ms for key, ms in _time_side_by_side(runs, args.repeat).items()})
    for key, (runtime_bytes, record) in builds.items():
        row[f"{key}_runtime_storage_bytes"] = runtime_bytes
        row[f"{key}_arena_bytes"] = record.plan.arena_bytes
        row[f"{key}_max_scratch_bytes"] = record.schedule.max_scratch_bytes
    if args.tune_trials and name in args.tune_models:
        import tempfile

        # a fresh database per net, so every trial is counted here
        tuned_runs = {}
        with tempfile.TemporaryDirectory() as tune_dir:
            for key, module in (("tuned_before", mod), ("tuned_after", rewritten)):
                record = BuildRecord()
                t0 = time.perf_counter()
                executable = build(module, "llvm", threads=args.threads,
                                   tune_trials=args.tune_trials, tune_dir=tune_dir,
                                   record=record)
                row[f"{key}_build_s"] = round(time.perf_counter() - t0, 1)
                row[f"{key}_tuning"] = record.tuning.to_dict() if record.tuning else None
                runtime_bytes, (out,) = measure_runtime_storage(executable, [x])
                row[f"{key}_bit_exact"] = bool(np.array_equal(
                    out, outputs["before" if key == "tuned_before" else "after"]))
                row[f"{key}_runtime_storage_bytes"] = runtime_bytes
                row[f"{key}_max_scratch_bytes"] = record.schedule.max_scratch_bytes
                tuned_runs[key] = _vm_runner(executable, x)
        row["tuned_ort_ms"] = _time_ms(lambda: session.run(None, feed), args.repeat)
        row.update({f"{key}_ms": ms
                    for key, ms in _time_side_by_side(tuned_runs, args.repeat).items()})
        row["tuned_before_vs_ort"] = round(row["tuned_before_ms"] / row["tuned_ort_ms"], 2)
        row["tuned_after_vs_before"] = round(row["tuned_after_ms"] / row["tuned_before_ms"], 3)
    row["rules"] = rule_counts(lower(mod, host_target()))
    row["scheduled_bit_exact"] = bool(np.array_equal(outputs["before"], outputs["unscheduled"]))
    row["after_max_abs_error"] = float(np.abs(outputs["after"].astype("float64")
                                              - outputs["before"]).max())
    row["ort_max_abs_error"] = float(np.abs(outputs["before"].astype("float64")
                                            - reference).max())
    row["arena_unchanged"] = (builds["before"][0] == builds["unscheduled"][0])
    row["before_vs_ort"] = round(row["before_ms"] / row["ort_ms"], 2)
    row["after_vs_before"] = round(row["after_ms"] / row["before_ms"], 3)
    row["speedup_vs_unscheduled"] = round(row["unscheduled_ms"] / row["before_ms"], 1)
    if args.stock:
        row["speedup_vs_stock"] = round(row["stock_ms"] / row["before_ms"], 1)
    return row


def main(argv=None) -> int:
    from tvm_memflat import zoo
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.host import default_threads, host_target, set_threads

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES),
                        choices=(*zoo.NAMES, *zoo.FAMILIES))
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--repeat", type=int, default=10, help="timed runs (median)")
    parser.add_argument("--no-stock", dest="stock", action="store_false",
                        help="skip stock TVM (slow: minutes on VGG-16)")
    parser.add_argument("--tune-trials", type=int, default=0,
                        help="also build tuned (MetaSchedule, this many trials per module)")
    parser.add_argument("--tune-models", nargs="+",
                        default=["squeezenet1_1", "mobilenet_v2", "resnet18"],
                        help="the nets --tune-trials applies to")
    parser.add_argument("--json", default="bench_llvm.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    rows = []
    for i, name in enumerate(args.models):
        print(f"[{i + 1}/{len(args.models)}] {name}: onnxruntime, stock, ours ...",
              file=sys.stderr, flush=True)
        rows.append(_row(name, args))
        _print(rows[-1:], args, header=i == 0)
    before = [r["before_vs_ort"] for r in rows]
    summary = {"median_before_vs_ort": statistics.median(before),
               "max_before_vs_ort": max(before),
               "max_after_vs_before": max(r["after_vs_before"] for r in rows),
               "all_bit_exact": all(r["scheduled_bit_exact"] for r in rows),
               "all_arenas_unchanged": all(r["arena_unchanged"] for r in rows)}
    tuned = [r for r in rows if "tuned_before_ms" in r]
    if tuned:
        summary["tune_trials"] = args.tune_trials
        summary["max_tuned_before_vs_ort"] = max(r["tuned_before_vs_ort"] for r in tuned)
        for r in tuned:
            print(f"{r['model']:<14} tuned ({args.tune_trials} trials): before "
                  f"{r['tuned_before_ms']:.1f} ms ({r['tuned_before_vs_ort']:.2f}x ort), after "
                  f"{r['tuned_after_ms']:.1f} ms; tuning "
                  f"{r['tuned_before_tuning']['seconds']:.0f} + "
                  f"{r['tuned_after_tuning']['seconds']:.0f} s; bit-exact "
                  f"{r['tuned_before_bit_exact'] and r['tuned_after_bit_exact']}")
    print(f"median ours/onnxruntime {summary['median_before_vs_ort']:.2f}x, "
          f"max {summary['max_before_vs_ort']:.2f}x; max after/before "
          f"{summary['max_after_vs_before']:.3f}; bit-exact {summary['all_bit_exact']}; "
          f"arenas unchanged {summary['all_arenas_unchanged']}")
    write_json_atomic(args.json, {**bench_meta(), "target": str(host_target()),
                                  "threads": args.threads, "repeat": args.repeat,
                                  "summary": summary, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def _print(rows, args, header: bool) -> None:
    if header:
        print(f"{'model':<14}{'ort ms':>8}{'stock ms':>10}{'unsched':>9}{'before':>8}"
              f"{'after':>8}{'ours/ort':>9}{'aft/bef':>8}{'arena same':>11}{'exact':>6}")
    for r in rows:
        stock = f"{r['stock_ms']:>10.0f}" if "stock_ms" in r else f"{'-':>10}"
        print(f"{r['model']:<14}{r['ort_ms']:>8.1f}{stock}{r['unscheduled_ms']:>9.0f}"
              f"{r['before_ms']:>8.1f}{r['after_ms']:>8.1f}{r['before_vs_ort']:>9.2f}"
              f"{r['after_vs_before']:>8.3f}{str(r['arena_unchanged']):>11}"
              f"{str(r['scheduled_bit_exact']):>6}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
