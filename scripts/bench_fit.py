#!/usr/bin/env python
"""Fit: the (device bytes, MACs) front of the zoo nets, and what fits the shipped specs.

For each net (the five zoo nets in fp32; their int8 QDQ forms where ``zoo.build(name,
dtype="int8")`` quantizes them; ``mobilenet_v2_w035_r144`` in both) and each counting
convention (input/output: ``sram/sram``, ``stream/sram``, ``stream/stream``, the last
being msf-CNN's), one run of
:func:`tvm_memflat.transform.search_front.search_front` (MAC limit 30 %, device bytes
predicted from the build as its number) gives:

* the Pareto front of (device bytes, MACs), as JSON and one plot per net
  (``docs/img/fit/``);
* the smallest device bytes at <= 5 %, <= 10 % and <= 30 % more MACs;
* built vs modelled: the <= 5 % and <= 30 % points built by ``tvm_memflat.build`` and
  run once (device bytes measured from ``vm.builtin.alloc_storage``), against the
  prediction, and their outputs against the unmodified network's;
* for each scratchpad spec (``mcu_256k``, ``edge_npu_1m``; the buffered ``vta_like``
  is the VTA issue's): the front point with the fewest MACs that fits (plan of
  :func:`~tvm_memflat.planner.sram_plan.plan_for_spec`, under the record's convention),
  its MAC overhead and modelled latency (:class:`~tvm_memflat.hardware.cost_model.SpecCostModel`),
  or why none fits: the plan's reasons, and the smallest need it found. fp32 nets on
  an int8 spec are a view (fp32 tensors counted at 1 byte per element), labelled so.

For ``mobilenet_v2_w035_r144`` int8 under ``stream/stream``, msf-CNN's published
points (docs/msf_cnn.md) are listed beside ours: at each of their MAC factors, our
lowest bytes at no more MACs.

Each (net, dtype, convention) record is cached under ``--cache`` keyed by the commit;
a rerun resumes. Writes ``docs/data/bench_fit.json`` and ``docs/data/bench_fit.md``.

    python scripts/bench_fit.py [--nets mobilenet_v2:int8,squeezenet1_1:float32]
        [--conventions sram/sram,stream/stream] [--beam 2] [--fresh]
    python scripts/bench_fit.py --collect   # tables and plots of every cached record
                                            # (each record names its commit)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _meta import ROOT, ArgParser, bench_meta

NETS = [(n, "float32") for n in ("vgg16", "squeezenet1_1", "mobilenet_v2", "resnet18",
                                 "inception_v3", "mobilenet_v2_w035_r144")] + \
       [(n, "int8") for n in ("squeezenet1_1", "mobilenet_v2", "resnet18",
                              "mobilenet_v2_w035_r144")]
CONVENTIONS = [("sram", "sram"), ("stream", "sram"), ("stream", "stream")]
SPECS = ("mcu_256k", "edge_npu_1m")
LIMITS = (0.05, 0.10, 0.30)
MAX_MAC_OVERHEAD = 0.30
#: msf-CNN's MobileNetV2 w0.35 r144 int8 points (docs/msf_cnn.md): name, analytic bytes,
#: peak_mem_usage of their build, MAC factor over 18,909,490.
MSF_POINTS = [("vanilla", 194400, 194400, 1.0), ("256K", 181440, 181440, 1.0),
              ("128K", 83065, 83133, 1.0188), ("F1.1", 67905, 67996, 1.0974),
              ("64K", 63741, 63603, 1.2295), ("32K", 25674, 25803, 1.2534),
              ("F1.3", 21288, 21389, 1.2976), ("F1.4", 15340, 15199, 1.3820),
              ("F1.6", 13926, 14132, 1.5632), ("FInf", 7887, 8560, 1.6795)]


def _inputs(mod, seed=0):
    rng = np.random.default_rng(seed)
    from tvm_memflat.frontend.canonicalize import num_inputs

    func = mod["main"]
    return [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
            for p in func.params[:num_inputs(func)]]


def _spec_fit(points, base_macs, spec_name, convention):
    """The fewest-MAC front point that fits ``spec_name``, or why none does.

    ``points``: (bytes, macs, module) of the front, the untiled module included. The
    weights are checked first (no rewrite changes them): if they do not fit where the
    spec keeps them, the pair is out of reach of any rewrite and says so."""
    import tvm

    from tvm_memflat import load_spec
    from tvm_memflat.analysis.device_bytes import Accounting
    from tvm_memflat.hardware.cost_model import SpecCostModel
    from tvm_memflat.planner.pipeline import lower_and_plan
    from tvm_memflat.planner.sram_plan import plan_for_spec

    spec = load_spec(spec_name)
    acc = Accounting(*convention)
    wmem = spec.weights_memory
    smallest = None
    for nbytes, macs, module in sorted(points, key=lambda p: p[1]):
        _, _, schedule = lower_and_plan(module, tvm.target.Target("llvm"), cpu_schedule=False)
        plan = plan_for_spec(schedule, spec, accounting=acc)
        wplan = next((m for m in plan.memories if m.memory == wmem), None)
        if (spec.weights_location == "resident" and wplan is not None
                and "activations" not in wplan.holds and not wplan.plan.fits):
            return {"spec": spec_name, "fits": False, "weights_fit": False,
                    "activation_view": plan.activation_view,
                    "why": [w for w in plan.why if w.startswith(wmem)]}
        need = plan.activation.plan.arena_bytes
        overhead = round(100 * (macs / base_macs - 1), 2)
        if smallest is None or need < smallest["activation_arena_bytes"]:
            smallest = {"activation_arena_bytes": need, "mac_overhead_pct": overhead,
                        "why": list(plan.why)}
        if plan.fits:
            cost = SpecCostModel(spec).estimate(schedule, plan)
            return {"spec": spec_name, "fits": True, "activation_view": plan.activation_view,
                    "mac_overhead_pct": overhead, "activation_arena_bytes": need,
                    "device_bytes": nbytes, "latency_ms": round(cost.latency_ms, 3),
                    "dram_traffic_bytes": plan.dram_traffic_bytes}
    return {"spec": spec_name, "fits": False, "weights_fit": True,
            "activation_view": plan.activation_view, "smallest_need": smallest}


def _refit(rec) -> dict:
    """``rec``'s spec fits recomputed on its front, the modules rebuilt by replay."""
    from tvm_memflat import load_model, zoo
    from tvm_memflat.frontend.canonicalize import marked_canonical
    from tvm_memflat.transform.flatten_memory_peaks import replay

    mod = marked_canonical(load_model(zoo.build(rec["net"], dtype=rec["dtype"])))
    front = rec["front"]
    points = [(front["base"]["bytes"], front["base"]["macs"], mod)] + [
        (p["bytes"], p["macs"], replay(mod, p["path"])) for p in front["points"] if p["path"]]
    conv = (rec["input"], rec["output"])
    return {**rec, "specs": [_spec_fit(points, rec["base_macs"], s, conv)
                             for s in SPECS]}


