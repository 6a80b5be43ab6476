"""Per-call tiling on buffered specs: the chooser, its closed form, and the replay."""

import dataclasses

import numpy as np
import pytest
from tvm import relax

from tvm_memflat.errors import MemflatError, ScheduleViolation
from tvm_memflat.hardware.call_tiling import (
    CallShape,
    CallTiling,
    TilingError,
    box_tile_sizes,
    choose_tiling,
    fits,
    keep_weights_on_chip,
    plan_buffered,
    resident_weight_bytes,
    tile_bytes,
    tiling_cost,
    tiling_space,
)
from tvm_memflat.hardware.cost_model import SpecCostModel
from tvm_memflat.planner.live_ranges import Window
from tvm_memflat.spec import load_spec
from tvm_memflat.targets.tile_sim import exhaustive_tiling, replay_call
from tvm_memflat.targets.vta_like import simulate
from tvm_memflat.tuner.cost_model import lowered

from . import graphs

VTA = load_spec("vta_like")


def _sized(spec, **sizes):
    """``spec`` with some memories resized (``input_buffer=2048``)."""
    mems = tuple(dataclasses.replace(m, size_bytes=sizes[m.name]) if m.name in sizes else m
                 for m in spec.memories)
    return dataclasses.replace(spec, memories=mems)


# A small VTA: buffers of 2 KiB input, 8 KiB weights, 4 KiB accumulators, so that the
# small shapes of the property tests need real tiling.
SMALL = _sized(VTA, input_buffer=2048, weight_buffer=8192, accumulator_buffer=4096)


def test_hand_worked_layer():
    # A 3x3, stride 1, pad 1 conv, 64 -> 64 channels, on a 56x56 int8 input.
    # The input with its padding is 58*58*64 = 215,296 B (196 KiB of data): it must be
    # split to fit the 32 KiB input buffer. The weights, 64*64*9 = 36,864 B (36 KiB),
    # fit the 256 KiB weight buffer whole, so neither channel needs blocking (blocking
    # the input channels would reload the weights per pixel tile; blocking the output
    # channels would reload the input or the weights): the tile keeps all 64 channels,
    # the weights load once and the input once plus its halo.
    # Fit: input tile (r+2)(c+2)*64 <= 32768 -> (r+2)(c+2) <= 512; accumulators
    # r*c*64*4 <= 131072 -> r*c <= 512. Tile sizes are ceil(56/t): 56, 28, 19, 14, ...
    # The input read is (sum of the tiles' clipped input rows) x (same for columns)
    # x 64: every interior tile boundary re-reads 2 halo rows (or columns).
    #   r=56: (58)(c+2) <= 512 -> c=6 (10 tiles): 56 x (56+18) = 4144
    #   r=28: (30)(c+2) <= 512 -> c=14 (4 tiles): (56+2) x (56+6) = 3596  <- least
    #   r=19: (21)(c+2) <= 512 -> c=19 (3 tiles): (56+4) x (56+4) = 3600
    #   r=14: c=28 -> 3596 as well (the transpose); r=12: c=28 -> 64 x 58 = 3712
    # Traffic: input 3596*64 = 230,144 + weights 36,864 + output 56*56*64 = 200,704
    # = 467,712 B, in 8 input loads + 1 weight load + 8 output stores = 17 transfers.
    # Tiles: input (14+2)*(28+2)*64 = 30,720 B, weights 36,864 B, accumulators
    # 14*28*64*4 = 100,352 B.
    # Cycles: 56*56 pixels x 9 taps x (64/16)^2 blocks = 451,584 GEMM cycles; DRAM
    # 467,712/8 = 58,464 + 17*64 latency = 59,552; no double buffering, so serial:
    # 451,584 + 59,552 + 64 call overhead = 511,200 cycles.
    shape = CallShape("gemm", Window(64, 56, 56, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1), 1, 64, 64)
    tiling = choose_tiling(shape, VTA)
    assert {(tiling.rows, tiling.cols)} <= {(14, 28), (28, 14)}
    assert (tiling.out_block, tiling.in_block) == (64, 64)
    cost = tiling_cost(shape, tiling, VTA)
    assert (cost.input_traffic_bytes, cost.weight_traffic_bytes,
            cost.output_traffic_bytes) == (230_144, 36_864, 200_704)
    assert cost.traffic_bytes == 467_712 and cost.transfers == 17
    assert tile_bytes(shape, tiling, VTA) == tile_bytes(
        shape, CallTiling(14, 28, 1, 64, 64), VTA)
    assert tile_bytes(shape, CallTiling(14, 28, 1, 64, 64), VTA).input == 30_720
    assert (cost.compute_cycles, cost.dram_cycles, cost.cycles) == (451_584, 59_552, 511_200)
    replay = replay_call(shape, tiling, VTA)
    assert (replay.traffic_bytes, replay.transfers, replay.cycles) == (467_712, 17, 511_200)
    best, got = exhaustive_tiling(shape, VTA)
    assert got.traffic_bytes == 467_712 and got.cycles == 511_200


