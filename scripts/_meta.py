"""What every benchmark JSON is marked with: the commit it ran on and the machine."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_meta() -> dict:
    """``commit`` (with ``dirty``: tracked files changed when it ran), date and machine."""
    try:
        import tvm

        tvm_version = tvm.__version__
    except ImportError:  # pragma: no cover - TVM is a dependency
        tvm_version = "not installed"
    return {"commit": _git("rev-parse", "HEAD"),
            # tracked files changed outside docs/ (earlier benchmark outputs do not count)
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                               ":(exclude)docs")),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                        "system": f"{platform.machine()} {platform.system()}",
                        "python": platform.python_version(), "tvm": tvm_version}}


class ArgParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line on stderr with status 2, not
    the usage block."""

    def error(self, message):  # noqa: D102 - argparse hook
        self.exit(2, f"{self.prog}: error: {message}\n")
