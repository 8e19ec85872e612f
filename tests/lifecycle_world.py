"""The world the lifecycle is checked in: the real machine against a rude reference server.

:class:`World` wires one :class:`~realtime_fsm.ResponseLifecycle` to a
:class:`~reference_server.ReferenceServer` through two FIFO queues (client->server and
server->client).  Nothing is delivered until a test says so, so every interleaving of "the client
sends", "the server answers", "the user speaks or types" and "time passes" can be produced;
messages in flight both ways cross.  The server is as rude as the real one is allowed to be,
per :class:`Profile`: cancel acknowledgements that are slow (up to twice ``cancel_timeout``),
lost, or that arrive as ``completed`` because the response finished first; ``response.created``
held back (up to twice ``create_timeout``) while errors overtake it; VAD that skips creating
when the slot is busy at speech stop; busy errors in both wordings, with and without the echoed
event id; non-busy rejections of a create; creates swallowed without an answer; idle-timeout
responses only where VAD is on.

The world keeps the books and states the promises, from the caller's and the app's side, after
every step (:meth:`World.check`) or at the end (:meth:`World.quiesce`):

1. no ``response.create`` (or user text item) reaches a busy slot, except in a race the machine
   could not see (a server-created response, one held back, one of a create it had stopped
   waiting for) or after it gave up waiting for a cancel the server did not acknowledge within
   ``cancel_timeout``; a create that loses is re-queued and still served;
2. every user text is sent exactly once, in order, or handed back on close;
3. every app request and every caller turn (committed or typed) is answered by a response that
   completes, or reported given up for a legitimate reason (timeout after one retry, a non-busy
   rejection, the caller's barge-in, close), never because the slot was busy;
4. no audio of a cancelled, dropped, interrupted or given-up response is forwarded;
5. the machine is never busy while the server's slot is free and nothing is in flight for longer
   than one timeout (``max(create_timeout, cancel_timeout)``): its next deadline is within it;
6. the no-audio watchdog fires at most once per cooldown, never on a retry, one retry per fire;
7. ``check_invariants()`` is empty, and stale events change nothing.
"""

from __future__ import annotations

from collections import Counter, deque

import attrs
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
CANCELLING = ResponseState.CANCELLING
CLOSED = ResponseState.CLOSED
RETRY_REASON = "no_audio_retry"
#: Why a request may legitimately end without a response: its create (and its one retry) got
#: no answer, the server refused it (not as busy), the caller interrupted it before it was
#: created, or the connection closed.  Never "the slot was busy".
LEGIT_GIVE_UPS = ("create_timeout", "interrupted", "closed:", "rejected:")


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


@attrs.frozen
class Profile:
    """How rude the server is.  Every field is something the real server may do
    (``reference_server.py`` says why for each)."""

    name: str
    cancel_ack: str = "prompt"
    late_created: bool = False
    old_busy_wording: bool = False
    echo_event_ids: bool = True
    #: The world may make the server reject a create (not as busy) or swallow one.
    refusals: bool = False
    swallows: bool = False


PROFILES = (
    Profile("polite"),
    Profile("slow_cancel", cancel_ack="slow"),
    Profile("lost_cancel", cancel_ack="lost"),
    Profile("late_created", late_created=True),
    Profile("old_server", old_busy_wording=True, echo_event_ids=False),
    Profile("refusing", refusals=True, swallows=True),
    Profile(
        "rude",
        cancel_ack="slow",
        late_created=True,
        old_busy_wording=True,
        refusals=True,
        swallows=True,
    ),
)
PROFILE = {profile.name: profile for profile in PROFILES}


class InvariantBroken(AssertionError):
    """A promise failed; the message ends with the trace of world actions."""


@attrs.frozen
class _SendContext:
    """What the machine knew when it sent a create or a user text."""

    known_active: frozenset[str]
    stopped: frozenset[str]
    abandoned: frozenset[str]


