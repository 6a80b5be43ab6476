#!/usr/bin/env python
"""FlattenMemoryPeaks on every torchvision classification CNN up to 6 GMACs, three imports each.

Every model of ``torchvision.models.list_models(module=torchvision.models)`` except
the transformers (``vit_``, ``swin_``, ``maxvit_``) and those above ``--limit-gmacs``
(torchvision's published GFLOPS, i.e. MACs, in :data:`PUBLISHED_GMACS`), with random
weights (``torch.manual_seed(0)``, ``weights=None``), in eval mode, batch 1, at the
resolution its published figure is for. Each model goes through three import paths:

* ``loader``: ``torch.onnx.export`` (opset 17) to an ``.onnx`` file in the cache,
  then :func:`tvm_memflat.load_model`;
* ``onnx``: the same file through ``tvm.relax.frontend.onnx.from_onnx(...,
  keep_params_in_input=False)``;
* ``torch``: ``from_exported_program(torch.export.export(model, (x,)),
  keep_params_as_input=False)``.

``--zoo`` runs ``tvm_memflat.zoo.NAMES`` (and ``zoo.FAMILIES`` where it exists)
instead, with paths ``loader``, ``onnx`` and ``onnx_params`` (``from_onnx(...,
keep_params_in_input=True)``, the weights detached with ``detach_params`` and
passed at run time after the input); it needs no torch.

Per (model, path), on one seeded random input: the pass
``tvm.transform.Sequential([tvm_memflat.FlattenMemoryPeaks()])`` (defaults: greedy,
input and output in SRAM) timed; then the module before and after, both built by
``tvm_memflat.build``, with device bytes predicted
(:func:`~tvm_memflat.planner.device_bytes.predict_device_bytes`) and measured
(:func:`~tvm_memflat.targets.build.build_and_measure`) under ``input="sram"`` and
``input="stream"`` (output in SRAM for both; the input convention changes the
build, so each is built and run on its own); MACs before and after; the max abs
error of after vs before relative to max |before| (criterion <= 1e-4); the
pass's decisions and why it stopped (its log); and, from torchvision, the torch
model's output against the TVM "before" output.

One JSON record per (model, path) is cached under ``--cache`` keyed by the commit;
a rerun skips the records it has (``--fresh`` redoes them, ``--retry-errors`` the
failed ones). A failure is recorded with its one-line error and the bench goes on.

    python scripts/bench_wide.py [--models a,b] [--paths loader,onnx,torch]
        [--limit-gmacs 6] [--cache .bench_cache/wide] [--json F] [--table F]
    python scripts/bench_wide.py --zoo [--models squeezenet1_1] [--paths loader,onnx]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _meta import ArgParser, bench_meta

#: The rewritten module must compute the same function (design.md §5).
TOLERANCE = 1e-4
#: Predicted vs measured device bytes, and the same model's paths, agree within this.
AGREEMENT = 0.01
SEED = 0
OPSET = 17
TORCH_PATHS = ("loader", "onnx", "torch")
ZOO_PATHS = ("loader", "onnx", "onnx_params")
TRANSFORMER_PREFIXES = ("vit_", "swin_", "maxvit_")
CONVENTIONS = ("sram", "stream")

#: torchvision's published GFLOPS (multiply-accumulates, in G) per classification model,
#: and the input side they are given for (the weights' eval crop; 224 unless listed).
PUBLISHED_GMACS: dict[str, float] = {
    "alexnet": 0.71,
    "convnext_tiny": 4.46, "convnext_small": 8.68, "convnext_base": 15.36,
    "convnext_large": 34.36,
    "densenet121": 2.83, "densenet161": 7.73, "densenet169": 3.36, "densenet201": 4.29,
    "efficientnet_b0": 0.39, "efficientnet_b1": 0.69, "efficientnet_b2": 1.09,
    "efficientnet_b3": 1.83, "efficientnet_b4": 4.39, "efficientnet_b5": 10.27,
    "efficientnet_b6": 19.07, "efficientnet_b7": 37.75,
    "efficientnet_v2_s": 8.37, "efficientnet_v2_m": 24.58, "efficientnet_v2_l": 56.08,
    "googlenet": 1.50,
    "inception_v3": 5.71,
    "maxvit_t": 5.56,
    "mnasnet0_5": 0.10, "mnasnet0_75": 0.21, "mnasnet1_0": 0.31, "mnasnet1_3": 0.53,
    "mobilenet_v2": 0.30, "mobilenet_v3_large": 0.22, "mobilenet_v3_small": 0.06,
    "regnet_x_400mf": 0.41, "regnet_x_800mf": 0.80, "regnet_x_1_6gf": 1.60,
    "regnet_x_3_2gf": 3.18, "regnet_x_8gf": 8.00, "regnet_x_16gf": 15.94,
    "regnet_x_32gf": 31.74,
    "regnet_y_400mf": 0.40, "regnet_y_800mf": 0.83, "regnet_y_1_6gf": 1.61,
    "regnet_y_3_2gf": 3.18, "regnet_y_8gf": 8.47, "regnet_y_16gf": 15.91,
    "regnet_y_32gf": 32.28, "regnet_y_128gf": 127.52,
    "resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80,
    "resnet152": 11.51,
    "resnext50_32x4d": 4.23, "resnext101_32x8d": 16.41, "resnext101_64x4d": 15.46,
    "shufflenet_v2_x0_5": 0.04, "shufflenet_v2_x1_0": 0.14, "shufflenet_v2_x1_5": 0.30,
    "shufflenet_v2_x2_0": 0.58,
    "squeezenet1_0": 0.82, "squeezenet1_1": 0.35,
    "vgg11": 7.61, "vgg11_bn": 7.61, "vgg13": 11.31, "vgg13_bn": 11.31, "vgg16": 15.47,
    "vgg16_bn": 15.47, "vgg19": 19.63, "vgg19_bn": 19.63,
    "wide_resnet50_2": 11.40, "wide_resnet101_2": 22.75,
}
RESOLUTION: dict[str, int] = {
    "inception_v3": 299, "efficientnet_b1": 240, "efficientnet_b2": 288,
    "efficientnet_b3": 300, "efficientnet_b4": 380, "efficientnet_b5": 456,
    "efficientnet_b6": 528, "efficientnet_b7": 600, "efficientnet_v2_s": 384,
    "efficientnet_v2_m": 480, "efficientnet_v2_l": 480,
}


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}"[:400]


# --------------------------------------------------------------------------- models


def torchvision_models(limit_gmacs: float, names: list[str] | None) -> tuple[list[str], dict]:
    """The torchvision CNNs to run, and the ones left out (name -> why)."""
    import torchvision

    listed = torchvision.models.list_models(module=torchvision.models)
    skipped = {}
    if names:
        for n in names:
            if n not in listed:
                raise SystemExit(f"bench_wide: {n!r} is not a torchvision classification model")
            if PUBLISHED_GMACS.get(n, 0) > limit_gmacs:
                _progress(f"note: {n} is above {limit_gmacs:g} GMACs; run since it was named")
        return names, skipped
    chosen = []
    for n in listed:
        if n.startswith(TRANSFORMER_PREFIXES):
            skipped[n] = "transformer"
        elif n not in PUBLISHED_GMACS:
            skipped[n] = "not in the published GMACs table"
        elif PUBLISHED_GMACS[n] > limit_gmacs:
            skipped[n] = f"{PUBLISHED_GMACS[n]:g} GMACs"
        else:
            chosen.append(n)
    return chosen, skipped


def zoo_models(names: list[str] | None) -> list[str]:
    from tvm_memflat import zoo

    listed = list(dict.fromkeys([*zoo.NAMES, *getattr(zoo, "FAMILIES", ())]))
    if names:
        unknown = [n for n in names if n not in listed]
        if unknown:
            raise SystemExit(f"bench_wide: not in the zoo: {', '.join(unknown)} "
                             f"(zoo: {', '.join(listed)})")
        return names
    return listed


class TorchSource:
    """One torchvision model, built once: its ONNX export (cached), its reference output."""

    def __init__(self, name: str, cache: Path):
        import torch
        import torchvision

        self.name = name
        side = RESOLUTION.get(name, 224)
        self.shape = (1, 3, side, side)
        torch.manual_seed(SEED)
        self.model = torchvision.models.get_model(name, weights=None).eval()
        self.x = np.random.default_rng(SEED).standard_normal(self.shape).astype("float32")
        with torch.no_grad():
            out = self.model(torch.from_numpy(self.x))
        self.reference = [t.detach().numpy() for t in (out if isinstance(out, (tuple, list))
                                                       else (out,))]
        stem = f"{name}_{side}_opset{OPSET}_torch{torch.__version__}"
        self.onnx_path = cache / "onnx" / f"{stem}.onnx"
        self.exporter = "cached export" if self.onnx_path.exists() else None

    def onnx_file(self) -> Path:
        import torch

        if self.onnx_path.exists():
            return self.onnx_path
        self.onnx_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.onnx_path.with_suffix(".tmp.onnx")
        kwargs = {"opset_version": OPSET, "input_names": ["input"], "output_names": ["logits"]}
        try:
            torch.onnx.export(self.model, (torch.from_numpy(self.x),), str(tmp), dynamo=False,
                              **kwargs)
            self.exporter = "torchscript (dynamo=False)"
        except Exception as err:  # noqa: BLE001 - the TorchScript exporter may be gone
            _progress(f"  {self.name}: torch.onnx.export(dynamo=False) failed "
                      f"({_one_line(err)}); trying dynamo=True")
            torch.onnx.export(self.model, (torch.from_numpy(self.x),), str(tmp), dynamo=True,
                              external_data=False, **kwargs)
            self.exporter = "dynamo"
        tmp.replace(self.onnx_path)
        return self.onnx_path


def import_module(source, path: str, zoo_mode: bool):
    """``(module, extra run-time arguments after the input, notes)`` for one import path."""
    import onnx
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    from tvm_memflat import load_model

    if zoo_mode:
        from tvm_memflat import zoo

        proto = zoo.build(source)
        if path == "loader":
            return load_model(proto), [], {}
        if path == "onnx":
            return from_onnx(proto, keep_params_in_input=False), [], {}
        if path == "onnx_params":
            mod, params = detach_params(from_onnx(proto, keep_params_in_input=True))
            weights = [p.numpy() for p in params.get("main", [])]
            return mod, weights, {"weights_as_parameters": len(weights)}
        raise ValueError(f"unknown zoo path {path!r}")
    if path == "loader":
        return load_model(str(source.onnx_file())), [], {"exporter": source.exporter}
    if path == "onnx":
        proto = onnx.load(str(source.onnx_file()))
        return from_onnx(proto, keep_params_in_input=False), [], {"exporter": source.exporter}
    if path == "torch":
        import torch
        from tvm.relax.frontend.torch import from_exported_program

        ep = torch.export.export(source.model, (torch.from_numpy(source.x),))
        return from_exported_program(ep, keep_params_as_input=False), [], {}
    raise ValueError(f"unknown torchvision path {path!r}")


# --------------------------------------------------------------------------- one record


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_pass(mod):
    """The public pass in a Sequential: ``(new module, pass object, seconds, log lines)``."""
    import tvm

    import tvm_memflat

    logger = logging.getLogger("tvm_memflat")
    capture, old_level = _Capture(), logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        pass_ = tvm_memflat.FlattenMemoryPeaks()
        t0 = time.perf_counter()
        new = tvm.transform.Sequential([pass_])(mod)
        seconds = time.perf_counter() - t0
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    return new, pass_, seconds, capture.messages


def stop_reason(pass_, log: list[str]) -> str:
    """Why the greedy search stopped: the pass's own field if it has one, else its log."""
    for attr in ("stop_reason", "stopped_because", "reason"):
        value = getattr(pass_, attr, None)
        if value:
            return str(value)
    stops = [m for m in log if "no exact rewrite" in m or "stop" in m.lower()]
    if stops:
        reason = stops[-1].removeprefix("FlattenMemoryPeaks: ")
    elif pass_.decisions and len(pass_.decisions) >= 8:
        reason = "round limit reached (8 rounds)"
    elif pass_.memory_budget is not None:
        reason = "memory budget reached"
    else:
        reason = "no reason logged"
    if pass_.decisions or "unchanged" in reason:
        return reason
    return f"unchanged: {reason}"


