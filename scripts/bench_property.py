#!/usr/bin/env python
"""The exactness property tests at benchmark scale (>= 1000 examples each).

CI runs the hypothesis property tests with 200 examples each: random conv/pool
chains and random CNN DAGs (adds, concats, depthwise convs, odd sizes, recomputed
or cached halos), every example tiled along H or W (drawn), and random channel
groups split into slices; each compiled on llvm and compared with the original
(max abs error <= 1e-4 x max |ref|).
This script runs the same tests with ``--examples`` each (default 1000) and
prints and writes, per test, whether it passed, how long it took, and what its
examples really did, from hypothesis' own statistics: how many were compiled and
compared, by which rewrite (the ``compared: <rewrite>`` events), and how many were
rejected and why (the ``skip: <reason>`` events; rejected examples do not count
towards ``--examples``, so that many are compared when the test passes).

    python scripts/bench_property.py [--examples 1000] [--out bench_property.json]
                                     [--test NAME ...]

The statistics come from ``tests/conftest.py``, which writes hypothesis' raw
per-test-case statistics to the JSON file named by ``MEMFLAT_HYPOTHESIS_STATS``;
should that file be missing, the ``--hypothesis-show-statistics`` report is parsed
instead (its percentages, converted back to counts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _meta import ArgParser, bench_meta  # scripts/_meta.py (the script's folder is on sys.path)

#: The property tests, as pytest node ids under the repository root.
TESTS = ("tests/test_flatten_memory_peaks.py::test_property_random_chains_tile_exactly",
         "tests/test_flatten_memory_peaks.py::test_property_random_dags_tile_exactly",
         "tests/test_split_channels.py::test_property_random_groups_split_exactly")
COMPARED, SKIP = "compared: ", "skip: "


def summarize(stats: dict) -> dict:
    """Counts for the report from one test's statistics (see ``tests/conftest.py``)."""
    statuses = Counter(stats.get("statuses", {}))
    events = stats.get("events", {})
    by_status = stats.get("event_statuses", {})
    compared = {e[len(COMPARED):]: n for e, n in events.items() if e.startswith(COMPARED)}
    skipped = {e[len(SKIP):]: n for e, n in events.items() if e.startswith(SKIP)}
    # hypothesis' own "invalid because: failed to satisfy assume() ..." repeats the skips
    notes = {e: n for e, n in events.items()
             if not e.startswith((COMPARED, SKIP, "invalid because"))}
    invalid = statuses["invalid"]
    skip_invalid = sum(by_status.get(SKIP + r, {}).get("invalid", n) for r, n in skipped.items())
    out = {
        "test_cases": sum(statuses.values()),
        "valid": statuses["valid"],
        "compared": sum(compared.values()),
        "compared_by": dict(sorted(compared.items(), key=lambda kv: -kv[1])),
        "skipped": sum(skipped.values()),
        "skipped_by": dict(sorted(skipped.items(), key=lambda kv: -kv[1])),
        # hypothesis ran out of its data buffer while drawing: the test never ran
        "hypothesis_overrun": statuses["overrun"],
        # rejected without a skip event (an assume or filter elsewhere)
        "invalid_without_event": max(invalid - skip_invalid, 0),
        "failing": statuses["interesting"],
        "stopped_because": stats.get("stopped_because"),
    }
    if notes:
        out["notes"] = notes
    return out


_CASES = re.compile(r"(\d+) passing examples, (\d+) failing examples, (\d+) invalid examples")
_EVENT = re.compile(r"^\s*\*\s*([0-9.]+)%,\s*(.+?)\s*$")


