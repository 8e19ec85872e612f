"""Fault soak: many simulated calls through the example bridge's server, with random faults.

Each call is a :class:`~realtime_fsm.testing.FakeTwilioCaller` dialling the server that
``examples/twilio_bridge.py`` runs (:func:`realtime_fsm.server.start_server`), bridged to a
:class:`~realtime_fsm.testing.FakeRealtimeServer`.  Every call gets its own simulator and its
own listener of that server, so each protocol error, user item and response is attributed to
exactly one call (and the simulator's records are freed with it); a few dozen calls run at once
in one process and one event loop, as they would in production.

Each call draws (from one seed) a turn-taking mode, a script (speech, typed text, DTMF, waits,
barge-ins) and a mix of fault knobs: dropped ``response.done``, duplicated and late events,
slow cancel acknowledgements, silent and stalled responses, swallowed creates, injected server
errors, socket drops and callers hanging up mid-response.  What the soak checks, per call:

* protocol errors the simulator's rules produced, by code: no
  ``conversation_already_has_active_response`` except one answering a create that raced a
  response the server's VAD had created, on a call that then recovered, one probing a cancel
  the server acknowledges after ``cancel_timeout``, or one the call's trace (recorded at the
  bridge's sockets, judged by :mod:`realtime_fsm.replay`) shows the bridge could not avoid: its
  create went out after it had given up, on its own clock, what held the slot;
* every typed text and DTMF key reaches the model exactly once, or is reported undelivered in
  the :class:`~realtime_fsm.bridge.CallReport` (never both, never neither); a text the bridge
  sent on a socket that died before the server read it is a lost text;
* once its script ends, the call is back to ``idle`` (nothing pending) within the lifecycle
  timeouts;
* no no-audio watchdog fire inside the cooldown of the previous one;
* no crashed task (``internal error`` end reason, an exception reaching the event loop's
  handler, an error logged by the bridge) and nothing the bridge sent that Twilio would reject.

Until the bridge reconnects after an OpenAI socket drop, a call whose socket was dropped ends
(``openai closed``): that is counted as an expected outcome, and its texts must still be
delivered once or reported undelivered.

Not imported by :mod:`realtime_fsm.testing` itself, which imports nothing else of this package;
run it with ``realtime-fsm soak`` or :func:`run_soak`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from ..bridge import DEFAULT_MARK_EVERY_MS, BridgeConfig, CallBridge, CallReport
from ..config import LifecycleConfig
from ..lifecycle import ResponseLifecycle
from ..openai_realtime import SessionConfig
from ..server import ServerConfig, start_server
from ..table import CLOSED, IDLE, RECONNECTING
from ._soak_trace import busy_errors_on_the_wire
from .fake_realtime import (
    LIFECYCLE_EVENT_TYPES,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    ReplyContext,
    ResponseFaults,
    ScriptedReply,
)
from .fake_twilio import FakeCallerConfig, FakeTwilioCaller

log = logging.getLogger("realtime_fsm.soak")

HOST: Final = "127.0.0.1"
BUSY: Final = "conversation_already_has_active_response"
#: Every fault a call can draw.  ``socket_drop`` and ``hangup`` end the call early by design.
FAULTS: Final = (
    "dropped_done",
    "duplicated",
    "late",
    "slow_cancel",
    "deltas_after_cancel",
    "silent",
    "stall",
    "ignore_create",
    "bad_outcome",
    "server_error",
    "socket_drop",
    "hangup",
)
#: Ends of a call that a fault knob explains: the OpenAI socket was dropped (until the bridge
#: reconnects), or the caller hung up.
_DROP_ENDS: Final = frozenset({"openai closed"})
_CLEAN_ENDS: Final = frozenset({"telephony stop", "telephony closed"})
_CALL_RE: Final = re.compile(r"\bcall=(\S+)")


#: Lifecycle timeouts shortened so every recovery path runs many times in a short soak.
SOAK_LIFECYCLE: Final = LifecycleConfig(
    create_timeout=1.0,
    cancel_timeout=1.0,
    no_audio_timeout=0.3,
    watchdog_cooldown=2.0,
    stall_timeout=1.5,
)
_MAX_REPLY_MS: Final = 3000


@attrs.frozen
class SoakConfig:
    """How many calls, how many at once, how fast, and the seed everything is drawn from."""

    calls: int = 1000
    concurrency: int = 32
    seed: int = 1
    #: Simulator pace: audio and timers of the fake server run this much faster than real time.
    realtime_factor: float = 10.0
    #: The fake caller's clock (media cadence, playback, speech) runs this much faster.
    caller_speed: float = 2.0
    #: Share of calls whose session lets the server's VAD create and cancel responses.
    server_creates_share: float = 0.5
    #: Probability that a call has any faults at all (the rest are well-behaved controls).
    fault_share: float = 0.85
    lifecycle: LifecycleConfig = attrs.field(factory=lambda: SOAK_LIFECYCLE)
    #: Hard bound on one call, script and teardown included; a call over it is a violation.
    call_timeout: float = 60.0
    #: Extra seconds (event-loop lag on a loaded machine) on top of the lifecycle timeouts when
    #: waiting for a call to be back to idle after its script.
    idle_slack: float = 5.0

    @property
    def idle_timeout(self) -> float:
        """The longest legitimate recovery after a script ends: a create timeout, a stalled
        response, a cancel timeout, then a watchdog retry doing it all once more."""
        lc = self.lifecycle
        once = lc.create_timeout + lc.stall_timeout + lc.cancel_timeout + lc.no_audio_timeout
        return 2 * once + _MAX_REPLY_MS / 1000 / self.realtime_factor + self.idle_slack


@attrs.define
class CallOutcome:
    """What the soak saw on one call."""

    index: int
    call_sid: str
    server_creates: bool
    faults: tuple[str, ...]
    end_reason: str = ""
    texts_typed: int = 0
    texts_delivered: int = 0
    texts_undelivered: int = 0
    #: Texts typed after the bridge had already lost its OpenAI socket (never accepted).
    texts_into_dead_call: int = 0
    lost_texts: list[str] = attrs.field(factory=list)
    duplicated_texts: list[str] = attrs.field(factory=list)
    #: Seconds from the end of the script until the machine was idle; None if not measured.
    idle_after_s: float | None = None
    not_idle: str | None = None
    hung_up_mid_response: bool = False
    socket_dropped: bool = False
    protocol_errors: Counter[str] = attrs.field(factory=Counter)
    busy_races: int = 0
    busy_probes: int = 0
    #: Busy answers to a create the bridge sent after it had given up, at a timeout on its own
    #: clock, what held the slot (the trace shows it): a loaded loop reads answers late.
    busy_late: int = 0
    busy_errors: int = 0
    injected_errors: int = 0
    watchdog_fires: int = 0
    watchdog_in_cooldown: int = 0
    given_up: int = 0
    crash: str | None = None
    caller_violations: list[str] = attrs.field(factory=list)
    responses: int = 0
    audio_chunks_heard: int = 0
    #: OpenAI sessions (simulator connections) the call used: more than one after a reconnect.
    sessions: int = 0

    def violations(self) -> list[str]:
        found: list[str] = []
        if self.lost_texts:
            found.append(f"lost texts {self.lost_texts}")
        if self.duplicated_texts:
            found.append(f"duplicated texts {self.duplicated_texts}")
        if self.not_idle is not None:
            found.append(f"not back to idle: {self.not_idle}")
        if self.busy_errors:
            found.append(f"{self.busy_errors} {BUSY} not explained by a server-VAD race")
        if self.watchdog_in_cooldown:
            found.append(f"{self.watchdog_in_cooldown} watchdog fires inside the cooldown")
        if self.crash is not None:
            found.append(f"crash: {self.crash}")
        if self.caller_violations:
            found.append(f"telephony protocol violations {self.caller_violations[:3]}")
        expected = set(_CLEAN_ENDS) | (_DROP_ENDS if self.socket_dropped else set())
        if self.end_reason not in expected:
            found.append(f"unexpected end {self.end_reason!r}")
        return found


@attrs.define
class SoakResult:
    """All calls' outcomes plus what no single call owns (loop exceptions, wall time)."""

    config: SoakConfig
    outcomes: list[CallOutcome]
    wall_s: float
    loop_exceptions: list[str] = attrs.field(factory=list)
    errors_logged: list[str] = attrs.field(factory=list)

    @property
    def violations(self) -> list[str]:
        found = [f"call {o.call_sid}: {v}" for o in self.outcomes for v in o.violations()]
        found += [f"event loop exception: {e}" for e in self.loop_exceptions]
        found += [f"error logged: {e}" for e in self.errors_logged]
        missing = self.config.calls - len(self.outcomes)
        if missing:
            found.append(f"{missing} calls did not report")
        return found

    @property
    def ok(self) -> bool:
        return not self.violations

    def format(self) -> str:
        outs = self.outcomes
        errors: Counter[str] = Counter()
        for o in outs:
            errors.update(o.protocol_errors)
        fault_counts: Counter[str] = Counter(f for o in outs for f in o.faults)
        ends: Counter[str] = Counter(o.end_reason for o in outs)
        idle = sorted(o.idle_after_s for o in outs if o.idle_after_s is not None)
        cfg = self.config
        lines = [
            f"soak: {len(outs)} calls, {cfg.concurrency} at a time, seed {cfg.seed}, simulator"
            f" x{cfg.realtime_factor:g}, caller x{cfg.caller_speed:g}, {self.wall_s:.1f} s wall",
            f"  modes: {sum(o.server_creates for o in outs)} server-VAD creates,"
            f" {sum(not o.server_creates for o in outs)} app creates;"
            f" {sum(1 for o in outs if o.faults)} with faults",
            "  faults drawn: " + ", ".join(f"{k}={v}" for k, v in sorted(fault_counts.items())),
            "  responses: "
            f"{sum(o.responses for o in outs)}, audio chunks heard:"
            f" {sum(o.audio_chunks_heard for o in outs)}, watchdog fires:"
            f" {sum(o.watchdog_fires for o in outs)}, requests given up:"
            f" {sum(o.given_up for o in outs)}, injected errors:"
            f" {sum(o.injected_errors for o in outs)}",
            "  end reasons: " + ", ".join(f"{k!r}={v}" for k, v in ends.most_common()),
            "  protocol errors by code: "
            + (", ".join(f"{k}={v}" for k, v in errors.most_common()) or "none"),
            f"    {BUSY}: {sum(o.busy_errors for o in outs)} unexplained,"
            f" {sum(o.busy_races for o in outs)} server-VAD races (recovered),"
            f" {sum(o.busy_probes for o in outs)} probes of a cancel acknowledged after"
            f" cancel_timeout, {sum(o.busy_late for o in outs)} after the bridge's own timeout"
            " (its trace)",
            f"  user texts: {sum(o.texts_typed for o in outs)} typed,"
            f" {sum(o.texts_delivered for o in outs)} delivered once,"
            f" {sum(o.texts_undelivered for o in outs)} reported undelivered,"
            f" {sum(o.texts_into_dead_call for o in outs)} typed into an already dead call;"
            f" lost {sum(len(o.lost_texts) for o in outs)},"
            f" duplicated {sum(len(o.duplicated_texts) for o in outs)}",
            f"  calls not back to idle within {cfg.idle_timeout:.1f} s after their script"
            " (time with no OpenAI session not counted):"
            f" {sum(o.not_idle is not None for o in outs)}"
            + (
                f" (measured {len(idle)}: median {idle[len(idle) // 2]:.2f} s,"
                f" max {idle[-1]:.2f} s)"
                if idle
                else ""
            ),
            f"  hung up mid-response: {sum(o.hung_up_mid_response for o in outs)},"
            f" OpenAI sockets dropped: {sum(o.socket_dropped for o in outs)} calls, sessions"
            f" replaced: {sum(max(0, o.sessions - 1) for o in outs)}, calls ended by a drop:"
            f" {sum(o.socket_dropped and o.end_reason in _DROP_ENDS for o in outs)}",
            f"  watchdog fires inside a cooldown: {sum(o.watchdog_in_cooldown for o in outs)}",
            f"  crashed tasks: {sum(o.crash is not None for o in outs)}, event-loop exceptions:"
            f" {len(self.loop_exceptions)}, errors logged: {len(self.errors_logged)},"
            f" telephony violations: {sum(len(o.caller_violations) for o in outs)}",
        ]
        violations = self.violations
        lines.append(f"  violations: {len(violations)}" + (":" if violations else ""))
        lines += [f"    {v}" for v in violations[:30]]
        return "\n".join(lines)