def measure(mod, inputs: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
    """Device bytes of ``mod`` (ours) predicted and measured under both input conventions,
    and its outputs (from the input-in-SRAM build)."""
    from tvm_memflat.planner.device_bytes import predict_device_bytes
    from tvm_memflat.targets.build import build_and_measure

    out, outputs = {}, None
    for conv in CONVENTIONS:
        predicted = predict_device_bytes(mod, input=conv, output="sram")
        _, allocation, got = build_and_measure(mod, inputs, input=conv, output="sram")
        out[conv] = {"predicted": int(predicted.total_bytes),
                     "measured": int(allocation.device_bytes),
                     "arena": int(allocation.arena_bytes),
                     "scratch": int(allocation.max_scratch_bytes)}
        if outputs is None:
            outputs = got
        else:
            out[conv]["max_abs_diff_vs_sram_build"] = _max_abs(outputs, got)
    return out, outputs


def _max_abs(ref: list, got: list) -> float:
    if len(ref) != len(got):
        raise RuntimeError(f"{len(ref)} outputs against {len(got)}")
    return max(float(np.abs(np.asarray(a, "float64").reshape(np.shape(b))
                            - np.asarray(b, "float64")).max()) for a, b in zip(ref, got,
                                                                                strict=True))


def _ref_max(ref: list) -> float:
    return max(float(np.abs(a).max()) for a in ref)


def bench_one(model: str, path: str, source, zoo_mode: bool) -> dict:
    """One (model, path) record; raises on failure (the caller records the error)."""

    from tvm_memflat.analysis.memory_profile import profile

    rec: dict = {}
    t0 = time.perf_counter()
    mod, extra, notes = import_module(source, path, zoo_mode)
    rec["import_s"] = round(time.perf_counter() - t0, 2)
    rec.update(notes)
    params = mod["main"].params
    shape = tuple(int(d) for d in params[0].ty.shape.values)
    rec["input_shape"] = list(shape)
    x = (source.x if not zoo_mode else
         np.random.default_rng(SEED).standard_normal(shape).astype(str(params[0].ty.dtype)))
    inputs = [x, *extra]

    new, pass_, pass_s, log = run_pass(mod)
    rec["pass_s"] = round(pass_s, 2)
    rec["decisions"] = [d.describe for d in pass_.decisions]
    rec["steps"] = [d.step.to_json() for d in pass_.decisions]
    rec["claimed_after"] = pass_.decisions[-1].peak_after if pass_.decisions else None
    rec["stop_reason"] = stop_reason(pass_, log)
    rec["canonical_changes"] = [list(c) for c in getattr(pass_, "canonical_changes", ())]
    ours = [m for m in log if m.startswith("FlattenMemoryPeaks")]
    rec["log"] = ours[-12:]
    rec["other_log_lines"] = len(log) - len(ours)

    rec["macs_before"] = int(profile(mod, with_tvm=False).macs)
    unchanged = not pass_.decisions and new.same_as(mod)
    rec["macs_after"] = rec["macs_before"] if unchanged else int(profile(new, with_tvm=False).macs)
    rec["mac_overhead_pct"] = round(100 * (rec["macs_after"] / rec["macs_before"] - 1), 3) \
        if rec["macs_before"] else None

    before, out_before = measure(mod, inputs)
    after, out_after = (before, out_before) if unchanged else measure(new, inputs)
    rec["after_is_before"] = unchanged
    rec["device_bytes"] = {"before": before, "after": after}
    rec["saving_pct"] = {c: round(100 * (1 - after[c]["measured"] / before[c]["measured"]), 3)
                         for c in CONVENTIONS}
    rec["prediction_error_pct"] = round(100 * max(
        abs(side[c]["predicted"] / side[c]["measured"] - 1)
        for side in (before, after) for c in CONVENTIONS), 4)
    rec["prediction_within_1pct"] = rec["prediction_error_pct"] <= 100 * AGREEMENT
    ref = _ref_max(out_before)
    err = _max_abs(out_before, out_after)
    rec["max_abs_error"] = err
    rec["max_abs_reference"] = ref
    rec["rel_error"] = err / max(ref, 1e-12)
    rec["within_tolerance"] = rec["rel_error"] <= TOLERANCE
    if not zoo_mode:
        terr = _max_abs(source.reference, out_before)
        rec["torch_vs_before"] = {"max_abs_error": terr,
                                  "max_abs_torch": _ref_max(source.reference),
                                  "rel_error": terr / max(_ref_max(source.reference), 1e-12)}
    return rec


# --------------------------------------------------------------------------- cache, report


def _cache_dir(cache: Path, meta: dict) -> Path:
    key = meta["commit"][:12] + ("-dirty" if meta.get("dirty") else "")
    return cache / key


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}"


