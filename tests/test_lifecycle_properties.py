"""Property test: the real machine against a reference server, over a lossless but slow network.

:class:`World` wires one :class:`~realtime_fsm.ResponseLifecycle` to a
:class:`~reference_server.ReferenceServer` through two FIFO queues (client->server and
server->client).  Nothing is delivered until a test says so, so every interleaving of "the client
sends", "the server answers", "the user speaks or types" and "time passes" can be produced; that
is where the races of openai-realtime.md 8.4 live.  :class:`World` also keeps the books (what the
machine could know when it sent each create, which texts were typed, which requests were served)
and checks the invariants of issue 2 after every step:

1. the server never sees a ``response.create`` (or a user text item) while a default response is
   in progress, except in the unavoidable race with a response the machine could not know about
   (server VAD / idle timeout, or a create of its own it had already given up on); a create that
   loses that race is re-queued and still served in the end;
2. every user text is sent exactly once and in order, or handed back on close;
3. the no-audio watchdog fires at most once per cooldown, never on a retry response, and makes at
   most one retry per fire;
4. with the server silent the machine reaches ``idle`` within its timeouts;
5. ``idle`` (and ``closed``) hold no stale state, and ``check_invariants()`` is empty;
6. duplicate or late events of finished responses change nothing;

plus the ones that make those checkable or that the rules imply: every app request is, at every
moment, in exactly one place (queued, in flight, served, or given up for a legitimate reason:
never because the slot was busy); once everything is delivered and the server is done, the
machine is ``idle`` and owes nothing; a busy machine always has a timer within its longest
timeout; a barge-in while the caller hears audio clears it and truncates each item at the ms
actually heard (clamped to what was received) or deletes it if none was; audio the machine said
to drop, audio of a response interrupted before it was created and audio of a response whose
request was given up never reach the caller.

The same :class:`World` drives the exhaustive bounded check in ``test_lifecycle_exhaustive.py``.
"""

from __future__ import annotations

from collections import Counter, deque

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from reference_server import BUSY_CODE, ReferenceServer, ServerEvent

from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    AudioDelta,
    ClearPlayback,
    Command,
    ConnectionClosed,
    DropResponseAudio,
    LifecycleConfig,
    LocalProtocolError,
    PlaybackProgress,
    RequestGivenUp,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    ReturnUndeliveredText,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
    ServerError,
    SpeechStarted,
    Tick,
    TranscriptDelta,
    UserText,
)
from realtime_fsm.events import Event

IDLE = ResponseState.IDLE
ACTIVE = ResponseState.ACTIVE
CREATING = ResponseState.CREATING
CLOSED = ResponseState.CLOSED
RETRY_REASON = "no_audio_retry"
#: Why a request may legitimately end without a response: its create timed out, the user
#: interrupted it before it was created, or the connection closed.  Never "the slot was busy".
LEGIT_GIVE_UPS = ("create_timeout", "interrupted", "closed:")


@attrs.frozen
class Mode:
    """Turn detection on the server, and whether the machine was told (else it assumes the
    conservative defaults: it cancels on barge-in and asks for a response per committed turn)."""

    name: str
    turn_detection: bool = False
    create_response: bool = False
    interrupt_response: bool = False
    machine_knows: bool = True

    def config(self) -> LifecycleConfig:
        if not self.machine_knows:
            return LifecycleConfig(call_id=self.name)
        return LifecycleConfig(
            call_id=self.name,
            server_creates_response=self.turn_detection and self.create_response,
            server_interrupts_response=self.turn_detection and self.interrupt_response,
        )


MODES = (
    Mode("no_vad"),
    Mode("vad", turn_detection=True, create_response=True, interrupt_response=True),
    Mode(
        "vad_unannounced",
        turn_detection=True,
        create_response=True,
        interrupt_response=True,
        machine_knows=False,
    ),
    Mode("vad_interrupt_only", turn_detection=True, interrupt_response=True),
    Mode("vad_create_only", turn_detection=True, create_response=True),
    Mode("vad_manual", turn_detection=True),
)


class InvariantBroken(AssertionError):
    """An invariant of issue 2 failed; the message ends with the trace of world actions."""