# --- per-call log watching -----------------------------------------------------------------------


class _LogWatch(logging.Handler):
    """Watchdog fires (with monotonic time) per call, and errors the bridge logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fires: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg if isinstance(record.msg, str) else ""
        if "FIRED!" in msg and "[NO_AUDIO_WATCHDOG]" in msg:
            match = _CALL_RE.search(record.getMessage())
            if match:
                self.fires[match.group(1)].append(time.monotonic())
        elif record.levelno >= logging.ERROR and record.name.startswith("realtime_fsm"):
            self.errors.append(record.getMessage()[:300])


@contextlib.contextmanager
def _watch_logs() -> Iterator[_LogWatch]:
    logger = logging.getLogger("realtime_fsm")
    watch = _LogWatch()
    old_level = logger.level
    logger.addHandler(watch)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)


# --- one call ------------------------------------------------------------------------------------


def _draw_faults(rng: random.Random, share: float) -> tuple[str, ...]:
    if rng.random() >= share:
        return ()
    return tuple(sorted(rng.sample(FAULTS, rng.randint(1, 3))))


def _response_faults(rng: random.Random, kinds: tuple[str, ...]) -> ResponseFaults:
    """Faults for one response: each of the call's kinds applies with probability 1/2."""
    kw: dict[str, Any] = {}
    for kind in kinds:
        if rng.random() >= 0.5:
            continue
        if kind == "dropped_done":
            kw["drop_done"] = True
        elif kind == "duplicated":
            kw["duplicate_events"] = frozenset(
                rng.sample(sorted(LIFECYCLE_EVENT_TYPES), rng.randint(1, 3))
            )
        elif kind == "late":
            kw["late_events"] = True
            if rng.random() < 0.5:
                kw["late_events_delay_s"] = rng.uniform(0.0, 0.3)
        elif kind == "slow_cancel":
            kw["cancel_ack_delay_s"] = rng.choice([rng.uniform(0.05, 0.8), rng.uniform(1.2, 1.6)])
        elif kind == "deltas_after_cancel":
            kw["deltas_after_cancel"] = rng.randint(1, 5)
        elif kind == "silent":
            kw["silent"] = True
            kw["hold_open_s"] = rng.choice([None, 0.0, 0.5])
        elif kind == "stall":
            kw["stall_after_deltas"] = rng.randint(0, 6)
        elif kind == "ignore_create":
            kw["ignore_create"] = True
        elif kind == "bad_outcome":
            kw["outcome"] = rng.choice(["incomplete", "failed"])
        elif kind == "socket_drop" and rng.random() < 0.3:
            kw["drop_socket_after_deltas"] = rng.randint(0, 8)
    return ResponseFaults(**kw)