def parse_statistics_text(text: str, test: str) -> dict | None:
    """Fallback: ``--hypothesis-show-statistics``' generate-phase report of ``test``, as
    statistics (events from percentages of all test cases, exact below 10000 cases;
    overruns are counted as invalid)."""
    start = text.find(test + ":")
    if start < 0:
        return None
    section = text[start:].split("Stopped because", 1)[0]
    gen = section.split("during generate phase", 1)
    if len(gen) < 2:
        return None
    m = _CASES.search(gen[1])
    if not m:
        return None
    valid, failing, invalid = (int(g) for g in m.groups())
    total = valid + failing + invalid
    events = {}
    for line in gen[1].split("\n  - during", 1)[0].splitlines():
        e = _EVENT.match(line)
        if e:
            events[e.group(2)] = round(float(e.group(1)) * total / 100)
    return {"statuses": {"valid": valid, "interesting": failing, "invalid": invalid},
            "events": events, "event_statuses": {}, "stopped_because": None}


def run_test(root: Path, test: str, examples: int, stats_file: Path) -> dict:
    env = dict(os.environ, MEMFLAT_PROPERTY_EXAMPLES=str(examples),
               MEMFLAT_HYPOTHESIS_STATS=str(stats_file))
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", test],
        cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    passed = run.returncode == 0
    if not passed:
        print(run.stdout[-4000:], run.stderr[-2000:], file=sys.stderr)
    stats, source = None, "conftest"
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text()).get(test)
    if stats is None:
        stats, source = parse_statistics_text(run.stdout, test), "statistics report"
    row = {"test": test.split("::")[-1], "examples": examples, "passed": passed,
           "seconds": round(seconds, 1), "nodeid": test}
    if stats is None:
        row["counts"] = None
        print(f"warning: no hypothesis statistics for {test}", file=sys.stderr)
    else:
        row["counts"] = summarize(stats)
        row["counts_from"] = source
    return row


def table(rows: list[dict]) -> str:
    lines = [f"{'test':<45}{'examples':>9}{'result':>7}{'seconds':>9}"
             f"{'compared':>10}{'skipped':>9}{'overrun':>9}"]
    for r in rows:
        c = r.get("counts") or {}
        lines.append(f"{r['test']:<45}{r['examples']:>9}{'pass' if r['passed'] else 'FAIL':>7}"
                     f"{r['seconds']:>9.1f}{c.get('compared', '?'):>10}"
                     f"{c.get('skipped', '?'):>9}{c.get('hypothesis_overrun', '?'):>9}")
        for what, n in c.get("compared_by", {}).items():
            lines.append(f"    compared  {n:>6}  {what}")
        for why, n in c.get("skipped_by", {}).items():
            lines.append(f"    skipped   {n:>6}  {why}")
        for note, n in c.get("notes", {}).items():
            lines.append(f"    event     {n:>6}  {note}")
        if c.get("invalid_without_event"):
            lines.append(f"    rejected  {c['invalid_without_event']:>6}  without a skip event")
        if c and c.get("valid") != c.get("compared"):
            lines.append(f"    WARNING: {c.get('valid')} valid examples but "
                         f"{c.get('compared')} compared")
    return "\n".join(lines)


def main(argv=None) -> int:
    from tvm_memflat._io import write_json_atomic

    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--out", "--json", dest="out", default="bench_property.json",
                        help="JSON file to write (docs/data/bench_property.json is the "
                             "committed record)")
    parser.add_argument("--test", action="append", default=None,
                        help="run only the tests whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    if args.examples < 1:
        print("error: --examples must be at least 1", file=sys.stderr)
        return 2
    tests = [t for t in TESTS if not args.test or any(s in t for s in args.test)]
    if not tests:
        print(f"error: no property test matches {args.test}", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    meta = bench_meta()  # before the run: the commit and tree the tests ran on
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_property_") as tmp:
        for i, test in enumerate(tests):
            print(f"{test}: {args.examples} examples ...", file=sys.stderr, flush=True)
            rows.append(run_test(root, test, args.examples, Path(tmp) / f"stats{i}.json"))
    print(table(rows))
    import hypothesis

    # commit, dirty (tracked files changed), date, machine {cpu, cores, system, ...}
    write_json_atomic(args.out, {**meta, "hypothesis": hypothesis.__version__, "rows": rows})
    print(f"wrote {args.out}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
