"""Latency measurement, locally and through a real TVM RPC tracker with two servers."""

from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_memflat.errors import MemflatError
from tvm_memflat.targets.stock import build_stock
from tvm_memflat.tuner.inputs import random_inputs
from tvm_memflat.tuner.measure import (
    MEMFLAT_SCHEDULE,
    STOCK_SCHEDULE,
    Measurement,
    RPCConfig,
    load_on_session,
    measure_executable,
    measure_many,
    parse_rpc_target,
    request_session,
    rpc_build_target,
)

from . import graphs

IN_SHAPE = (1, 16, 32, 32)


def _light():
    """conv1x1 16->4 on 32x32: 65k MACs."""
    return graphs._net(lambda bb, x, rng: graphs.conv(bb, x, rng, 4, k=1, name="c"),
                       in_shape=IN_SHAPE)


def _heavy():
    """Three conv3x3 32 on 32x32: 23.6M MACs, 360x the light one."""
    def body(bb, x, rng):
        h = graphs.conv(bb, x, rng, 32, name="c1")
        h = graphs.conv(bb, h, rng, 32, name="c2")
        return graphs.conv(bb, h, rng, 32, name="c3")
    return graphs._net(body, in_shape=IN_SHAPE)


@pytest.fixture(scope="module")
def executables():
    light, heavy = _light(), _heavy()
    return build_stock(light), build_stock(heavy), random_inputs(light["main"])


def _check(m: Measurement, repeat: int, number: int, where: str,
           schedule: str = MEMFLAT_SCHEDULE):
    assert m.repeat == repeat and m.number == number and m.where == where
    assert m.schedule == schedule
    for v in (m.median_ms, m.mean_ms):
        assert math.isfinite(v) and v > 0
    assert math.isfinite(m.std_ms) and m.std_ms >= 0
    assert set(m.to_dict()) == {"median_ms", "mean_ms", "std_ms", "repeat", "number", "where",
                                "schedule"}


def test_local_measurement_of_memflat_build():
    from tvm_memflat import build

    mod = graphs.chain()
    m = measure_executable(build(mod), random_inputs(mod["main"]), repeat=4, number=2)
    _check(m, 4, 2, "local")


def test_local_heavy_is_slower_than_light(executables):
    light, heavy, inputs = executables
    seen = []
    results = measure_many([light, heavy], inputs, repeat=3, schedule=STOCK_SCHEDULE,
                           progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)]
    for m in results:
        _check(m, 3, 1, "local", STOCK_SCHEDULE)
    assert results[1].median_ms > 5 * results[0].median_ms, results


def test_bad_counts_raise(executables):
    light, _, inputs = executables
    with pytest.raises(MemflatError):
        measure_executable(light, inputs, repeat=0)
    with pytest.raises(MemflatError):
        measure_many([light], inputs, parallel=0)


@pytest.mark.parametrize("text, expected", [
    ("rasp4@10.0.0.2:9190", RPCConfig("10.0.0.2", 9190, "rasp4")),
    (" cpu-test@localhost:1 ", RPCConfig("localhost", 1, "cpu-test")),
    ("a@b@tracker.lan:65535", RPCConfig("tracker.lan", 65535, "a@b")),
    ("k@[::1]:9190", RPCConfig("::1", 9190, "k")),
])
def test_parse_good(text, expected):
    cfg = RPCConfig.parse(text)
    assert cfg == expected
    assert RPCConfig.parse(str(cfg)) == cfg


@pytest.mark.parametrize("text", [
    "", "rasp4", "10.0.0.2:9190", "@host:9190", "key@:9190", "key@host", "key@host:",
    "key@host:port", "key@host:0", "key@host:70000", "my key@host:9190",
])
def test_parse_bad(text):
    with pytest.raises(MemflatError, match="bad RPC address") as err:
        RPCConfig.parse(text)
    assert "\n" not in str(err.value)


AARCH64 = '{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}'


def test_rpc_target_parses_to_a_dict():
    cfg = RPCConfig.parse("rasp4@10.0.0.2:9190", target=AARCH64)
    assert cfg.target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
    assert str(cfg) == "rasp4@10.0.0.2:9190" and RPCConfig.parse(str(cfg)).target is None
    assert cfg.target_json == '{"kind":"llvm","mtriple":"aarch64-linux-gnu"}'
    assert RPCConfig.parse(str(cfg), target=cfg.target) == cfg
    assert hash(cfg) == hash(RPCConfig.parse(str(cfg), target=AARCH64))


@pytest.mark.parametrize("text, message", [
    ("llvm -mtriple=aarch64-linux-gnu", "not JSON"),
    ('{"kind": "llvm",}', "not JSON"),
    ('["llvm"]', "expected a JSON object"),
    ('{"mtriple": "aarch64-linux-gnu"}', "unknown kind None"),
    ('{"kind": "cuda"}', "unknown kind 'cuda'"),
    ('{"kind": "llvm", "triple": "aarch64-linux-gnu"}', "Unknown config option 'triple'"),
])
def test_bad_rpc_target_is_one_line(text, message):
    with pytest.raises(MemflatError, match="^bad RPC target ") as err:
        RPCConfig.parse("k@host:9190", target=text)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MemflatError, match="^bad RPC target "):
        parse_rpc_target(text)


