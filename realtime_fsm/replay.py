"""``realtime-fsm replay TRACE.jsonl``: check a recorded call against the lifecycle invariants.

The checker sees only the wire (``docs/traces.md`` describes the format), so it works on traces
the bridge recorded (:mod:`realtime_fsm.trace`) and on any production log converted to the
format.  It rebuilds the *client's view* of the response slot from the frames in trace order
and reports, with the line that shows it:

``create_while_active``
    a default-conversation ``response.create`` sent while a response is active (between its
    ``response.created`` and ``response.done``) and not yet given up by the client;
``create_while_pending``
    a ``response.create`` sent while an earlier one is still unanswered and not given up;
``create_races_server_response``
    a ``response.create`` sent after ``input_audio_buffer.committed`` while the session's turn
    detection creates responses itself, or after ``input_audio_buffer.timeout_triggered`` (the
    server answers its idle timeout itself), before that response came or was overdue (the
    machine's deadline: ``create_timeout`` after a commit on a free slot, ``server_turn_grace``
    after the slot frees for a turn committed while it was busy);
``busy_error``
    a ``conversation_already_has_active_response`` error no legitimate race explains;
``cancel_without_active``
    a ``response.cancel`` with no response active (or, without a response id, none pending);
``user_text_lost`` / ``user_text_duplicated``
    typed text or a DTMF key from telephony delivered to OpenAI (a user ``input_text`` item
    that is not history replayed into a new session) fewer times than received and not handed
    back in the trailer, or more often, counted over all the call's OpenAI sessions;
``watchdog_in_cooldown``
    two no-audio watchdog fires closer together than the header's ``watchdog_cooldown`` (a
    reconnect does not reopen the cooldown: the bridge carries it over);
``response_left_hanging`` / ``create_never_answered``
    at the end of the trace, a response that was never finished nor stopped although it showed
    no life for ``stall_timeout``, or a create with no answer for ``create_timeout`` that the
    client never moved past.

Timing rules allow ``slack`` seconds for the gap between the machine's decision and the frame
reaching the socket; ``crossing`` seconds decide when a frame read just before a send had not
yet been seen by the code that decided the send (the two crossed on the loop).

The checker never raises on a bad trace: a line that is not JSON, nests too deeply or has
fields of the wrong type is a warning and is skipped; only a file without a version-1 header
is refused (:class:`TraceFormatError`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from .config import LifecycleConfig
from .errors import RemoteProtocolError
from .events import SessionConfigured
from .openai_realtime import parse_server_event

BUSY_CODE: Final = "conversation_already_has_active_response"
_BUSY_PREFIX: Final = "conversation already has an active response"
_RESP_ID = re.compile(r"\b(resp_[A-Za-z0-9_-]+)")
_AUDIO_DELTAS: Final = frozenset({"response.output_audio.delta", "response.audio.delta"})
_TRANSCRIPT_DELTAS: Final = frozenset(
    {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
)
RULES: Final = (
    "create_while_active",
    "create_while_pending",
    "create_races_server_response",
    "busy_error",
    "cancel_without_active",
    "user_text_lost",
    "user_text_duplicated",
    "watchdog_in_cooldown",
    "response_left_hanging",
    "create_never_answered",
)
DEFAULT_SLACK: Final = 0.25
DEFAULT_CROSSING: Final = 0.05
#: ``event_id`` of an item the bridge replays from the call's history into a new session:
#: ``<event_id_prefix>_history_<n>``.  Such an item is not a new delivery of the user's text.
_HISTORY_ID = re.compile(r"_history_[0-9]+\Z")


@attrs.frozen
class Violation:
    line: int
    rule: str
    message: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}: {self.rule}: {self.message}"


#: A trace header without a timing falls back to the bridge's default for it.
_LIFECYCLE_DEFAULTS: Final = LifecycleConfig()


class TraceFormatError(Exception):
    """The file is not a readable trace (no header, wrong format or version)."""


@attrs.frozen
class TraceConfig:
    """The header's ``config``: the lifecycle timings the rules are judged against."""

    create_timeout: float = _LIFECYCLE_DEFAULTS.create_timeout
    cancel_timeout: float = _LIFECYCLE_DEFAULTS.cancel_timeout
    no_audio_timeout: float = _LIFECYCLE_DEFAULTS.no_audio_timeout
    watchdog_cooldown: float = _LIFECYCLE_DEFAULTS.watchdog_cooldown
    stall_timeout: float = _LIFECYCLE_DEFAULTS.stall_timeout
    server_turn_grace: float = _LIFECYCLE_DEFAULTS.server_turn_grace
    dtmf_as_text: bool = True
    #: The key that ends a turn instead of being sent as text (``BridgeConfig.commit_on_dtmf``).
    commit_on_dtmf: str | None = None
    accept_text_messages: bool = True
    #: The bridge's ``LifecycleConfig.event_id_prefix``; ``None`` (older traces): any prefix.
    event_id_prefix: str | None = None

    @classmethod
    def from_header(cls, config: Any) -> TraceConfig:
        defaults = _LIFECYCLE_DEFAULTS
        config = config if isinstance(config, dict) else {}

        def num(key: str) -> float:
            value = _num(config.get(key))
            return value if value is not None and value > 0 else float(getattr(defaults, key))

        def flag(key: str) -> bool:
            value = config.get(key)
            return value if isinstance(value, bool) else True

        return cls(
            create_timeout=num("create_timeout"),
            cancel_timeout=num("cancel_timeout"),
            no_audio_timeout=num("no_audio_timeout"),
            watchdog_cooldown=num("watchdog_cooldown"),
            stall_timeout=num("stall_timeout"),
            server_turn_grace=num("server_turn_grace"),
            dtmf_as_text=flag("dtmf_as_text"),
            commit_on_dtmf=_str(config.get("commit_on_dtmf")),
            accept_text_messages=flag("accept_text_messages"),
            event_id_prefix=_str(config.get("event_id_prefix")),
        )

    def is_history_replay(self, event_id: str | None) -> bool:
        """Whether an item with this ``event_id`` is history the bridge replayed into a new
        session (not a delivery of the user's text)."""
        if event_id is None or _HISTORY_ID.search(event_id) is None:
            return False
        prefix = self.event_id_prefix
        return prefix is None or event_id.startswith(f"{prefix}_history_")