COLUMNS = ("model", "path", "before sram KiB", "after sram KiB", "before stream KiB",
           "after stream KiB", "save sram %", "save stream %", "MAC +%", "max err", "pass s",
           "stop")


def _row(r: dict) -> list[str]:
    if r.get("status") != "ok":
        return [r["model"], r["path"], *["-"] * 9, f"ERROR {r.get('error', '')}"[:70]]
    b, a = r["device_bytes"]["before"], r["device_bytes"]["after"]
    stop = r["stop_reason"] if not r["decisions"] else \
        f"{len(r['decisions'])} rewrites; {r['stop_reason']}"
    return [r["model"], r["path"], _kib(b["sram"]["measured"]), _kib(a["sram"]["measured"]),
            _kib(b["stream"]["measured"]), _kib(a["stream"]["measured"]),
            _pct(r["saving_pct"]["sram"]), _pct(r["saving_pct"]["stream"]),
            f"{r['mac_overhead_pct']:.2f}" if r["mac_overhead_pct"] is not None else "-",
            f"{r['rel_error']:.1e}", f"{r['pass_s']:.1f}", stop[:70]]


def summarize(records: list[dict]) -> dict:
    ok = [r for r in records if r.get("status") == "ok"]
    s: dict = {"records": len(records), "ok": len(ok),
               "failed": [f"{r['model']}/{r['path']}: {r.get('error')}" for r in records
                          if r.get("status") != "ok"]}
    for conv in CONVENTIONS:
        vals = [r["saving_pct"][conv] for r in ok]
        s[f"average_saving_{conv}_pct"] = round(float(np.mean(vals)), 2) if vals else None
        worst = min(ok, key=lambda r, c=conv: r["saving_pct"][c], default=None)
        s[f"min_saving_{conv}"] = (None if worst is None else
                                   {"model": worst["model"], "path": worst["path"],
                                    "pct": worst["saving_pct"][conv]})
        s[f"average_saving_{conv}_pct_by_path"] = {
            p: round(float(np.mean([r["saving_pct"][conv] for r in ok if r["path"] == p])), 2)
            for p in dict.fromkeys(r["path"] for r in ok)}
    s["mismatches"] = [f"{r['model']}/{r['path']}: rel err {r['rel_error']:.2e}" for r in ok
                       if not r["within_tolerance"]]
    s["prediction_off"] = [f"{r['model']}/{r['path']}: {r['prediction_error_pct']} %"
                           for r in ok if not r["prediction_within_1pct"]]
    s["torch_vs_tvm_off"] = [f"{r['model']}/{r['path']}: rel err "
                             f"{r['torch_vs_before']['rel_error']:.2e}" for r in ok
                             if "torch_vs_before" in r
                             and r["torch_vs_before"]["rel_error"] > TOLERANCE]
    paths_differ = {}
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model]
        if len(mine) < 2:
            continue
        for conv in CONVENTIONS:
            vals = {r["path"]: r["device_bytes"]["after"][conv]["measured"] for r in mine}
            if max(vals.values()) > (1 + AGREEMENT) * min(vals.values()):
                paths_differ.setdefault(model, {})[conv] = vals
    s["paths_differ_over_1pct"] = paths_differ
    s["unchanged"] = [f"{r['model']}/{r['path']}" for r in ok if not r["decisions"]]
    slowest = max(ok, key=lambda r: r["pass_s"], default=None)
    s["max_pass_s"] = (None if slowest is None else
                       {"model": slowest["model"], "path": slowest["path"],
                        "s": slowest["pass_s"]})
    return s