def test_rpc_target_reaches_the_build(tmp_path):
    """``--rpc-target`` JSON -> RPCConfig -> the Target measurement builds use -> AArch64 code."""
    import tarfile

    from tvm_memflat import build
    from tvm_memflat.host import host_cpu

    target = rpc_build_target(RPCConfig.parse("rasp4@10.0.0.2:9190", target=AARCH64))
    assert isinstance(target, tvm.target.Target)
    assert (target.kind.name, str(target.attrs["mtriple"])) == ("llvm", "aarch64-linux-gnu")
    host = rpc_build_target(None)
    assert host.kind.name == "llvm" and "aarch64" not in str(host.attrs.get("mtriple", ""))
    # locally: this CPU; a board without a target: generic llvm (its CPU is unknown here)
    assert "mcpu" in str(host) or host_cpu() is None
    assert str(rpc_build_target(RPCConfig.parse("k@h:1"))) == str(tvm.target.Target("llvm"))
    # The executable really is built for the board: its objects are AArch64 ELF.
    path = tmp_path / "lib.tar"
    build(graphs.chain(), target).export_library(str(path))
    with tarfile.open(path) as tar:
        heads = [tar.extractfile(m).read(20) for m in tar.getmembers() if m.isfile()]
    assert heads and all(h[:4] == b"\x7fELF" and int.from_bytes(h[18:20], "little") == 183
                         for h in heads)  # EM_AARCH64


def test_measure_uses_only_public_tracker_api():
    import inspect

    from tvm_memflat.tuner import measure

    assert "._sock" not in inspect.getsource(measure)


@pytest.fixture(scope="module")
def tracker_config():
    """A local tracker with two servers registered under a key unique to this run."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    start = random.Random().randrange(20000, 40000)
    key = f"memflat-test-{start}"
    try:
        tracker = Tracker(host="127.0.0.1", port=start, port_end=start + 500, silent=True)
    except (OSError, ValueError) as err:
        pytest.skip(f"the RPC tracker cannot bind a local port: {err}")
    servers = []
    try:
        for _ in range(2):
            servers.append(rpc.Server(host="127.0.0.1", port=start + 500, port_end=start + 1000,
                                      key=key, tracker_addr=("127.0.0.1", tracker.port),
                                      silent=True))
        deadline = time.monotonic() + 30
        while True:
            summary = rpc.connect_tracker("127.0.0.1", tracker.port).summary()
            if summary["queue_info"].get(key, {}).get("free", 0) >= 2:
                break
            assert time.monotonic() < deadline, f"servers did not register: {summary}"
            time.sleep(0.1)
        yield RPCConfig("127.0.0.1", tracker.port, key, session_timeout_s=60.0,
                        request_timeout_s=60.0)
    finally:
        for server in servers:
            server.terminate()
        tracker.terminate()


def test_rpc_measure_many_in_order(executables, tracker_config):
    light, heavy, inputs = executables
    seen = []
    results = measure_many([heavy, light], inputs, rpc=tracker_config, parallel=2, repeat=3,
                           schedule=STOCK_SCHEDULE,
                           progress=lambda i, n: seen.append((i, n)))
    assert sorted(seen) == [(1, 2), (2, 2)]
    for m in results:
        _check(m, 3, 1, f"rpc:{tracker_config}", STOCK_SCHEDULE)
    assert results[0].median_ms > 5 * results[1].median_ms, results


def test_rpc_outputs_equal_local(executables, tracker_config):
    _, heavy, inputs = executables
    local = relax.VirtualMachine(heavy, tvm.cpu())["main"](
        *[tvm.runtime.tensor(a) for a in inputs]).numpy()
    with request_session(tracker_config) as session:
        vm, dev = load_on_session(session, heavy)
        remote = vm["main"](*[tvm.runtime.tensor(a, dev) for a in inputs]).numpy()
    np.testing.assert_allclose(remote, local, rtol=1e-6, atol=1e-6)


def test_rpc_unknown_key_raises(tracker_config):
    cfg = RPCConfig(tracker_config.tracker_host, tracker_config.tracker_port, "no-such-board")
    with pytest.raises(MemflatError, match="no RPC server with key 'no-such-board'"):
        with request_session(cfg):
            pass


def test_rpc_request_times_out_when_all_servers_are_busy(tracker_config):
    busy = dataclasses.replace(tracker_config, request_timeout_s=1.0)
    with request_session(tracker_config), request_session(tracker_config):
        start = time.monotonic()
        with pytest.raises(MemflatError, match="no RPC session .* within 1 s"):
            with request_session(busy):
                pass
        assert time.monotonic() - start < 10


def test_rpc_tuple_output(tracker_config):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(x))
            b = bb.emit(relax.op.add(x, x))
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    executable = build_stock(bb.get())
    m = measure_executable(executable, [np.ones((1, 4, 8, 8), "float32")], rpc=tracker_config,
                           repeat=2, schedule=STOCK_SCHEDULE)
    _check(m, 2, 1, f"rpc:{tracker_config}", STOCK_SCHEDULE)


def test_rpc_with_a_board_target_links_on_the_board(tracker_config):
    """With ``target`` set, the executable goes up as a .tar the server links itself."""
    from tvm_memflat import build

    host_triple = str(rpc_build_target(None).attrs["mtriple"])
    cfg = dataclasses.replace(tracker_config, target=parse_rpc_target(
        f'{{"kind": "llvm", "mtriple": "{host_triple}"}}'))
    mod = graphs.chain()
    inputs = random_inputs(mod["main"])
    executable = build(mod, rpc_build_target(cfg))
    m = measure_executable(executable, inputs, rpc=cfg, repeat=2)
    _check(m, 2, 1, f"rpc:{tracker_config}")
    local = relax.VirtualMachine(executable, tvm.cpu())["main"](
        *[tvm.runtime.tensor(a) for a in inputs]).numpy()
    with request_session(cfg) as session:
        vm, dev = load_on_session(session, executable, link_on_board=True)
        remote = vm["main"](*[tvm.runtime.tensor(a, dev) for a in inputs]).numpy()
    np.testing.assert_allclose(remote, local, rtol=1e-6, atol=1e-6)
