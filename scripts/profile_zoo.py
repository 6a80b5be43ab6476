#!/usr/bin/env python
"""Profile the five zoo networks: params, MACs, modelled peak (fp32, int8), TVM-allocated.

Prints a table and writes a JSON copy (``--json``, default ``profile_zoo.json``).
``--measure`` also builds each model with stock TVM (fusing llvm pipeline), runs it
once and records ``vm.builtin.alloc_storage``, which must equal the static count.

    python scripts/profile_zoo.py [--models resnet18 ...] [--measure] [--json FILE]
"""

from __future__ import annotations

import sys
import time

from _meta import ArgParser, bench_meta


def main(argv=None) -> int:
    from tvm_memflat import zoo
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.analysis.fusion import fuse
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.frontend import load_onnx
    from tvm_memflat.reports.summary import format_bytes, format_count

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES), choices=zoo.NAMES)
    parser.add_argument("--measure", action="store_true",
                        help="build with stock TVM and record alloc_storage at run time")
    parser.add_argument("--json", default="profile_zoo.json")
    args = parser.parse_args(argv)

    rows = []
    for name in args.models:
        print(f"[{len(rows) + 1}/{len(args.models)}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        model = zoo.build(name)
        t_build = time.perf_counter() - t0
        mod = load_onnx(model)
        t_import = time.perf_counter() - t0 - t_build
        t1 = time.perf_counter()
        fused = fuse(mod)
        fp32 = profile(mod, model=name, fused=fused)
        int8 = profile(mod, model=name, fused=fused, activation_dtype="int8", with_tvm=False)
        t_profile = time.perf_counter() - t1
        row = {
            "model": name,
            "input_shape": list(zoo.input_shape(name)),
            "params": zoo.count_params(model),
            "macs": fp32.macs,
            "layers": len(fp32.layers),
            "peak_bytes_fp32": fp32.peak_bytes,
            "peak_bytes_int8": int8.peak_bytes,
            "peak_layer": fp32.peak_layer.name,
            "peak_op": fp32.peak_layer.op,
            "tvm_allocated_bytes": fp32.tvm_allocated_bytes,
            "tvm_planned_storage_bytes": fp32.tvm.planned_storage_bytes,
            "tvm_output_bytes": fp32.tvm.output_bytes,
            "tvm_max_scratch_bytes": fp32.tvm.max_scratch_bytes,
            "tvm_max_scratch_kernel": fp32.tvm.max_scratch_kernel,
            "build_s": round(t_build, 2),
            "import_s": round(t_import, 2),
            "profile_s": round(t_profile, 2),
        }
        if args.measure:
            from tvm_memflat.targets.runtime import measure_runtime_storage
            from tvm_memflat.targets.stock import build_stock
            from tvm_memflat.tuner.inputs import random_inputs

            t2 = time.perf_counter()
            measured, _ = measure_runtime_storage(build_stock(mod), random_inputs(mod["main"]))
            row["runtime_alloc_storage_bytes"] = measured
            row["runtime_matches_static"] = (
                measured == fp32.tvm.planned_storage_bytes + fp32.tvm.output_bytes)
            row["measure_s"] = round(time.perf_counter() - t2, 2)
        rows.append(row)

    head = (f"{'model':<14} {'params':>9} {'MACs':>9} {'layers':>6} {'peak fp32':>11} "
            f"{'peak int8':>11} {'TVM-alloc':>11} {'= planned':>11} {'+ scratch':>11} "
            f"{'profile s':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<14} {format_count(r['params']):>9} {format_count(r['macs']):>9} "
              f"{r['layers']:>6} {format_bytes(r['peak_bytes_fp32']):>11} "
              f"{format_bytes(r['peak_bytes_int8']):>11} "
              f"{format_bytes(r['tvm_allocated_bytes']):>11} "
              f"{format_bytes(r['tvm_planned_storage_bytes'] + r['tvm_output_bytes']):>11} "
              f"{format_bytes(r['tvm_max_scratch_bytes']):>11} {r['profile_s']:>9.2f}")
        if "runtime_alloc_storage_bytes" in r:
            print(f"{'':<14} runtime alloc_storage {r['runtime_alloc_storage_bytes']} B "
                  f"(matches static: {r['runtime_matches_static']}, {r['measure_s']} s)")
    write_json_atomic(args.json, {
        **bench_meta(),
        "tvm_pipeline": "relax.get_default_pipeline(Target('llvm'))",
        "models": rows,
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