def _user_items(sim: FakeRealtimeServer) -> dict[int, Counter[str]]:
    """User text items the simulator received, per connection (session)."""
    texts: dict[int, Counter[str]] = collections.defaultdict(Counter)
    for received in sim.received:
        event = received.event
        if event.get("type") != "conversation.item.create":
            continue
        item = event.get("item") or {}
        if item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts[received.connection][str(part.get("text"))] += 1
    return texts


def _busy_split(
    sim: FakeRealtimeServer, cancel_timeout: float, wire: dict[str, bool] | None = None
) -> tuple[int, int, int, int]:
    """``(races, probes, late, unexplained)``: a busy error is a race when the response holding
    the slot at that moment was created by the server's VAD (the create crossed it on the
    wire), and a probe when the holder is a response whose cancel the server acknowledges only
    after the machine's ``cancel_timeout`` (the machine cannot tell a lost acknowledgement from
    a slow one; its next create finds out, and the busy answer makes it cancel again and
    wait).  It is late when ``wire`` (:func:`busy_errors_on_the_wire`, by the error's event
    id) accepts it: the server was quick enough, but the bridge read its answer after its own
    timeout (a loaded loop)."""
    races = probes = late = unexplained = 0
    for sent in sim.sent:
        event = sent.event
        if event.get("type") != "error" or sent.injected:
            continue
        if (event.get("error") or {}).get("code") != BUSY:
            continue
        holder = next(
            (
                r
                for r in reversed(sim.responses)
                if r.connection == sent.connection
                and not r.out_of_band
                and r.created_at <= sent.at
                and (r.done_at is None or r.done_at >= sent.at)
            ),
            None,
        )
        if holder is not None and holder.origin == "server_vad":
            races += 1
        elif (
            holder is not None
            and holder.cancel_requested_at is not None
            and holder.faults.cancel_ack_delay_s >= cancel_timeout
        ):
            probes += 1
        elif wire is not None and wire.get(str(event.get("event_id")), False):
            late += 1
        else:
            unexplained += 1
    return races, probes, late, unexplained


