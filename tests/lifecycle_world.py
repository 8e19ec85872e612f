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

from collections import deque

from lifecycle_profiles import (  # re-exported: the tests and the property search import them here
    ACTIVE,
    CANCELLING,
    CLOSED,
    CREATING,
    IDLE,
    LEGIT_GIVE_UPS,
    MODES,
    PROFILE,
    PROFILES,
    RETRY_REASON,
    InvariantBroken,
    Mode,
    Profile,
)
from lifecycle_promises import WorldPromises, _describe, _SendContext
from reference_server import BUSY_CODE, ReferenceServer, ServerEvent

from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    AudioDelta,
    ClearPlayback,
    Command,
    ConnectionClosed,
    DropResponseAudio,
    LocalProtocolError,
    PlaybackProgress,
    RequestGivenUp,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
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


class World(WorldPromises):
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
        self.item_response: dict[str, str] = {}  # item -> its response (every delta seen)
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

    def receive(self) -> None:
        """The oldest server event in flight reaches the machine."""
        event: ServerEvent = self.server.outbox.popleft()
        self.trace.append(f"receive({_describe(event)})")
        m = self.m
        if isinstance(event, AudioDelta):
            self.item_response.setdefault(event.item_id, event.response_id)
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

    # ---------------------------------------------------------------------------- invariants


__all__ = [
    "ACTIVE",
    "CANCELLING",
    "CLOSED",
    "CREATING",
    "IDLE",
    "LEGIT_GIVE_UPS",
    "MODES",
    "PROFILE",
    "PROFILES",
    "RETRY_REASON",
    "InvariantBroken",
    "Mode",
    "Profile",
    "World",
]
