#!/usr/bin/env python
"""FlattenMemoryPeaks' time on synthetic conv chains of 100, 300 and 1000 layers.

Each chain is ``depth`` blocks of conv3x3 (8 -> 8 channels) + relu on a 1x8x32x32
input, with a stride-2 conv every 5 blocks until the map is 4x4, so a short region
can reach from one downsampling to the next and end where tensors are small: the
pass has real rewrites to find, not only candidates to reject (with a stride every
20 blocks it found none: the cached halos of 40 layers cost more than they save).
Seeded weights; the pass runs with its defaults. Prints a table (layers, pass
seconds, seconds per layer, peak before/after) and writes JSON, to show whether
the time grows about linearly.

With ``--zoo``, it times the zoo nets instead: the default pass (greedy, 5 % MACs,
input and output in SRAM), the same pass with ``search="front"``, and the full
front as ``scripts/bench_fit.py`` searches it (30 % MACs, beam 2, branch 3), each
with the device bytes it reaches. Each search runs in a fresh process, so none
finds what another left in the process's memos (loading the net is not timed).

    python scripts/bench_pass_time.py [--depths 100 300 1000] [--json bench_pass_time.json]
    python scripts/bench_pass_time.py --zoo [vgg16 ...] [--json bench_pass_time_zoo.json]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _meta import bench_meta

#: Blocks between stride-2 convs (5 blocks = 10 bindings: short enough that the
#: cached halos of a region spanning them cost less than they save).
DOWNSAMPLE_EVERY = 5


def chain(depth: int, seed: int = 0):
    from tvm import relax

    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 32, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h, size = x, 32
            for i in range(depth):
                stride = 2 if i % DOWNSAMPLE_EVERY == DOWNSAMPLE_EVERY - 1 and size > 4 else 1
                size //= stride
                w = relax.const((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype("float32"))
                h = bb.emit(relax.op.nn.conv2d(h, w, strides=stride, padding=1), f"conv{i}")
                h = bb.emit(relax.op.nn.relu(h), f"relu{i}")
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get()


def zoo_one(name: str, search: str, progress) -> dict:
    """One search on one zoo net, in this process: ``greedy`` or ``front`` (the default
    pass), or ``front30`` (the 30 % front, as bench_fit)."""
    from tvm_memflat import load_model, zoo
    from tvm_memflat.frontend.canonicalize import marked_canonical
    from tvm_memflat.passes import FlattenMemoryPeaks
    from tvm_memflat.planner.device_bytes import predict_device_bytes
    from tvm_memflat.transform.search_front import search_front

    mod = load_model(zoo.build(name))
    if search == "front30":
        canon = marked_canonical(mod)
        t0 = time.perf_counter()
        front = search_front(canon, max_mac_overhead=0.30, beam=2, branch=3,
                             evaluate=lambda m: predict_device_bytes(m).total_bytes,
                             progress=progress)
        return {"front30_s": round(time.perf_counter() - t0, 2),
                "front30_points": len(front.points),
                "front30_lowest_bytes": min(p.bytes for p in front.points),
                "base_device_bytes": front.base.bytes}
    pass_ = FlattenMemoryPeaks(search=search, progress=progress)
    t0 = time.perf_counter()
    new = pass_(mod)
    return {f"{search}_s": round(time.perf_counter() - t0, 2),
            f"{search}_device_bytes": predict_device_bytes(new).total_bytes,
            f"{search}_rewrites": [d.describe for d in pass_.decisions]}


def zoo_rows(names, progress) -> list[dict]:
    """The default pass, its front form, and the 30 % front on each zoo net, each
    in a fresh process (see the module doc)."""
    import json
    import subprocess

    rows = []
    for name in names:
        row = {"net": name}
        for search in ("greedy", "front", "front30"):
            progress(f"{name}: {search} ...")
            run = subprocess.run([sys.executable, __file__, "--one", name, search],
                                 capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"{name} {search} failed: {run.stderr[-2000:]}")
            row.update(json.loads(run.stdout.strip().splitlines()[-1]))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.passes import FlattenMemoryPeaks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--json", default="bench_pass_time.json")
    parser.add_argument("--zoo", nargs="*", metavar="NET",
                        help="time the zoo nets instead (default: the five)")
    parser.add_argument("--one", nargs=2, metavar=("NET", "SEARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # a child of --zoo: one search, JSON on the last line
        import json

        print(json.dumps(zoo_one(*args.one, lambda m: None)))
        return 0
    if args.zoo is not None:
        from tvm_memflat import zoo

        names = args.zoo or list(zoo.NAMES)
        unknown = sorted(set(names) - set(zoo.NAMES))
        if unknown:
            print(f"error: unknown zoo net(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        rows = zoo_rows(names, lambda m: print(m, file=sys.stderr, flush=True))
        print(f"{'net':<15}{'base B':>11}{'greedy s':>10}{'bytes':>10}{'front s':>9}"
              f"{'bytes':>10}{'30% front s':>13}{'lowest B':>10}{'pts':>5}")
        for r in rows:
            print(f"{r['net']:<15}{r['base_device_bytes']:>11}{r['greedy_s']:>10.1f}"
                  f"{r['greedy_device_bytes']:>10}{r['front_s']:>9.1f}"
                  f"{r['front_device_bytes']:>10}{r['front30_s']:>13.1f}"
                  f"{r['front30_lowest_bytes']:>10}{r['front30_points']:>5}")
        write_json_atomic(args.json, {**bench_meta(), "zoo": rows})
        print(f"wrote {args.json}")
        return 0
    rows = []
    for depth in args.depths:
        print(f"chain of {depth} conv+relu blocks ...", file=sys.stderr, flush=True)
        mod = chain(depth)
        t0 = time.perf_counter()
        pass_ = FlattenMemoryPeaks()  # the public pass: judged on predicted device bytes
        new = pass_(mod)
        pass_s = time.perf_counter() - t0
        decisions = pass_.decisions
        before = profile(mod, with_tvm=False)
        after = profile(new, with_tvm=False)
        rows.append({"blocks": depth, "layers": len(before.layers),
                     "pass_s": round(pass_s, 2),
                     "ms_per_layer": round(1000 * pass_s / len(before.layers), 2),
                     "decisions": len(decisions), "peak_before_bytes": before.peak_bytes,
                     "peak_after_bytes": after.peak_bytes,
                     "device_bytes_before": decisions[0].peak_before if decisions else None,
                     "device_bytes_after": decisions[-1].peak_after if decisions else None})
    print(f"{'blocks':>7}{'layers':>8}{'pass s':>9}{'ms/layer':>10}{'rewrites':>10}"
          f"{'peak before':>13}{'after':>9}")
    for r in rows:
        print(f"{r['blocks']:>7}{r['layers']:>8}{r['pass_s']:>9.2f}{r['ms_per_layer']:>10.2f}"
              f"{r['decisions']:>10}{r['peak_before_bytes']:>13}{r['peak_after_bytes']:>9}")
    write_json_atomic(args.json, {**bench_meta(),
                                  "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