def run_one(name: str, dtype: str, convention, beam: int, progress,
            max_mac_overhead: float = MAX_MAC_OVERHEAD) -> dict:
    from tvm_memflat import load_model, zoo
    from tvm_memflat.analysis.device_bytes import Accounting
    from tvm_memflat.frontend.canonicalize import marked_canonical
    from tvm_memflat.planner.device_bytes import predict_device_bytes
    from tvm_memflat.targets.build import build_and_measure
    from tvm_memflat.transform.search_front import search_front

    inp, out = convention
    mod = marked_canonical(load_model(zoo.build(name, dtype=dtype)))

    def evaluate(m):
        return predict_device_bytes(m, input=inp, output=out).total_bytes

    stream = Accounting(inp, out).streamed
    front = search_front(mod, max_mac_overhead=max_mac_overhead, beam=beam, branch=3,
                         evaluate=evaluate, progress=progress, stream=stream)
    base = front.base
    rec = {"net": name, "dtype": dtype, "input": inp, "output": out,
           "base_bytes": base.bytes, "base_macs": base.macs, "front": front.to_json()}
    rec["best"] = {}
    for lim in LIMITS:
        p = front.best_within(lim)
        rec["best"][f"{round(100 * lim)}"] = {
            "bytes": p.bytes, "saving_pct": round(100 * (1 - p.bytes / base.bytes), 2),
            "mac_overhead_pct": round(100 * (p.macs / base.macs - 1), 3)}
    # built vs modelled on the 5 % and 30 % points
    x = _inputs(mod)
    _, ref_alloc, ref = build_and_measure(mod, x, input=inp, output=out)
    built = [{"point": "base", "predicted": base.bytes, "measured": ref_alloc.device_bytes}]
    for lim in (0.05, 0.30):
        p = front.best_within(lim)
        if any(b["predicted"] == p.bytes and b["point"] != "base" for b in built) or not p.path:
            continue
        _, alloc, got = build_and_measure(p.module, x, input=inp, output=out)
        scale = float(np.max(np.abs(ref[0]))) or 1.0
        err = float(np.max(np.abs(got[0].astype("float64") - ref[0].astype("float64"))))
        built.append({"point": f"<= {round(100 * lim)} %", "predicted": p.bytes,
                      "measured": alloc.device_bytes, "max_abs_error": err,
                      "max_abs_reference": scale,
                      "exact": bool(np.array_equal(got[0], ref[0]))})
    rec["built"] = built
    points = [(p.bytes, p.macs, p.module) for p in (base, *front.points) if p.module]
    rec["specs"] = [_spec_fit(points, base.macs, s, convention) for s in SPECS]
    if name == "mobilenet_v2_w035_r144" and dtype == "int8" and convention == ("stream",
                                                                                "stream"):
        rec["msf"] = []
        for label, analytic, built_bytes, factor in MSF_POINTS:
            limit = base.macs * factor
            ours = min((p for p in front.points if p.macs <= limit),
                       key=lambda p: p.bytes, default=base)
            rec["msf"].append({"point": label, "msf_bytes": analytic,
                               "msf_peak_mem_usage": built_bytes, "msf_mac_factor": factor,
                               "ours_bytes": ours.bytes,
                               "ours_mac_factor": round(ours.macs / base.macs, 4),
                               "ours_no_more": ours.bytes <= analytic})
    return rec


