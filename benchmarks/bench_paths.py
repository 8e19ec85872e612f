"""Per-frame cost of the bridge's reading loops against the bare relay's, with no sockets.

Run: ``python -m benchmarks.bench_paths`` (about 20 s; ``--quick`` for a smoke run).  Results and
their reading: ``docs/performance.md``.

The load benchmark (``bench_load.py``) measures whole processes over loopback; on a shared
2-core VM its CPU figures move by 10-30% between runs, as much as the difference it is after.
This one isolates that difference: the same frames go through the bridge's reading loops
(``CallBridge._twilio_reader`` and ``_openai_reader``, with a real ``ResponseLifecycle`` and
``PlaybackTracker``) and through the relay's (``Relay._up`` and ``_down``), over in-memory
sockets whose ``recv`` hands out prepared frames and whose ``send`` appends to a list.  Parsing
and framing are the same code on both sides; what differs is the bridge's own per-frame work:
the lifecycle's audio accounting, the playback marks (and reading their echoes), and the
decision to send directly or through the writer queue.  No socket I/O, no event-loop wake-ups:
those are the same per frame for both servers and are what the load benchmark adds.

Times are the thread's CPU time, rounds interleaved with a rotating order, median (min-max).

Each bridge path also runs with telemetry on (``+telemetry``: a
:class:`~realtime_fsm.telemetry.Telemetry` attached as the built-in server attaches it, recording
OpenTelemetry spans and metrics through the SDK, in memory, and Prometheus metrics), in the same
rounds, so that the cost of turning it on is one ratio of the same run (``docs/observability.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.protocol import State as WsState

from benchmarks.relay import Relay, parse_args
from realtime_fsm import META_EVENT_ID, META_REASON
from realtime_fsm import events as ev
from realtime_fsm.bridge import DEFAULT_MARK_EVERY_MS, BridgeConfig, CallBridge
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.outbox import SessionGone
from realtime_fsm.telemetry import Telemetry
from realtime_fsm.twilio_media import MarkName
from realtime_fsm.webserver import WebSocketClosed

SID = "MZ00000000000000000000000000000000"
CALL = "CA00000000000000000000000000000000"
RESPONSE = "resp_BENCH0000000000000000"
ITEM = "item_BENCH0000000000000000"
#: 20 ms of 8 kHz mu-law, as Twilio sends it and as the simulator's deltas carry it.
PAYLOAD = base64.b64encode(bytes(range(96, 256)) * 1).decode()
MARK_EVERY_MS = DEFAULT_MARK_EVERY_MS  # the library's and the example bridge's default


def twilio_media(seq: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(seq),
                "timestamp": str(seq * 20),
                "payload": PAYLOAD,
            },
            "streamSid": SID,
        }
    )


def audio_delta(seq: int) -> str:
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": f"event_{seq:08d}",
            "response_id": RESPONSE,
            "item_id": ITEM,
            "output_index": 0,
            "content_index": 0,
            "delta": PAYLOAD,
        }
    )


def mark_echo(seq: int, name: str) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}
    )


class _Transport:
    def get_write_buffer_size(self) -> int:
        return 0


class _Protocol:
    state = WsState.OPEN


class MemorySocket:
    """``recv`` hands out the prepared frames, then reports the socket closed; ``send`` keeps
    what was sent.  ``transport`` says nothing is buffered, so the bridge sends directly, as it
    does on a socket that keeps up."""

    def __init__(self, frames: Iterable[str] = (), *, websockets_client: bool = False) -> None:
        self._frames = iter(frames)
        self.sent: list[str] = []
        self.transport = _Transport()
        if websockets_client:
            # What the bridge reads on a ``websockets`` connection: its protocol's state.
            self.protocol = _Protocol()
        else:
            self.closed = False  # what it reads on our own server's socket

    def feed(self, frames: Iterable[str]) -> None:
        self._frames = iter(frames)

    async def recv(self) -> str:
        for frame in self._frames:
            return frame
        raise WebSocketClosed(1000, "end of frames")

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


class _Suspend:
    """Awaited by :class:`InterleavedSocket`'s ``recv``: hands control back to the driver."""

    def __await__(self) -> Generator[None, None, None]:
        yield None


_SUSPEND = _Suspend()


class InterleavedSocket(MemorySocket):
    """A :class:`MemorySocket` whose ``recv`` first gives control back, so that a driver can
    step many calls' reading loops one frame at a time, as a server's event loop does."""

    async def recv(self) -> str:
        await _SUSPEND
        return await super().recv()