@attrs.define
class _Response:
    id: str
    line: int
    created_at: float
    oob: bool = False
    done_at: float | None = None
    #: When the client (its cancel) or the server (VAD interrupt) started stopping it.
    stop_at: float | None = None
    audio_deltas: int = 0
    transcript_deltas: int = 0
    last_activity: float = 0.0

    @property
    def finished(self) -> bool:
        return self.done_at is not None


@attrs.define
class _Create:
    event_id: str | None
    line: int
    sent_at: float
    metadata: dict[str, Any]
    answered: bool = False
    given_up: bool = False
    #: A barge-in arrived while it was unanswered: the client waits cancel_timeout from then.
    stop_at: float | None = None
    #: Reported already (its busy error is then not reported again).
    flagged: bool = False
    #: Sent after the client gave up an active response: a busy answer is unavoidable.
    after_give_up: bool = False


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    """A finite JSON number as a float (``None`` for anything else: bools, huge integers,
    NaN and infinities, which no timestamp or timeout is)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class Checker:
    """Feed trace lines in order with :meth:`line`; :meth:`finish` returns the violations."""

    def __init__(
        self,
        config: TraceConfig,
        *,
        slack: float = DEFAULT_SLACK,
        crossing: float = DEFAULT_CROSSING,
    ) -> None:
        self.cfg = config
        self.slack = slack
        self.crossing = crossing
        self.violations: list[Violation] = []
        self.started = False
        self.trailer: dict[str, Any] | None = None
        self.end_at = 0.0
        self.end_line = 0
        #: Where a ``truncated`` note (``max_trace_bytes``) cut the recording, if it did.
        self.truncated_line: int | None = None
        self.connection = 1
        # Per call, not per session: the bridge carries the cooldown over to the new machine.
        self.last_fire: float | None = None
        self.last_fire_line = 0
        self._reset_connection()
        # User text: text -> lines it came in on / lines it was delivered on, over all the
        # call's sessions (history replayed into a new session is not a delivery).
        self.texts_in: dict[str, list[int]] = {}
        self.texts_out: dict[str, list[int]] = {}

    def _reset_connection(self) -> None:
        """A new OpenAI session (a reconnect): the old slot died with the old socket, and the
        bridge starts a fresh machine (which keeps the watchdog cooldown, though)."""
        #: The newest barge-in trigger (text, DTMF, speech) not yet followed by a cancel.
        self.trigger_at: float | None = None
        self.responses: dict[str, _Response] = {}
        self.active: dict[str, _Response] = {}
        self.creates: list[_Create] = []
        self.server_creates = False
        self.server_interrupts = False
        self.awaiting_server_since: float | None = None
        self.awaiting_line = 0
        #: The turn awaited was committed while the slot was busy: the server may skip it, and
        #: the client answers it ``server_turn_grace`` after the slot frees (not
        #: ``create_timeout`` after the commit).
        self.awaiting_busy = False
        self.slot_free_at = 0.0

    # ----------------------------------------------------------------------------- helpers

    def _flag(self, line: int, rule: str, message: str) -> None:
        self.violations.append(Violation(line, rule, message))

    def _pending(self) -> list[_Create]:
        return [c for c in self.creates if not c.answered and not c.given_up]

    def _response_given_up(self, response: _Response, now: float) -> bool:
        stop = response.stop_at
        return stop is not None and now >= stop + self.cfg.cancel_timeout - self.slack

    def _create_given_up(self, create: _Create, now: float) -> bool:
        if now >= create.sent_at + self.cfg.create_timeout - self.slack:
            return True
        stop = create.stop_at
        return stop is not None and now >= stop + self.cfg.cancel_timeout - self.slack

    def _trigger(self, now: float) -> None:
        """A barge-in: a cancel for what is active follows; a create in flight is cancelled
        when created, and the client waits at most cancel_timeout for it from now."""
        self.trigger_at = now
        for create in self._pending():
            if create.stop_at is None:
                create.stop_at = now

    def _retire(self, response: _Response, now: float) -> None:
        if response.done_at is None:
            response.done_at = now
        if self.active.pop(response.id, None) is not None and not self.active:
            self.slot_free_at = now

    # ------------------------------------------------------------------------------- input

    def line(self, number: int, record: dict[str, Any]) -> None:
        if self.truncated_line is not None:
            return  # only the trailer follows a truncation note
        now = _num(record.get("t"))
        if now is None:
            return
        side, direction = record.get("side"), record.get("dir")
        if direction == "truncated":
            self.truncated_line = number
            return
        self.end_at = max(self.end_at, now)
        self.end_line = number
        frame = _obj(record.get("frame"))
        if direction == "open" and side == "openai":
            conn = record.get("conn", 1)
            if conn != 1:
                self.connection = conn if isinstance(conn, int) else self.connection + 1
                self._reset_connection()
            return
        if not frame:
            return
        if side == "twilio" and direction == "in":
            self._twilio_in(number, now, frame)
        elif side == "openai" and direction == "out":
            self._openai_out(number, now, frame)
        elif side == "openai" and direction == "in":
            self._openai_in(number, now, frame)

    def _twilio_in(self, number: int, now: float, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if event == "start":
            self.started = True
        elif not self.started:
            return  # the bridge drops everything before start
        elif event == "text" and self.cfg.accept_text_messages:
            text = _str(frame.get("text"))
            if text is not None and text.strip():
                self.texts_in.setdefault(text, []).append(number)
                self._trigger(now)
        elif event == "dtmf" and self.cfg.dtmf_as_text:
            digit = _str(_obj(frame.get("dtmf")).get("digit"))
            if digit is not None and digit != self.cfg.commit_on_dtmf:
                self.texts_in.setdefault(f"DTMF {digit}", []).append(number)
                self._trigger(now)

    def _openai_out(self, number: int, now: float, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "response.create":
            self._create(number, now, frame)
        elif kind == "response.cancel":
            self._cancel(number, now, frame)
        elif kind == "conversation.item.create":
            item = _obj(frame.get("item"))
            if self.cfg.is_history_replay(_str(frame.get("event_id"))):
                return  # the call's history restored into a new session: not a delivery
            if item.get("role") == "user" and item.get("type", "message") == "message":
                for part in _list(item.get("content")):
                    part = _obj(part)
                    text = _str(part.get("text"))
                    if part.get("type") == "input_text" and text is not None:
                        self.texts_out.setdefault(text, []).append(number)

    def _create(self, number: int, now: float, frame: dict[str, Any]) -> None:
        response = _obj(frame.get("response"))
        create = _Create(
            event_id=_str(frame.get("event_id")),
            line=number,
            sent_at=now,
            metadata=_obj(response.get("metadata")),
        )
        if response.get("conversation") == "none":
            return  # out of band: never touches the slot
        for other in self._pending():
            if self._create_given_up(other, now):
                other.given_up = True
            elif not create.flagged:
                create.flagged = True
                self._flag(
                    number,
                    "create_while_pending",
                    f"response.create while the one sent on line {other.line}"
                    f" ({other.event_id}) is unanswered ({now - other.sent_at:.3f}s,"
                    f" create_timeout {self.cfg.create_timeout:g}s)",
                )
        for active in self.active.values():
            if active.created_at > now - self.crossing:
                continue  # its response.created crossed our create on the loop
            if self._response_given_up(active, now):
                create.after_give_up = True
            elif not create.flagged:
                create.flagged = True
                stopping = (
                    f"stopping since {now - active.stop_at:.3f}s"
                    if active.stop_at is not None
                    else "not cancelled"
                )
                self._flag(
                    number,
                    "create_while_active",
                    f"response.create while {active.id} (created on line {active.line}) is"
                    f" active, {stopping}",
                )
        since = self.awaiting_server_since
        if (
            since is not None
            and not create.flagged
            and since <= now - self.crossing
            and now < self._turn_overdue_at(since) - self.slack
        ):
            create.flagged = True
            self._flag(
                number,
                "create_races_server_response",
                f"response.create while the server's turn detection creates the response for"
                f" the turn committed on line {self.awaiting_line}",
            )
        self.creates.append(create)

    def _turn_overdue_at(self, since: float) -> float:
        """When the server's answer to the turn committed at ``since`` is overdue and the
        client answers it itself (the ``turn`` machine): ``create_timeout`` after a commit on a
        free slot; for one committed while the slot was busy (the server may skip it: "may
        fail to create a response if the model is already responding"), ``server_turn_grace``
        after the slot frees (never before the commit)."""
        if self.awaiting_busy:
            return max(since, self.slot_free_at) + self.cfg.server_turn_grace
        return since + self.cfg.create_timeout

    def _cancel(self, number: int, now: float, frame: dict[str, Any]) -> None:
        rid = _str(frame.get("response_id"))
        trigger, self.trigger_at = self.trigger_at, None
        if rid is None:
            targets = [r for r in self.active.values() if not r.oob]
            if not targets and not self._pending():
                self._flag(
                    number,
                    "cancel_without_active",
                    "response.cancel with no response active or pending",
                )
                return
        else:
            response = self.responses.get(rid)
            if response is None:
                self._flag(
                    number, "cancel_without_active", f"response.cancel of unknown response {rid}"
                )
                return
            if response.done_at is not None and now - response.done_at > self.crossing:
                self._flag(
                    number,
                    "cancel_without_active",
                    f"response.cancel of {rid}, finished {now - response.done_at:.3f}s earlier",
                )
                return
            targets = [response]
        for response in targets:
            if response.stop_at is None:  # only a first cancel can be the watchdog's
                response.stop_at = now
                self._maybe_watchdog(number, now, response, trigger)

    def _maybe_watchdog(
        self, number: int, now: float, response: _Response, trigger: float | None
    ) -> None:
        """A cancel of a response that streamed transcript but no audio, with no barge-in
        before it and before the stall timeout, is the no-audio watchdog firing."""
        if response.audio_deltas or not response.transcript_deltas or response.oob:
            return
        if trigger is not None and trigger >= response.created_at:
            return  # a barge-in
        if now >= response.last_activity + self.cfg.stall_timeout - self.slack:
            return  # the stall timeout
        last = self.last_fire
        if last is not None and now - last < self.cfg.watchdog_cooldown - self.slack:
            self._flag(
                number,
                "watchdog_in_cooldown",
                f"no-audio watchdog fired on {response.id} {now - last:.3f}s after the fire on"
                f" line {self.last_fire_line} (cooldown {self.cfg.watchdog_cooldown:g}s)",
            )
        self.last_fire = now
        self.last_fire_line = number

    def _openai_in(self, number: int, now: float, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if not isinstance(kind, str):
            return
        if kind in ("session.created", "session.updated"):
            try:
                event = parse_server_event(json.dumps(frame))
            except RemoteProtocolError:
                return
            if isinstance(event, SessionConfigured):
                vad = event.turn_detection is not None
                self.server_creates = vad and event.create_response
                self.server_interrupts = vad and event.interrupt_response
        elif kind == "response.created":
            self._created(number, now, _obj(frame.get("response")))
        elif kind == "response.done":
            rid = _str(_obj(frame.get("response")).get("id"))
            response = self.responses.get(rid) if rid is not None else None
            if response is not None:
                self._retire(response, now)
        elif kind == "error":
            self._error(number, now, _obj(frame.get("error")))
        elif kind == "input_audio_buffer.speech_started":
            self._trigger(now)
            if self.server_interrupts:
                for response in self.active.values():
                    if response.stop_at is None:
                        response.stop_at = now
        elif kind == "input_audio_buffer.committed":
            if self.server_creates:
                self.awaiting_server_since = now
                self.awaiting_line = number
                busy = any(not r.oob for r in self.active.values()) or bool(self._pending())
                self.awaiting_busy = busy
        elif kind == "input_audio_buffer.timeout_triggered":
            # The server answers its own idle timeout, whatever create_response says.
            self.awaiting_server_since = now
            self.awaiting_line = number
            busy = any(not r.oob for r in self.active.values()) or bool(self._pending())
            self.awaiting_busy = busy
        elif kind.startswith("response."):
            rid = _str(frame.get("response_id"))
            response = self.responses.get(rid) if rid is not None else None
            if response is None:
                return
            response.last_activity = max(response.last_activity, now)
            if kind in _AUDIO_DELTAS:
                response.audio_deltas += 1
            elif kind in _TRANSCRIPT_DELTAS:
                response.transcript_deltas += 1

    def _created(self, number: int, now: float, response: dict[str, Any]) -> None:
        rid = _str(response.get("id"))
        if rid is None or rid in self.responses:
            return  # duplicated or late
        oob = "conversation_id" in response and response["conversation_id"] is None
        record = _Response(rid, number, now, oob=oob, last_activity=now)
        self.responses[rid] = record
        if oob:
            return
        metadata = _obj(response.get("metadata"))
        values = {v for v in metadata.values() if isinstance(v, str)}
        create = next(
            (
                c
                for c in self.creates
                if not c.answered
                and ((c.event_id is not None and c.event_id in values) or c.metadata == metadata)
                and (c.metadata or not metadata)
            ),
            None,
        )
        if create is not None:
            create.answered = True
        # The server holds one default response: any other it showed us is over.
        for other in list(self.active.values()):
            self._retire(other, now)
        self.active[rid] = record
        self.awaiting_server_since = None

    def _error(self, number: int, now: float, error: dict[str, Any]) -> None:
        code = _str(error.get("code")) or ""
        message = _str(error.get("message")) or ""
        event_id = _str(error.get("event_id"))
        create = next((c for c in self.creates if c.event_id == event_id), None)
        busy = code == BUSY_CODE or message.lower().startswith(_BUSY_PREFIX)
        if not busy:
            if create is not None:
                create.answered = True  # rejected
                if not self.active and not self._pending():
                    self.slot_free_at = now
            return
        if create is None:  # no echoed event_id: creates are answered in the order sent
            create = next((c for c in self.creates if not c.answered), None)
        # A response created after (or crossing) our create beat it to the slot: unavoidable.
        raced = create is not None and any(
            not r.oob and r.created_at >= create.sent_at - self.crossing
            for r in self.responses.values()
        )
        match = _RESP_ID.search(message)
        if match is not None and match.group(1) not in self.responses:
            # Known only from the error: the client cancels it by this id.
            holder = _Response(match.group(1), number, now, last_activity=now)
            self.responses[holder.id] = holder
            self.active[holder.id] = holder
        if create is None:
            self._flag(number, "busy_error", f"{BUSY_CODE} with no response.create to answer")
            return
        create.answered = True
        if create.flagged or create.after_give_up or raced:
            return
        self._flag(
            number,
            "busy_error",
            f"{BUSY_CODE} for the response.create on line {create.line}",
        )

    def end(self, number: int, trailer: dict[str, Any]) -> None:
        self.trailer = trailer
        t = _num(trailer.get("t"))
        if t is not None and self.truncated_line is None:
            self.end_at = max(self.end_at, t)
        self.end_line = number

    # ------------------------------------------------------------------------------ result

    def finish(self) -> list[Violation]:
        if self.truncated_line is not None:
            # The call went on past the cut: what looks stuck or undelivered at the cut may
            # well have been finished or delivered after it.
            self._check_texts(lost=False)
            return sorted(self.violations, key=lambda v: (v.line, v.rule))
        now = self.end_at
        for response in self.active.values():
            if response.oob or response.stop_at is not None:
                continue
            idle = now - response.last_activity
            if idle >= self.cfg.stall_timeout + self.slack:
                self._flag(
                    response.line,
                    "response_left_hanging",
                    f"{response.id} never finished and was never cancelled; no sign of life"
                    f" for the last {idle:.3f}s of the trace (stall_timeout"
                    f" {self.cfg.stall_timeout:g}s)",
                )
        for create in self._pending():
            waited = now - create.sent_at
            if create.stop_at is None and waited >= self.cfg.create_timeout + self.slack:
                self._flag(
                    create.line,
                    "create_never_answered",
                    f"response.create {create.event_id} got neither response.created nor an"
                    f" error in the {waited:.3f}s to the end of the trace",
                )
        self._check_texts()
        return sorted(self.violations, key=lambda v: (v.line, v.rule))

    def _check_texts(self, *, lost: bool = True) -> None:
        undelivered: list[str] = []
        if self.trailer is not None:
            listed = _list(self.trailer.get("undelivered_texts"))
            undelivered = [t for t in listed if isinstance(t, str)]
        for text, lines_in in self.texts_in.items():
            lines_out = self.texts_out.get(text, [])
            handed_back = undelivered.count(text)
            for line in lines_out[len(lines_in) :]:
                self._flag(
                    line,
                    "user_text_duplicated",
                    f"user text {text[:60]!r} delivered {len(lines_out)} times, received"
                    f" {len(lines_in)}",
                )
            if not lost:
                continue
            for line in lines_in[len(lines_out) + handed_back :]:
                note = "" if self.trailer is not None else " (no trailer to list it undelivered)"
                self._flag(
                    line,
                    "user_text_lost",
                    f"user text {text[:60]!r} never delivered to OpenAI nor handed back{note}",
                )


# ------------------------------------------------------------------------------- reading


def read_trace(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, record)`` for each line, or ``(line number, why)`` for a line that is
    not a readable JSON object.  Blank lines and lines starting with ``#`` (comments in
    hand-written traces) are skipped."""
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except RecursionError:
            yield number, "unreadable (nested too deeply)"
            continue
        except ValueError:  # JSONDecodeError, and integers past the digit limit
            yield number, "not a JSON object"
            continue
        yield number, record if isinstance(record, dict) else "not a JSON object"


def check_lines(
    lines: Iterable[str], *, slack: float = DEFAULT_SLACK, crossing: float = DEFAULT_CROSSING
) -> tuple[list[Violation], list[str]]:
    """Violations and warnings (unreadable lines, a truncated recording) of one trace.
    Raises :class:`TraceFormatError` when the first record is not a version-1 header; never
    anything else for what the lines contain."""
    checker: Checker | None = None
    warnings: list[str] = []
    for number, record in read_trace(lines):
        if checker is None:
            if isinstance(record, str) or record.get("kind") != "header":
                raise TraceFormatError(f"line {number}: the first record must be the header")
            if record.get("format") != "realtime-fsm-trace" or record.get("version") != 1:
                raise TraceFormatError(f"line {number}: not a realtime-fsm-trace version 1")
            config = TraceConfig.from_header(record.get("config"))
            checker = Checker(config, slack=slack, crossing=crossing)
            continue
        if isinstance(record, str):
            warnings.append(f"line {number}: {record}; skipped")
            continue
        try:
            if record.get("kind") == "end":
                checker.end(number, record)
            else:
                checker.line(number, record)
        except Exception as exc:
            # A shape no validation above foresaw: that line is not checked, the rest is.
            warnings.append(f"line {number}: unreadable ({type(exc).__name__}); skipped")
    if checker is None:
        raise TraceFormatError("empty trace: no header")
    if checker.truncated_line is not None:
        warnings.append(
            f"line {checker.truncated_line}: recording truncated (max_trace_bytes); the rest of"
            " the call is not in the trace, end-of-trace and lost-text rules not checked"
        )
    return checker.finish(), warnings


def check_file(
    path: str | Path, *, slack: float = DEFAULT_SLACK, crossing: float = DEFAULT_CROSSING
) -> tuple[list[Violation], list[str]]:
    with open(path, encoding="utf-8") as handle:
        return check_lines(handle, slack=slack, crossing=crossing)


# ----------------------------------------------------------------------------------- CLI


def add_parser(sub: Any) -> None:
    """Register ``replay`` on the ``realtime-fsm`` command line's subparsers."""
    replay = sub.add_parser(
        "replay",
        help="check recorded traces against the response-lifecycle invariants",
        description="Check JSONL call traces (docs/traces.md); exit 1 if any violation.",
    )
    replay.add_argument("traces", nargs="+", metavar="TRACE.jsonl")
    replay.add_argument(
        "--slack",
        type=float,
        default=DEFAULT_SLACK,
        help="seconds of tolerance on the lifecycle timeouts (default %(default)s)",
    )
    replay.add_argument(
        "--crossing",
        type=float,
        default=DEFAULT_CROSSING,
        help="seconds within which a frame read and a frame sent count as crossed"
        " (default %(default)s)",
    )
    replay.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    status = 0
    for path in args.traces:
        try:
            violations, warnings = check_file(path, slack=args.slack, crossing=args.crossing)
        except (OSError, UnicodeDecodeError, TraceFormatError) as exc:
            print(f"{path}: cannot check: {exc}", file=sys.stderr)
            status = max(status, 2)
            continue
        except Exception as exc:  # a checker bug must not hide the other files' results
            print(
                f"{path}: cannot check: internal error ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
            status = max(status, 2)
            continue
        for warning in warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        for violation in violations:
            print(violation.format(path))
        if violations:
            status = max(status, 1)
        else:
            print(f"{path}: ok")
    return status