def summary_lines(s: dict) -> list[str]:
    def worst(k):
        w = s[k]
        return "-" if w is None else f"{w['pct']:.1f} % ({w['model']}/{w['path']})"

    def by_path(conv):
        return ", ".join(f"{p} {v:.1f} %" for p, v in
                         s[f"average_saving_{conv}_pct_by_path"].items())

    avg_stream, avg_sram = s["average_saving_stream_pct"], s["average_saving_sram_pct"]
    lines = [
        f"records: {s['ok']} ok of {s['records']}; failed: {len(s['failed'])}"
        + "".join(f"\n  {f}" for f in s["failed"]),
        f"average saving, input streamed: {_pct(avg_stream)} % ({by_path('stream')})",
        f"average saving, input in SRAM:  {_pct(avg_sram)} % ({by_path('sram')})",
        f"min saving: streamed {worst('min_saving_stream')}; in SRAM {worst('min_saving_sram')}",
        f"mismatches (after vs before rel err > {TOLERANCE:g}): {len(s['mismatches'])}"
        + "".join(f"\n  {m}" for m in s["mismatches"]),
        f"predicted vs measured off by > 1 %: {len(s['prediction_off'])}"
        + "".join(f"\n  {m}" for m in s["prediction_off"]),
        f"torch vs TVM before off (rel err > {TOLERANCE:g}): {len(s['torch_vs_tvm_off'])}"
        + "".join(f"\n  {m}" for m in s["torch_vs_tvm_off"]),
        f"models whose paths differ by > 1 % in device bytes after: "
        f"{len(s['paths_differ_over_1pct'])}"
        + "".join(f"\n  {m}: {v}" for m, v in s["paths_differ_over_1pct"].items()),
        f"no region rewritten: {len(s['unchanged'])}"
        + (f" ({', '.join(s['unchanged'])})" if s["unchanged"] else ""),
        "max pass time: " + ("-" if s["max_pass_s"] is None else
                             f"{s['max_pass_s']['s']:.1f} s ({s['max_pass_s']['model']}/"
                             f"{s['max_pass_s']['path']})"),
    ]
    return lines


