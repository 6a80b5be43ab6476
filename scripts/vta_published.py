#!/usr/bin/env python
"""vta_like set against VTA's published per-layer times for ResNet-18.

The figures are TVM's own tuning log for VTA on the Pynq board, measured there:
tlc-pack/tophub ``tophub/vta_v0.10.log`` at 87836a44, section
"# Resnet-18 - pynq_1x16_i8w8a32_15_15_18_17" (``result[0][0]``, seconds per call of
the best schedule AutoTVM found, int8, NCHW1n16c). That configuration is VTA's
default, ``apache/tvm-vta config/pynq_sample.json``: a 1x16x16 GEMM core, 32 KiB
input, 256 KiB weight and 128 KiB accumulator buffers, at the Pynq's 100 MHz
(``config/pkg_config.py``: ``fpga_freq = 100``), which is ``vta_like`` exactly.
ResNet-18's first conv and its dense layer run on the CPU there, so the log has
the other conv layers only. (The log's YOLO section carries the same result values
in the same order, so one of the two was copied; which, the log does not say.) The
VTA paper's own tables (Moreau et al., IEEE Micro 2019) were not found in the
stored sources.

For each layer: the published time in cycles at 100 MHz, the compute bound (MACs
at 256 per cycle), and ours: the closed form of the tiling our chooser picks
(``hardware.call_tiling``; equal to the simulator's replay, tests/test_call_tiling).

    python scripts/vta_published.py [--json FILE]
"""

from __future__ import annotations

import json
import sys

from _meta import ArgParser, bench_meta

SOURCE = ("tlc-pack/tophub tophub/vta_v0.10.log @87836a44, "
          "'# Resnet-18 - pynq_1x16_i8w8a32_15_15_18_17'")
CLOCK_HZ = 100_000_000
#: (input channels, input size, output channels, kernel, stride, pad, seconds measured)
LAYERS = ((256, 14, 512, 3, 2, 1, 0.0039937316), (512, 7, 512, 3, 1, 1, 0.0073480856),
          (128, 28, 256, 3, 2, 1, 0.0026690964), (256, 14, 256, 3, 1, 1, 0.004933592),
          (64, 56, 128, 3, 2, 1, 0.0029655326), (128, 28, 128, 3, 1, 1, 0.0051833916),
          (64, 56, 64, 3, 1, 1, 0.005699331), (64, 56, 128, 1, 2, 0, 0.0013487228),
          (128, 28, 256, 1, 2, 0, 0.0010287708), (256, 14, 512, 1, 2, 0, 0.0010809022))


def rows(spec_name: str = "vta_like") -> list[dict]:
    from tvm_memflat.hardware.call_tiling import CallShape, choose_tiling, tiling_cost
    from tvm_memflat.planner.live_ranges import Window
    from tvm_memflat.spec import load_spec

    spec = load_spec(spec_name)
    out = []
    for cin, size, cout, k, stride, pad, seconds in LAYERS:
        o = (size + 2 * pad - k) // stride + 1
        shape = CallShape("gemm", Window(cin, size, size, o, o, k, k, stride, stride, 1, 1,
                                         pad, pad), 1, cin, cout)
        tiling = choose_tiling(shape, spec)
        cost = tiling_cost(shape, tiling, spec)
        macs = cin * cout * k * k * o * o
        out.append({"layer": f"{cin}->{cout} {k}x{k}/{stride} on {size}x{size}",
                    "macs": macs, "compute_bound_cycles": -(-macs // spec.compute.macs_per_cycle),
                    "published_cycles": round(seconds * CLOCK_HZ),
                    "ours_cycles": cost.cycles,
                    "ours_tiling": (f"{tiling.rows}x{tiling.cols}px oc{tiling.out_block}"
                                    f" ic{tiling.in_block} {tiling.order}"),
                    "ours_over_published": cost.cycles / (seconds * CLOCK_HZ)})
    return out


def main(argv=None) -> int:
    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    table = rows()
    head = f"{'layer':<26}{'MMACs':>7}{'bound kcyc':>11}{'published':>10}{'ours':>8}{'ours/pub':>9}"
    print(f"ResNet-18 on VTA (Pynq, 1x16x16, 100 MHz), kcycles; published: {SOURCE}")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['layer']:<26}{r['macs'] / 1e6:>7.1f}{r['compute_bound_cycles'] / 1e3:>11.0f}"
              f"{r['published_cycles'] / 1e3:>10.0f}{r['ours_cycles'] / 1e3:>8.0f}"
              f"{r['ours_over_published']:>9.2f}")
    pub = sum(r["published_cycles"] for r in table)
    ours = sum(r["ours_cycles"] for r in table)
    bound = sum(r["compute_bound_cycles"] for r in table)
    print(f"{'all ten':<26}{'':>7}{bound / 1e3:>11.0f}{pub / 1e3:>10.0f}{ours / 1e3:>8.0f}"
          f"{ours / pub:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {**bench_meta(), "source": SOURCE, "clock_hz": CLOCK_HZ},
                       "rows": table, "published_cycles": pub, "ours_cycles": ours,
                       "compute_bound_cycles": bound}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