class World:
    """The machine, the reference server, the two queues between them, the clock and the books.

    Every public method is one *action* (the hypothesis rules and the BFS alphabet are both made
    of them); every action is deterministic, so a failing sequence replays exactly.  Actions check
    their own step-local promises and :meth:`check` checks the global ones."""

    def __init__(
        self,
        mode: Mode,
        profile: Profile = PROFILES[0],
        *,
        audio_chunks: int = 2,
        transcript_chunks: int = 2,
        silent_chunks: int = 3,
        always_silent: bool = False,
    ) -> None:
        self.mode = mode
        self.profile = profile
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
            echo_event_ids=profile.echo_event_ids,
            cancel_ack=profile.cancel_ack,
            late_created=profile.late_created,
            old_busy_wording=profile.old_busy_wording,
            idle_timeout_needs_vad=True,
        )
        self.now = 0.0
        self.c2s: deque[Command] = deque()
        self.trace: list[str] = []
        # --- what the machine has been told (default-conversation responses only)
        self.known_active: set[str] = set()
        self.finished: list[str] = []  # ids whose response.done reached the machine, in order
        self.created_delivered: set[str] = set()  # ids whose response.created reached it
        self.contexts: dict[str, _SendContext] = {}
        self.races: list[str] = []  # event ids of creates that lost an unavoidable race
        # --- creates and responses the machine stopped waiting for
        self.given_up_creates: set[str] = set()  # named by a RequestGivenUp
        self.stopped_creates: set[str] = set()  # left unanswered at a timeout (resent, dropped)
        self.abandoned: set[str] = set()  # responses whose cancel timed out
        self.stalled: set[str] = set()  # responses cancelled for showing no sign of life
        self.interrupted_creates: set[str] = set()  # barged in on before response.created
        # --- user texts and app requests
        self.typed: list[str] = []
        self.sent_texts: list[str] = []
        self.returned_texts: list[str] = []
        self.requests: dict[str, str] = {}  # app reason -> open | served | given_up:<why>
        self.asked = 0  # requests made, out-of-band ones included
        self.refused = 0  # creates the world had the server refuse
        #: World steps (``len(trace)``) at which each text was sent and each turn committed, and
        #: at which each RequestGivenUp came out.
        self.text_sent_at: dict[str, int] = {}
        self.turn_at: list[int] = []
        self.reported_at: list[int] = []
        # --- audio and the watchdog
        self.dropped: set[str] = set()
        self.forwarded: dict[str, int] = {}  # item -> bytes forwarded to the caller
        self.played: dict[str, int] = {}
        self.cleared: set[str] = set()
        self.fires: list[tuple[float, str | None]] = []
        # --- the server's clock-bound rudeness, and promise 5
        self.cancel_since: dict[str, float] = {}
        self.withheld_since: dict[str, float] = {}
        self.quiet_since: float | None = None
        self.closed = False

    # ------------------------------------------------------------------------------ plumbing

    def _fail(self, message: str) -> None:
        raise InvariantBroken(f"{message}\n  trace: {' ; '.join(self.trace)}")

    def _handle(self, event: Event) -> list[Command]:
        m = self.m
        last_fire = m.watchdog_last_fire
        rid = m.response_id
        inflight = m.inflight.event_id if m.inflight is not None else None
        if isinstance(event, (UserText, SpeechStarted)) and inflight is not None:
            self.interrupted_creates.add(inflight)
        timeouts = m.stats.get("cancel_timeouts", 0)
        stalls = m.stats.get("stalled_responses", 0)
        hearing = bool(self._unheard())
        commands = m.handle(event, self.now)
        barge_in = isinstance(event, (UserText, SpeechStarted))
        if barge_in and hearing and not any(isinstance(c, ClearPlayback) for c in commands):
            self._fail(f"barge-in ({type(event).__name__}) while the caller hears audio")
        if m.watchdog_last_fire != last_fire:
            self._on_watchdog_fire(rid)
        if m.stats.get("cancel_timeouts", 0) > timeouts and rid is not None:
            self.abandoned.add(rid)
        if m.stats.get("stalled_responses", 0) > stalls and rid is not None:
            self.stalled.add(rid)
        if isinstance(event, Tick) and inflight is not None:
            now_inflight = m.inflight.event_id if m.inflight is not None else None
            if now_inflight != inflight:
                self.stopped_creates.add(inflight)  # resent, given up or forgotten unanswered
        self._apply(commands)
        return commands

    def _context(self) -> _SendContext:
        return _SendContext(
            frozenset(self.known_active),
            frozenset(self.stopped_creates | self.given_up_creates),
            frozenset(self.abandoned),
        )

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
        at the ms actually played (clamped to what was received) or, if none was, deleted; the
        item still being generated is cut at what was received even when all of it was heard."""
        truncated = {c.item_id: c.audio_end_ms for c in commands if isinstance(c, SendTruncate)}
        deleted = {c.item_id for c in commands if isinstance(c, SendItemDelete)}
        if not any(isinstance(c, ClearPlayback) for c in commands):
            if truncated or deleted:
                self._fail(f"truncate or delete without a clear: {commands}")
            return
        bpm = self.cfg.audio_bytes_per_ms
        unheard = self._unheard()
        want = {item: min(played, self.forwarded[item] // bpm) for item, played in unheard.items()}
        extra = set(truncated) | deleted
        for item in extra - set(want):
            # Only the live item may be cut although heard in full: at what was received.
            received_ms = self.forwarded.get(item, 0) // bpm
            if item in self.cleared or truncated.get(item, 0) != received_ms:
                self._fail(f"cut {item} at {truncated.get(item)} though it was heard in full")
            want[item] = received_ms
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
                self.text_sent_at[cmd.text] = len(self.trace)
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
        if cmd.reason.startswith("rejected:") and not self.refused:
            self._fail(f"a create given up as rejected, but the server refused none: {cmd!r}")
        if cmd.event_id is not None:
            self.given_up_creates.add(cmd.event_id)
        self.reported_at.append(len(self.trace))
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

    def _server_clock(self) -> None:
        """The server's own lateness is bounded: a cancel is acknowledged (or its
        acknowledgement lost) within twice ``cancel_timeout``, a held-back ``response.created``
        is sent within twice ``create_timeout``."""
        server = self.server
        for rid in server.pending_cancels():
            since = self.cancel_since.setdefault(rid, self.now)
            if self.now - since >= 2 * self.cfg.cancel_timeout:
                self.trace.append(f"server_acks_cancel({rid})")
                server.ack_cancel(rid)
        for rid in server.withheld():
            since = self.withheld_since.setdefault(rid, self.now)
            if self.now - since >= 2 * self.cfg.create_timeout:
                self.trace.append(f"server_releases_created({rid})")
                server.release_created(rid)

    def _note_server_times(self) -> None:
        for rid in self.server.pending_cancels():
            self.cancel_since.setdefault(rid, self.now)
        for rid in self.server.withheld():
            self.withheld_since.setdefault(rid, self.now)

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

    def can_idle_timeout(self) -> bool:
        server = self.server
        return self.open and self.mode.turn_detection and not server.speaking and not server.default

    def can_tick(self) -> bool:
        return self.open and self.m.next_deadline is not None

    def can_ack_cancel(self) -> bool:
        return self.open and bool(self.server.pending_cancels())

    def can_release(self) -> bool:
        return self.open and bool(self.server.withheld())

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
        self.turn_at.append(len(self.trace))
        self.server.speech_stopped()

    def idle_timeout(self) -> None:
        self.trace.append("idle_timeout")
        self.server.idle_timeout()

    def silence_next(self) -> None:
        self.trace.append("silence_next")
        self.server.next_silent = True

    def refuse_next(self) -> None:
        """The server will reject the next create on a free slot, not as busy."""
        self.trace.append("refuse_next")
        self.refused += 1
        self.server.refuse_next_create = "invalid_value"

    def swallow_next(self) -> None:
        """The server will answer the next create with nothing at all."""
        self.trace.append("swallow_next")
        self.server.swallow_next_create = True

    def ack_cancel(self, index: int = 0, first: bool = False) -> None:
        """The server acts on a cancel it was asked for: acknowledges it (or, with ``first``,
        lets the response complete before the cancel takes effect)."""
        pending = self.server.pending_cancels()
        rid = pending[index % len(pending)]
        self.trace.append(f"{'finish_first' if first else 'ack_cancel'}({rid})")
        if first:
            self.server.finish_first(rid)
        else:
            self.server.ack_cancel(rid)

    def release_created(self) -> None:
        """The server finally sends a held-back ``response.created``."""
        rid = self.server.withheld()[0]
        self.trace.append(f"release_created({rid})")
        self.server.release_created(rid)

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
        self._note_server_times()
        for v in self.server.violations[seen:]:
            if v.kind in ("create_while_active", "text_while_active") and self._unavoidable(
                v.event_id, v.response_id
            ):
                if v.kind == "create_while_active":
                    self.races.append(v.event_id or "")
                continue
            if v.kind == "truncate_in_progress" and v.response_id in self._being_cancelled():
                continue  # we cancelled it first; the server is slow to act on the cancel
            self._fail(f"the server saw a protocol violation: {v}")

    def _being_cancelled(self) -> set[str]:
        return set(self.server.pending_cancels())

    def _unavoidable(self, event_id: str | None, blocking: str | None) -> bool:
        """The machine could not have known ``blocking`` was generating when it sent this: it had
        not been told (no response.created, no busy error) and never asked for it (server VAD,
        idle timeout, or a create it had stopped waiting for); or it had given up waiting for
        that response's cancel acknowledgement (the documented price of a server slower than
        ``cancel_timeout``)."""
        if event_id is None:
            return False
        ctx = self.contexts[event_id]
        if blocking is None:
            return False
        if blocking in ctx.abandoned:
            return True
        resp = self.server.responses[blocking]
        not_told = blocking not in ctx.known_active
        not_asked = resp.origin != "client" or resp.create_event_id in ctx.stopped
        return not_told and not_asked

    def receive(self) -> None:
        """The oldest server event in flight reaches the machine."""
        event: ServerEvent = self.server.outbox.popleft()
        self.trace.append(f"receive({_describe(event)})")
        m = self.m
        if isinstance(event, AudioDelta):
            forward = m.audio_delta(event.response_id, event.item_id, event.byte_count, self.now)
            if forward:
                self._check_audio(event)
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
            self.created_delivered.add(event.response_id)
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
            if event.code == BUSY_CODE and "in progress: " in event.message:
                named = event.message.split("in progress: ")[1].split(".")[0]
                if named not in self.finished:
                    self.known_active.add(named)
            self._handle(event)
        else:
            self._handle(event)

    def _check_audio(self, event: AudioDelta) -> None:
        resp = self.server.responses[event.response_id]
        if event.response_id in self.dropped:
            self._fail(f"audio of dropped response {event.response_id} forwarded")
        if resp.create_event_id in self.interrupted_creates:
            self._fail(f"audio of {resp.id}, interrupted before it was created, forwarded")
        if resp.create_event_id in self.given_up_creates | self.stopped_creates:
            self._fail(f"audio of {resp.id} forwarded, but its create was given up")
        if event.response_id in self.abandoned:
            self._fail(f"audio of {resp.id} forwarded, but its cancel was abandoned")
        if not resp.out_of_band:
            self.forwarded[event.item_id] = self.forwarded.get(event.item_id, 0) + event.byte_count

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
        self._server_clock()
        deadline = self.m.next_deadline
        if deadline is not None and self.now >= deadline:
            self._handle(Tick())

    def tick(self, late_by: float = 0.0) -> None:
        """The driver's timer fires at (or some time after) the machine's next deadline."""
        deadline = self.m.next_deadline
        assert deadline is not None
        self.now = max(self.now, deadline + late_by)
        self.trace.append(f"tick(+{late_by:g})")
        self._server_clock()
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
            if current is None or current not in self.created_delivered:
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
            m.create_state,
            m.turn_state,
            m.recovery_state,
            m.response_id,
            None if inflight is None else (inflight.event_id, inflight.requests),
            tuple(m.pending),
            tuple(m.held_texts),
            m.audio_deltas,
            m.transcript_deltas,
            m.response_is_retry,
            m.response_expects_audio,
            frozenset(m.oob_responses),
            m.watchdog_last_fire,
            m.next_deadline,
            m.caller_hearing,
        )

    def settle_silent(self) -> None:
        """The server goes quiet: no event reaches the machine while its timers run out.

        Within its timeouts the machine must be back in ``idle`` with nothing left to do: at
        most one stall (or watchdog) cancel and one cancel timeout, one wait for a server VAD
        answer and the create it then sends, and two create timeouts (the create and its one
        retry) per request group it still holds."""
        m = self.m
        cfg = self.cfg
        self.trace.append("settle_silent")
        groups = len(m.pending) + (1 if m.inflight else 0) + (1 if m.held_texts else 0) + 2
        bound = cfg.stall_timeout + cfg.cancel_timeout + (2 * groups + 1) * cfg.create_timeout
        start = self.now
        for _ in range(8 * groups + 8):
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
        request served or legitimately given up, every caller turn answered."""
        if self.closed:
            return
        self.trace.append("quiesce")
        m = self.m
        server = self.server
        for _ in range(10_000):
            moved = True
            if self.c2s:
                self.send()
            elif server.outbox:
                self.receive()
            elif server.streaming():
                self.stream()
            elif server.speaking:
                self.speech_stopped()
            elif server.withheld():
                self.release_created()
            elif server.pending_cancels():
                self.ack_cancel()
            elif m.next_deadline is not None:
                # Waiting for what will not come: a lost acknowledgement, a swallowed create,
                # a VAD answer the server skipped.  Let the timer run out.
                self.tick()
            else:
                moved = False
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
        if server.default is not None:
            self._fail(f"server still generating {server.default.id}")
        self._check_caller_answered()

    def _check_caller_answered(self) -> None:
        """Promise 3 for the caller: the last thing the caller said (a committed turn or a
        typed text, as the server received it) is answered by a default response that started
        after it and completed; or by one the machine cancelled as hung (stall); or the app was
        told, after the caller's input, that what it asked for is given up (timeout after the
        retry, a refusal, or a barge-in: speech that reaches us after a text was sent)."""
        books = self.answer_books()
        if books is None or books[0] or books[1]:
            return
        self._fail("the caller's last input was never answered")

    def answer_books(self) -> tuple[bool, bool] | None:
        """For the caller's last input (in the order the server received them): whether a
        response that started after it completed (or was cancelled as hung), and whether a
        give-up was reported after it was sent.  ``None``: the caller said nothing yet."""
        server = self.server
        inputs = [(turn.seq, at) for turn, at in zip(server.turns, self.turn_at, strict=True)]
        inputs += [
            (seq, self.text_sent_at[text])
            for seq, text in zip(server.user_text_seqs, server.user_texts, strict=True)
        ]
        if not inputs:
            return None
        last, sent_at = max(inputs)
        answered = any(
            not resp.out_of_band
            and resp.started_seq > last
            and (resp.status == "completed" or resp.id in self.stalled)
            for resp in server.responses.values()
        )
        return answered, any(at >= sent_at for at in self.reported_at)

    # ---------------------------------------------------------------------------- invariants

    def check(self) -> None:
        m = self.m
        cfg = self.cfg
        problems = m.check_invariants()
        if problems:
            self._fail(f"check_invariants: {problems}")
        deadline = m.next_deadline
        if m.state in (IDLE, CLOSED) and m.response_id is not None:
            self._fail(f"stale state in {m.state.value}")
        if m.state is CLOSED and deadline is not None:
            self._fail("closed with a deadline")
        # A busy machine always has a timer, never further away than its longest timeout.
        longest = max(cfg.stall_timeout, cfg.create_timeout, cfg.cancel_timeout)
        if m.state not in (IDLE, CLOSED) and deadline is None:
            self._fail(f"{m.state.value} without a deadline")
        if deadline is not None and deadline - self.now > longest + 1e-6:
            self._fail(f"{m.state.value} with deadline {deadline} at {self.now}")
        self._check_quiet()
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
        # Watchdog: at most one retry per fire (a retry's create resent after a timeout may
        # get a second response, but that one is cancelled unheard, as given up).
        stopped = self.stopped_creates | self.given_up_creates
        retries = sum(
            1
            for rid, resp in self.server.responses.items()
            if self._is_retry_response(rid) and resp.create_event_id not in stopped
        )
        if retries > len(self.fires):
            self._fail(f"{retries} retry responses for {len(self.fires)} watchdog fires")

    def _check_quiet(self) -> None:
        """Promise 5: the server's slot is free and nothing is in flight either way, so the
        machine can learn nothing more: busy, it must be on a timer due within one timeout of
        the moment things went quiet; idle, it owes nothing (unless it waits, on its timer,
        for the answer the server's VAD owes to a committed turn)."""
        m = self.m
        server = self.server
        quiet = (
            self.open
            and server.default is None
            and not server.withheld()
            and not server.outbox
            and not self.c2s
        )
        if not quiet:
            self.quiet_since = None
            return
        if self.quiet_since is None:
            self.quiet_since = self.now
        if m.state is IDLE:
            waiting = m.next_deadline is not None
            if m.held_texts or (m.pending and not waiting):
                self._fail("all delivered, server idle, but the machine holds work")
            if not waiting and any(status == "open" for status in self.requests.values()):
                self._fail(f"all delivered, server idle, requests open: {self.requests}")
            return
        bound = self.quiet_since + max(self.cfg.create_timeout, self.cfg.cancel_timeout)
        deadline = m.next_deadline
        if deadline is None or deadline > bound + 1e-6:
            self._fail(
                f"{m.state.value} with the server idle since {self.quiet_since}"
                f" and nothing in flight, next deadline {deadline}"
            )


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
