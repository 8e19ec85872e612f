"""Load generator for the bridge load benchmark: the simulator plus N fake callers, one process.

Runs the fake OpenAI Realtime server (``realtime_factor=1``: audio is generated at the pace it
plays) and N fake Twilio callers against a bridge (or the bare relay) that runs in another
process, on loopback only.  Every call follows the same realistic script, shifted in time per
call: the assistant greets the caller, the caller speaks and the assistant answers, the caller
talks over the answer (server VAD barge-in), types text while the assistant talks, and every
fourth response is a silent one (transcript, no audio).

What it measures, with monotonic clocks read in this one process:

* **up**: inbound media.  Each caller frame carries an inaudible time stamp (when the caller
  sent it); the simulator reads it when the ``input_audio_buffer.append`` arrives.
* **down**: outbound media.  Each audio delta carries a time stamp after its audio tag (when the
  simulator sent it); the caller reads it when the ``media`` arrives.
* **barge-in**: ``input_audio_buffer.speech_started`` queued by the simulator to ``clear``
  received by the caller (only for speech that interrupted audio, so only for the bridge: the
  relay has no barge-in handling).
* CPU seconds of this process and of the server process (``/proc/<pid>/stat``) over the
  steady window (after the ramp-up and a warm-up, before the hang-ups).

Latencies are end to end (simulator to caller through the server under test, including both
loopback hops and this process's own event-loop delay), so the bare relay's figures are the floor
that the bridge is compared with.  Prints one JSON object on stdout.

    python -m benchmarks.loadgen --calls 50 --url ws://127.0.0.1:8080/media-stream \\
        --sim-port 9000 --server-pid 1234 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from typing import Any

from realtime_fsm.malloc_tuning import tune_malloc_for_sockets
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ReplyContext,
    ResponseFaults,
    ScriptedReply,
    Speak,
    TypeText,
)
from realtime_fsm.testing.audio import TAG_SIZE, read_time_stamp

#: One cycle of a call's script, in seconds after the cycle starts (replies last about 3.6 s).
CYCLE_S = 10.0
#: One media frame: the cadence of every caller's audio.
FRAME_S = 0.020
_REPLY = "Sure, I can help you with that. Let me check the details for you."  # 3.9 s of audio
_SILENT = ResponseFaults(silent=True)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces): field 3 onwards."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, from ``/proc/<pid>/stat`` (clock ticks)."""
    fields = _stat_fields(pid)
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def kernel_counters(pid: int) -> dict[str, int]:
    """What the kernel counts for a process besides its CPU time: minor page faults, voluntary
    and involuntary context switches.  Read at both ends of the window, with
    :func:`steal_seconds`, they tell a round that did more kernel work from one slowed by the
    host."""
    out = {"minflt": int(_stat_fields(pid)[7])}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                out["ctx_voluntary"] = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out["ctx_involuntary"] = int(line.split()[1])
    return out


def steal_seconds(pid: int) -> float:
    """Seconds the hypervisor ran something else on the CPUs ``pid`` may run on (``/proc/stat``,
    since boot): a machine-wide count, not the process's."""
    cpus = {f"cpu{c}" for c in os.sched_getaffinity(pid)}
    steal = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in cpus and len(parts) > 8:
                steal += int(parts[8])
    return steal / _CLK_TCK


def reply_source(ctx: ReplyContext) -> ScriptedReply:
    """Every fourth response is silent: a transcript, no audio (the no-audio watchdog's case)."""
    return ScriptedReply(_REPLY, faults=_SILENT if ctx.number % 4 == 0 else None)


def matched_reply_source(_ctx: ReplyContext) -> ScriptedReply:
    """The matched script's replies: never silent (a relay would not retry them)."""
    return ScriptedReply(_REPLY)


def call_script(
    offset: float, total_s: float, *, typed: bool = True
) -> tuple[Speak | TypeText, ...]:
    """The caller's part: speak to a quiet assistant, talk over its answer, type over the next.

    Assistant answer to the first speech: about 1.5-5.4 s into the cycle; the barge-in at 3.0 s
    cuts it; the answer to that (about 4.1-8.0 s) is cut by the typed text at 6.0 s.  Without
    ``typed`` (the matched script) that answer plays to its end."""
    steps: list[Speak | TypeText] = []
    start = offset
    while start < total_s:
        steps.append(Speak(start, 1.0))
        steps.append(Speak(start + 3.0, 0.6))
        if typed:
            steps.append(TypeText(start + 6.0, "Actually, what are your opening hours?"))
        start += CYCLE_S
    return tuple(s for s in steps if s.at_s < total_s)