def make_telemetry() -> Telemetry:
    """Telemetry as a deployment turns it on, with the SDK recording in memory (spans to an
    in-memory exporter, metrics read on demand) and the Prometheus registry: the whole of what
    an observed call records."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return Telemetry(tracer_provider=tracers, meter_provider=meters)


def new_bridge(
    socket: type[MemorySocket] = MemorySocket, telemetry: Telemetry | None = None
) -> tuple[CallBridge, MemorySocket, MemorySocket]:
    """A bridge mid-call: its greeting is playing (response active), queues empty.  With
    ``telemetry``, observed from its start, as the server does it."""
    twilio, openai = socket(), socket(websockets_client=True)
    config = BridgeConfig(
        session=SessionConfig(turn_detection="server_vad"),
        greeting=None,
        accept_text_messages=True,
        mark_every_ms=MARK_EVERY_MS,
    )
    bridge = CallBridge(twilio, openai, config)
    if telemetry is not None:
        telemetry.attach(bridge)
    session = bridge.session
    start = {"event": "start", "streamSid": SID, "start": {"streamSid": SID, "callSid": CALL}}
    session.twilio_frame(json.dumps(start), 0.0)
    session.request_response(0.0, reason="greeting")
    machine = bridge.machine
    assert machine is not None and machine.inflight is not None
    metadata = {META_EVENT_ID: machine.inflight.event_id, META_REASON: "greeting"}
    session.handle_event(ev.ResponseCreated(RESPONSE, metadata=metadata))
    assert machine.response_id == RESPONSE
    session.out_openai.clear()
    session.out_twilio.clear()
    bridge._after()  # the start's and the response's events to the observer, if any
    return bridge, twilio, openai


def _timed(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> float:
    """Thread CPU time of running ``coro`` to its end.  The bridge's OpenAI reader reports the
    end of its frames as a lost session (an exception): that is its normal end here."""
    start = time.thread_time()
    try:
        loop.run_until_complete(coro)
    except Exception as exc:
        if not _session_lost(exc):
            raise
    return time.thread_time() - start


Runner = Callable[[Coroutine[Any, Any, Any], asyncio.AbstractEventLoop], float]


def counting(event: str) -> Runner:
    """A runner like :func:`_timed` that returns, instead of a time, how many ``event`` events
    (``"opcode"``: bytecodes executed, ``"call"``: Python function calls) running ``coro``
    took: the same figure on every machine and in every run, so a change to the per-frame
    path can be measured exactly on a VM whose timings move by 10-30%."""

    def run(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> float:
        count = 0

        def trace(frame: FrameType, what: str, arg: object) -> Any:
            nonlocal count
            if what == event:
                count += 1
            if what == "call":
                frame.f_trace_opcodes = event == "opcode"
                frame.f_trace_lines = False
            return trace

        # No garbage collection while counting: a collection runs whatever finalizers the
        # process's earlier garbage has (a test suite's closed loops and sockets), which are
        # not this path's work and would make the count depend on what ran before.
        gc.collect()
        gc.disable()
        sys.settrace(trace)
        try:
            loop.run_until_complete(coro)
        except Exception as exc:
            if not _session_lost(exc):
                raise
        finally:
            sys.settrace(None)
            gc.enable()
        return float(count)

    return run


def _session_lost(exc: Exception) -> bool:
    """The bridge's OpenAI reader ends its frames with this exception."""
    return isinstance(exc, SessionGone)


def _relay() -> Relay:
    return Relay(parse_args(["--public-url", "http://127.0.0.1", "--accept-text-messages"]))


def _rounds(
    runners: dict[str, Callable[[], float]], rounds: int, frames: int, scale: float = 1e6
) -> dict[str, list[float]]:
    """Per frame, ``scale`` times what each runner returns for ``frames`` frames (seconds, so
    microseconds by default), one entry per round, the order rotating between rounds so that
    no path always goes first.  Each runner runs once first, unrecorded: what a process does
    only once (a logger's level cache filled, a lazy import, a specialised bytecode) is not
    per-frame work, and without it a count would depend on what ran before it."""
    names = list(runners)
    out: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        runners[name]()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(runners[name]() * scale / frames)
    return out


