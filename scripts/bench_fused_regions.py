#!/usr/bin/env python
"""vta_like_fused: does tiling a graph region pay on a spec with an on-chip path?

An exploration for the depth-first fusion that is not built yet. Per zoo net (int8
QDQ form), in one run:

* the untiled net planned on ``vta_like`` (layer by layer) and on
  ``vta_like_fused`` (whole intermediates kept on chip where they fit:
  :func:`tvm_memflat.hardware.call_tiling.keep_on_chip`);
* then each of the first ``--regions`` multi-layer regions of the graph (three
  layers or more, :func:`tvm_memflat.transform.regions.find_regions`), tiled alone
  into ``--tiles`` row tiles with recomputed halos
  (:func:`tvm_memflat.transform.tile_region.tile_region`), planned on
  ``vta_like_fused``: the activation DRAM traffic against the untiled net's on the
  same spec. Each tile's intermediates are small, so they can stay on chip; the
  price is the slices that feed the tiles, the recomputed halo rows, and the
  weights loaded once per tile.

Plans only (the closed form the simulator is held to in the tests); nothing is
built or timed. Prints a table; writes JSON marked with the commit and the machine.

    python scripts/bench_fused_regions.py [--models ...] [--regions N]
                                          [--tiles 4 8 16 28] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _meta import bench_meta


def _plan(mod, spec):
    from tvm_memflat.hardware.call_tiling import plan_buffered
    from tvm_memflat.host import host_target
    from tvm_memflat.lowering.pipeline import lower
    from tvm_memflat.planner.live_ranges import lowered_schedule

    # as the buffered build lowers (targets.vta_like.build_vta_like)
    low = lower(mod, host_target(), shrink_scratch=False, cpu_schedule=False,
                in_place_depthwise=False, input_in_arena=False)
    return plan_buffered(lowered_schedule(low), spec)


def _net(name: str, regions: int, tiles: list[int]) -> dict:
    from tvm_memflat import load_model, zoo
    from tvm_memflat.frontend.canonicalize import canonicalize
    from tvm_memflat.spec import load_spec
    from tvm_memflat.transform.regions import find_regions, layer_count
    from tvm_memflat.transform.tile_region import tile_region
    from tvm_memflat.transform.tiling import TilingRefused

    fused, plain = load_spec("vta_like_fused"), load_spec("vta_like")
    mod = canonicalize(load_model(zoo.build(name, dtype="int8"))).marked()
    lbl, base = _plan(mod, plain), _plan(mod, fused)
    row = {"model": name, "dtype": "int8",
           "layer_by_layer_activation_bytes": lbl.activation_traffic_bytes,
           "fused_untiled_activation_bytes": base.activation_traffic_bytes,
           "fused_untiled_kept": len(base.kept_on_chip), "regions": []}
    multi = [r for r in find_regions(mod["main"]) if layer_count(r.calls) >= 3]
    for k, region in enumerate(multi[:regions]):
        entry = {"region": k, "layers": layer_count(region.calls),
                 "sink": region.sink.name_hint if hasattr(region.sink, "name_hint") else "",
                 "tiles": {}}
        for n in tiles:
            t0 = time.perf_counter()
            try:
                plan = _plan(tile_region(mod, region, n, "recompute"), fused)
            except TilingRefused as err:
                entry["tiles"][n] = {"refused": str(err)}
                continue
            entry["tiles"][n] = {
                "activation_bytes": plan.activation_traffic_bytes,
                "traffic_bytes": plan.traffic_bytes, "kept": len(plan.kept_on_chip),
                "saved_vs_fused_untiled": 1 - plan.activation_traffic_bytes
                / base.activation_traffic_bytes,
                "seconds": round(time.perf_counter() - t0, 1)}
        row["regions"].append(entry)
        best = max((v.get("saved_vs_fused_untiled", -9), n) for n, v in entry["tiles"].items())
        print(f"  region {k} ({entry['layers']} layers): best {100 * best[0]:+.1f} % "
              f"at {best[1]} tiles", file=sys.stderr, flush=True)
    return row


def _table(rows: list[dict]) -> str:
    lines = [f"{'model':<16}{'lbl act MB':>11}{'fused act MB':>13}{'saved':>7}{'kept':>6}"
             f"{'best region':>12}{'tiles':>6}{'its saving':>11}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        cands = [(v.get("saved_vs_fused_untiled", -9), e["region"], n)
                 for e in r["regions"] for n, v in e["tiles"].items()]
        best = max(cands) if cands else (0, "-", "-")
        lbl, fus = r["layer_by_layer_activation_bytes"], r["fused_untiled_activation_bytes"]
        lines.append(f"{r['model']:<16}{lbl / 1e6:>11.2f}{fus / 1e6:>13.2f}"
                     f"{100 * (1 - fus / lbl):>6.1f}%{r['fused_untiled_kept']:>6}"
                     f"{best[1]!s:>12}{best[2]!s:>6}{100 * best[0]:>10.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["squeezenet1_1", "mobilenet_v2"])
    parser.add_argument("--regions", type=int, default=8,
                        help="multi-layer regions tried per net, in graph order")
    parser.add_argument("--tiles", type=int, nargs="+", default=[4, 8, 16, 28])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.regions < 0 or any(t < 2 for t in args.tiles):
        print("bench_fused_regions: error: --regions must be >= 0 and --tiles >= 2",
              file=sys.stderr)
        return 2
    rows = []
    for i, name in enumerate(args.models):
        print(f"[{i + 1}/{len(args.models)}] {name} ...", file=sys.stderr, flush=True)
        rows.append(_net(name, args.regions, args.tiles))
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {**bench_meta(), "tiles": args.tiles, "regions": args.regions},
                       "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