#: ``realistic``: the script the goals are judged on (typed text over an answer, a silent
#: response now and then).  ``matched``: only what a bare relay handles the same way as the
#: bridge (speech, and speech over an answer, which the simulator's VAD cancels by itself), so
#: both servers carry the same audio and the ratio is the cost of the bridge alone.
SCRIPTS = ("realistic", "matched")


def server_messages(sim: FakeRealtimeServer, callers: list[FakeTwilioCaller]) -> int:
    """Every WebSocket message the server under test received or sent so far, counted at the
    other ends (the simulator and the callers): its whole traffic, not only the media."""
    total = sim.messages_sent + sim.messages_received
    for caller in callers:
        total += caller.messages_sent + caller.messages_received
    return total


class LagProbe:
    """How late this process's event loop runs a timer: what a frame arriving at a random
    moment waits here before its callback runs, on top of the server under test.

    A timer every ``period`` s records how late it ran (``time.monotonic``); uvloop's timers
    fire on a 1 ms clock, so figures under 1 ms are that clock, not load."""

    def __init__(self, m: Measurements, period: float = 0.005) -> None:
        self.m = m
        self.period = period
        self.lags_ms: list[float] = []
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = time.monotonic() + self.period
        self._handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.m.in_window(now):
            self.lags_ms.append((now - self._due) * 1e3)
        self._due = now + self.period
        self._handle = asyncio.get_running_loop().call_later(self.period, self._tick)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Measurements:
    def __init__(self) -> None:
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.up_ms: list[float] = []
        self.down_ms: list[float] = []
        self.conn_of_call: dict[int, int] = {}
        self.speech_started: defaultdict[int, list[float]] = defaultdict(list)
        self.up_frames = 0
        self.down_frames = 0

    def in_window(self, now: float) -> bool:
        return self.window[0] <= now <= self.window[1]

    def on_append(self, conn: int, data: bytes, now: float) -> None:
        stamp = read_time_stamp(data)
        if stamp is None:
            return
        call, ns = stamp
        self.conn_of_call.setdefault(call, conn)
        if self.in_window(now):
            self.up_frames += 1
            self.up_ms.append(now * 1e3 - ns / 1e6)

    def on_event(self, conn: int, etype: str, now: float) -> None:
        if etype == "input_audio_buffer.speech_started":
            self.speech_started[conn].append(now)

    def on_media(self, now: float, data: bytes) -> None:
        stamp = read_time_stamp(data, TAG_SIZE)
        if stamp is not None and self.in_window(now):
            self.down_frames += 1
            self.down_ms.append(now * 1e3 - stamp[1] / 1e6)