def measure(frames: int, rounds: int, run: Runner = _timed) -> dict[str, list[float]]:
    """Microseconds per frame for each path, one list entry per round (with ``run`` from
    :func:`counting`: bytecodes or calls per frame)."""
    scale = 1e6 if run is _timed else 1.0
    up = [twilio_media(i) for i in range(frames)]
    down = [audio_delta(i) for i in range(frames)]
    relay = _relay()
    loop = asyncio.new_event_loop()
    telemetry = make_telemetry()

    def bridge_up(observed: Telemetry | None = None) -> float:
        bridge, twilio, openai = new_bridge(telemetry=observed)
        twilio.feed(up)
        took = run(bridge._twilio_reader(), loop)
        assert len(openai.sent) == frames and bridge.report.media_in == frames
        return took

    def relay_up() -> float:
        twilio, openai = MemorySocket(up), MemorySocket(websockets_client=True)
        took = run(relay._up(twilio, openai), loop)  # type: ignore[arg-type]
        assert len(openai.sent) == frames
        return took

    def bridge_down(observed: Telemetry | None = None) -> float:
        bridge, _twilio, openai = new_bridge(telemetry=observed)
        openai.feed(down)
        took = run(bridge._openai_reader(openai), loop)
        assert bridge.report.media_out == frames
        return took

    def relay_down() -> float:
        twilio, openai = MemorySocket(), MemorySocket(down, websockets_client=True)
        took = run(relay._down(openai, twilio, SID), loop)  # type: ignore[arg-type]
        assert len(twilio.sent) == frames
        return took

    def bridge_echo(observed: Telemetry | None = None) -> float:
        """The echoes of the marks the down path sent, read back (the relay sends none).  The
        first echo proves the answer heard: with telemetry, its time to first playback is
        recorded then (once per response, averaged over its echoes)."""
        bridge, twilio, openai = new_bridge(telemetry=observed)
        openai.feed(down)
        run(bridge._openai_reader(openai), loop)
        names = [m for m in twilio.sent if '"event":"mark"' in m]
        echoes = [mark_echo(i, json.loads(m)["mark"]["name"]) for i, m in enumerate(names)]
        assert echoes and all(MarkName.parse(json.loads(m)["mark"]["name"]) for m in names)
        twilio.feed(echoes)
        took = run(bridge._twilio_reader(), loop)
        assert bridge.tracker.pending_marks == 0
        if observed is not None:
            assert bridge.session.events == []  # handed out: PlaybackStarted was recorded
        return took * frames / len(echoes)  # so that the per-frame division gives per echo

    runners: dict[str, Callable[[], float]] = {
        "up: bridge": bridge_up,
        "up: relay": relay_up,
        "down: bridge": bridge_down,
        "down: relay": relay_down,
        "mark echo: bridge": bridge_echo,
        "up: bridge+telemetry": lambda: bridge_up(telemetry),
        "down: bridge+telemetry": lambda: bridge_down(telemetry),
        "mark echo: bridge+telemetry": lambda: bridge_echo(telemetry),
    }
    assert tuple(runners) == PATHS
    try:
        return _rounds(runners, rounds, frames, scale)
    finally:
        loop.close()


PATHS = (
    "up: bridge",
    "up: relay",
    "down: bridge",
    "down: relay",
    "mark echo: bridge",
    "up: bridge+telemetry",
    "down: bridge+telemetry",
    "mark echo: bridge+telemetry",
)
INTERLEAVED = ("up: bridge", "up: relay", "down: bridge", "down: relay")


def _stepped(readers: list[Coroutine[Any, Any, Any]], loop: asyncio.AbstractEventLoop) -> float:
    """Thread CPU time of stepping ``readers`` round-robin, one frame each per step, until
    all have ended (inside a running loop, for code that asks for it)."""

    async def drive() -> float:
        live = list(readers)
        for reader in live:  # each runs up to its first ``recv``
            reader.send(None)
        start = time.thread_time()
        while live:
            still = []
            for reader in live:
                try:
                    reader.send(None)
                    still.append(reader)
                except StopIteration:
                    pass
                except Exception as exc:
                    if not _session_lost(exc):
                        raise
            live = still
        return time.thread_time() - start

    return loop.run_until_complete(drive())


