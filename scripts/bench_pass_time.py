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

    python scripts/bench_pass_time.py [--depths 100 300 1000] [--json bench_pass_time.json]
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


def main(argv=None) -> int:
    from tvm_memflat._io import write_json_atomic
    from tvm_memflat.analysis.memory_profile import profile
    from tvm_memflat.passes import FlattenMemoryPeaks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--json", default="bench_pass_time.json")
    args = parser.parse_args(argv)
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
