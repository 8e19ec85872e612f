"""The response-lifecycle machine of one conversation: events and time in, commands out.

Sans-IO in the h11 sense: no sockets, no threads, no sleeping and no clock of its own.  The driver
passes the current monotonic time with every call, reads :attr:`ResponseLifecycle.next_deadline`
and calls back with a :class:`~realtime_fsm.events.Tick` when it passes.  The rules live in
:mod:`realtime_fsm.table`; this module holds the guards and actions the table names, plus the
per-frame fast paths that are deliberately not transitions.

One owner per object: the machine is not thread-safe and does not need to be (one call, one
task).
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Callable
from typing import Any, ClassVar, Final

from transitions.core import MachineError

from . import events as ev
from .commands import (
    META_EVENT_ID,
    META_REASON,
    ClearPlayback,
    Command,
    DropResponseAudio,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
)
from .config import LifecycleConfig
from .errors import LocalProtocolError
from .table import (
    ACTIVE,
    CANCELLING,
    CLOSED,
    CREATING,
    IDLE,
    MACHINE,
    TRANSITIONS,
    ResponseState,
    callback_names,
)

log = logging.getLogger("realtime_fsm.lifecycle")

#: The request reason of the one retry the no-audio watchdog makes.
RETRY_REASON: Final = "no_audio_retry"
#: The request reason used for held user text.
USER_TEXT_REASON: Final = "user_text"
#: The request reason of an answer to a committed caller turn that the server will not create
#: itself (turn detection without ``create_response``, or a session lost before it did).
USER_TURN_REASON: Final = "user_turn"
#: Server error codes with a fixed meaning for the slot.
BUSY_CODE: Final = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE_CODE: Final = "response_cancel_not_active"
_BUSY_PREFIX: Final = "conversation already has an active response"
_RESP_ID = re.compile(r"\b(resp_[A-Za-z0-9_-]+)")
#: How many finished or dropped response ids are remembered to recognise their late events.
_RETIRED_MAX: Final = 64
#: How many assistant audio items with unheard audio are tracked (oldest are forgotten).
_PLAYBACK_MAX: Final = 16

_TRIGGERS: dict[str, Callable[..., bool]] = {
    name: event.trigger for name, event in MACHINE.events.items()
}
#: Every (state, trigger) pair the table has at least one row for.
_DEFINED: frozenset[tuple[ResponseState, str]] = frozenset(
    (source, row["trigger"]) for row in TRANSITIONS for source in row["source"]
)
#: Where commands go between two ``handle`` calls (nothing is emitted there).
_NO_OUTBOX: list[Command] = []
_WHY: Final = ("", "done", "dropped", "superseded", "abandoned")


class _RecentIds:
    """The last ``size`` response ids retired, and why, in ~10 bytes each.

    A long call retires a response every few seconds; remembering each id as a string in a dict
    cost ~140 B per id (9 KB per call after 64 responses).  Here an id is its 64-bit ``hash``
    (cached on the ``str``, so free to compute) in a fixed ring plus a one-byte reason code.  A
    false match needs a 64-bit collision with one of 64 ids: about 1 in 3e17 per lookup.  Like
    the dict it replaces, re-retiring an id updates its reason in place and the oldest *first*
    retirement is forgotten first."""

    __slots__ = ("_hashes", "_next", "_why")

    def __init__(self, size: int) -> None:
        self._hashes = array("q", bytes(8 * size))
        self._why = bytearray(size)
        self._next = 0

    @property
    def capacity(self) -> int:
        return len(self._why)

    def __contains__(self, key: str) -> bool:
        return (hash(key) or 1) in self._hashes

    def why(self, key: str) -> str | None:
        """The latest reason ``key`` was retired for, or ``None`` if it is not remembered."""
        try:
            return _WHY[self._why[self._hashes.index(hash(key) or 1)]]
        except ValueError:
            return None

    def add(self, key: str, why: str) -> None:
        h = hash(key) or 1  # 0 marks an empty slot
        code = _WHY.index(why)
        hashes = self._hashes
        try:
            self._why[hashes.index(h)] = code
            return
        except ValueError:
            pass
        i = self._next
        hashes[i] = h
        self._why[i] = code
        self._next = (i + 1) % len(hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _RecentIds):
            return NotImplemented
        return (self._hashes, self._why, self._next) == (other._hashes, other._why, other._next)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<_RecentIds {sum(1 for h in self._hashes if h)}/{len(self._hashes)}>"


#: Shared by every machine until its first response is retired (fresh calls stay small).
_NO_RECENT_IDS: Final = _RecentIds(0)


class _Inflight:
    """A ``response.create`` on the wire whose fate (created or rejected) is still unknown."""

    __slots__ = ("cancel_wanted", "event_id", "is_retry", "requests", "sent_at")

    def __init__(
        self, event_id: str, requests: tuple[ev.RequestResponse, ...], sent_at: float
    ) -> None:
        self.event_id = event_id
        self.requests = requests
        self.sent_at = sent_at
        self.cancel_wanted = False
        self.is_retry = any(r.reason == RETRY_REASON for r in requests)

    def reasons(self) -> tuple[str, ...]:
        return tuple(r.reason for r in self.requests)


class ResponseLifecycle:
    """The response slot of one realtime conversation.

    Feed it events with :meth:`handle` (control events) or the fast paths :meth:`audio_delta`,
    :meth:`transcript_delta`, :meth:`touch` and :meth:`playback_progress` (per-frame events); act
    on the commands :meth:`handle` returns, in order.
    """

    __slots__ = (
        "_cfg",
        "_ev",
        "_first_transcript_at",
        "_flow",
        "_given_up",
        "_last_activity",
        "_now",
        "_out",
        "_play",
        "_recovery",
        "_retired",
        "_seq",
        "_server_creates",
        "_server_interrupts",
        "_server_turn_until",
        "_state_deadline",
        "_watchdog_skipped",
        "audio_deltas",
        "cancel_sent",
        "held_texts",
        "inflight",
        "oob_responses",
        "pending",
        "response_expects_audio",
        "response_id",
        "response_is_retry",
        "response_requests",
        "state",
        "stats",
        "transcript_deltas",
        "watchdog_last_fire",
    )

    #: The engine's trigger per event name (a class attribute, so a test can run the very same
    #: code on a stock ``transitions.Machine`` built from the same table).
    _triggers: ClassVar[dict[str, Callable[..., bool]]] = _TRIGGERS

    def __init__(self, config: LifecycleConfig | None = None, *, now: float = 0.0) -> None:
        cfg = config if config is not None else LifecycleConfig()
        self._cfg = cfg
        self.state: ResponseState = IDLE
        self._now = float(now)
        self._ev: object = None
        self._out: list[Command] = []
        self._seq = 0
        self._server_creates = cfg.server_creates_response
        self._server_interrupts = cfg.server_interrupts_response
        #: Requests waiting for the slot, oldest first.
        self.pending: list[ev.RequestResponse] = []
        #: User texts held during a barge-in, delivered after ``response.done``.
        self.held_texts: list[ev.UserText] = []
        self.inflight: _Inflight | None = None
        self.response_id: str | None = None
        self.response_is_retry = False
        #: The requests the current response serves, when it is ours (empty for one the
        #: server created): what a new session must ask for again if this one is cut off.
        self.response_requests: tuple[ev.RequestResponse, ...] = ()
        self.response_expects_audio = True
        self.audio_deltas = 0
        self.transcript_deltas = 0
        self.cancel_sent = False
        self._first_transcript_at: float | None = None
        self._last_activity = self._now
        self._state_deadline: float | None = None
        self._watchdog_skipped = False
        self.watchdog_last_fire: float | None = None
        self._recovery: str | None = None
        #: Set while the server's VAD is expected to create the response for a committed turn
        #: (``inf`` while busy, a deadline once idle); our own creates wait meanwhile.
        self._server_turn_until: float | None = None
        self._flow: list[str] | None = None
        self.oob_responses: set[str] = set()
        #: Finished or dropped response ids, to recognise their late events.
        self._retired = _NO_RECENT_IDS
        #: event_ids of creates given up while in flight and not answered yet, oldest first: a
        #: late response.created of one is cancelled, never played (the app was told it will
        #: not be served), and a late rejection of one is not taken for the create in flight.
        self._given_up: dict[str, None] = {}
        self._play: dict[str, list[int]] = {}
        #: Counters a bridge can export: stale events, benign errors, drops, fires.
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------------------------ public API

    @property
    def config(self) -> LifecycleConfig:
        return self._cfg

    @property
    def next_deadline(self) -> float | None:
        """The monotonic time at which a :class:`~realtime_fsm.events.Tick` is due, if any."""
        state = self.state
        if state is CREATING or state is CANCELLING:
            return self._state_deadline
        if state is ACTIVE:
            deadline = self._last_activity + self._cfg.stall_timeout
            silent_at = self._silent_since()
            if silent_at is not None:
                deadline = min(deadline, silent_at)
            return deadline
        if state is IDLE:
            return self._server_turn_until
        return None

    @property
    def caller_hearing(self) -> bool:
        """True while audio the caller has been sent is still playing (from playback marks)."""
        return self.caller_hearing_audio()

    def handle(self, event: ev.Event, now: float) -> list[Command]:
        """Apply one event at monotonic time ``now``; return the commands to execute, in order."""
        if now < self._now:
            raise LocalProtocolError(f"time went backwards: {now} < {self._now}")
        if self.state is CLOSED:
            if type(event) is ev.ConnectionClosed:
                return []
            raise LocalProtocolError(f"machine is closed; cannot handle {type(event).__name__}")
        handler = _DISPATCH.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"not a lifecycle event: {event!r}")
        self._now = now
        self._ev = event
        out: list[Command] = []
        self._out = out
        try:
            handler(self, event)
            if self.state is IDLE and self.pending:
                self._fire("drain")
        finally:
            self._ev = None
            self._out = _NO_OUTBOX  # the caller owns the list now; keep no reference to it
        return out

    def audio_delta(self, response_id: str, item_id: str, byte_count: int, now: float) -> bool:
        """Count one audio delta; return True if it should be played to the caller.

        The per-frame fast path: a comparison and three increments for the current response.
        Anything else (late audio of a cancelled response, an unknown id) takes the slow path,
        which decides and counts the drop."""
        if response_id == self.response_id and self.state is ACTIVE:
            self.audio_deltas += 1
            if now > self._last_activity:
                self._last_activity = now
            entry = self._play.get(item_id)
            if entry is None:
                self._track_item(item_id)[0] += byte_count
            else:
                entry[0] += byte_count
            return True
        return self._audio_slow(response_id, item_id, byte_count, now)

    def transcript_delta(self, response_id: str, now: float) -> None:
        """Count one audio-transcript delta (arms the no-audio watchdog on the first one)."""
        if response_id == self.response_id and self.state is ACTIVE:
            self.transcript_deltas += 1
            if self._first_transcript_at is None:
                self._first_transcript_at = now
            if now > self._last_activity:
                self._last_activity = now
        elif self.state is ACTIVE and self.response_id is None and self._is_unknown(response_id):
            self._adopt_id(response_id)
            self.transcript_delta(response_id, now)
        else:
            self._count("stale_transcript_deltas")

    def touch(self, response_id: str, now: float) -> None:
        """Any other sign of life of a response (text or function-call deltas, item events):
        keeps the stall timeout from firing on a response that is busy but not speaking."""
        if response_id == self.response_id and now > self._last_activity:
            self._last_activity = now

    def playback_progress(self, item_id: str, played_ms: int) -> None:
        """The caller has heard ``played_ms`` of this assistant item (from telephony marks)."""
        entry = self._play.get(item_id)
        if entry is None or played_ms <= entry[1]:
            return
        entry[1] = played_ms
        if played_ms * self._cfg.audio_bytes_per_ms >= entry[0] and item_id != self._live_item():
            del self._play[item_id]

    def check_invariants(self) -> list[str]:
        """Rule 4 as code: what must hold in the current state.  Empty when all is well."""
        problems: list[str] = []
        state = self.state
        if state is IDLE or state is CLOSED:
            if self.response_id is not None:
                problems.append("response_id set outside a response")
            if self.inflight is not None and state is IDLE:
                problems.append("create in flight while idle")
            if self.audio_deltas or self.transcript_deltas or self._first_transcript_at:
                problems.append("stale per-response counters")
            if self.cancel_sent or self.response_is_retry or self.response_requests:
                problems.append("stale response flags")
            if state is IDLE and self.held_texts:
                problems.append("held text left in idle")
            if state is IDLE and self.pending and self._server_turn_until is None:
                problems.append("queued requests left in idle")
            if self._state_deadline is not None:
                problems.append("deadline armed outside creating/cancelling")
        elif state is CREATING:
            if self.inflight is None:
                problems.append("creating without a create in flight")
            if self.response_id is not None:
                problems.append("response id while creating")
        elif (
            state is CANCELLING
            and self.response_id is None
            and (self.inflight is None or not self.inflight.cancel_wanted)
        ):
            problems.append("cancelling nothing")
        return problems

    # ---------------------------------------------------------------------- event dispatching

    def _fire(self, trigger: str) -> bool:
        source = self.state
        if (source, trigger) not in _DEFINED:
            # Not even a row for it: answer without the engine, whose MachineError would pin
            # this object in a traceback reference cycle until the next garbage collection.
            return False
        try:
            done = self._triggers[trigger](self)
        except MachineError:  # pragma: no cover - _DEFINED mirrors the table
            done = False
        if done and log.isEnabledFor(logging.INFO):
            log.info(
                "call=%s transition=%s %s->%s response=%s inflight=%s pending=%d held=%d",
                self._cfg.call_id,
                trigger,
                source.value,
                self.state.value,
                self.response_id,
                self.inflight.event_id if self.inflight else None,
                len(self.pending),
                len(self.held_texts),
            )
        return done

    def _on_request(self, event: ev.RequestResponse) -> None:
        self._fire("request_oob" if event.out_of_band else "request")

    def _on_user_text(self, event: ev.UserText) -> None:
        self._fire("user_text")

    def _on_turn(self, event: ev.UserTurnCommitted) -> None:
        self._fire("turn_committed")

    def _on_session(self, event: ev.SessionConfigured) -> None:
        self._fire("configure")

    def _on_speech_started(self, event: ev.SpeechStarted) -> None:
        self._fire("speech_started")

    def _on_speech_stopped(self, event: ev.SpeechStopped) -> None:
        pass  # informational: server VAD creates (or the app commits) from here

    def _on_created(self, event: ev.ResponseCreated) -> None:
        self._fire("created_oob" if event.out_of_band else "created")

    def _on_done(self, event: ev.ResponseDone) -> None:
        if event.response_id in self.oob_responses:
            self._fire("done_oob")
        elif not self._fire("done"):
            self._count("stale_done")
            log.info(
                "call=%s ignored response.done response=%s status=%s (current=%s, state=%s)",
                self._cfg.call_id,
                event.response_id,
                event.status,
                self.response_id,
                self.state.value,
            )

    def _on_error(self, event: ev.ServerError) -> None:
        code = event.code or ""
        message_lc = event.message.lower()
        inflight = self.inflight
        busy = code == BUSY_CODE or message_lc.startswith(_BUSY_PREFIX)
        given_up = self._given_up
        if busy and given_up and (event.event_id is None or event.event_id in given_up):
            # The answer to a create we already gave up on.  Without an echoed event_id
            # (older servers) it is still known which: the server answers creates in the
            # order they were sent, and those given up are older than the one in flight.
            del given_up[event.event_id if event.event_id in given_up else next(iter(given_up))]
            self._fire("server_error")
            return
        # Without an echoed event_id, any other busy error is about our create in flight,
        # whatever the state: it usually arrives in ``active``, right after the server-created
        # response that won the race.
        ours = inflight is not None and (
            event.event_id == inflight.event_id
            or (event.event_id is None and (busy or self.state is CREATING))
        )
        if busy:
            if ours:
                self._fire("create_busy")
            else:
                self._fire("server_error")
        elif ours and inflight is not None and event.event_id == inflight.event_id:
            self._fire("create_failed")
        elif code == CANCEL_NOT_ACTIVE_CODE or message_lc.startswith("cancellation failed"):
            self._fire("cancel_not_active")
        else:
            self._fire("server_error")

    def _on_audio(self, event: ev.AudioDelta) -> None:
        self.audio_delta(event.response_id, event.item_id, event.byte_count, self._now)

    def _on_transcript(self, event: ev.TranscriptDelta) -> None:
        self.transcript_delta(event.response_id, self._now)

    def _on_playback(self, event: ev.PlaybackProgress) -> None:
        self.playback_progress(event.item_id, event.played_ms)

    def _on_tick(self, event: ev.Tick) -> None:
        self._fire("tick")

    def _on_closed(self, event: ev.ConnectionClosed) -> None:
        self._fire("close")

    # -------------------------------------------------------------------------------- helpers

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _mint(self, kind: str) -> str:
        self._seq += 1
        return f"{self._cfg.event_id_prefix}_{kind}_{self._seq}"

    def _emit(self, command: Command) -> None:
        self._out.append(command)

    def _retire(self, response_id: str, why: str) -> None:
        if not self._retired.capacity:  # still the shared empty one (or a copy of it)
            self._retired = _RecentIds(_RETIRED_MAX)
        self._retired.add(response_id, why)

    def _remember_given_up(self, inflight: _Inflight) -> None:
        given_up = self._given_up
        given_up[inflight.event_id] = None
        if len(given_up) > _RETIRED_MAX:
            del given_up[next(iter(given_up))]

    def _is_unknown(self, response_id: str) -> bool:
        return response_id not in self._retired and response_id not in self.oob_responses

    def _adopt_id(self, response_id: str) -> None:
        self.response_id = response_id
        self._last_activity = self._now

    def _track_item(self, item_id: str) -> list[int]:
        play = self._play
        if len(play) >= _PLAYBACK_MAX:
            del play[next(iter(play))]
        entry = [0, 0]
        play[item_id] = entry
        return entry

    def _live_item(self) -> str | None:
        """The newest tracked item while a response still adds audio to it."""
        if self.state is ACTIVE and self._play:
            return next(reversed(self._play))
        return None

    def _audio_slow(self, response_id: str, item_id: str, byte_count: int, now: float) -> bool:
        if self.state is CLOSED:
            return False
        if response_id in self.oob_responses:
            self._count("oob_audio_deltas")
            return True
        if self.state is ACTIVE and self.response_id is None and self._is_unknown(response_id):
            self._adopt_id(response_id)
            return self.audio_delta(response_id, item_id, byte_count, now)
        if response_id in self._retired or response_id == self.response_id:
            self._count("dropped_audio_deltas")
        else:
            self._count("unknown_audio_deltas")
        return False

    def _silent_since(self) -> float | None:
        """When the current response counts as silent (the watchdog's deadline), or ``None``
        while the watchdog is not armed for it: no transcript yet, audio seen, already skipped,
        a response that is not meant to speak, or the watchdog's own retry."""
        first = self._first_transcript_at
        if (
            first is None
            or self.audio_deltas
            or self._watchdog_skipped
            or not self.response_expects_audio
            or self.response_is_retry
        ):
            return None
        return first + self._cfg.no_audio_timeout

    def _flow_step(self, step: str) -> None:
        if self._flow is not None:
            self._flow.append(step)

    def _clear_response(self) -> None:
        self.response_id = None
        self.response_is_retry = False
        self.response_requests = ()
        self.response_expects_audio = True
        self.audio_deltas = 0
        self.transcript_deltas = 0
        self.cancel_sent = False
        self._first_transcript_at = None
        self._watchdog_skipped = False

    def _cancel_unheard(self, response_id: str) -> None:
        """Cancel a response by id and drop its audio: the caller must never hear it."""
        self._send_cancel(response_id)
        self._emit(DropResponseAudio(response_id=response_id))
        self._retire(response_id, "dropped")

    def _send_cancel(self, response_id: str | None) -> None:
        event_id = self._mint("cancel")
        self._emit(SendResponseCancel(event_id=event_id, response_id=response_id))
        self.cancel_sent = True

    # ----------------------------------------------------------------------------- guards

    def has_pending(self) -> bool:
        return bool(self.pending)

    def has_inflight(self) -> bool:
        return self.inflight is not None

    def server_creates(self) -> bool:
        """The session's turn detection creates a response for each committed user turn."""
        return self._server_creates

    def server_interrupts(self) -> bool:
        """The session's turn detection cancels the response itself on speech."""
        return self._server_interrupts

    def is_known_response(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        rid = event.response_id
        return rid == self.response_id or rid in self._retired

    def is_our_inflight(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        inflight = self.inflight
        return inflight is not None and event.metadata.get(META_EVENT_ID) == inflight.event_id

    def is_given_up_create(self) -> bool:
        """``response.created`` of a create we stopped waiting for (timeout): nobody wants it."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        return event.metadata.get(META_EVENT_ID) in self._given_up

    def inflight_cancel_wanted(self) -> bool:
        return self.inflight is not None and self.inflight.cancel_wanted

    def is_current_response(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        rid = event.response_id
        if rid == self.response_id:
            return True
        # A busy response known only from an error message: its done is the next unknown one.
        return self.response_id is None and self.state is ACTIVE and self._is_unknown(rid)

    def awaiting_server_response(self) -> bool:
        return self._server_turn_until is not None

    def server_response_overdue(self) -> bool:
        until = self._server_turn_until
        return until is not None and self._now >= until

    def busy_response_abandoned(self) -> bool:
        rid = self._busy_holder()
        return rid is not None and self._retired.why(rid) == "abandoned"

    def busy_response_named(self) -> bool:
        """The busy error names the blocking response, and it is none we know of."""
        rid = self._busy_holder()
        return rid is not None and self._is_unknown(rid)

    def _busy_holder(self) -> str | None:
        """The response a busy error's message names (``... in progress: resp_...``)."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        match = _RESP_ID.search(event.message)
        return match.group(1) if match else None

    def awaiting_created(self) -> bool:
        return self.response_id is None

    def caller_hearing_audio(self) -> bool:
        bpm = self._cfg.audio_bytes_per_ms
        return any(played * bpm < received for received, played in self._play.values())

    def watchdog_due(self) -> bool:
        silent_at = self._silent_since()
        if silent_at is None or self._now < silent_at:
            return False
        last = self.watchdog_last_fire
        return last is None or self._now >= last + self._cfg.watchdog_cooldown

    def watchdog_in_cooldown(self) -> bool:
        """Silent, but the last fire is too recent (``watchdog_due`` is tried first)."""
        silent_at = self._silent_since()
        return silent_at is not None and self._now >= silent_at

    def stalled(self) -> bool:
        return self._now >= self._last_activity + self._cfg.stall_timeout

    def deadline_passed(self) -> bool:
        """The ``creating``/``cancelling`` deadline set on entering the state has passed."""
        return self._state_deadline is not None and self._now >= self._state_deadline

    # ----------------------------------------------------------------------------- actions

    def enqueue_request(self) -> None:
        event = self._ev
        assert isinstance(event, ev.RequestResponse)
        self.pending.append(event)
        if self.state is not IDLE:
            log.info(
                "call=%s request queued reason=%s state=%s (sent after response.done)",
                self._cfg.call_id,
                event.reason,
                self.state.value,
            )

    def enqueue_turn(self) -> None:
        self.pending.append(ev.RequestResponse(reason=USER_TURN_REASON))

    def send_create(self) -> None:
        """Coalesce the queue head with every interchangeable request into one create."""
        head = self.pending[0]
        taken = [head]
        rest: list[ev.RequestResponse] = []
        for req in self.pending[1:]:
            if req.instructions is None or req.instructions == head.instructions:
                taken.append(req)
            else:
                rest.append(req)
        self.pending = rest
        event_id = self._mint("create")
        inflight = _Inflight(event_id, tuple(taken), self._now)
        self.inflight = inflight
        reasons = inflight.reasons()
        reason = "+".join(dict.fromkeys(reasons))
        metadata: dict[str, str] = {}
        for req in taken:
            metadata.update(req.metadata)
        metadata[META_EVENT_ID] = event_id
        metadata[META_REASON] = reason[:512]
        self._emit(
            SendResponseCreate(
                event_id=event_id,
                reason=reason,
                instructions=head.instructions,
                metadata=metadata,
            )
        )
        if USER_TEXT_REASON in reasons and self._flow is not None:
            self._flow_step("response.create")
            log.info(
                "call=%s [TEXT_BARGE_IN] Flow complete: %s",
                self._cfg.call_id,
                " -> ".join(self._flow),
            )
            self._flow = None
        if inflight.is_retry:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Step 3: Creating retry response (after response.done)"
                " event_id=%s",
                self._cfg.call_id,
                event_id,
            )

    def send_oob_create(self) -> None:
        event = self._ev
        assert isinstance(event, ev.RequestResponse)
        event_id = self._mint("oob")
        metadata = dict(event.metadata)
        metadata[META_EVENT_ID] = event_id
        metadata[META_REASON] = event.reason[:512]
        self._emit(
            SendResponseCreate(
                event_id=event_id,
                reason=event.reason,
                instructions=event.instructions,
                metadata=metadata,
                out_of_band=True,
            )
        )

    def ignore_stale(self) -> None:
        self._count("stale_created")
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        log.info(
            "call=%s ignored duplicate or late response.created response=%s",
            self._cfg.call_id,
            event.response_id,
        )

    def adopt_response(self) -> None:
        """``response.created`` for our in-flight create."""
        event = self._ev
        inflight = self.inflight
        assert isinstance(event, ev.ResponseCreated) and inflight is not None
        self._supersede_current()
        self._server_turn_until = None  # whatever we were waiting for, a response is here
        self.inflight = None
        self._clear_response()
        self.response_id = event.response_id
        self.response_is_retry = inflight.is_retry
        self.response_requests = inflight.requests
        self.response_expects_audio = _expects_audio(event)
        self._last_activity = self._now
        if inflight.is_retry:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Retry response created - response=%s",
                self._cfg.call_id,
                event.response_id,
            )

    def cancel_adopted(self) -> None:
        """The response was interrupted before it existed: cancel it by id now."""
        rid = self.response_id
        assert rid is not None
        self._cancel_unheard(rid)
        self._flow_step("cancel")
        log.info(
            "call=%s [BARGE_IN] deferred cancel sent on response.created response=%s",
            self._cfg.call_id,
            rid,
        )

    def cancel_late_response(self) -> None:
        """A create we gave up on was served after all.  The response holds the slot until its
        response.done, so track it, but cancel it by id and drop its audio: the request was
        reported given up (and, if the user barged in, must not be heard)."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._supersede_current()
        # Not the server's VAD response we may be waiting for: that one is still to come.
        self._clear_response()
        self._given_up.pop(event.metadata.get(META_EVENT_ID, ""), None)  # answered now
        rid = event.response_id
        self._adopt_id(rid)
        self._count("late_responses_cancelled")
        self._cancel_unheard(rid)
        log.info(
            "call=%s response %s created for given-up create %s; cancelled, audio dropped",
            self._cfg.call_id,
            rid,
            event.metadata.get(META_EVENT_ID),
        )

    def adopt_server_response(self) -> None:
        """A response we did not ask for (server VAD, idle timeout)."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._supersede_current()
        self._server_turn_until = None  # whatever we were waiting for, a response is here
        self._clear_response()
        self.response_id = event.response_id
        self.response_expects_audio = _expects_audio(event)
        self._last_activity = self._now
        self._count("server_created_responses")
        if self.inflight is not None:
            log.info(
                "call=%s server response %s took the slot while create %s is in flight;"
                " it will be re-queued if rejected",
                self._cfg.call_id,
                event.response_id,
                self.inflight.event_id,
            )

    def _supersede_current(self) -> None:
        """A new default response can only exist if the previous one ended: its done was lost."""
        previous = self.response_id
        if previous is not None:
            self._retire(previous, "superseded")
            self._count("lost_done")
            log.warning(
                "call=%s response.done of %s never arrived; a newer response replaced it",
                self._cfg.call_id,
                previous,
            )

    def track_oob(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self.oob_responses.add(event.response_id)

    def untrack_oob(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        self.oob_responses.discard(event.response_id)
        self._retire(event.response_id, "done")

    def finish_response(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        rid = event.response_id
        self._retire(rid, "done")
        call = self._cfg.call_id
        if self._flow is not None:
            self._flow_step("response.done")
            log.info(
                "call=%s [TEXT_BARGE_IN] response.done -> creating response.create"
                " (status=%s, %d held text(s))",
                call,
                event.status,
                len(self.held_texts),
            )
        if self._recovery == "cancelling":
            log.info("call=%s [NO_AUDIO_WATCHDOG] Step 2: Clearing response flags", call)
            self.pending.insert(0, ev.RequestResponse(reason=RETRY_REASON))
            self._recovery = "retrying"
            log.info("call=%s [NO_AUDIO_WATCHDOG] flags cleared (status=%s)", call, event.status)
        elif self.response_is_retry and self._recovery == "retrying":
            result = "success" if self.audio_deltas else "no_audio"
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Recovery result: %s | fired -> cancel ->"
                " response.done -> retry -> %s -> cooldown_start (audio_deltas=%d)",
                call,
                result,
                result,
                self.audio_deltas,
            )
            self._recovery = None
        if event.status != "completed" and self.state is not CANCELLING:
            self._count(f"responses_{event.status}")

    def deliver_text(self) -> None:
        """Idle: the server may take the text now, followed by a (coalesced) response."""
        event = self._ev
        assert isinstance(event, ev.UserText)
        self._emit(SendUserText(event_id=self._mint("item"), text=event.text, source=event.source))
        self._count("texts_delivered")
        self.pending.append(ev.RequestResponse(reason=USER_TEXT_REASON))

    def hold_text(self) -> None:
        event = self._ev
        assert isinstance(event, ev.UserText)
        self.held_texts.append(event)
        self._count("texts_held")
        log.info(
            "call=%s [TEXT_BARGE_IN] Pending text stored (%d held) -> waiting for response.done",
            self._cfg.call_id,
            len(self.held_texts),
        )

    def barge_in(self) -> None:
        """Stop the response we (not the server) must stop: cancel, clear, truncate, drop."""
        event = self._ev
        call = self._cfg.call_id
        is_text = isinstance(event, ev.UserText)
        tag = "[TEXT_BARGE_IN]" if is_text else "[BARGE_IN]"
        if is_text:
            assert isinstance(event, ev.UserText)
            self._flow = ["detected"]
            log.info(
                "call=%s [TEXT_BARGE_IN] detected -> text=%r while AI active (state=%s)",
                call,
                event.text[:80],
                self.state.value,
            )
        else:
            log.info("call=%s [BARGE_IN] detected -> speech while AI %s", call, self.state.value)
        rid = self.response_id
        if self.state is CREATING or (rid is None and self.inflight is not None):
            assert self.inflight is not None
            self.inflight.cancel_wanted = True
            self._flow_step("cancel")
            log.info(
                "%s%s cancel deferred -> response.create %s not yet answered;"
                " it is cancelled by id when created",
                f"call={call} ",
                tag,
                self.inflight.event_id,
            )
        else:
            log.info("call=%s %s cancel -> response_id=%s", call, tag, rid)
            self._send_cancel(rid)
            self._flow_step("cancel")
            log.info("call=%s %s cancel sent", call, tag)
            inflight = self.inflight
            if inflight is not None:
                # A server response took the slot while our create was in flight: the caller
                # interrupted both, so ours is cancelled by id if it is ever created (or given
                # up if rejected), instead of playing before the held text is delivered.
                inflight.cancel_wanted = True
                log.info(
                    "call=%s %s response.create %s in flight is cancelled too when created",
                    call,
                    tag,
                    inflight.event_id,
                )
        self._interrupt(tag)
        if rid is not None:
            self._emit(DropResponseAudio(response_id=rid))
            self._retire(rid, "dropped")
            log.info("call=%s %s TX flushed (late audio of %s dropped)", call, tag, rid)

    def barge_in_server_cancels(self) -> None:
        """Server VAD with ``interrupt_response``: it cancels; we only stop what plays."""
        rid = self.response_id
        call = self._cfg.call_id
        log.info(
            "call=%s [BARGE_IN] detected -> speech; server cancels %s (interrupt_response)",
            call,
            rid,
        )
        self._interrupt("[BARGE_IN]")
        if rid is not None:
            self._emit(DropResponseAudio(response_id=rid))
            self._retire(rid, "dropped")

    def interrupt_playback(self) -> None:
        """Idle, but the caller still hears the last response: playback outlives generation."""
        self._interrupt(
            "[BARGE_IN]" if isinstance(self._ev, ev.SpeechStarted) else "[TEXT_BARGE_IN]"
        )

    def _interrupt(self, tag: str) -> None:
        self._emit(ClearPlayback(reason="barge_in"))
        self._flow_step("twilio_clear")
        call = self._cfg.call_id
        log.info("call=%s %s twilio_clear sent", call, tag)
        bpm = self._cfg.audio_bytes_per_ms
        for item_id, (received, played) in self._play.items():
            received_ms = received // bpm
            end_ms = min(played, received_ms)
            if played * bpm >= received:
                continue  # fully heard: nothing to cut
            if end_ms > 0:
                self._emit(
                    SendTruncate(
                        event_id=self._mint("truncate"), item_id=item_id, audio_end_ms=end_ms
                    )
                )
                log.info(
                    "call=%s %s truncate item=%s audio_end_ms=%d (received %d ms)",
                    call,
                    tag,
                    item_id,
                    end_ms,
                    received_ms,
                )
            else:
                self._emit(SendItemDelete(event_id=self._mint("delete"), item_id=item_id))
                log.info("call=%s %s delete unheard item=%s", call, tag, item_id)
        self._play.clear()

    def requeue_inflight(self) -> None:
        """Our create lost the race for the slot: it goes back to the head of the queue."""
        inflight = self.inflight
        assert inflight is not None
        self.inflight = None
        self._count("create_rejected_busy")
        if inflight.cancel_wanted:
            self._emit(
                RequestGivenUp(
                    reason="interrupted",
                    request_reasons=inflight.reasons(),
                    event_id=inflight.event_id,
                )
            )
            return
        self.pending[0:0] = inflight.requests
        log.info(
            "call=%s create %s rejected (slot busy); re-queued %s until response.done",
            self._cfg.call_id,
            inflight.event_id,
            ",".join(inflight.reasons()),
        )

    def adopt_busy_response(self) -> None:
        """A response we never saw created holds the slot: track it until its done.  Like any
        server response it may be the VAD's answer to a turn committed meanwhile, and its own
        ``response.created``, if it comes late, is then ignored as known: so the wait for
        that answer ends here, or requests would sit out ``create_timeout`` after its done."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        self._server_turn_until = None
        self._clear_response()
        rid = self._busy_holder()
        if rid is not None and not self._is_unknown(rid):
            rid = None
        self.response_id = rid
        self._last_activity = self._now

    def adopt_abandoned_response(self) -> None:
        """The response we stopped waiting for is still alive: cancel it again, wait for it."""
        rid = self._busy_holder()
        assert rid is not None
        self._clear_response()
        self._adopt_id(rid)
        self._count("abandoned_response_still_active")
        self._send_cancel(rid)
        log.warning(
            "call=%s response %s outlived its cancel timeout; cancelling it again",
            self._cfg.call_id,
            rid,
        )

    def cancel_busy_response(self) -> None:
        """The response that beat our interrupted create is as interrupted as ours: the caller
        spoke or typed after it began.  Cancel it by id, drop its audio, wait for its done."""
        rid = self._busy_holder()
        assert rid is not None
        self._clear_response()
        self._adopt_id(rid)
        self._count("busy_response_cancelled")
        self._cancel_unheard(rid)
        log.info(
            "call=%s [BARGE_IN] response %s held the slot our interrupted create wanted;"
            " cancelled, audio dropped",
            self._cfg.call_id,
            rid,
        )

    def expect_server_response(self) -> None:
        """Server VAD will answer this turn by itself; a create of ours would race it."""
        self._server_turn_until = (
            self._now + self._cfg.create_timeout if self.state is IDLE else float("inf")
        )

    def stop_awaiting_server_response(self) -> None:
        self._server_turn_until = None
        self._count("server_response_overdue")
        log.warning(
            "call=%s the server created no response for the committed turn within %gs;"
            " serving queued requests",
            self._cfg.call_id,
            self._cfg.create_timeout,
        )

    def give_up_inflight(self) -> None:
        inflight = self.inflight
        assert inflight is not None
        self.inflight = None
        event = self._ev
        if isinstance(event, ev.ServerError):
            reason = f"rejected:{event.code or 'error'}"
        else:
            reason = "create_timeout"
            self._remember_given_up(inflight)  # timed out: its answer may still come
        self._count("requests_given_up")
        self._emit(
            RequestGivenUp(
                reason=reason, request_reasons=inflight.reasons(), event_id=inflight.event_id
            )
        )
        if inflight.is_retry and self._recovery is not None:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Recovery result: failed | retry %s",
                self._cfg.call_id,
                reason,
            )
            self._recovery = None
        log.warning(
            "call=%s response.create %s given up: %s", self._cfg.call_id, inflight.event_id, reason
        )

    def note_benign_error(self) -> None:
        self._count("benign_errors")
        log.info("call=%s benign server error: response_cancel_not_active", self._cfg.call_id)

    def note_error(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ServerError)
        self._count("server_errors")
        log.warning(
            "call=%s server error code=%s event_id=%s message=%r",
            self._cfg.call_id,
            event.code,
            event.event_id,
            event.message[:300],
        )

    def fire_watchdog(self) -> None:
        rid = self.response_id
        call = self._cfg.call_id
        self.watchdog_last_fire = self._now
        self._count("watchdog_fires")
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] FIRED! resp=%s transcript_deltas=%d audio_deltas=%d",
            call,
            rid,
            self.transcript_deltas,
            self.audio_deltas,
        )
        log.info("call=%s [NO_AUDIO_WATCHDOG] Step 1: Cancelling silent response", call)
        self._send_cancel(rid)
        if rid is not None:
            self._emit(DropResponseAudio(response_id=rid))
            self._retire(rid, "dropped")
        log.info("call=%s [NO_AUDIO_WATCHDOG] cancel sent", call)
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Cooldown started (%gs)", call, self._cfg.watchdog_cooldown
        )
        self._recovery = "cancelling"

    def suppress_watchdog(self) -> None:
        self._watchdog_skipped = True
        self._count("watchdog_suppressed")
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] silent response %s not retried: inside the %gs cooldown",
            self._cfg.call_id,
            self.response_id,
            self._cfg.watchdog_cooldown,
        )

    def cancel_stalled(self) -> None:
        rid = self.response_id
        self._count("stalled_responses")
        log.warning(
            "call=%s [STALL] response %s showed no activity for %gs; cancelling",
            self._cfg.call_id,
            rid,
            self._cfg.stall_timeout,
        )
        self._send_cancel(rid)
        if rid is not None:
            self._emit(DropResponseAudio(response_id=rid))
            self._retire(rid, "dropped")

    def abandon_cancel(self) -> None:
        """The server never confirmed the cancel: stop waiting, treat the response as gone."""
        rid = self.response_id
        self._count("cancel_timeouts")
        if rid is not None:
            self._retire(rid, "abandoned")
        inflight = self.inflight
        if inflight is not None:
            # Only possible when the barge-in came before response.created and it never came.
            self.inflight = None
            self._remember_given_up(inflight)
            self._emit(
                RequestGivenUp(
                    reason="create_timeout",
                    request_reasons=inflight.reasons(),
                    event_id=inflight.event_id,
                )
            )
        if self._recovery == "cancelling":
            self.pending.insert(0, ev.RequestResponse(reason=RETRY_REASON))
            self._recovery = "retrying"
        if self._flow is not None:
            self._flow_step("timeout")
        log.warning(
            "call=%s response.done of %s not seen within %gs; back to idle",
            self._cfg.call_id,
            rid,
            self._cfg.cancel_timeout,
        )

    def apply_session(self) -> None:
        event = self._ev
        assert isinstance(event, ev.SessionConfigured)
        vad = event.turn_detection is not None
        self._server_creates = vad and event.create_response
        self._server_interrupts = vad and event.interrupt_response
        log.info(
            "call=%s session turn_detection=%s create_response=%s interrupt_response=%s",
            self._cfg.call_id,
            event.turn_detection,
            self._server_creates,
            self._server_interrupts,
        )

    def close_out(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ConnectionClosed)
        requests: list[str] = []
        if self.inflight is not None:
            requests.extend(self.inflight.reasons())
            self.inflight = None
        requests.extend(r.reason for r in self.pending)
        self.pending = []
        if requests:
            self._emit(
                RequestGivenUp(reason=f"closed:{event.reason}", request_reasons=tuple(requests))
            )
        if self.held_texts:
            self._emit(ReturnUndeliveredText(texts=tuple(t.text for t in self.held_texts)))
            log.warning(
                "call=%s connection closed with %d undelivered user text(s); handed back",
                self._cfg.call_id,
                len(self.held_texts),
            )
            self.held_texts = []
        if self._recovery is not None:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Recovery result: failed | connection closed",
                self._cfg.call_id,
            )
            self._recovery = None
        self._clear_response()
        self._state_deadline = None
        self._play.clear()
        self._flow = None
        self._server_turn_until = None

    # ---------------------------------------------------------------------- state entry hooks

    def enter_idle(self) -> None:
        """Rule 4: whatever path led here, nothing of the last response survives."""
        self._clear_response()
        self._state_deadline = None
        if self._server_turn_until is not None:
            # The server answers the turn committed meanwhile now that the slot is free.
            self._server_turn_until = self._now + self._cfg.create_timeout
        if self.held_texts:
            for text in self.held_texts:
                self._emit(
                    SendUserText(event_id=self._mint("item"), text=text.text, source=text.source)
                )
                self._count("texts_delivered")
            self.held_texts = []
            self.pending.insert(0, ev.RequestResponse(reason=USER_TEXT_REASON))

    def enter_creating(self) -> None:
        self._clear_response()
        inflight = self.inflight
        assert inflight is not None
        self._state_deadline = max(inflight.sent_at, self._now) + self._cfg.create_timeout

    def enter_cancelling(self) -> None:
        rid = self.response_id
        if rid is not None and self._retired.why(rid) == "abandoned":
            # The server just proved it is alive and still busy with this one: its done is
            # coming, so give it the stall timeout rather than loop through abandon/busy.
            self._state_deadline = self._now + self._cfg.stall_timeout
        else:
            self._state_deadline = self._now + self._cfg.cancel_timeout


def _expects_audio(event: ev.ResponseCreated) -> bool:
    modalities = event.output_modalities
    return not modalities or "audio" in modalities


_DISPATCH: dict[type, Callable[[ResponseLifecycle, Any], None]] = {
    ev.RequestResponse: ResponseLifecycle._on_request,
    ev.UserText: ResponseLifecycle._on_user_text,
    ev.UserTurnCommitted: ResponseLifecycle._on_turn,
    ev.SessionConfigured: ResponseLifecycle._on_session,
    ev.SpeechStarted: ResponseLifecycle._on_speech_started,
    ev.SpeechStopped: ResponseLifecycle._on_speech_stopped,
    ev.ResponseCreated: ResponseLifecycle._on_created,
    ev.AudioDelta: ResponseLifecycle._on_audio,
    ev.TranscriptDelta: ResponseLifecycle._on_transcript,
    ev.ResponseDone: ResponseLifecycle._on_done,
    ev.ServerError: ResponseLifecycle._on_error,
    ev.PlaybackProgress: ResponseLifecycle._on_playback,
    ev.Tick: ResponseLifecycle._on_tick,
    ev.ConnectionClosed: ResponseLifecycle._on_closed,
}

_missing = callback_names() - set(dir(ResponseLifecycle))
if _missing:  # pragma: no cover - a typo in the table fails at import, not mid-call
    raise ImportError(f"transition table names unknown callbacks: {sorted(_missing)}")
