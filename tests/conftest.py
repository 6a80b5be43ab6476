"""Pytest hooks of the test suite.

Hypothesis statistics as JSON: with ``MEMFLAT_HYPOTHESIS_STATS=path.json`` in the
environment, every hypothesis test that runs adds to that file, under its node id,
how many test cases hypothesis ran per phase and status and how many carried each
``hypothesis.event`` (the property tests record ``compared: <rewrite>`` for an example
that was compiled and compared, ``skip: <reason>`` for one rejected with
``assume(False)``). ``scripts/bench_property.py`` reads it. Explicit ``@example``
cases are not in hypothesis' statistics and so not counted.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

#: Environment variable naming the JSON file the statistics are written to.
STATS_ENV = "MEMFLAT_HYPOTHESIS_STATS"
#: Phases whose test cases are counted: shrinking replays variants of a failure.
_COUNTED_PHASES = ("reuse", "generate", "target")


def summarize_statistics(stats: dict) -> dict:
    """Counts from hypothesis' raw statistics dict (``hypothesis.statistics``)."""
    phases, events = {}, Counter()
    by_status: dict = {}
    for phase in _COUNTED_PHASES:
        cases = stats.get(f"{phase}-phase", {}).get("test-cases", [])
        if not cases:
            continue
        phases[phase] = dict(Counter(c["status"] for c in cases))
        for case in cases:
            for ev in case.get("events", ()):
                events[ev] += 1
                by_status.setdefault(ev, Counter())[case["status"]] += 1
    statuses = Counter()
    for counts in phases.values():
        statuses.update(counts)
    return {"statuses": dict(statuses), "phases": phases,
            "events": dict(sorted(events.items())),
            "event_statuses": {k: dict(v) for k, v in sorted(by_status.items())},
            "stopped_because": stats.get("stopped-because")}


def _record(path: str, nodeid: str, stats: dict) -> None:
    file = Path(path)
    data = json.loads(file.read_text()) if file.is_file() and file.stat().st_size else {}
    data[nodeid] = summarize_statistics(stats)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(file)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    # pytest_pyfunc_call runs inside pytest_runtest_call, where hypothesis' own pytest
    # plugin installs its statistics collector: chain ours inside it, passing the
    # statistics on, so --hypothesis-show-statistics keeps working.
    path = os.environ.get(STATS_ENV)
    if not path or not hasattr(getattr(pyfuncitem, "obj", None), "hypothesis"):
        return (yield)
    from hypothesis.statistics import collector

    outer = collector.value

    def note(stats):
        _record(path, pyfuncitem.nodeid, stats)
        if outer is not None:
            outer(stats)

    with collector.with_value(note):
        return (yield)