def measure_interleaved(frames: int, rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per frame with ``calls`` calls' reading loops interleaved frame by frame,
    ``frames`` frames in all: what each frame costs when the per-call objects it touches were
    last used a whole round of other calls ago, as under load, rather than just before."""
    per_call = max(1, frames // calls)
    up = [twilio_media(i) for i in range(per_call)]
    down = [audio_delta(i) for i in range(per_call)]
    relay = _relay()
    loop = asyncio.new_event_loop()

    def bridge_up() -> float:
        bridges = [new_bridge(InterleavedSocket) for _ in range(calls)]
        for _bridge, twilio, _openai in bridges:
            twilio.feed(up)
        took = _stepped([b._twilio_reader() for b, _t, _o in bridges], loop)
        assert all(len(o.sent) == per_call for _b, _t, o in bridges)
        return took

    def relay_up() -> float:
        pairs = [
            (InterleavedSocket(up), InterleavedSocket(websockets_client=True)) for _ in range(calls)
        ]
        took = _stepped([relay._up(t, o) for t, o in pairs], loop)  # type: ignore[arg-type]
        assert all(len(o.sent) == per_call for _t, o in pairs)
        return took

    def bridge_down() -> float:
        bridges = [new_bridge(InterleavedSocket) for _ in range(calls)]
        for _bridge, _twilio, openai in bridges:
            openai.feed(down)
        took = _stepped([b._openai_reader(o) for b, _t, o in bridges], loop)
        assert all(b.report.media_out == per_call for b, _t, _o in bridges)
        return took

    def relay_down() -> float:
        pairs = [
            (InterleavedSocket(), InterleavedSocket(down, websockets_client=True))
            for _ in range(calls)
        ]
        took = _stepped(
            [relay._down(o, t, SID) for t, o in pairs],  # type: ignore[arg-type]
            loop,
        )
        assert all(len(t.sent) == per_call for t, _o in pairs)
        return took

    runners: dict[str, Callable[[], float]] = {
        "up: bridge": bridge_up,
        "up: relay": relay_up,
        "down: bridge": bridge_down,
        "down: relay": relay_down,
    }
    assert tuple(runners) == INTERLEAVED
    try:
        return _rounds(runners, rounds, per_call * calls)
    finally:
        loop.close()


def interleaved_report(results: dict[int, dict[str, list[float]]]) -> str:
    lines = [
        "| calls interleaved | up: bridge | up: relay | up: bridge - relay |"
        " down: bridge | down: relay | down: bridge - relay |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for calls, figures in results.items():
        med = {k: statistics.median(v) for k, v in figures.items()}
        lines.append(
            f"| {calls} | {med['up: bridge']:.2f} | {med['up: relay']:.2f} |"
            f" {med['up: bridge'] - med['up: relay']:+.2f} |"
            f" {med['down: bridge']:.2f} | {med['down: relay']:.2f} |"
            f" {med['down: bridge'] - med['down: relay']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def report(results: dict[str, list[float]], down_per_up: float) -> str:
    def med(name: str) -> float:
        return statistics.median(results[name])

    def cell(name: str) -> str:
        xs = results[name]
        return f"{med(name):.2f} ({min(xs):.2f}-{max(xs):.2f})"

    echo_per_down = 20 / MARK_EVERY_MS  # one mark per MARK_EVERY_MS of 20 ms deltas
    up_b, up_r = med("up: bridge"), med("up: relay")
    down_b, down_r = med("down: bridge"), med("down: relay")
    echo = med("mark echo: bridge")
    mix_b = up_b + down_per_up * (down_b + echo_per_down * echo)
    mix_r = up_r + down_per_up * down_r
    lines = [
        "| path | bridge us/frame | relay us/frame | bridge / relay | bridge - relay us |",
        "|---|---:|---:|---:|---:|",
        f"| caller audio up (Twilio `media` -> `input_audio_buffer.append`) |"
        f" {cell('up: bridge')} | {cell('up: relay')} | {up_b / up_r:.2f}x |"
        f" {up_b - up_r:+.2f} |",
        f"| assistant audio down (audio delta -> Twilio `media`, marks included) |"
        f" {cell('down: bridge')} | {cell('down: relay')} | {down_b / down_r:.2f}x |"
        f" {down_b - down_r:+.2f} |",
        f"| mark echo read back (one per {MARK_EVERY_MS} ms of audio down) |"
        f" {cell('mark echo: bridge')} per echo | - | - | - |",
        f"| mix: 1 up + {down_per_up:.2f} down (+ their echoes) |"
        f" {mix_b:.2f} | {mix_r:.2f} | {mix_b / mix_r:.2f}x | {mix_b - mix_r:+.2f} |",
    ]
    return "\n".join(lines) + "\n"


def telemetry_report(
    results: dict[str, list[float]], down_per_up: float, unit: str = "us/frame"
) -> str:
    """Telemetry on against off, per path and for the mix: the same rounds of one run."""

    echo_per_down = 20 / MARK_EVERY_MS
    weights = (("up", 1.0), ("down", down_per_up), ("mark echo", down_per_up * echo_per_down))
    lines = [
        f"| path | off {unit} (median) | on | on / off | off (best round) | on | on / off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    mix = dict.fromkeys(("off", "on", "off_min", "on_min"), 0.0)
    for side, weight in weights:
        off_runs, on_runs = results[f"{side}: bridge"], results[f"{side}: bridge+telemetry"]
        off, on = statistics.median(off_runs), statistics.median(on_runs)
        off_min, on_min = min(off_runs), min(on_runs)
        for key, figure in (("off", off), ("on", on), ("off_min", off_min), ("on_min", on_min)):
            mix[key] += weight * figure
        lines.append(
            f"| {side} | {off:.2f} | {on:.2f} | {on / off:.4f} |"
            f" {off_min:.2f} | {on_min:.2f} | {on_min / off_min:.4f} |"
        )
    lines.append(
        f"| mix: 1 up + {down_per_up:.2f} down (+ their echoes) | {mix['off']:.2f} |"
        f" {mix['on']:.2f} | {mix['on'] / mix['off']:.4f} | {mix['off_min']:.2f} |"
        f" {mix['on_min']:.2f} | {mix['on_min'] / mix['off_min']:.4f} |"
    )
    return "\n".join(lines) + "\n"


def count_report(bytecodes: dict[str, list[float]], calls: dict[str, list[float]]) -> str:
    """Bytecodes and Python calls per frame of each path (one run each: they do not vary)."""
    lines = [
        "| path | bridge bytecodes | relay bytecodes | bridge - relay | bridge calls |"
        " relay calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side, what in (("up", "caller audio up"), ("down", "assistant audio down")):
        b, r = bytecodes[f"{side}: bridge"][0], bytecodes[f"{side}: relay"][0]
        cb, cr = calls[f"{side}: bridge"][0], calls[f"{side}: relay"][0]
        lines.append(
            f"| {what} | {b:.1f} | {r:.1f} | {b - r:+.1f} ({b / r:.2f}x) | {cb:.1f} | {cr:.1f} |"
        )
    echo, echo_calls = bytecodes["mark echo: bridge"][0], calls["mark echo: bridge"][0]
    lines.append(f"| mark echo read back (per echo) | {echo:.1f} | - | - | {echo_calls:.1f} | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--frames", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument(
        "--down-per-up",
        type=float,
        default=0.45,
        help="audio frames down per frame up in the mix (0.45: the load script's bridge)",
    )
    p.add_argument("--quick", action="store_true", help="2,000 frames, 3 rounds")
    p.add_argument(
        "--count",
        action="store_true",
        help="also count bytecodes and Python calls per frame (exact; about 10 s more)",
    )
    p.add_argument(
        "--calls",
        default="",
        help="also run with this many calls' loops interleaved frame by frame (e.g. 1,10,100)",
    )
    args = p.parse_args(argv)
    frames, rounds = (2_000, 3) if args.quick else (args.frames, args.rounds)
    results = measure(frames, rounds)
    print(f"{frames} frames per path and round, {rounds} rounds; thread CPU time per frame\n")
    print(report(results, args.down_per_up))
    print("Telemetry on / off (thread CPU time, medians of the same rounds):\n")
    print(telemetry_report(results, args.down_per_up))
    if args.count:
        counted = min(frames, 5_000)
        bytecodes = measure(counted, 1, counting("opcode"))
        calls = measure(counted, 1, counting("call"))
        print(f"Bytecodes and Python calls per frame ({counted} frames; exact, no timing):\n")
        print(count_report(bytecodes, calls))
        print("Telemetry on / off, bytecodes per frame (exact):\n")
        print(telemetry_report(bytecodes, args.down_per_up, "bytecodes"))
    if args.calls:
        counts = [int(x) for x in args.calls.split(",") if x.strip()]
        # At least 100 frames per call, so that each call's first frames weigh little.
        interleaved = {n: measure_interleaved(max(frames, 100 * n), rounds, n) for n in counts}
        print("Calls interleaved frame by frame (us per frame, medians):\n")
        print(interleaved_report(interleaved))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