def barge_in_reactions(m: Measurements, callers: list[FakeTwilioCaller]) -> list[float]:
    """speech_started -> the next clear on that call, for clears within 1 s of a speech start
    inside the window (a clear after typed text is not a barge-in on speech)."""
    out: list[float] = []
    for index, caller in enumerate(callers):
        conn = m.conn_of_call.get(index)
        if conn is None:
            continue
        starts = m.speech_started.get(conn, [])
        for clear in caller.clears:
            if not m.in_window(clear.at):
                continue
            before = [s for s in starts if s <= clear.at]
            if before and clear.at - before[-1] < 1.0:
                out.append((clear.at - before[-1]) * 1e3)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    m = Measurements()
    config = FakeRealtimeConfig(
        port=args.sim_port,
        realtime_factor=1.0,
        record_events=False,
        stamp_audio=True,
        rate_limits_events=True,
        seed=1,
    )
    ramp = max(0.2, args.calls / 50)  # connect at most 50 calls a second
    total = ramp + args.warmup + args.duration + 1.0
    rng = random.Random(5)
    # Independent calls start at independent times, so their 20 ms media cadences have random
    # phases.  Connecting one call per 20 ms (50 a second) without this put every caller on the
    # same 20 ms grid: N frames arrived as one burst, and the last of a burst waited for all the
    # others, which made up most of the p99 at N >= 100 for both servers.
    phase_rng = random.Random(7)
    matched = args.script == "matched"
    replies = matched_reply_source if matched else reply_source
    async with FakeRealtimeServer(
        config, replies=replies, on_append=m.on_append, on_event=m.on_event
    ) as sim:
        host, port = args.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        # A bound, not a guess: the server under test may run under valgrind (10-50x slower to
        # import and bind) on a machine other jobs load; the wait ends as soon as it listens.
        await wait_for_port(host, int(port), 300.0)
        callers: list[FakeTwilioCaller] = []
        started = time.monotonic()
        for i in range(args.calls):
            cfg = FakeCallerConfig(
                stamp_source=i,
                record_audio=False,
                text_event="text",
                script=call_script(2.0 + rng.uniform(0, CYCLE_S), total + 5, typed=not matched),
                seed=i,
            )
            caller = FakeTwilioCaller(args.url, cfg, on_media=m.on_media)
            callers.append(caller)
            await caller.start()
            at = started + ramp * (i + 1) / args.calls + phase_rng.uniform(0.0, FRAME_S)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
        await asyncio.sleep(args.warmup)
        lag = LagProbe(m)
        lag.start()
        t0 = time.monotonic()
        m.window = (t0, t0 + args.duration)
        own0, (user0, sys0) = time.process_time(), cpu_split(args.server_pid)
        kernel0 = kernel_counters(args.server_pid)
        steal0 = steal_seconds(args.server_pid), steal_seconds(os.getpid())
        messages0 = server_messages(sim, callers)
        end = t0 + args.duration
        while time.monotonic() < end:
            await asyncio.sleep(min(2.0, max(0.0, end - time.monotonic())))
            for caller in callers:  # unbounded records this run never reads
                caller.sent.clear()
                caller.marks_received.clear()
                caller.marks_echoed.clear()
                caller.tags_received.clear()
                caller.tags_played.clear()
        wall = time.monotonic() - t0
        own = time.process_time() - own0
        user1, sys1 = cpu_split(args.server_pid)
        kernel1 = kernel_counters(args.server_pid)
        steal1 = steal_seconds(args.server_pid), steal_seconds(os.getpid())
        server_user, server_sys = user1 - user0, sys1 - sys0
        server = server_user + server_sys
        messages = server_messages(sim, callers) - messages0
        lag.stop()
        closed_early = sum(1 for c in callers if c.closed)
        reactions = barge_in_reactions(m, callers)
        violations = sum(len(c.violations) for c in callers)
        await asyncio.gather(*(c.hang_up() for c in callers), return_exceptions=True)
        errors = dict(sim.error_counts)
        responses = len(sim.responses)
        cancelled = sum(1 for r in sim.responses if r.status == "cancelled")
    call_minutes = args.calls * wall / 60
    result: dict[str, Any] = {
        "calls": args.calls,
        "script": args.script,
        "window_s": round(wall, 3),
        # time.monotonic() is system-wide: a server's own records can be cut to this window.
        "window_monotonic": [t0, t0 + wall],
        "server_cpu_s": round(server, 3),
        # User and kernel time apart: Python-level profiles see the first, system calls the
        # second.
        "server_user_s": round(server_user, 3),
        "server_sys_s": round(server_sys, 3),
        "server_cpu_per_call_min": server / call_minutes,
        "server_core_share": server / wall,
        "loadgen_cpu_s": round(own, 3),
        "loadgen_core_share": own / wall,
        "server_messages": messages,
        # Per message, so that rounds of different traffic compare.
        **{
            f"server_{key}_per_message": (kernel1[key] - kernel0[key]) / messages
            if messages
            else None
            for key in ("minflt", "ctx_voluntary", "ctx_involuntary")
        },
        "server_cpu_steal_s": round(steal1[0] - steal0[0], 3),
        "loadgen_cpu_steal_s": round(steal1[1] - steal0[1], 3),
        "server_cpu_us_per_message": server * 1e6 / messages if messages else None,
        "up_frames": m.up_frames,
        "down_frames": m.down_frames,
        "expected_up_frames": int(args.calls * wall * 50),
        "barge_ins": len(reactions),
        "closed_early": closed_early,
        "violations": violations,
        "sim_errors": errors,
        "responses": responses,
        "cancelled": cancelled,
    }
    series = (
        ("up", m.up_ms),
        ("down", m.down_ms),
        ("barge", reactions),
        ("loadgen_lag", lag.lags_ms),
    )
    for name, values in series:
        for q in (50, 99):
            result[f"{name}_p{q}_ms"] = percentile(values, q)
        result[f"{name}_max_ms"] = max(values) if values else None
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--url", required=True, help="the server's ws://127.0.0.1:PORT/media-stream")
    p.add_argument("--sim-port", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--duration", type=float, default=30.0, help="steady window, seconds")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument(
        "--script",
        choices=SCRIPTS,
        default="realistic",
        help="realistic: typed text and silent responses too; matched: only what both servers"
        " handle alike (see SCRIPTS)",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="this process's event loop (uvloop: the 'bench' extra); the servers are not affected",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc_for_sockets()  # on asyncio's loop the instrument's reads fault pages too
    if args.loop == "uvloop":
        # The load generator is the measuring instrument: on 2 cores its own CPU is what limits
        # the runs at N >= 150, and uvloop cuts it without touching what is measured.
        import uvloop

        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    result["loadgen_loop"] = args.loop
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