def render(records: list[dict]) -> tuple[str, str]:
    """The table as plain text (stdout) and as markdown."""
    rows = [_row(r) for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
              for i, c in enumerate(COLUMNS)]
    left = {0, 1, len(COLUMNS) - 1}

    def fmt(cells):
        return " ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    text = "\n".join([fmt(COLUMNS), "-" * len(fmt(COLUMNS)), *map(fmt, rows)])
    md = "\n".join(["| " + " | ".join(COLUMNS) + " |",
                    "|" + "|".join("---" if i in left else "---:" for i in range(len(COLUMNS)))
                    + "|",
                    *("| " + " | ".join(c.replace("|", "/") for c in row) + " |"
                      for row in rows)])
    return text, md


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", action="store_true",
                        help="tvm_memflat.zoo (NAMES + FAMILIES) instead of torchvision; "
                             "paths loader,onnx,onnx_params; no torch needed")
    parser.add_argument("--models", help="comma-separated subset (default: all)")
    parser.add_argument("--paths", help=f"comma-separated (default {','.join(TORCH_PATHS)}; "
                                        f"--zoo: {','.join(ZOO_PATHS)})")
    parser.add_argument("--limit-gmacs", type=float, default=6.0,
                        help="leave out torchvision models above this many published GMACs")
    parser.add_argument("--cache", default=".bench_cache/wide",
                        help="folder of per-(model, path) records and ONNX exports")
    parser.add_argument("--json", help="output JSON (default docs/data/bench_wide.json; "
                                       "--zoo: docs/data/bench_wide_zoo.json)")
    parser.add_argument("--table", help="output markdown table (default docs/data/"
                                        "bench_wide.md; --zoo: docs/data/bench_wide_zoo.md)")
    parser.add_argument("--fresh", action="store_true", help="ignore cached records")
    parser.add_argument("--retry-errors", action="store_true",
                        help="redo cached records that failed")
    args = parser.parse_args(argv)

    stem = "bench_wide_zoo" if args.zoo else "bench_wide"
    args.json = args.json or f"docs/data/{stem}.json"
    args.table = args.table or f"docs/data/{stem}.md"
    allowed = ZOO_PATHS if args.zoo else TORCH_PATHS
    paths = args.paths.split(",") if args.paths else list(allowed)
    bad = [p for p in paths if p not in allowed]
    if bad:
        parser.error(f"unknown path(s) {', '.join(bad)}: choose from {', '.join(allowed)}")
    names = [n for n in args.models.split(",") if n] if args.models else None

    if not args.zoo:
        try:
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError:
            print("bench_wide: torch and torchvision are needed (or use --zoo): "
                  "pip install -e '.[torch]'", file=sys.stderr)
            return 2
        models, skipped = torchvision_models(args.limit_gmacs, names)
    else:
        models, skipped = zoo_models(names), {}

    from tvm_memflat._io import write_json_atomic, write_text_atomic

    meta = bench_meta()
    cache = Path(args.cache)
    record_dir = _cache_dir(cache, meta)
    record_dir.mkdir(parents=True, exist_ok=True)
    if skipped:
        _progress(f"left out {len(skipped)}: " + ", ".join(f"{k} ({v})"
                                                          for k, v in skipped.items()))
    _progress(f"{len(models)} models x {len(paths)} paths; records in {record_dir}")

    records, start = [], time.perf_counter()
    for m, model in enumerate(models):
        source = None
        for path in paths:
            file = record_dir / f"{model}__{path}.json"
            tag = f"[{m + 1}/{len(models)}] {model} {path}"
            if file.exists() and not args.fresh:
                rec = json.loads(file.read_text())
                if rec.get("status") == "ok" or not args.retry_errors:
                    records.append(rec)
                    _progress(f"{tag}: cached ({rec.get('status')})")
                    continue
            t0 = time.perf_counter()
            rec = {"model": model, "path": path, "mode": "zoo" if args.zoo else "torchvision",
                   "commit": meta["commit"], "dirty": meta["dirty"],
                   "published_gmacs": None if args.zoo else PUBLISHED_GMACS.get(model)}
            try:
                if args.zoo:
                    source = model
                elif source is None:
                    source = TorchSource(model, cache)
                rec.update(bench_one(model, path, source, args.zoo))
                rec["status"] = "ok"
            except Exception as err:  # noqa: BLE001 - one failure must not stop the bench
                rec.update(status="error", error=_one_line(err))
            rec["elapsed_s"] = round(time.perf_counter() - t0, 1)
            write_json_atomic(file, rec)
            records.append(rec)
            if rec["status"] == "ok":
                done = (rec["stop_reason"] if not rec["decisions"] else
                        f"{len(rec['decisions'])} rewrites")
                what = (f"ok, saving sram {rec['saving_pct']['sram']:.1f} %, stream "
                        f"{rec['saving_pct']['stream']:.1f} %, pass {rec['pass_s']:.1f} s, "
                        f"{done}")
            else:
                what = f"ERROR {rec['error']}"
            _progress(f"{tag}: {what} ({rec['elapsed_s']:.1f} s; total "
                      f"{time.perf_counter() - start:.0f} s)")

    summary = summarize(records)
    text, md = render(records)
    lines = summary_lines(summary)
    head = ("device bytes measured (tvm_memflat.build, pass alone), output in SRAM; "
            "'sram'/'stream': the network input counted / streamed; max err: after vs "
            "before, relative to max |before|")
    print(head)
    print(text)
    print("\n".join(lines))
    write_json_atomic(args.json, {
        **bench_meta(),
        "mode": "zoo" if args.zoo else "torchvision",
        "headline": head, "paths": paths, "limit_gmacs": None if args.zoo else args.limit_gmacs,
        "tolerance": TOLERANCE, "seed": SEED, "opset": OPSET,
        "pass": "tvm.transform.Sequential([tvm_memflat.FlattenMemoryPeaks()]) (defaults)",
        "left_out": skipped, "summary": summary, "records": records,
    })
    write_text_atomic(args.table, "\n".join([f"<!-- {stem}: {meta['commit']} "
                                             f"{meta['date']} -->", "", head, "", md, "",
                                             *(f"- {ln}" for ln in lines), ""]))
    print(f"wrote {args.json} and {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
