"""One call of the fault soak: its simulator, its listener of the bridge server, its caller.

A :class:`SoakCall` draws its turn-taking mode, faults and script from the soak's seed and its
index, runs them against the example bridge's server and fills in its
:class:`~realtime_fsm.testing.soak_report.CallOutcome`.  :class:`LogWatch` reads the watchdog
fires and logged errors of all calls from the package's log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from ..bridge import DEFAULT_MARK_EVERY_MS, BridgeConfig, CallBridge, CallReport
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
from .soak_config import BUSY, FAULTS, HOST, MAX_REPLY_MS, SoakConfig
from .soak_report import CallOutcome

_CALL_RE: Final = re.compile(r"\bcall=(\S+)")


# --- per-call log watching -----------------------------------------------------------------------


class LogWatch(logging.Handler):
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
def watch_logs() -> Iterator[LogWatch]:
    logger = logging.getLogger("realtime_fsm")
    watch = LogWatch()
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


#: How often :func:`_until` looks at its predicate.
_POLL = 0.05


async def _until(
    predicate: Callable[[], bool],
    timeout: float,
    paused: Callable[[], bool] | None = None,
) -> bool:
    """Poll ``predicate`` for up to ``timeout`` seconds, not counting time while ``paused``, nor
    the event loop's lateness: a poll that comes more than a poll interval late means the loop
    (the bridge, the simulator and the caller all run on it) could not run, so nothing could
    settle then either.  That time is credited, up to ``timeout`` again, so an overloaded
    machine makes the wait longer, not the call wrong, while a call that never settles is
    still reported (within twice its budget of running time)."""
    loop = asyncio.get_running_loop()
    deadline = last = loop.time()
    deadline += timeout
    credit_left = timeout
    while not predicate():
        now = loop.time()
        if paused is not None and paused():
            deadline += now - last
        elif (late := now - last - 2 * _POLL) > 0 and credit_left > 0:
            credit = min(late, credit_left)
            deadline += credit
            credit_left -= credit
        last = now
        if now >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


class SoakCall:
    """One soak call: its simulator, its listener of the bridge server, its caller, its script."""

    def __init__(self, cfg: SoakConfig, index: int, watch: LogWatch, trace_dir: Path) -> None:
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
        #: A rotating call: its session is replaced this long after it opened, at a quiet
        #: moment or (past the quiet window) a response boundary, before the simulator's cap
        #: (``session_max_s``) ends it; a cap that comes first is a reconnect's business.
        self.rotate_after: float | None = None
        self.rotate_quiet_window = 0.0
        self.session_max_s: float | None = None
        if "rotate" in self.faults:
            self.rotate_after = rng.uniform(0.8, 2.5)
            self.rotate_quiet_window = rng.choice((0.0, 0.5, 10.0))
            self.session_max_s = self.rotate_after + rng.uniform(1.0, 4.0)

    def reply(self, ctx: ReplyContext) -> ScriptedReply:
        audio_ms = self.rng.randint(300, MAX_REPLY_MS)
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
            rotate_after=self.rotate_after,
            rotate_quiet_window=self.rotate_quiet_window,
            rotate_retry_delay=0.5,
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
            session_max_s=self.session_max_s,
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
        if self.session_max_s is not None:
            # A rotating call lasts until a session of it was rotated: a short script would
            # otherwise end it before ``rotate_after``.  Idle after its script, it has a quiet
            # moment; a cap that came first (a busy session, a loaded machine) is reconnected
            # and the next session rotates in turn, hence two rounds.
            await _until(self._rotated, 2 * self.session_max_s + 5.0)
        await self._wait_idle(sim)

    def _rotated(self) -> bool:
        return self.bridge_ended or not self.bridges or self.bridges[-1].report.rotations > 0

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
        if report is not None:
            out.rotations = report.rotations
        out.protocol_errors = Counter(sim.error_counts)
        out.injected_error_codes = Counter(sim.injected_error_counts)
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