def _plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rec in records:
        pts = sorted([(0.0, rec["base_bytes"])] + [(p.get("mac_overhead_pct", 0.0), p["bytes"])
                                                    for p in rec["front"]["points"]])
        curve, low = [], None
        for x, y in pts:  # the front: the lowest bytes reached at each MAC overhead
            if low is None or y < low:
                low = y
                curve.append((x, y))
        xs, ys = zip(*curve, strict=True)
        line = ax.step([*xs, 30.0], [y / 1024 for y in (*ys, ys[-1])], where="post", marker="o",
                       ms=3, label=f"input {rec['input']}, output {rec['output']}")[0]
        ax.plot([0.0], [rec["base_bytes"] / 1024], "s", color=line.get_color(), ms=6)
    from tvm_memflat import load_spec

    for s, style in zip(SPECS, ("--", ":"), strict=True):
        size = load_spec(s).memories_for("activations")[0].size_bytes
        ax.axhline(size / 1024, color="#c0392b", ls=style, lw=1, label=f"{s} SRAM")
    r0 = records[0]
    ax.set_yscale("log")
    ax.set_xlabel("extra MACs (%) (squares: the unmodified net)")
    ax.set_ylabel("device bytes (KiB, log)")
    ax.set_title(f"{r0['net']} {r0['dtype']}: front of device bytes vs MACs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _table(records, meta, max_mac_overhead: float = MAX_MAC_OVERHEAD) -> str:
    lines = [f"# bench_fit: device-bytes front and fits ({meta['date'][:10]}, "
             f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores; each record's "
             "commit in its row)", "",
             "Device bytes as built by `tvm_memflat.build` (predicted; built points "
             f"measured below), pass alone, MAC limit {100 * max_mac_overhead:g} %. "
             "Savings vs the same net built by `tvm_memflat.build` unmodified.", "",
             "| net | dtype | input/output | base B | <= 5 % | <= 10 % | <= 30 % | "
             "front pts | search s | commit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        b = r["best"]
        cells = [f"{b[k]['bytes']} ({b[k]['saving_pct']:.1f} %, +{b[k]['mac_overhead_pct']:.1f}"
                 " % MACs)" for k in ("5", "10", "30")]
        lines.append(f"| {r['net']} | {r['dtype']} | {r['input']}/{r['output']} | "
                     f"{r['base_bytes']} | {' | '.join(cells)} | "
                     f"{len(r['front']['points'])} | {r['front']['search_s']} | "
                     f"{r.get('commit', '?')[:7]} |")
    lines += ["", "## Built vs modelled", "",
              "| net | dtype | input/output | point | predicted | measured | exact |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        for b in r["built"]:
            lines.append(f"| {r['net']} | {r['dtype']} | {r['input']}/{r['output']} | "
                         f"{b['point']} | {b['predicted']} | {b['measured']} | "
                         f"{b.get('exact', '-')} |")
    lines += ["", "## Specs (scratchpad machines)", "",
              "| net | dtype | input/output | spec | fits | extra MACs | latency ms | "
              "why not / smallest need |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        for s in r["specs"]:
            view = " (view)" if s.get("activation_view") else ""
            if s["fits"]:
                lines.append(f"| {r['net']} | {r['dtype']}{view} | {r['input']}/{r['output']} "
                             f"| {s['spec']} | yes | {s['mac_overhead_pct']} % | "
                             f"{s['latency_ms']} | |")
            elif not s.get("weights_fit", True):
                lines.append(f"| {r['net']} | {r['dtype']}{view} | {r['input']}/{r['output']} "
                             f"| {s['spec']} | no: weights | | | {'; '.join(s['why'])} |")
            else:
                n = s["smallest_need"]
                lines.append(f"| {r['net']} | {r['dtype']}{view} | {r['input']}/{r['output']} "
                             f"| {s['spec']} | no | | | smallest need "
                             f"{n['activation_arena_bytes']} B at +{n['mac_overhead_pct']} % "
                             f"MACs; {'; '.join(n['why'])} |")
    msf = [r for r in records if "msf" in r]
    if msf:
        lines += ["", "## Beside msf-CNN (MobileNetV2 w0.35 r144 int8, input and output "
                  "not counted)", "",
                  "| their point | their bytes (peak_mem_usage) | their MAC factor | ours "
                  "at no more MACs | our MAC factor | no more bytes |",
                  "|---|---|---|---|---|---|"]
        for m in msf[0]["msf"]:
            lines.append(f"| {m['point']} | {m['msf_bytes']} ({m['msf_peak_mem_usage']}) | "
                         f"{m['msf_mac_factor']} | {m['ours_bytes']} | "
                         f"{m['ours_mac_factor']} | {m['ours_no_more']} |")
    return "\n".join(lines) + "\n"


def reprice(published: Path, nets, out_json: Path, meta: dict,
            convention: tuple[str, str] | None = None) -> int:
    """The published fronts' points within 5 % MACs (rebuilt by replay), priced by this
    build with and without copied concatenation inputs, side by side in one run; under
    ``convention`` (input, output) when given, else each front's own (a front searched
    with the input in SRAM, priced with it streamed: its rewrites are exact either way)."""
    from tvm_memflat import load_model, zoo
    from tvm_memflat.frontend.canonicalize import marked_canonical
    from tvm_memflat.planner.device_bytes import predict_device_bytes
    from tvm_memflat.transform.flatten_memory_peaks import replay

    rows = []
    for rec in json.loads(published.read_text())["records"]:
        if nets and (rec["net"], rec["dtype"]) not in nets:
            continue
        mod = marked_canonical(load_model(zoo.build(rec["net"], dtype=rec["dtype"])))
        acc = ({"input": rec["input"], "output": rec["output"]} if convention is None else
               {"input": convention[0], "output": convention[1]})
        points = [("base", rec["base_macs"], mod)] + [
            (p["bytes"], p["macs"], replay(mod, p["path"])) for p in rec["front"]["points"]
            if p["path"] and p["macs"] <= 1.05 * rec["base_macs"]]
        priced = []
        for recorded, macs, module in points:
            before = predict_device_bytes(module, **acc, concat_copies=False).total_bytes
            after = predict_device_bytes(module, **acc).total_bytes
            priced.append({"recorded": rec["base_bytes"] if recorded == "base" else recorded,
                           "mac_overhead_pct": round(100 * (macs / rec["base_macs"] - 1), 3),
                           "all_in_place": before, "with_copies": after})
        base = priced[0]
        best = {k: min(p[k] for p in priced) for k in ("all_in_place", "with_copies")}
        row = {"net": rec["net"], "dtype": rec["dtype"], **acc, "front_commit": rec.get(
            "commit"), "front_convention": f"{rec['input']}/{rec['output']}",
            "points": priced, "base_all_in_place": base["all_in_place"],
            "base_with_copies": base["with_copies"],
            "best5_all_in_place": best["all_in_place"], "best5_with_copies": best["with_copies"],
            "saving5_all_in_place_pct": round(100 * (1 - best["all_in_place"]
                                                     / base["all_in_place"]), 2),
            "saving5_with_copies_pct": round(100 * (1 - best["with_copies"]
                                                    / base["with_copies"]), 2)}
        rows.append(row)
        print(f"{rec['net']:<16}{rec['dtype']:<8}{acc['input']}/{acc['output']:<7} <=5 % "
              f"{row['best5_all_in_place']:>9} ({row['saving5_all_in_place_pct']:5.1f} %) -> "
              f"{row['best5_with_copies']:>9} ({row['saving5_with_copies_pct']:5.1f} %)",
              flush=True)
    out_json.write_text(json.dumps({**meta, "published": str(published.name), "rows": rows},
                                   indent=1))
    print(f"wrote {out_json}")
    return 0


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", help="name:dtype,... (default: all of NETS)")
    ap.add_argument("--conventions", help="input/output,... (default: all three)")
    ap.add_argument("--beam", type=int, default=2)
    ap.add_argument("--max-mac-overhead", type=float, default=MAX_MAC_OVERHEAD,
                    metavar="FRACTION",
                    help="the front's MAC limit over the untiled net (default %(default)s; "
                         "msf-CNN's F1.4 to FInf need up to 0.68)")
    ap.add_argument("--cache", default=str(ROOT / ".bench_cache" / "fit"))
    ap.add_argument("--json", default=str(ROOT / "docs" / "data" / "bench_fit.json"))
    ap.add_argument("--table", default=str(ROOT / "docs" / "data" / "bench_fit.md"))
    ap.add_argument("--plots", default=str(ROOT / "docs" / "img" / "fit"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--collect", action="store_true",
                    help="run no search: gather every cached record (the spec fits are "
                         "recomputed on each front, rebuilt by replay, with this planner) "
                         "and keep the published records of --json that none replaces")
    ap.add_argument("--reprice", metavar="OUT_JSON",
                    help="run no search: price the points within 5 %% MACs of --json's "
                         "fronts (replayed) with and without copied concat inputs, and "
                         "write OUT_JSON")
    ap.add_argument("--reprice-as", metavar="INPUT/OUTPUT",
                    help="with --reprice: price under this convention instead of each "
                         "front's own (e.g. stream/sram)")
    args = ap.parse_args(argv)
    if not 0 <= args.max_mac_overhead <= 10:
        print(f"bench_fit: error: --max-mac-overhead must be a fraction in [0, 10], not "
              f"{args.max_mac_overhead}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    nets = [tuple(s.split(":")) for s in args.nets.split(",")] if args.nets else NETS
    reprice_as = tuple(args.reprice_as.split("/")) if args.reprice_as else None
    if reprice_as is not None and reprice_as not in CONVENTIONS:
        print(f"bench_fit: error: --reprice-as must be one of "
              f"{', '.join('/'.join(c) for c in CONVENTIONS)}, not {args.reprice_as!r}",
              file=sys.stderr)
        return 2
    if args.reprice:
        if not Path(args.json).is_file():
            print(f"bench_fit: error: no published fronts to reprice: {args.json}",
                  file=sys.stderr)
            return 2
        return reprice(Path(args.json), [tuple(s.split(":")) for s in args.nets.split(",")]
                       if args.nets else None, Path(args.reprice), bench_meta(),
                       reprice_as)
    convs = [tuple(s.split("/")) for s in args.conventions.split(",")] if args.conventions \
        else CONVENTIONS
    meta = bench_meta()
    cache = Path(args.cache) / meta["commit"][:12]
    cache.mkdir(parents=True, exist_ok=True)
    records = []
    if args.collect:
        order = {n: i for i, n in enumerate(NETS)}
        # the records already published (each names its commit), replaced by any
        # cached record of the same (net, dtype, convention)
        published = Path(args.json)
        kept = {} if not published.exists() else {
            (r["net"], r["dtype"], r["input"], r["output"]): r
            for r in json.loads(published.read_text())["records"]}
        found = {}
        # every commit's records, the newest file of each (net, dtype, convention) kept
        for f in sorted(Path(args.cache).glob("*/*.json"), key=lambda f: f.stat().st_mtime):
            r = json.loads(f.read_text())
            r.setdefault("commit", f.parent.name)
            if "error" not in r:
                found[r["net"], r["dtype"], r["input"], r["output"]] = r
        refitted = []
        for r in found.values():
            print(f"refit {r['net']} {r['dtype']} {r['input']}/{r['output']} ...", flush=True)
            refitted.append(_refit(r))
        found = refitted + [r for k, r in kept.items()
                            if k not in {(f["net"], f["dtype"], f["input"], f["output"])
                                         for f in refitted}]
        found.sort(key=lambda r: (order.get((r["net"], r["dtype"]), 99), r["input"], r["output"]))
        nets = []  # nothing to run
        for key in dict.fromkeys((r["net"], r["dtype"]) for r in found):
            per_net = [r for r in found if (r["net"], r["dtype"]) == key]
            records += per_net
            _plot(per_net, Path(args.plots) / f"{key[0]}_{key[1]}.png")
    for name, dtype in nets:
        per_net = []
        for conv in convs:
            limit = "" if args.max_mac_overhead == MAX_MAC_OVERHEAD else \
                f"_m{round(100 * args.max_mac_overhead)}"
            key = cache / f"{name}_{dtype}_{conv[0]}_{conv[1]}_b{args.beam}{limit}.json"
            if key.exists() and not args.fresh:
                rec = json.loads(key.read_text())
            else:
                t0 = time.perf_counter()
                print(f"{name} {dtype} {conv[0]}/{conv[1]} ...", flush=True)
                try:
                    rec = run_one(name, dtype, conv, args.beam,
                                  lambda m: print(f"  {m}", flush=True),
                                  args.max_mac_overhead)
                except Exception as err:  # noqa: BLE001 - recorded, the bench goes on
                    rec = {"net": name, "dtype": dtype, "input": conv[0], "output": conv[1],
                           "error": f"{type(err).__name__}: {err}"[:300]}
                rec["wall_s"] = round(time.perf_counter() - t0, 1)
                rec["commit"], rec["dirty"] = meta["commit"][:12], meta["dirty"]
                key.write_text(json.dumps(rec, indent=1))
            if "error" in rec:
                print(f"  ERROR {rec['error']}", file=sys.stderr)
                continue
            b = rec["best"]
            print(f"{name:<24}{dtype:<8}{conv[0]}/{conv[1]:<8} base {rec['base_bytes']:>9} "
                  f"<=5% {b['5']['bytes']:>9} ({b['5']['saving_pct']:5.1f} %) "
                  f"<=30% {b['30']['bytes']:>9} ({b['30']['saving_pct']:5.1f} %)", flush=True)
            per_net.append(rec)
            records.append(rec)
        if per_net:
            _plot(per_net, Path(args.plots) / f"{name}_{dtype}.png")
    out = {**meta, "max_mac_overhead_pct": 100 * args.max_mac_overhead, "beam": args.beam,
           "records": records}
    Path(args.json).write_text(json.dumps(out, indent=1))
    Path(args.table).write_text(_table(records, meta, args.max_mac_overhead))
    print(f"wrote {args.json} and {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