def _random_shape(rng) -> CallShape:
    shape = _random_call(rng)
    if shape.kind == "gemm":  # a fused bias / activation on some
        shape = dataclasses.replace(shape, epilogue=int(rng.integers(0, 3)))
    return shape


def _random_call(rng) -> CallShape:
    kind = rng.choice(["conv", "depthwise", "grouped", "pool", "dense", "eltwise"])
    k = int(rng.choice([1, 3, 5]))
    stride = int(rng.choice([1, 2]))
    size = int(rng.integers(4, 15))
    pad = int(rng.integers(0, k // 2 + 1))
    out = (size + 2 * pad - k) // stride + 1
    if out < 1:
        k, pad, out = 1, 0, size
    win = Window(1, size, size, out, out, k, k, stride, stride, 1, 1, pad, pad)
    if kind == "dense":
        m = int(rng.integers(1, 5))
        return CallShape("gemm", Window(1, m, 1, m, 1), 1, int(rng.integers(8, 90)),
                         int(rng.integers(8, 90)))
    if kind == "eltwise":
        n = int(rng.integers(16, 600))
        return CallShape("vector", Window(1, n, 1, n, 1), operands=int(rng.integers(1, 3)))
    if kind == "pool":
        c = int(rng.integers(1, 24))
        return CallShape("vector", dataclasses.replace(win, channels=c), c, 1, 1)
    if kind == "depthwise":
        c = int(rng.integers(1, 40))
        return CallShape("gemm", dataclasses.replace(win, channels=c), c, 1, 1)
    if kind == "grouped":
        g = int(rng.choice([2, 4]))
        cin, cout = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        return CallShape("gemm", dataclasses.replace(win, channels=g * cin), g, cin, cout)
    cin, cout = int(rng.integers(1, 48)), int(rng.integers(1, 48))
    return CallShape("gemm", dataclasses.replace(win, channels=cin), 1, cin, cout)


def test_chooser_finds_the_exhaustive_optimum_on_random_calls():
    """Property: on random calls, the chooser's traffic is the least traffic of every
    tiling that fits (each replayed), and its cycles the least at that traffic."""
    rng = np.random.default_rng(18)
    checked = unfit = 0
    for _ in range(60):
        shape = _random_shape(rng)
        ref = exhaustive_tiling(shape, SMALL)
        if ref is None:  # nothing fits the small spec: the chooser says so too
            with pytest.raises(TilingError):
                choose_tiling(shape, SMALL)
            unfit += 1
            continue
        tiling = choose_tiling(shape, SMALL)
        mine = replay_call(shape, tiling, SMALL)
        assert (mine.traffic_bytes, mine.cycles) == (ref[1].traffic_bytes, ref[1].cycles), \
            (shape, tiling, ref[0])
        checked += 1
    print(f"chooser vs exhaustive: {checked} calls checked, {unfit} fit no tiling")
    assert checked >= 45 and unfit <= 15


def test_closed_form_equals_the_replay():
    """Property: bytes and transfers exactly, cycles within 5 %, on random fitting
    tilings of random calls; the replay's resident bytes never exceed a memory."""
    rng = np.random.default_rng(7)
    sizes = {m.name: m.size_bytes for m in VTA.memories}

    def check(cost, replay):
        assert cost.compute_cycles == replay.compute_cycles
        assert all(v <= sizes[m] for m, v in replay.high_water_bytes.items())

    compared = sum(_closed_form_agrees(rng, _random_shape(rng), VTA, check, tilings=6)
                   for _ in range(40))
    assert compared >= 100


def _closed_form_agrees(rng, shape: CallShape, spec, check, tilings: int = 4) -> int:
    """On up to ``tilings`` random tilings of ``shape``: one that does not fit raises
    in the replay; one that fits has the closed form equal to the replay (bytes and
    transfers exactly, cycles within 5 %) and passes ``check(cost, replay)``.
    Returns how many were compared."""
    compared = 0
    space = [(part, r, c) for part, rows, cols in tiling_space(shape, spec)
             for r in rows for c in cols]
    for i in rng.choice(len(space), size=min(tilings, len(space)), replace=False):
        (g, ob, ib, order), r, c = space[int(i)]
        tiling = CallTiling(r, c, g, ob, ib, order)
        if not fits(shape, tiling, spec):
            with pytest.raises(ScheduleViolation):
                replay_call(shape, tiling, spec)
            continue
        cost, replay = tiling_cost(shape, tiling, spec), replay_call(shape, tiling, spec)
        assert cost.traffic_bytes == replay.traffic_bytes, (shape, tiling)
        assert cost.transfers == replay.transfers, (shape, tiling)
        assert replay.cycles == pytest.approx(cost.cycles, rel=0.05), (shape, tiling)
        check(cost, replay)
        compared += 1
    return compared


def _resident_weights(rng, shape: CallShape, spec) -> CallShape:
    """``shape`` (a GEMM) with its weights resident: loading them (or not), and a
    reservation of them plus some other weights kept beside them."""
    return dataclasses.replace(
        shape, weight_on_chip=True, weight_preload=bool(rng.integers(0, 2)),
        weight_reserved_bytes=resident_weight_bytes(shape, spec) + 256 * int(rng.integers(0, 9)))


def _marked_calls_agree(seed: int, mark, check, cycles_rel: float, calls: int) -> None:
    """Property over ``calls`` random calls, each given on-chip marks by ``mark(rng,
    shape)`` (None: skipped, counted): :func:`_closed_form_agrees` on SMALL with
    ``check(shape, cost, replay)``, then the chooser's replay against the exhaustive
    least traffic (exactly) and its cycles (within ``cycles_rel``)."""
    rng = np.random.default_rng(seed)
    compared = optimal = skipped = 0
    for _ in range(calls):
        shape = mark(rng, _random_shape(rng))
        if shape is None:
            skipped += 1
            continue
        compared += _closed_form_agrees(rng, shape, SMALL,
                                        lambda cost, replay, s=shape: check(s, cost, replay))
        ref = exhaustive_tiling(shape, SMALL)
        if ref is not None:
            mine = replay_call(shape, choose_tiling(shape, SMALL), SMALL)
            assert mine.traffic_bytes == ref[1].traffic_bytes, (shape, ref[0])
            assert mine.cycles == pytest.approx(ref[1].cycles, rel=cycles_rel, abs=0), \
                (shape, ref[0])
            optimal += 1
    print(f"{compared} tilings compared, {optimal} optima checked, {skipped} calls skipped")
    assert compared >= 100 and optimal >= 40


def test_resident_weights_closed_form_equals_the_replay_and_the_exhaustive_optimum():
    """Property: with the weights resident in the weight memory (kept across the calls
    that share them), the closed form equals the replay (bytes and transfers exactly,
    cycles within 5 %), the weights move once (preload) or never, the reservation is
    checked, and the chooser still finds the exhaustive optimum (cycles too). Vector
    calls have no weights: skipped, counted."""
    def mark(rng, plain):
        return _resident_weights(rng, plain, SMALL) if plain.kind == "gemm" else None

    def check(shape, cost, replay):
        once = shape.weight_bytes(1) if shape.weight_preload else 0
        assert cost.weight_traffic_bytes == replay.weight_bytes == once
        assert replay.high_water_bytes["weight_buffer"] >= shape.weight_reserved_bytes

    _marked_calls_agree(29, mark, check, cycles_rel=0.0, calls=200)


def test_tensors_kept_in_the_accumulator_memory_closed_form_equals_the_replay():
    """Property: a GEMM or vector call whose output stays in the accumulator memory
    (for a vector reader), and a vector call that reads its input there, with the
    reservation: the closed form equals the replay (bytes and transfers exactly,
    cycles within 5 %), no output bytes are stored or input bytes loaded, the
    reservation is held, and the chooser still finds the exhaustive least traffic.
    Its cycles are within 1 % of the least: the chooser ranks ties by the closed
    form's cycles, the reference by the replay's, which round per tile."""
    def mark(rng, plain):
        keep_out = bool(rng.integers(0, 2))
        keep_in = plain.kind == "vector" and plain.operands == 1 and (
            not keep_out or bool(rng.integers(0, 2)))
        return dataclasses.replace(plain, output_in_accumulator=keep_out,
                                   input_on_chip=keep_in,
                                   acc_reserved_bytes=64 * int(rng.integers(1, 16)))

    def check(shape, cost, replay):
        if shape.output_in_accumulator:
            assert cost.output_traffic_bytes == replay.write_bytes == 0
        if shape.input_on_chip:
            assert cost.input_traffic_bytes == 0
        assert replay.high_water_bytes["accumulator_buffer"] >= shape.acc_reserved_bytes

    _marked_calls_agree(31, mark, check, cycles_rel=0.01, calls=120)


def test_elementwise_tiles_are_boxes_of_the_tensor():
    """An elementwise call's tiles are runs of elements that are boxes of the tensor it
    writes: for (1, 3, 4, 6), d | 6 elements of a row, d | 4 rows of a channel, d | 3
    channels. The chooser keeps to them and still finds the exhaustive optimum (the
    reference searches the same space)."""
    assert box_tile_sizes((1, 3, 4, 6)) == [1, 2, 3, 6, 12, 24, 72]
    rng = np.random.default_rng(5)
    for _ in range(20):
        dims = (1, int(rng.integers(1, 20)), int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        n = int(np.prod(dims))
        shape = CallShape("vector", Window(1, n, 1, n, 1), dims=dims)
        tiling = choose_tiling(shape, SMALL)
        assert tiling.rows in box_tile_sizes(dims)
        ref = exhaustive_tiling(shape, SMALL)
        mine = replay_call(shape, tiling, SMALL)
        assert (mine.traffic_bytes, mine.cycles) == (ref[1].traffic_bytes, ref[1].cycles)


def test_resident_weights_by_hand():
    """A 1x1 conv, 32 -> 32 channels on 8x8 int8 (VTA: int8 weights, 16x16 blocks):
    its weights are 32*32 = 1024 B, 4 blocks of 256 B. Resident, a call that loads
    them moves 1024 B of weights in one transfer, one that does not moves none, and
    neither has a weight tile slot; the reservation is what the weight buffer holds."""
    shape = CallShape("gemm", Window(32, 8, 8, 8, 8), 1, 32, 32)
    assert resident_weight_bytes(shape, VTA) == 1024
    tiling = choose_tiling(shape, VTA)
    plain = tiling_cost(shape, tiling, VTA)
    assert plain.weight_traffic_bytes == 1024
    kept = dataclasses.replace(shape, weight_on_chip=True, weight_reserved_bytes=1024)
    loads = dataclasses.replace(kept, weight_preload=True)
    assert tile_bytes(kept, tiling, VTA).weight == 0
    assert tiling_cost(kept, tiling, VTA).weight_traffic_bytes == 0
    assert tiling_cost(kept, tiling, VTA).transfers == plain.transfers - 1
    assert tiling_cost(loads, tiling, VTA).weight_traffic_bytes == 1024
    assert tiling_cost(loads, tiling, VTA).transfers == plain.transfers
    assert replay_call(kept, tiling, VTA).high_water_bytes["weight_buffer"] == 1024
    # a reservation larger than the weight buffer cannot be replayed nor tiled
    over = dataclasses.replace(kept, weight_reserved_bytes=VTA_WEIGHT_BUFFER + 1)
    with pytest.raises(ScheduleViolation, match="weight_buffer holds"):
        replay_call(over, tiling, VTA)
    with pytest.raises(TilingError):
        choose_tiling(over, VTA)


VTA_WEIGHT_BUFFER = next(m.size_bytes for m in VTA.memories if m.name == "weight_buffer")


def test_the_tiles_of_a_region_keep_their_shared_weights_on_chip():
    """Two steps on the same weights (a region's tiles): kept, the first loads them
    once and the second none, and the plan moves fewer bytes than loading them per
    call; the simulator replays the same. Weights of one call only are not kept."""
    def twice(bb, x, rng):
        w = graphs._w(rng, (32, 32, 3, 3))
        a = bb.emit(relax.op.nn.conv2d(x, w, padding=1))
        return bb.emit(relax.op.nn.conv2d(bb.emit(relax.op.nn.relu(a)), w, padding=1))

    schedule = lowered(graphs._net(twice, (1, 32, 8, 8)))
    gemm = [s.step for s in schedule.steps if s.gemms]
    assert len(gemm) == 2
    plan = plan_buffered(schedule, VTA)
    (kept,) = plan.weights_kept
    assert (kept.first_step, kept.last_step, kept.calls) == (gemm[0], gemm[1], 2)
    assert kept.reserved_bytes == 32 * 32 * 9 and kept.saved_bytes >= 32 * 32 * 9
    first, second = (c for c in plan.calls if c.step in gemm)
    assert first.cost.weight_traffic_bytes == 32 * 32 * 9
    assert second.cost.weight_traffic_bytes == 0
    report = simulate(schedule, VTA, plan)
    assert report.dram_traffic_bytes == plan.traffic_bytes and report.fits
    # not kept: the same schedule with each step's weights its own
    shapes = {s.step: tuple(c.shape for c in plan.calls if c.step == s.step)
              for s in schedule.steps}
    plain = {k: tuple(dataclasses.replace(x, weight_on_chip=False, weight_preload=False,
                                          weight_reserved_bytes=0) for x in v)
             for k, v in shapes.items()}
    alone = [dataclasses.replace(s, weight_refs=s.weight_refs[:0]) for s in schedule.steps]
    _, none = keep_weights_on_chip(dataclasses.replace(schedule, steps=tuple(alone)), VTA,
                                   plain)
    assert none == ()
    loaded = sum(tiling_cost(x, choose_tiling(x, VTA), VTA).traffic_bytes
                 for v in plain.values() for x in v)
    assert plan.traffic_bytes == loaded - kept.saved_bytes < loaded


def _conv_net(cin=4, cout=8, size=12, **conv):
    return graphs._net(lambda bb, x, rng: graphs.conv(bb, x, rng, cout, **conv),
                       (1, cin, size, size))


def test_windows_are_read_from_the_lowered_kernels():
    def first(mod):
        return lowered(mod).steps[0]

    (g,) = first(_conv_net(stride=2, k=3, pad=1)).gemms
    assert g.window == Window(4, 12, 12, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1)

    def dilated(bb, x, rng):
        w = graphs._w(rng, (8, 4, 3, 3))
        return bb.emit(relax.op.nn.conv2d(x, w, padding=2, dilation=2))

    (g,) = first(graphs._net(dilated, (1, 4, 12, 12))).gemms
    assert (g.window.kernel_h, g.window.dilation_h, g.window.pad_top, g.window.out_h) == \
        (3, 2, 2, 12)

    def depthwise_and_pool(bb, x, rng):
        w = graphs._w(rng, (4, 1, 3, 3))
        y = bb.emit(relax.op.nn.conv2d(x, w, padding=1, groups=4))
        return bb.emit(relax.op.nn.max_pool2d(y, pool_size=3, strides=2))

    steps = lowered(graphs._net(depthwise_and_pool, (1, 4, 12, 12))).steps
    (g,) = steps[0].gemms
    assert (g.groups, g.window.kernel_h, g.window.out_h) == (4, 3, 12)
    pool = next(s for s in steps if s.windows)
    assert pool.windows[0] == Window(4, 12, 12, 5, 5, 3, 3, 2, 2, 1, 1, 0, 0)


def test_every_call_of_a_network_fits_and_the_simulator_agrees():
    schedule = lowered(graphs.branches())
    plan = plan_buffered(schedule, SMALL)
    report = simulate(schedule, SMALL, plan)
    assert report.fits and report.violations == ()
    assert report.dram_traffic_bytes == plan.traffic_bytes
    assert report.total_cycles == pytest.approx(plan.cycles, rel=0.05)
    sizes = {m.name: m.size_bytes for m in SMALL.memories}
    assert all(report.high_water_bytes[m] <= sizes[m] for m in sizes)
    assert plan.traffic_bytes >= plan.min_traffic_bytes
    assert all(layer.tiling for layer in report.layers)
    # the tuner's cost model is the closed form: bytes exactly, cycles within 5 %
    est = SpecCostModel(SMALL).estimate(schedule)
    assert sum(s.dram_read_bytes + s.dram_write_bytes for s in est.steps) == \
        report.dram_traffic_bytes
    for mine, sim in zip(est.steps, report.layers, strict=True):
        assert mine.cycles == pytest.approx(sim.cycles, rel=0.05)


def test_the_simulator_catches_a_hand_broken_schedule():
    schedule = lowered(_conv_net(cin=16, cout=32, size=16))
    plan = plan_buffered(schedule, SMALL)
    call = plan.calls[0]
    w = call.shape.window
    # Break it: the whole call in one tile. Its accumulators, 16x16 px x 32 channels
    # x 4 B = 32768 B, are the first tile placed and overflow the 4 KiB buffer.
    whole = dataclasses.replace(call.tiling, rows=w.out_h, cols=w.out_w)
    broken = dataclasses.replace(plan, calls=(dataclasses.replace(call, tiling=whole),
                                              *plan.calls[1:]))
    with pytest.raises(ScheduleViolation, match=r"step 0 \(fused_conv2d_relu\): "
                       r"accumulator_buffer holds 32768 B > 4096 B"):
        simulate(schedule, SMALL, broken)


def test_a_spec_whose_smallest_tile_cannot_fit_is_bad_input():
    schedule = lowered(_conv_net(cin=16, cout=32, size=16))
    tiny = _sized(VTA, input_buffer=64)
    with pytest.raises(MemflatError, match="smallest tile .* does not fit: input_buffer") as err:
        plan_buffered(schedule, tiny)
    assert "\n" not in str(err.value)
    with pytest.raises(MemflatError, match="not buffered"):
        plan_buffered(schedule, load_spec("mcu_256k"))
