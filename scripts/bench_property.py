#!/usr/bin/env python
"""The exactness property tests at benchmark scale (>= 1000 examples each).

CI runs the two hypothesis tests of ``tests/test_flatten_memory_peaks.py`` with 200
examples each: random conv/pool chains, and random CNN DAGs (adds, concats,
depthwise convs, odd sizes, recomputed or cached halos), every example tiled
along H or W (drawn), compiled on llvm and compared with the original (max abs
error <= 1e-4 x max |ref|).
This script runs the same tests with ``--examples`` each (default 1000) and
prints and writes how many ran, how long it took, and whether all passed.

    python scripts/bench_property.py [--examples 1000] [--json bench_property.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

TESTS = ("test_property_random_chains_tile_exactly", "test_property_random_dags_tile_exactly")


def main(argv=None) -> int:
    from tvm_memflat._io import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--json", default="bench_property.json")
    args = parser.parse_args(argv)
    if args.examples < 1:
        print("error: --examples must be at least 1", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MEMFLAT_PROPERTY_EXAMPLES=str(args.examples))
    rows = []
    for test in TESTS:
        print(f"{test}: {args.examples} examples ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--hypothesis-show-statistics",
             f"tests/test_flatten_memory_peaks.py::{test}"],
            cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        passed = run.returncode == 0
        if not passed:
            print(run.stdout[-4000:], file=sys.stderr)
        rows.append({"test": test, "examples": args.examples, "passed": passed,
                     "seconds": round(seconds, 1)})
    print(f"{'test':<45}{'examples':>10}{'result':>8}{'seconds':>9}")
    for r in rows:
        print(f"{r['test']:<45}{r['examples']:>10}{'pass' if r['passed'] else 'FAIL':>8}"
              f"{r['seconds']:>9.1f}")
    write_json_atomic(args.json, {"date": date.today().isoformat(),
                                  "machine": platform.processor() or platform.machine(),
                                  "rows": rows})
    print(f"wrote {args.json}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