async def _until(
    predicate: Callable[[], bool],
    timeout: float,
    paused: Callable[[], bool] | None = None,
) -> bool:
    """Poll ``predicate`` for up to ``timeout`` seconds, not counting time while ``paused``."""
    loop = asyncio.get_running_loop()
    deadline = last = loop.time()
    deadline += timeout
    while not predicate():
        now = loop.time()
        if paused is not None and paused():
            deadline += now - last
        last = now
        if now >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class _Call:
    """One soak call: its simulator, its listener of the bridge server, its caller, its script."""

    def __init__(self, cfg: SoakConfig, index: int, watch: _LogWatch, trace_dir: Path) -> None:
        self.cfg = cfg
        #: The server records the call's trace here (read, then removed, by ``_collect``).
        self.trace_dir = trace_dir
        self.rng = random.Random(f"{cfg.seed}:{index}")
        rng = self.rng
        self.watch = watch
        self.server_creates = rng.random() < cfg.server_creates_share
        self.faults = _draw_faults(rng, cfg.fault_share)
        self.call_sid = f"CAsoak{cfg.seed:x}x{index:05d}"
        self.outcome = CallOutcome(index, self.call_sid, self.server_creates, self.faults)
        self.texts: list[str] = []
        self.dtmf: Counter[str] = Counter()
        self.bridges: list[CallBridge] = []
        self.reports: list[CallReport] = []
        self.greeting = rng.random() < 0.6
        # Both ways of marking: after every ``media``, and coalesced (the default, and denser).
        self.mark_every_ms = rng.choice((0, 100, DEFAULT_MARK_EVERY_MS))

    def reply(self, ctx: ReplyContext) -> ScriptedReply:
        audio_ms = self.rng.randint(300, _MAX_REPLY_MS)
        faults = _response_faults(self.rng, self.faults)
        text = f"{self.call_sid} answer {ctx.number}"
        return ScriptedReply(text, audio_ms=audio_ms, faults=faults)

    def bridge_config(self) -> BridgeConfig:
        creates = self.server_creates
        return BridgeConfig(
            session=SessionConfig(
                instructions="You are a soak-test assistant.",
                create_response=creates,
                interrupt_response=creates,
                silence_duration_ms=200,
            ),
            lifecycle=self.cfg.lifecycle,
            greeting="Greet the caller." if self.greeting else None,
            accept_text_messages=True,
            mark_every_ms=self.mark_every_ms,
        )

    @property
    def bridge_ended(self) -> bool:
        return bool(self.reports) or any(b.report.end_reason for b in self.bridges)

    def _all_texts(self) -> set[str]:
        return set(self.texts) | set(self.dtmf)

    def _machine(self) -> ResponseLifecycle | None:
        return self.bridges[-1].machine if self.bridges else None

    def settled(self, sim: FakeRealtimeServer) -> bool:
        """Idle, nothing pending, and every text typed has reached the model (or the call has
        ended, and the report says the rest)."""
        machine = self._machine()
        if self.bridge_ended:
            return True
        if machine is None or machine.state is not IDLE or machine.pending:
            return False
        sessions = _user_items(sim)
        current = sessions.get(len(sim.connections) - 1, Counter())
        return all(current[t] >= n for t, n in (Counter(self.texts) + self.dtmf).items())

    async def run(self) -> CallOutcome:
        sim_cfg = FakeRealtimeConfig(
            realtime_factor=self.cfg.realtime_factor,
            first_delta_delay_s=0.02,
            transcription_delay_s=0.01,
            seed=self.rng.randint(0, 2**31),
        )
        async with FakeRealtimeServer(sim_cfg, replies=self.reply) as sim:
            server_cfg = ServerConfig(
                public_url=f"http://{HOST}",
                realtime_url=sim.url,
                bridge=self.bridge_config(),
                trace_dir=self.trace_dir,
            )
            server = await start_server(
                server_cfg, HOST, 0, reports=self.reports, on_bridge=self.bridges.append
            )
            try:
                port = server.sockets[0].getsockname()[1]
                caller_cfg = FakeCallerConfig(
                    call_sid=self.call_sid,
                    text_event="text",
                    speed=self.cfg.caller_speed,
                    seed=self.rng.randint(0, 2**31),
                )
                caller = FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", caller_cfg)
                await caller.start()
                try:
                    await self._script(sim, caller)
                finally:
                    await caller.hang_up()
                if not await _until(lambda: bool(self.reports), 10.0):
                    self.outcome.crash = "no call report 10 s after the caller hung up"
                self._collect(sim, caller)
            finally:
                server.close()
                await server.wait_closed()
        return self.outcome

    async def _script(self, sim: FakeRealtimeServer, caller: FakeTwilioCaller) -> None:
        rng = self.rng
        out = self.outcome
        if not await _until(lambda: self._machine() is not None, 10):
            out.crash = "the bridge never started the call"
            return
        steps = rng.randint(2, 6)
        drop_at = rng.randrange(steps) if "socket_drop" in self.faults else -1
        error_at = rng.randrange(steps) if "server_error" in self.faults else -1
        for step in range(steps):
            if rng.random() < 0.5:  # barge in on a response that is playing
                await _until(lambda: caller.is_playing or caller.closed, rng.uniform(0.2, 1.5))
            else:
                await asyncio.sleep(rng.uniform(0.05, 0.6))
            if caller.closed or self.bridge_ended:
                break
            if step == error_at:
                if rng.random() < 0.5:
                    sim.inject_error(
                        "server_error", "The server had an error.", error_type="server_error"
                    )
                    out.injected_errors += 1
                else:
                    sim.error_on_next(
                        "response.create",
                        "server_error",
                        "The server had an error while processing your request.",
                        error_type="server_error",
                    )
            if step == drop_at:
                sim.drop_connections()
                out.socket_dropped = True
            action = rng.choice(["speak", "text", "text", "dtmf", "speak_text"])
            if action in ("speak", "speak_text"):
                await caller.speak(rng.uniform(0.25, 0.6))
            if action in ("text", "speak_text"):
                await self._type(caller, f"{self.call_sid} text {step}")
            elif action == "dtmf":
                digit = rng.choice("0123456789*#")
                if self._typeable(caller):
                    self.dtmf[f"DTMF {digit}"] += 1
                    await caller.send_dtmf(digit)
                else:
                    out.texts_into_dead_call += 1
        hangup = "hangup" in self.faults and not caller.closed and not self.bridge_ended
        if hangup and await _until(lambda: caller.is_playing or caller.closed, 3.0):
            out.hung_up_mid_response = caller.is_playing
            if caller.is_playing:
                return  # the caller hangs up now, while the answer plays
        await self._wait_idle(sim)

    def _no_session(self) -> bool:
        """The bridge is between OpenAI sessions: nothing can settle until the next one."""
        return bool(self.bridges) and self.bridges[-1].session.call_state is RECONNECTING

    def _typeable(self, caller: FakeTwilioCaller) -> bool:
        """Text typed while the OpenAI session is down counts: the bridge must hold it for the
        next session or hand it back.  Only a call the bridge already ended is skipped."""
        return not caller.closed and not self.bridge_ended

    async def _type(self, caller: FakeTwilioCaller, text: str) -> None:
        if not self._typeable(caller):
            self.outcome.texts_into_dead_call += 1
            return
        self.texts.append(text)
        await caller.type_text(text)

    async def _wait_idle(self, sim: FakeRealtimeServer) -> None:
        """Wait for :meth:`settled`, up to the lifecycle's recovery budget.  Time the bridge
        spends with no OpenAI session (backing off and reconnecting, up to
        ``reconnect_max_delay`` per attempt when sessions keep dying) is not counted: no
        machine can settle without a server, and reconnects are bounded on their own
        (``max_reconnects``).  The seed-4 soak hit it: five answers in a row whose sockets
        dropped (15% odds each) put 12 s of backoff into one call's wait."""
        out = self.outcome
        if self.bridge_ended:
            return
        started = time.monotonic()
        timeout = self.cfg.idle_timeout
        if await _until(lambda: self.settled(sim), timeout, paused=self._no_session):
            if not self.bridge_ended:
                out.idle_after_s = time.monotonic() - started
            return
        machine = self._machine()
        state = machine.state.value if machine is not None else "?"
        pending = len(machine.pending) if machine is not None else 0
        out.not_idle = f"{state} with {pending} pending after {timeout:.1f} s"

    def _collect(self, sim: FakeRealtimeServer, caller: FakeTwilioCaller) -> None:
        out = self.outcome
        report = self.reports[0] if self.reports else None
        if report is not None:
            out.end_reason = report.end_reason
            out.given_up = len(report.given_up)
            if report.end_reason.startswith("internal error"):
                out.crash = report.end_reason
            if any(
                r.socket_dropped and r.faults.drop_socket_after_deltas is not None
                for r in sim.responses
            ):
                out.socket_dropped = True
            machine = self._machine()
            if machine is not None and machine.state is not CLOSED:
                out.crash = out.crash or f"machine left in {machine.state.value} after the call"
        # A lost session's conversation is gone with it: the bridge may restore texts into the
        # next session (that is one copy per session, not a duplicate), or hand them back.
        sessions = _user_items(sim)
        last = sessions.get(len(sim.connections) - 1, Counter())
        delivered = Counter(
            {t: max((c[t] for c in sessions.values()), default=0) for t in self._all_texts()}
        )
        undelivered = Counter(report.undelivered_texts if report is not None else ())
        expected = Counter(self.texts) + self.dtmf
        for text, typed in expected.items():
            if delivered[text] + undelivered[text] < typed:
                out.lost_texts += [text] * (typed - delivered[text] - undelivered[text])
            if delivered[text] > typed:  # twice in one session
                out.duplicated_texts += [text] * (delivered[text] - typed)
            elif last[text] + undelivered[text] > typed:  # in the live session and handed back
                out.duplicated_texts += [text] * (last[text] + undelivered[text] - typed)
        out.texts_typed = sum(expected.values())
        out.texts_delivered = sum(min(delivered[t], n) for t, n in expected.items())
        out.texts_undelivered = sum(min(undelivered[t], n) for t, n in expected.items())
        out.sessions = len(sim.connections)
        out.protocol_errors = Counter(sim.error_counts)
        out.injected_errors = sum(sim.injected_error_counts.values())
        cancel_timeout = self.cfg.lifecycle.cancel_timeout
        trace = self.trace_dir / f"{self.call_sid}.jsonl"
        split = _busy_split(sim, cancel_timeout)
        if split[-1]:  # what the simulator cannot explain, the bridge's clock may
            split = _busy_split(sim, cancel_timeout, busy_errors_on_the_wire(trace))
        trace.unlink(missing_ok=True)
        out.busy_races, out.busy_probes, out.busy_late, out.busy_errors = split
        recovered = out.not_idle is None and not out.lost_texts
        if (out.busy_races or out.busy_late) and not recovered:
            out.busy_errors += out.busy_races + out.busy_late
            out.busy_races = out.busy_late = 0
        fires = self.watch.fires.pop(self.call_sid, [])
        out.watchdog_fires = len(fires)
        cooldown = self.cfg.lifecycle.watchdog_cooldown
        out.watchdog_in_cooldown = sum(
            1 for a, b in itertools.pairwise(fires) if b - a < cooldown - 0.05
        )
        out.caller_violations = list(caller.violations)
        out.responses = len(sim.responses)
        out.audio_chunks_heard = len(caller.media_received)