@attrs.frozen
class _SendContext:
    """What the machine knew when it sent a create or a user text."""

    known_active: frozenset[str]
    given_up: frozenset[str]


class World:
    """The machine, the reference server, the two queues between them, and the books.

    Every public method is one *action* (the hypothesis rules and the BFS alphabet are both made
    of them); every action is deterministic, so a failing sequence replays exactly.  Actions check
    their own step-local properties and :meth:`check` checks the global ones."""

    def __init__(
        self,
        mode: Mode,
        *,
        audio_chunks: int = 2,
        transcript_chunks: int = 2,
        silent_chunks: int = 3,
        always_silent: bool = False,
        echo_event_ids: bool = True,
    ) -> None:
        self.mode = mode
        self.cfg = mode.config()
        self.m = ResponseLifecycle(self.cfg, now=0.0)
        self.server = ReferenceServer(
            turn_detection=mode.turn_detection,
            create_response=mode.create_response,
            interrupt_response=mode.interrupt_response,
            audio_chunks=audio_chunks,
            transcript_chunks=transcript_chunks,
            silent_chunks=silent_chunks,
            always_silent=always_silent,
            echo_event_ids=echo_event_ids,
        )
        self.now = 0.0
        self.c2s: deque[Command] = deque()
        self.trace: list[str] = []
        # --- what the machine has been told (default-conversation responses only)
        self.known_active: set[str] = set()
        self.finished: list[str] = []  # ids whose response.done reached the machine, in order
        self.contexts: dict[str, _SendContext] = {}
        self.given_up_creates: set[str] = set()
        self.races: list[str] = []  # event ids of creates that lost an unavoidable race
        # --- user texts and app requests
        self.typed: list[str] = []
        self.sent_texts: list[str] = []
        self.returned_texts: list[str] = []
        self.requests: dict[str, str] = {}  # app reason -> open | served | given_up:<why>
        self.asked = 0  # requests made, out-of-band ones included
        # --- audio and the watchdog
        self.dropped: set[str] = set()
        self.interrupted_creates: set[str] = set()  # barged in on before response.created
        self.forwarded: dict[str, int] = {}  # item -> bytes forwarded to the caller
        self.played: dict[str, int] = {}
        self.cleared: set[str] = set()
        self.fires: list[tuple[float, str | None]] = []
        self.closed = False

    # ------------------------------------------------------------------------------ plumbing

    def _fail(self, message: str) -> None:
        raise InvariantBroken(f"{message}\n  trace: {' ; '.join(self.trace)}")

    def _handle(self, event: Event) -> list[Command]:
        m = self.m
        last_fire = m.watchdog_last_fire
        rid = m.response_id
        barge_in = isinstance(event, (UserText, SpeechStarted))
        if barge_in and m.state is CREATING:
            assert m.inflight is not None
            self.interrupted_creates.add(m.inflight.event_id)
        hearing = bool(self._unheard())
        commands = m.handle(event, self.now)
        if barge_in and hearing and not any(isinstance(c, ClearPlayback) for c in commands):
            self._fail(f"barge-in ({type(event).__name__}) while the caller hears audio, no clear")
        if m.watchdog_last_fire != last_fire:
            self._on_watchdog_fire(rid)
        self._apply(commands)
        return commands

    def _context(self) -> _SendContext:
        return _SendContext(frozenset(self.known_active), frozenset(self.given_up_creates))

    def _unheard(self) -> dict[str, int]:
        """Items the caller is still hearing (forwarded, not cleared, not fully played): ms."""
        bpm = self.cfg.audio_bytes_per_ms
        return {
            item: self.played.get(item, 0)
            for item, nbytes in self.forwarded.items()
            if item not in self.cleared and self.played.get(item, 0) * bpm < nbytes
        }

    def _check_cut(self, commands: list[Command]) -> None:
        """A clear cuts what the caller did not hear: each item with unheard audio is truncated
        at the ms actually played (clamped to what was received) or, if none was, deleted."""
        truncated = {c.item_id: c.audio_end_ms for c in commands if isinstance(c, SendTruncate)}
        deleted = {c.item_id for c in commands if isinstance(c, SendItemDelete)}
        if not any(isinstance(c, ClearPlayback) for c in commands):
            if truncated or deleted:
                self._fail(f"truncate or delete without a clear: {commands}")
            return
        bpm = self.cfg.audio_bytes_per_ms
        want = {
            item: min(played, self.forwarded[item] // bpm)
            for item, played in self._unheard().items()
        }
        want_truncated = {item: ms for item, ms in want.items() if ms > 0}
        want_deleted = {item for item, ms in want.items() if ms == 0}
        if truncated != want_truncated or deleted != want_deleted:
            self._fail(
                f"cut {truncated} / deleted {deleted}, expected {want_truncated} / {want_deleted}"
            )

    def _apply(self, commands: list[Command]) -> None:
        self._check_cut(commands)
        for cmd in commands:
            if isinstance(cmd, SendResponseCreate):
                if not cmd.out_of_band:
                    self.contexts[cmd.event_id] = self._context()
                self.c2s.append(cmd)
            elif isinstance(cmd, SendUserText):
                self.contexts[cmd.event_id] = self._context()
                self.sent_texts.append(cmd.text)
                self.c2s.append(cmd)
            elif isinstance(cmd, (SendResponseCancel, SendTruncate, SendItemDelete)):
                self.c2s.append(cmd)
            elif isinstance(cmd, ClearPlayback):
                self.cleared.update(self.forwarded)
            elif isinstance(cmd, DropResponseAudio):
                self.dropped.add(cmd.response_id)
            elif isinstance(cmd, RequestGivenUp):
                self._on_given_up(cmd)
            elif isinstance(cmd, ReturnUndeliveredText):
                self.returned_texts.extend(cmd.texts)
            else:  # pragma: no cover - a new command type needs a rule here
                self._fail(f"unexpected command {cmd!r}")

    def _on_given_up(self, cmd: RequestGivenUp) -> None:
        if not cmd.reason.startswith(LEGIT_GIVE_UPS):
            self._fail(f"request given up for a bad reason: {cmd!r}")
        if cmd.event_id is not None:
            self.given_up_creates.add(cmd.event_id)
        for reason in cmd.request_reasons:
            if reason in self.requests:
                if self.requests[reason] != "open":
                    self._fail(f"request {reason} resolved twice ({self.requests[reason]}, {cmd})")
                self.requests[reason] = f"given_up:{cmd.reason}"

    def _on_watchdog_fire(self, response_id: str | None) -> None:
        if self.fires and self.now - self.fires[-1][0] < self.cfg.watchdog_cooldown:
            self._fail(f"watchdog fired twice within the cooldown: {self.fires} then {self.now}")
        if response_id is not None and self._is_retry_response(response_id):
            self._fail(f"watchdog fired on the retry response {response_id}")
        self.fires.append((self.now, response_id))

    def _is_retry_response(self, response_id: str) -> bool:
        resp = self.server.responses.get(response_id)
        if resp is None:
            return False
        return RETRY_REASON in resp.metadata.get(META_REASON, "").split("+")

    # ----------------------------------------------------------------------- preconditions

    @property
    def open(self) -> bool:
        return not self.closed

    def can_send(self) -> bool:
        return self.open and bool(self.c2s)

    def can_receive(self) -> bool:
        return self.open and bool(self.server.outbox)

    def can_stream(self) -> bool:
        return self.open and bool(self.server.streaming())

    def can_speak(self) -> bool:
        return self.open and self.mode.turn_detection and not self.server.speaking

    def can_stop_speaking(self) -> bool:
        return self.open and self.server.speaking

    def can_tick(self) -> bool:
        return self.open and self.m.next_deadline is not None

    def playable_items(self) -> list[str]:
        bpm = self.cfg.audio_bytes_per_ms
        return [
            item
            for item, nbytes in self.forwarded.items()
            if item not in self.cleared and self.played.get(item, 0) < nbytes // bpm
        ]

    # ------------------------------------------------------------------------------ actions

    def request(self, instructions: str | None = None, out_of_band: bool = False) -> None:
        """The app asks for a response (each request has a unique reason, to track it)."""
        self.asked += 1
        reason = f"app{self.asked}"
        self.trace.append(f"request({reason}{', oob' if out_of_band else ''})")
        if not out_of_band:
            self.requests[reason] = "open"
        self._handle(
            RequestResponse(reason=reason, instructions=instructions, out_of_band=out_of_band)
        )

    def user_text(self) -> None:
        text = f"t{len(self.typed) + 1}"
        self.trace.append(f"user_text({text})")
        self.typed.append(text)
        self._handle(UserText(text))

    def speech_started(self) -> None:
        self.trace.append("speech_started")
        self.server.speech_started()

    def speech_stopped(self) -> None:
        self.trace.append("speech_stopped")
        self.server.speech_stopped()

    def idle_timeout(self) -> None:
        self.trace.append("idle_timeout")
        self.server.idle_timeout()

    def silence_next(self) -> None:
        self.trace.append("silence_next")
        self.server.next_silent = True

    def stream(self, index: int = 0) -> None:
        """The server emits the next event of one of its in-progress responses."""
        ids = self.server.streaming()
        rid = ids[index % len(ids)]
        self.trace.append(f"stream({rid})")
        self.server.step(rid)

    def send(self) -> None:
        """The oldest client event in flight reaches the server."""
        msg = self.c2s.popleft()
        self.trace.append(f"send({type(msg).__name__}:{getattr(msg, 'event_id', '')})")
        seen = len(self.server.violations)
        self.server.receive(msg)
        for v in self.server.violations[seen:]:
            if v.kind in ("create_while_active", "text_while_active") and self._unavoidable(
                v.event_id, v.response_id
            ):
                if v.kind == "create_while_active":
                    self.races.append(v.event_id or "")
                continue
            self._fail(f"the server saw a protocol violation: {v}")

    def _unavoidable(self, event_id: str | None, blocking: str | None) -> bool:
        """The machine could not have known ``blocking`` was generating when it sent this: it had
        not been told (no response.created, no busy error) and never asked for it (server VAD,
        idle timeout, or a create it had already given up on)."""
        if event_id is None or blocking is None:
            return False
        ctx = self.contexts[event_id]
        resp = self.server.responses[blocking]
        not_told = blocking not in ctx.known_active
        not_asked = resp.origin != "client" or resp.create_event_id in ctx.given_up
        return not_told and not_asked

    def receive(self) -> None:
        """The oldest server event in flight reaches the machine."""
        event: ServerEvent = self.server.outbox.popleft()
        self.trace.append(f"receive({_describe(event)})")
        m = self.m
        if isinstance(event, AudioDelta):
            forward = m.audio_delta(event.response_id, event.item_id, event.byte_count, self.now)
            if forward:
                resp = self.server.responses[event.response_id]
                if event.response_id in self.dropped:
                    self._fail(f"audio of dropped response {event.response_id} forwarded")
                if resp.create_event_id in self.interrupted_creates:
                    self._fail(f"audio of {resp.id}, interrupted before it was created, forwarded")
                if resp.create_event_id in self.given_up_creates:
                    self._fail(f"audio of {resp.id} forwarded, but its request was given up")
                if not resp.out_of_band:
                    self.forwarded[event.item_id] = (
                        self.forwarded.get(event.item_id, 0) + event.byte_count
                    )
        elif isinstance(event, TranscriptDelta):
            m.transcript_delta(event.response_id, self.now)
        elif isinstance(event, ResponseCreated):
            inflight = m.inflight
            ours = (
                not event.out_of_band
                and inflight is not None
                and event.metadata.get(META_EVENT_ID) == inflight.event_id
            )
            self._handle(event)
            if not event.out_of_band:
                self.known_active.add(event.response_id)
            if ours:
                assert inflight is not None
                if m.inflight is inflight:
                    self._fail(f"response.created of in-flight {inflight.event_id} not adopted")
                for req in inflight.requests:
                    if req.reason in self.requests:
                        if self.requests[req.reason] != "open":
                            self._fail(f"request {req.reason} served after being resolved")
                        self.requests[req.reason] = "served"
        elif isinstance(event, ResponseDone):
            self._handle(event)
            self.known_active.discard(event.response_id)
            self.finished.append(event.response_id)
        elif isinstance(event, ServerError):
            if event.code == BUSY_CODE:
                named = event.message.split("in progress: ")[1].split(".")[0]
                if named not in self.finished:
                    self.known_active.add(named)
            self._handle(event)
        else:
            self._handle(event)

    def round_trip(self) -> None:
        """Every client event in flight reaches the server, then every server event in flight
        reaches the client (what the client sends in reply stays in flight)."""
        self.trace.append("round_trip")
        while self.c2s:
            self.send()
            self.check()
        for _ in range(len(self.server.outbox)):
            self.receive()
            self.check()

    def advance(self, seconds: float) -> None:
        """Time passes; the driver ticks if a deadline has come (as a timer would)."""
        self.now += seconds
        self.trace.append(f"advance({seconds:g})")
        deadline = self.m.next_deadline
        if deadline is not None and self.now >= deadline:
            self._handle(Tick())

    def tick(self, late_by: float = 0.0) -> None:
        """The driver's timer fires at (or some time after) the machine's next deadline."""
        deadline = self.m.next_deadline
        assert deadline is not None
        self.now = max(self.now, deadline + late_by)
        self.trace.append(f"tick(+{late_by:g})")
        self._handle(Tick())

    def playback(self, index: int, fraction: float) -> None:
        """Twilio marks come back: the caller has heard ``fraction`` of an item's audio."""
        items = self.playable_items()
        item = items[index % len(items)]
        total_ms = self.forwarded[item] // self.cfg.audio_bytes_per_ms
        played = max(self.played.get(item, 0), int(total_ms * fraction))
        self.played[item] = played
        self.trace.append(f"playback({item}, {played}ms)")
        self._handle(PlaybackProgress(item_id=item, played_ms=played))

    def close(self) -> None:
        self.trace.append("close")
        self._handle(ConnectionClosed())
        self.closed = True
        open_requests = [r for r, status in self.requests.items() if status == "open"]
        if open_requests:
            self._fail(f"requests neither served nor given up on close: {open_requests}")

    def after_close(self) -> None:
        """A closed machine ignores a second close and refuses anything else, loudly."""
        self.trace.append("after_close")
        if self.m.handle(ConnectionClosed(), self.now):
            self._fail("a second close produced commands")
        try:
            self.m.handle(UserText("too late"), self.now)
        except LocalProtocolError:
            pass
        else:
            self._fail("a closed machine accepted an event")

    def stale(self, index: int, kind: str, out_of_band: bool = False) -> None:
        """A duplicate or late event of a finished response, a duplicate ``response.created``
        of the current one, or an early tick: each must be a no-op."""
        m = self.m
        before = self._snapshot()
        commands: list[Command] = []
        if kind == "early_tick":
            self.trace.append("early_tick")
            deadline = m.next_deadline
            if deadline is None or self.now < deadline:
                commands = m.handle(Tick(), self.now)
        elif kind == "duplicate_created":
            current = m.response_id
            if current is None or current not in self.known_active:
                return
            self.trace.append(f"duplicate_created({current})")
            metadata = self.server.responses[current].metadata
            commands = m.handle(ResponseCreated(current, metadata=metadata), self.now)
        else:
            if not self.finished:
                return
            finished = (
                [rid for rid in self.finished if self.server.responses[rid].out_of_band]
                if out_of_band
                else []
            )
            finished = finished or self.finished
            rid = finished[index % len(finished)]
            resp = self.server.responses[rid]
            self.trace.append(f"stale_{kind}({rid})")
            if kind == "done":
                commands = m.handle(ResponseDone(rid, status="cancelled"), self.now)
            elif kind == "created":
                created = ResponseCreated(rid, out_of_band=resp.out_of_band, metadata=resp.metadata)
                commands = m.handle(created, self.now)
            elif kind == "audio":
                if m.audio_delta(rid, resp.item_id, 160, self.now):
                    self._fail(f"late audio of finished response {rid} forwarded")
            else:
                m.transcript_delta(rid, self.now)
        if commands:
            self._fail(f"stale {kind} produced commands {commands}")
        after = self._snapshot()
        if before != after:
            self._fail(f"stale {kind} changed the machine:\n    {before}\n -> {after}")

    def _snapshot(self) -> tuple[object, ...]:
        m = self.m
        inflight = m.inflight
        return (
            m.state,
            m.response_id,
            None if inflight is None else (inflight.event_id, inflight.cancel_wanted),
            tuple(m.pending),
            tuple(m.held_texts),
            m.audio_deltas,
            m.transcript_deltas,
            m.cancel_sent,
            m.response_is_retry,
            m.response_expects_audio,
            frozenset(m.oob_responses),
            m.watchdog_last_fire,
            m.next_deadline,
            m.caller_hearing,
        )

    def settle_silent(self) -> None:
        """The server goes quiet: no event reaches the machine while its timers run out.

        Within the configured timeouts the machine must be back in ``idle`` with nothing left
        to do: at most one stall (or watchdog) cancel, one cancel timeout (a stall timeout if the
        response was already abandoned once), one wait for a server VAD response, and one create
        timeout per request group it still holds."""
        m = self.m
        cfg = self.cfg
        self.trace.append("settle_silent")
        rounds = len(m.pending) + (1 if m.inflight else 0) + (1 if m.held_texts else 0) + 3
        bound = 2 * cfg.stall_timeout + rounds * cfg.create_timeout
        start = self.now
        for _ in range(4 * rounds + 8):
            deadline = m.next_deadline
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self._handle(Tick())
            self.check()
        if m.state is not IDLE or m.next_deadline is not None:
            self._fail(f"silent server: machine stuck in {m.state.value}")
        if self.now - start > bound:
            self._fail(f"silent server: idle only after {self.now - start}s > {bound}s")

    def quiesce(self) -> None:
        """Deliver everything and let the server finish: the machine must end idle, every
        request served or legitimately given up, every race re-queued and served."""
        if self.closed:
            return
        self.trace.append("quiesce")
        m = self.m
        for _ in range(10_000):
            moved = False
            if self.c2s:
                self.send()
                moved = True
            if self.server.outbox:
                self.receive()
                moved = True
            if not moved and self.server.streaming():
                self.stream()
                moved = True
            if not moved and m.state is IDLE and m.next_deadline is not None:
                # Only an idle machine waiting for a server VAD response that will not come
                # (the slot was busy at speech_stopped) has a timer here; let it run out.
                self.tick()
                moved = True
            if not moved:
                break
            self.check()
        else:  # pragma: no cover - the system always quiesces
            self._fail("no quiescence after 10000 steps")
        if m.state is not IDLE or m.pending or m.held_texts or m.inflight is not None:
            self._fail(f"all delivered, server idle, but machine is {m.state.value}")
        open_requests = [r for r, status in self.requests.items() if status == "open"]
        if open_requests:
            self._fail(f"requests never served: {open_requests}")
        if self.server.default is not None:
            self._fail(f"server still generating {self.server.default.id}")

    # ---------------------------------------------------------------------------- invariants

    def check(self) -> None:
        m = self.m
        cfg = self.cfg
        problems = m.check_invariants()
        if problems:
            self._fail(f"check_invariants: {problems}")
        # Rule 4: idle and closed are clean.  Idle has a timer only while it holds requests back
        # for the response the server's VAD is about to create.
        deadline = m.next_deadline
        if m.state in (IDLE, CLOSED) and (m.cancel_sent or m.response_id is not None):
            self._fail(f"stale state in {m.state.value}")
        if m.state is CLOSED and deadline is not None:
            self._fail("closed with a deadline")
        # A busy machine always has a timer, never further away than its longest timeout.
        longest = max(cfg.stall_timeout, cfg.create_timeout, cfg.cancel_timeout)
        if m.state not in (IDLE, CLOSED) and deadline is None:
            self._fail(f"{m.state.value} without a deadline")
        if deadline is not None and deadline - self.now > longest + 1e-6:
            self._fail(f"{m.state.value} with deadline {deadline} at {self.now}")
        # Everything delivered and the server done: the machine is idle with nothing owed,
        # except requests held back (on a timer) for a server VAD response.
        if self.open and not self.c2s and not self.server.outbox and not self.server.streaming():
            waiting = m.state is IDLE and deadline is not None
            if m.state is not IDLE or m.held_texts or (m.pending and not waiting):
                self._fail(f"all delivered, server idle, but machine is {m.state.value}")
            if not waiting and any(status == "open" for status in self.requests.values()):
                self._fail(f"all delivered, server idle, requests open: {self.requests}")
        # User texts: exactly once, in order, or handed back.
        held = [t.text for t in m.held_texts]
        if self.closed:
            if held or self.sent_texts + self.returned_texts != self.typed:
                self._fail(
                    f"texts: typed {self.typed}, sent {self.sent_texts},"
                    f" returned {self.returned_texts}, held {held}"
                )
        elif self.sent_texts + held != self.typed:
            self._fail(f"texts: typed {self.typed}, sent {self.sent_texts}, held {held}")
        seen = self.server.user_texts
        if seen != self.sent_texts[: len(seen)]:
            self._fail(f"server got texts {seen}, client sent {self.sent_texts}")
        # Requests: each app request is in exactly one place.
        places = Counter(r.reason for r in m.pending)
        if m.inflight is not None:
            places.update(r.reason for r in m.inflight.requests)
        for reason, status in self.requests.items():
            expected = 1 if status == "open" else 0
            if places[reason] != expected:
                self._fail(f"request {reason} ({status}) held {places[reason]} times")
        # Watchdog: at most one retry per fire.
        retries = sum(1 for rid in self.server.responses if self._is_retry_response(rid))
        if retries > len(self.fires):
            self._fail(f"{retries} retry responses for {len(self.fires)} watchdog fires")


def _describe(event: ServerEvent) -> str:
    if isinstance(event, (ResponseCreated, ResponseDone, AudioDelta, TranscriptDelta)):
        extra = ""
        if isinstance(event, ResponseDone):
            extra = f",{event.status}"
        elif isinstance(event, ResponseCreated) and event.out_of_band:
            extra = ",oob"
        return f"{type(event).__name__}:{event.response_id}{extra}"
    if isinstance(event, ServerError):
        return f"error:{event.code}:{event.event_id}"
    return type(event).__name__


# ------------------------------------------------------------------------- the hypothesis test


class LifecycleAgainstServer(RuleBasedStateMachine):
    """Random interleavings of app, user, server, network and clock actions on a :class:`World`."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(MODES[0])
        self.mixed = True

    @initialize(
        mode=st.sampled_from(MODES),
        audio_chunks=st.integers(1, 3),
        transcript_chunks=st.integers(0, 2),
        always_silent=st.sampled_from([False, False, False, True]),
        echo_event_ids=st.sampled_from([True, True, True, False]),
        mixed=st.sampled_from([True, True, False]),
    )
    def setup(
        self,
        mode: Mode,
        audio_chunks: int,
        transcript_chunks: int,
        always_silent: bool,
        echo_event_ids: bool,
        mixed: bool,
    ) -> None:
        # Unmixed runs have no user input, no server-created responses, no silent spells and no
        # close: all app requests, network and clock, so response lifecycles run long (the
        # watchdog lives there; in mixed runs barge-ins end most responses first).
        self.mixed = mixed
        self.world = World(
            mode,
            audio_chunks=audio_chunks,
            transcript_chunks=transcript_chunks,
            always_silent=always_silent,
            echo_event_ids=echo_event_ids,
        )

    @precondition(lambda self: self.world.open)
    @rule(
        instructions=st.sampled_from([None, None, "be brief"]),
        out_of_band=st.sampled_from([False, False, False, True]),
    )
    def app_requests_response(self, instructions: str | None, out_of_band: bool) -> None:
        self.world.request(instructions, out_of_band)

    @precondition(lambda self: self.mixed and self.world.open)
    @rule()
    def user_types_text(self) -> None:
        self.world.user_text()

    @precondition(lambda self: self.mixed and self.world.can_speak())
    @rule()
    def user_starts_speaking(self) -> None:
        self.world.speech_started()

    @precondition(lambda self: self.world.can_stop_speaking())
    @rule()
    def user_stops_speaking(self) -> None:
        self.world.speech_stopped()

    @precondition(lambda self: self.mixed and self.world.open and not self.world.server.default)
    @rule()
    def server_idle_timeout(self) -> None:
        self.world.idle_timeout()

    @precondition(lambda self: self.world.can_stream())
    @rule(index=st.integers(0, 3))
    def server_step(self, index: int) -> None:
        self.world.stream(index)

    @precondition(lambda self: self.world.can_send())
    @rule()
    def deliver_client_to_server(self) -> None:
        self.world.send()

    @precondition(lambda self: self.world.can_receive())
    @rule()
    def deliver_server_to_client(self) -> None:
        self.world.receive()

    @precondition(lambda self: self.world.open)
    @rule(moves=st.lists(st.sampled_from(["send", "receive", "stream"]), min_size=1, max_size=8))
    def network_runs(self, moves: list[str]) -> None:
        """Several deliveries in a row: keeps conversations moving between interleavings."""
        world = self.world
        for move in moves:
            if move == "send" and world.can_send():
                world.send()
            elif move == "receive" and world.can_receive():
                world.receive()
            elif move == "stream" and world.can_stream():
                world.stream()
            world.check()

    @precondition(lambda self: self.world.can_send() or self.world.can_receive())
    @rule()
    def network_round_trip(self) -> None:
        """A whole round trip in one step: long conversations (watchdog, cooldown) fit."""
        self.world.round_trip()

    @precondition(lambda self: self.world.open)
    @rule()
    def next_response_silent(self) -> None:
        self.world.silence_next()

    @precondition(lambda self: self.world.open)
    @rule(seconds=st.sampled_from([0.02, 0.1, 0.5, 1.0, 3.5]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @precondition(lambda self: self.world.can_tick())
    @rule(late_by=st.sampled_from([0.0, 0.0, 0.1, 2.0, 13.0]), roll=st.integers(0, 3))
    def timer_fires(self, late_by: float, roll: int) -> None:
        # The no-audio watchdog's deadline always fires; the others (stall, creating and
        # cancelling timeouts) only now and then, or they would end most waits before the
        # network delivers (the silent-server rule covers them thoroughly).
        m = self.world.m
        if roll == 0 or (m.state is ACTIVE and m.transcript_deltas and not m.audio_deltas):
            self.world.tick(late_by)

    @precondition(lambda self: self.world.open and bool(self.world.playable_items()))
    @rule(index=st.integers(0, 3), fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    def playback_progress(self, index: int, fraction: float) -> None:
        self.world.playback(index, fraction)

    @precondition(lambda self: self.world.open)
    @rule(
        index=st.integers(0, 7),
        kind=st.sampled_from(
            ["done", "created", "audio", "transcript", "early_tick", "duplicate_created"]
        ),
        out_of_band=st.booleans(),
    )
    def stale_event(self, index: int, kind: str, out_of_band: bool) -> None:
        self.world.stale(index, kind, out_of_band)

    @precondition(lambda self: self.mixed and self.world.open)
    @rule(roll=st.integers(0, 3))
    def server_goes_silent(self, roll: int) -> None:
        if roll == 0:  # rarer than the other rules: it jumps far ahead in time
            self.world.settle_silent()

    @precondition(lambda self: self.mixed and self.world.open)
    @rule(roll=st.integers(0, 15))
    def connection_closes(self, roll: int) -> None:
        if roll == 0:  # rare: nothing interesting happens after it
            self.world.close()

    @precondition(lambda self: self.world.closed)
    @rule()
    def closed_machine_refuses_events(self) -> None:
        self.world.after_close()

    @invariant()
    def invariants_hold(self) -> None:
        self.world.check()

    def teardown(self) -> None:
        self.world.quiesce()


class SilentServerAppOnly(LifecycleAgainstServer):
    """The same machine, unmixed, with every response silent: app requests, the network and
    the clock only, so most runs see the no-audio watchdog fire, retry and meet its cooldown."""

    @initialize(
        mode=st.sampled_from(MODES),
        audio_chunks=st.just(1),
        transcript_chunks=st.integers(0, 2),
        always_silent=st.just(True),
        echo_event_ids=st.just(True),
        mixed=st.just(False),
    )
    def setup(
        self,
        mode: Mode,
        audio_chunks: int,
        transcript_chunks: int,
        always_silent: bool,
        echo_event_ids: bool,
        mixed: bool,
    ) -> None:
        super().setup(mode, audio_chunks, transcript_chunks, always_silent, echo_event_ids, mixed)


_SETTINGS = settings(
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
LifecycleAgainstServer.TestCase.settings = _SETTINGS
SilentServerAppOnly.TestCase.settings = settings(_SETTINGS, max_examples=150)
TestLifecycleAgainstServer = LifecycleAgainstServer.TestCase
TestSilentServerAppOnly = SilentServerAppOnly.TestCase
