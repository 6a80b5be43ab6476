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
With ``--before REV``, the default pass (greedy) also runs on the package as it was
at git revision ``REV`` (a temporary worktree on ``PYTHONPATH``), net by net in
turn with ours, so the table sets the two side by side from one run.

    python scripts/bench_pass_time.py [--depths 100 300 1000] [--json bench_pass_time.json]
    python scripts/bench_pass_time.py --zoo [vgg16 ...] [--before REV]
        [--searches greedy front front30] [--json bench_pass_time_zoo.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _meta import ROOT, ArgParser, _git, bench_meta

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


#: What --zoo times: the default pass, its front form, the 30 % front.
SEARCHES = ("greedy", "front", "front30")


def zoo_one(name: str, search: str, progress) -> dict:
    """One search on one zoo net, in this process: ``greedy`` or ``front`` (the default
    pass), or ``front30`` (the 30 % front, as bench_fit)."""
    import tvm_memflat
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
    return {"package": str(Path(tvm_memflat.__file__).parent),
            f"{search}_s": round(time.perf_counter() - t0, 2),
            f"{search}_device_bytes": predict_device_bytes(new).total_bytes,
            f"{search}_rewrites": [d.describe for d in pass_.decisions]}


def _child(name: str, search: str, tree: str | None = None) -> dict:
    """:func:`zoo_one` in a fresh process; ``tree``: import the package from there."""
    import json
    import os
    import subprocess

    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([tree, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run = subprocess.run([sys.executable, __file__, "--one", name, search], env=env,
                         capture_output=True, text=True, check=False, cwd=tree)
    if run.returncode != 0:
        raise RuntimeError(f"{name} {search} failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def zoo_rows(names, progress, searches=SEARCHES, before: str | None = None) -> list[dict]:
    """``searches`` on each zoo net, each in a fresh process (see the module doc); with
    ``before``, the greedy pass on the package at that git revision too."""
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = None
        if before is not None:
            tree = f"{tmp}/before"
            subprocess.run(["git", "worktree", "add", "--detach", tree, before], cwd=ROOT,
                           check=True, capture_output=True)
        try:
            for name in names:
                row = {"net": name}
                if tree is not None:
                    progress(f"{name}: greedy at {before} ...")
                    row.update({f"before_{k}": v for k, v in _child(name, "greedy", tree).items()})
                for search in searches:
                    progress(f"{name}: {search} ...")
                    row.update(_child(name, search))
                rows.append(row)
        finally:
            if tree is not None:
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                               check=False, capture_output=True)
    return rows


def main(argv=None) -> int:
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.passes import FlattenMemoryPeaks

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--json", default="bench_pass_time.json")
    parser.add_argument("--zoo", nargs="*", metavar="NET",
                        help="time the zoo nets instead (default: the five)")
    parser.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    parser.add_argument("--before", metavar="REV",
                        help="with --zoo: also the greedy pass at this git revision")
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
        if args.before is not None and _git("rev-parse", "--verify", "--quiet",
                                            f"{args.before}^{{commit}}") in ("", "unknown"):
            print(f"error: not a git revision: {args.before}", file=sys.stderr)
            return 2
        rows = zoo_rows(names, lambda m: print(m, file=sys.stderr, flush=True),
                        tuple(args.searches), args.before)
        cols = [("before_greedy_s", "greedy s @before"), ("before_greedy_device_bytes", "bytes"),
                ("greedy_s", "greedy s"), ("greedy_device_bytes", "bytes"),
                ("front_s", "front s"), ("front_device_bytes", "bytes"),
                ("front30_s", "30% front s"), ("front30_lowest_bytes", "lowest B"),
                ("front30_points", "pts")]
        cols = [c for c in cols if c[0] in rows[0]]
        print(f"{'net':<15}" + "".join(f"{h:>{max(len(h) + 2, 10)}}" for _, h in cols))
        for r in rows:
            print(f"{r['net']:<15}" + "".join(
                f"{r[k]:>{max(len(h) + 2, 10)}}" for k, h in cols))
        write_json_atomic(args.json, {**bench_meta(), "before": args.before, "zoo": rows})
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