# --- the soak ------------------------------------------------------------------------------------


async def run_soak(
    config: SoakConfig | None = None, *, progress: Callable[[int, int], None] | None = None
) -> SoakResult:
    """Run ``config.calls`` calls, ``config.concurrency`` at a time; never raises for a call."""
    cfg = config or SoakConfig()
    loop = asyncio.get_running_loop()
    loop_exceptions: list[str] = []
    previous = loop.get_exception_handler()

    def on_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        loop_exceptions.append(f"{context.get('message')}: {exc!r}"[:300])

    loop.set_exception_handler(on_exception)
    outcomes: list[CallOutcome] = []
    started = time.monotonic()
    next_index = 0
    traces = tempfile.TemporaryDirectory(prefix="rtfsm-soak-")
    with _watch_logs() as watch, traces:

        async def worker() -> None:
            nonlocal next_index
            while next_index < cfg.calls:
                index = next_index
                next_index += 1
                call = _Call(cfg, index, watch, Path(traces.name))
                try:
                    outcome = await asyncio.wait_for(call.run(), cfg.call_timeout)
                except asyncio.TimeoutError:
                    outcome = call.outcome
                    outcome.crash = f"call did not finish within {cfg.call_timeout:g} s"
                except Exception as exc:  # a soak reports; it never stops at the first failure
                    outcome = call.outcome
                    outcome.crash = f"{type(exc).__name__}: {exc}"[:300]
                outcomes.append(outcome)
                if progress is not None:
                    progress(len(outcomes), cfg.calls)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, cfg.concurrency))))
        finally:
            loop.set_exception_handler(previous)
    outcomes.sort(key=lambda o: o.index)
    return SoakResult(cfg, outcomes, time.monotonic() - started, loop_exceptions, watch.errors)


# --- command line --------------------------------------------------------------------------------


def add_soak_parser(sub: Any) -> None:
    """``realtime-fsm soak``: register the subcommand on the CLI's subparsers."""
    parser = sub.add_parser(
        "soak", help="run many simulated calls with random faults through the example bridge"
    )
    defaults = SoakConfig()
    parser.add_argument("--calls", type=int, default=defaults.calls)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--factor", type=float, default=defaults.realtime_factor, help="simulator speed-up"
    )
    parser.add_argument("--caller-speed", type=float, default=defaults.caller_speed)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the bridge's warnings as they happen"
    )
    parser.set_defaults(func=_soak_command)


def _soak_command(args: Any) -> int:
    # The soak turns the package's loggers up to INFO to watch them; what is printed is set
    # on the handler, so that does not flood the terminal.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    config = SoakConfig(
        calls=args.calls,
        concurrency=args.concurrency,
        seed=args.seed,
        realtime_factor=args.factor,
        caller_speed=args.caller_speed,
    )
    step = max(1, config.calls // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"  {done}/{total} calls", file=sys.stderr, flush=True)

    result = asyncio.run(run_soak(config, progress=progress))
    print(result.format())
    return 0 if result.ok else 1
