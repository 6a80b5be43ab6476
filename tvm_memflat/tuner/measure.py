"""Latency of compiled Relax modules on llvm, locally or on boards behind TVM's RPC tracker.

Locally, ``main`` is timed with ``relax.VirtualMachine.time_evaluator`` (one
discarded warm-up call, then ``repeat`` timings of ``number`` calls each).
Through RPC, every measurement requests its own session from the tracker,
uploads the executable as a shared library, loads it on the remote CPU, copies
the inputs there and times ``main`` on the remote device, so
:func:`measure_many` can keep several boards busy at once.

Executables for RPC measurement are built for :func:`rpc_build_target`: the
board's target when :attr:`RPCConfig.target` gives one (e.g.
``{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}``), else this host. With a
board target the executable is uploaded as a ``.tar`` of object files that the
board links with its own compiler (TVM's RPC server does that on load), so no
cross compiler is needed here.

Which kernels are timed
-----------------------
Whatever the executable holds: this module times it and does not know how it was
built, so the caller says (``schedule=``), and every :class:`Measurement` carries
that label in :attr:`Measurement.schedule`. The default,
:data:`MEMFLAT_SCHEDULE`, is what :func:`tvm_memflat.build` makes for llvm: the
default CPU schedules of :mod:`tvm_memflat.lowering.cpu_schedule` (vectorised,
parallel over the runtime's threads). Executables from stock TVM
(``relax.get_default_pipeline(llvm)``, :func:`tvm_memflat.targets.stock.build_stock`)
are TVM's default legalization, unscheduled: measure them with
``schedule=STOCK_SCHEDULE``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..errors import MemflatError

#: What :class:`Measurement.schedule` reports for :func:`tvm_memflat.build`'s llvm kernels.
MEMFLAT_SCHEDULE = "tvm_memflat.build: default CPU schedules (lowering/cpu_schedule.py)"
#: ... and for stock TVM's (``relax.get_default_pipeline(llvm)``).
STOCK_SCHEDULE = "stock TVM: default legalization (unscheduled, 1 thread)"


@dataclass(frozen=True)
class RPCConfig:
    """Where to find measurement boards: a TVM RPC tracker and a device key.

    Parameters
    ----------
    tracker_host
        Host name or address of the tracker (``python -m tvm.exec.rpc_tracker``).
    tracker_port
        Its TCP port.
    key
        Device key the servers registered with (``python -m tvm.exec.rpc_server
        --tracker host:port --key KEY``).
    session_timeout_s
        A server ends a session that lasts longer than this.
    request_timeout_s
        Give up waiting for a free server after this long (raises
        :class:`~tvm_memflat.errors.MemflatError`).
    target
        The boards' TVM target as a dict (kind ``llvm``), e.g.
        ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}``; ``None``: the boards
        run what this host runs. See :func:`parse_rpc_target` and
        :func:`rpc_build_target`.
    """

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_s: float = 60.0
    request_timeout_s: float = 600.0
    target: dict | None = field(default=None, hash=False)

    @classmethod
    def parse(cls, text: str, target: str | dict | None = None) -> RPCConfig:
        """Parse ``"key@host:port"`` (IPv6 hosts in brackets: ``"key@[::1]:9190"``).

        ``target`` is the boards' target: JSON text or a dict, checked by
        :func:`parse_rpc_target` (``None``: this host's).

        Raises
        ------
        MemflatError
            If ``text`` is not of that form, the port is not in 1..65535, or the
            target is bad.
        """
        expected = f"bad RPC address {text!r}: expected key@host:port, e.g. rasp4@10.0.0.2:9190"
        key, at, address = text.strip().rpartition("@")
        host, colon, port_text = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not (at and colon and key and host) or any(c.isspace() for c in key + host):
            raise MemflatError(expected)
        try:
            port = int(port_text)
        except ValueError:
            raise MemflatError(expected) from None
        if not 0 < port < 65536:
            raise MemflatError(f"bad RPC address {text!r}: port {port} is not in 1..65535")
        return cls(host, port, key, target=None if target is None else parse_rpc_target(target))

    @property
    def target_json(self) -> str | None:
        """:attr:`target` as compact JSON (for reports and cache keys), or ``None``."""
        return None if self.target is None else json.dumps(self.target, sort_keys=True,
                                                           separators=(",", ":"))

    def __str__(self) -> str:
        host = f"[{self.tracker_host}]" if ":" in self.tracker_host else self.tracker_host
        return f"{self.key}@{host}:{self.tracker_port}"


def parse_rpc_target(text: str | dict) -> dict:
    """The boards' target from JSON text (``--rpc-target``) or a dict, checked.

    TVM 0.27 takes targets as dicts; the old ``"llvm -mtriple=..."`` strings are
    refused by TVM, and so here. Only kind ``llvm`` can be measured (a VM on the
    board's CPU).

    Raises
    ------
    MemflatError
        One line: not JSON, not an object, kind missing or not ``llvm``, or an
        option TVM does not know.
    """
    shown = text if isinstance(text, str) else json.dumps(text)
    example = 'e.g. {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}'
    if isinstance(text, str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise MemflatError(f"bad RPC target {shown!r}: not JSON ({err.msg} at column "
                               f"{err.colno}); expected an object, {example}") from None
    else:
        value = text
    if not isinstance(value, dict):
        raise MemflatError(f"bad RPC target {shown!r}: expected a JSON object, {example}")
    kind = value.get("kind")
    if kind != "llvm":
        raise MemflatError(f"bad RPC target {shown!r}: unknown kind {kind!r} (RPC measurement "
                           f"runs on the board's CPU: kind \"llvm\"), {example}")
    try:
        tvm.target.Target(value)
    except (ValueError, RuntimeError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MemflatError(f"bad RPC target {shown!r}: {first}") from None
    return dict(value)


def rpc_build_target(rpc: RPCConfig | None) -> tvm.target.Target:
    """The target to build executables for measurement with ``rpc`` (``None``: locally).

    ``rpc.target`` when given; locally, llvm for this CPU (as ``build(mod, "llvm")``);
    through RPC without a target, generic ``llvm`` (the boards' CPU is not known here).
    Pass it to :func:`tvm_memflat.build`: ``build(mod, rpc_build_target(rpc))``.
    """
    if rpc is not None and rpc.target is not None:
        return tvm.target.Target(rpc.target)
    if rpc is None:
        from ..host import host_target

        return host_target()
    return tvm.target.Target("llvm")


@dataclass(frozen=True)
class Measurement:
    """Latency of one executable's ``main``, in milliseconds.

    Parameters
    ----------
    median_ms, mean_ms, std_ms
        Statistics over the ``repeat`` timings; each timing is the mean of
        ``number`` consecutive calls.
    repeat, number
        How many timings were taken, and calls per timing.
    where
        ``"local"`` or ``"rpc:key@host:port"``.
    schedule
        Which kernels were timed, as the caller said: :data:`MEMFLAT_SCHEDULE`,
        :data:`STOCK_SCHEDULE` or the caller's own words.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    repeat: int
    number: int
    where: str
    schedule: str

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def measure_executable(executable, inputs: Sequence, *, repeat: int = 5, number: int = 1,
                       rpc: RPCConfig | None = None, min_repeat_ms: int = 0,
                       schedule: str = MEMFLAT_SCHEDULE) -> Measurement:
    """Time ``main`` of ``executable`` on ``inputs``.

    Parameters
    ----------
    executable
        A ``relax.VMExecutable`` from ``tvm.compile`` or :func:`tvm_memflat.build`
        for an llvm target the measuring CPU can run: with ``rpc``, built for
        :func:`rpc_build_target` ``(rpc)``.
    inputs
        One array per parameter of ``main`` (numpy arrays or ``tvm.runtime.Tensor``).
    repeat
        Number of timings (after one discarded warm-up call).
    number
        Calls per timing; the timing is their mean.
    rpc
        Measure on a board from this tracker instead of this host.
    min_repeat_ms
        Raise ``number`` until one timing lasts at least this long (TVM's
        ``time_evaluator`` option); the reported ``number`` is the requested one.
    schedule
        Which kernels ``executable`` holds, for :attr:`Measurement.schedule`.

    Returns
    -------
    Measurement

    Raises
    ------
    MemflatError
        Bad ``repeat``/``number``, or no RPC server could be had for ``rpc``.
    """
    if repeat < 1 or number < 1:
        raise MemflatError(f"repeat and number must be >= 1, got repeat={repeat} number={number}")
    if rpc is None:
        dev = tvm.cpu()
        vm = relax.VirtualMachine(executable, dev)
        args = [_to_tensor(a, dev) for a in inputs]
        result = vm.time_evaluator("main", dev, number=number, repeat=repeat,
                                   min_repeat_ms=min_repeat_ms)(*args)
        return _measurement(result.results, repeat, number, "local", schedule)
    with request_session(rpc) as session:
        vm, dev = load_on_session(session, executable, link_on_board=rpc.target is not None)
        args = [_to_tensor(a, dev) for a in inputs]
        # The stateful form also works when main returns a tuple (which cannot
        # cross the RPC boundary as a return value).
        vm.set_input("main", *args)
        result = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat,
                                   min_repeat_ms=min_repeat_ms)("main")
        return _measurement(result.results, repeat, number, f"rpc:{rpc}", schedule)


def measure_many(executables: list, inputs: Sequence, *, rpc: RPCConfig | None = None,
                 parallel: int = 1, repeat: int = 5, number: int = 1,
                 progress: Callable[[int, int], None] | None = None,
                 schedule: str = MEMFLAT_SCHEDULE) -> list[Measurement]:
    """Time several executables of the same model (same ``inputs``).

    Parameters
    ----------
    executables
        ``relax.VMExecutable`` objects whose ``main`` accepts ``inputs``.
    inputs
        One array per parameter of ``main``, shared by all executables.
    rpc
        Measure on boards from this tracker. Without it, measurements run one
        after the other on this host (parallel timings would disturb each other).
    parallel
        With ``rpc``: how many measurements run at once, each in its own
        session (so on its own board when the tracker has that many free).
    repeat, number, schedule
        As for :func:`measure_executable`.
    progress
        Called as ``progress(done, total)`` after each finished measurement.

    Returns
    -------
    list[Measurement]
        In the order of ``executables``.
    """
    if parallel < 1:
        raise MemflatError(f"parallel must be >= 1, got {parallel}")
    total = len(executables)

    def one(executable) -> Measurement:
        return measure_executable(executable, inputs, repeat=repeat, number=number, rpc=rpc,
                                  schedule=schedule)

    if rpc is None or parallel == 1:
        results = []
        for executable in executables:
            results.append(one(executable))
            if progress is not None:
                progress(len(results), total)
        return results
    measured: list[Measurement | None] = [None] * total
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {pool.submit(one, ex): i for i, ex in enumerate(executables)}
        try:
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                measured[futures[future]] = future.result()
                if progress is not None:
                    progress(done, total)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return measured


#: Tries per session request: a server that waited too long for its client
#: re-registers under a new match key, and the tracker may still hand out the old one.
_REQUEST_TRIES = 3
#: Seconds between looks at the tracker's queue while no server is free.
_POLL_S = 0.2


@contextlib.contextmanager
def request_session(rpc: RPCConfig):
    """A remote session from ``rpc``'s tracker, for a ``with`` block.

    Waits at most ``rpc.request_timeout_s`` for a free server. The session
    (and its server) is released once the block has ended and no reference to
    it, or to a VM or tensor on it, remains.

    Raises
    ------
    MemflatError
        The tracker cannot be reached, has no server with the key, or none
        became free in time.
    """
    session = _request(rpc)  # held here: the session ends when the last reference goes
    yield session


def _request(rpc: RPCConfig):
    from tvm import rpc as tvm_rpc

    deadline = time.monotonic() + rpc.request_timeout_s
    error = None
    for attempt in range(_REQUEST_TRIES):
        if deadline - time.monotonic() <= 0:
            break
        try:
            tracker = tvm_rpc.connect_tracker(rpc.tracker_host, rpc.tracker_port)
        except (OSError, RuntimeError) as err:
            raise MemflatError(f"cannot reach the RPC tracker at {rpc}: {err}") from None
        try:
            free = _wait_for_free_server(tracker, rpc, deadline, check_key=attempt == 0)
        except (OSError, RuntimeError) as err:
            tracker.close()
            error = err
            continue
        if not free:
            tracker.close()
            error = "no server became free"
            break
        session, error = _request_within(tracker, rpc, deadline - time.monotonic())
        if session is not None:
            return session
    raise MemflatError(f"no RPC session for {rpc} within {rpc.request_timeout_s:g} s: {error}")


def _wait_for_free_server(tracker, rpc: RPCConfig, deadline: float, *, check_key: bool) -> bool:
    """Poll the tracker's public summary until a server with ``rpc.key`` is free."""
    while True:
        summary = tracker.summary()
        if check_key:
            servers = {s["key"].split(":", 1)[-1] for s in summary["server_info"]}
            if rpc.key not in servers:
                tracker.close()
                raise MemflatError(
                    f"no RPC server with key {rpc.key!r} at the tracker {rpc}"
                    f" (keys there: {', '.join(sorted(servers)) or 'none'})")
            check_key = False
        if summary["queue_info"].get(rpc.key, {}).get("free", 0) > 0:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(_POLL_S, remaining))


def _request_within(tracker, rpc: RPCConfig, timeout: float):
    """``tracker.request`` bounded by ``timeout``: ``(session, None)`` or ``(None, error)``.

    ``TrackerSession.request`` blocks until a server is free and has no timeout of its
    own, so it runs in a daemon thread that owns (and closes) ``tracker``; after
    ``timeout`` the request is abandoned, and a session it still gets is dropped
    (which frees its server). The server was free a moment ago, so this is rare.
    """
    outcome: dict = {}
    done = threading.Event()

    def run():
        try:
            # One try per connection: its own retries would reconnect and wait again.
            outcome["session"] = tracker.request(rpc.key, session_timeout=rpc.session_timeout_s,
                                                 max_retry=1)
        except Exception as err:  # noqa: BLE001 - handed to the caller, who reports it
            outcome["error"] = err
        finally:
            tracker.close()
            done.set()

    threading.Thread(target=run, name=f"memflat-rpc-request-{rpc.key}", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        return None, "the tracker handed out no server in time"
    return outcome.get("session"), outcome.get("error")


def load_on_session(session, executable, *, link_on_board: bool = False
                    ) -> tuple[relax.VirtualMachine, tvm.runtime.Device]:
    """Upload ``executable`` to ``session``; return a VM on its CPU and that device.

    ``link_on_board``: upload a ``.tar`` of object files that the board links itself
    (for executables built for another target than this host's), not a ``.so``
    linked here.
    """
    with tempfile.TemporaryDirectory(prefix="memflat_measure_") as tmp:
        name = f"memflat_{uuid.uuid4().hex}.{'tar' if link_on_board else 'so'}"
        path = os.path.join(tmp, name)
        executable.export_library(path)
        session.upload(path)
    dev = session.cpu()
    return relax.VirtualMachine(session.load_module(name), dev), dev


def _to_tensor(array, dev):
    if isinstance(array, tvm.runtime.Tensor):
        array = array.numpy()
    return tvm.runtime.tensor(np.array(array, order="C"), dev)  # keeps 0-d 0-d


def _measurement(seconds, repeat: int, number: int, where: str, schedule: str) -> Measurement:
    ms = np.asarray([float(s) * 1000.0 for s in seconds], dtype=np.float64)
    if ms.size != repeat or not all(math.isfinite(v) for v in ms):
        raise MemflatError(f"time_evaluator returned {ms.tolist()} for repeat={repeat}")
    return Measurement(median_ms=float(np.median(ms)), mean_ms=float(ms.mean()),
                       std_ms=float(ms.std()), repeat=repeat, number=number, where=where,
                       schedule=schedule)
