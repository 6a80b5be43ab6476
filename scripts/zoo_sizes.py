#!/usr/bin/env python3
"""Build every zoo model and compare its size with the published numbers.

Prints one row per model: input shape, parameters, multiply-accumulates,
the published values, the relative errors and the build time. With
``--json PATH`` the same rows are also written to ``PATH`` atomically (a
temporary file in the same folder, then ``os.replace``).

Examples
--------
.. code-block:: console

    $ python scripts/zoo_sizes.py --json out/zoo_sizes.json
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from _meta import ArgParser


def _import_zoo() -> ModuleType:
    """Import ``tvm_memflat.zoo``, falling back to the checkout this script lives in."""
    try:
        from tvm_memflat import zoo
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tvm_memflat import zoo
    return zoo


def measure(names: list[str]) -> list[dict]:
    """Build each model and measure it.

    Parameters
    ----------
    names : list of str
        Zoo model names.

    Returns
    -------
    list of dict
        One record per model with keys ``name``, ``input``, ``params``,
        ``macs``, ``published_params``, ``published_macs``,
        ``params_error_pct``, ``macs_error_pct`` and ``build_s``.
    """
    zoo = _import_zoo()
    rows = []
    for name in names:
        start = time.perf_counter()
        model = zoo.build(name)
        build_s = time.perf_counter() - start
        params = zoo.count_params(model)
        macs = zoo.count_macs(model)
        del model
        gc.collect()
        pub_params, pub_macs = zoo.PUBLISHED[name]
        rows.append(
            {
                "name": name,
                "input": list(zoo.input_shape(name)),
                "params": params,
                "macs": macs,
                "published_params": pub_params,
                "published_macs": pub_macs,
                "params_error_pct": 100.0 * (params - pub_params) / pub_params,
                "macs_error_pct": 100.0 * (macs - pub_macs) / pub_macs,
                "build_s": build_s,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Render the records of `measure` as a fixed-width text table.

    Parameters
    ----------
    rows : list of dict
        Records from `measure`.

    Returns
    -------
    str
        The table, one line per model plus a header and a total line.
    """
    header = (
        f"{'model':<14} {'input':>11} {'params':>12} {'MACs':>15} {'pub params':>11} "
        f"{'pub MACs':>9} {'err p %':>8} {'err MAC %':>9} {'build s':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        inp = "x".join(str(d) for d in r["input"][2:])
        lines.append(
            f"{r['name']:<14} {inp:>11} {r['params']:>12,} {r['macs']:>15,} "
            f"{r['published_params'] / 1e6:>10.3f}M {r['published_macs'] / 1e9:>8.2f}G "
            f"{r['params_error_pct']:>+8.2f} {r['macs_error_pct']:>+9.2f} {r['build_s']:>8.2f}"
        )
    lines.append("-" * len(header))
    lines.append(f"{'total build time':<{len(header) - 9}} {sum(r['build_s'] for r in rows):>8.2f}")
    return "\n".join(lines)


def write_json_atomic(path: Path, data: object) -> None:
    """Write `data` as JSON to `path` via a temporary file in the same folder.

    Parameters
    ----------
    path : pathlib.Path
        Destination; its folder is created if missing.
    data : object
        JSON-serialisable data.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    zoo = _import_zoo()
    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"models to measure (default: all of {', '.join(zoo.NAMES)})",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in zoo.NAMES]
    if unknown:
        choices = ", ".join(zoo.NAMES)
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; choose from {choices}")
    rows = measure(list(args.names) or list(zoo.NAMES))
    print(format_table(rows))
    if args.json is not None:
        write_json_atomic(args.json, {"models": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
