"""``realtime-fsm replay TRACE.jsonl``: check a recorded call against the lifecycle invariants.

The checker sees only the wire (``docs/traces.md`` describes the format), so it works on traces
the bridge recorded (:mod:`realtime_fsm.trace`) and on any production log converted to the
format.  It rebuilds the *client's view* of the response slot from the frames in trace order
and reports each break of a rule (:data:`RULE_MEANINGS` in
:mod:`realtime_fsm.trace_rules`; the table in ``docs/traces.md``) with the line that shows it.

Timing rules allow ``slack`` seconds for the gap between the machine's decision and the frame
reaching the socket; ``crossing`` seconds decide when a frame read just before a send had not
yet been seen by the code that decided the send (the two crossed on the loop).

The checker never raises on a bad trace: a line that is not JSON, nests too deeply or has
fields of the wrong type is a warning and is skipped; only a file without a version-1 header
is refused (:class:`TraceFormatError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from .errors import RemoteProtocolError
from .events import SessionConfigured
from .openai_realtime import parse_server_event
from .trace_format import (
    TraceConfig,
    TraceFormatError,
    as_list,
    as_num,
    as_obj,
    as_str,
    feed_trace,
    read_header,
    read_trace,
)
from .trace_rules import (
    BUSY_CODE,
    DEFAULT_CROSSING,
    DEFAULT_SLACK,
    RULE_MEANINGS,
    RULES,
    Violation,
)

__all__ = [
    "BUSY_CODE",
    "DEFAULT_CROSSING",
    "DEFAULT_SLACK",
    "RULES",
    "RULE_MEANINGS",
    "Checker",
    "TraceConfig",
    "TraceFormatError",
    "Violation",
    "check_file",
    "check_lines",
    "read_trace",
]

_BUSY_PREFIX: Final = "conversation already has an active response"
_RESP_ID = re.compile(r"\b(resp_[A-Za-z0-9_-]+)")
_AUDIO_DELTAS: Final = frozenset({"response.output_audio.delta", "response.audio.delta"})
_TRANSCRIPT_DELTAS: Final = frozenset(
    {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
)


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
        #: ``(line, t)`` of every no-audio watchdog fire seen (for the timeline drawing).
        self.watchdog_fires: list[tuple[int, float]] = []
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
        now = as_num(record.get("t"))
        if now is None:
            return
        side, direction = record.get("side"), record.get("dir")
        if direction == "truncated":
            self.truncated_line = number
            return
        self.end_at = max(self.end_at, now)
        self.end_line = number
        frame = as_obj(record.get("frame"))
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
            text = as_str(frame.get("text"))
            if text is not None and text.strip():
                self.texts_in.setdefault(text, []).append(number)
                self._trigger(now)
        elif event == "dtmf" and self.cfg.dtmf_as_text:
            digit = as_str(as_obj(frame.get("dtmf")).get("digit"))
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
            item = as_obj(frame.get("item"))
            if self.cfg.is_history_replay(as_str(frame.get("event_id"))):
                return  # the call's history restored into a new session: not a delivery
            if item.get("role") == "user" and item.get("type", "message") == "message":
                for part in as_list(item.get("content")):
                    part = as_obj(part)
                    text = as_str(part.get("text"))
                    if part.get("type") == "input_text" and text is not None:
                        self.texts_out.setdefault(text, []).append(number)

    def _create(self, number: int, now: float, frame: dict[str, Any]) -> None:
        response = as_obj(frame.get("response"))
        create = _Create(
            event_id=as_str(frame.get("event_id")),
            line=number,
            sent_at=now,
            metadata=as_obj(response.get("metadata")),
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

    def _await_server(self, number: int, now: float) -> None:
        """The server is to create the response for a turn: a create before it is a race."""
        self.awaiting_server_since = now
        self.awaiting_line = number
        self.awaiting_busy = any(not r.oob for r in self.active.values()) or bool(self._pending())

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
        rid = as_str(frame.get("response_id"))
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
        self.watchdog_fires.append((number, now))

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
            self._created(number, now, as_obj(frame.get("response")))
        elif kind == "response.done":
            rid = as_str(as_obj(frame.get("response")).get("id"))
            response = self.responses.get(rid) if rid is not None else None
            if response is not None:
                self._retire(response, now)
        elif kind == "error":
            self._error(number, now, as_obj(frame.get("error")))
        elif kind == "input_audio_buffer.speech_started":
            self._trigger(now)
            if self.server_interrupts:
                for response in self.active.values():
                    if response.stop_at is None:
                        response.stop_at = now
        elif kind == "input_audio_buffer.committed" and self.server_creates:
            self._await_server(number, now)
        elif kind == "input_audio_buffer.timeout_triggered":
            # The server answers its own idle timeout, whatever create_response says.
            self._await_server(number, now)
        elif kind.startswith("response."):
            rid = as_str(frame.get("response_id"))
            response = self.responses.get(rid) if rid is not None else None
            if response is None:
                return
            response.last_activity = max(response.last_activity, now)
            if kind in _AUDIO_DELTAS:
                response.audio_deltas += 1
            elif kind in _TRANSCRIPT_DELTAS:
                response.transcript_deltas += 1

    def _created(self, number: int, now: float, response: dict[str, Any]) -> None:
        rid = as_str(response.get("id"))
        if rid is None or rid in self.responses:
            return  # duplicated or late
        oob = "conversation_id" in response and response["conversation_id"] is None
        record = _Response(rid, number, now, oob=oob, last_activity=now)
        self.responses[rid] = record
        if oob:
            return
        metadata = as_obj(response.get("metadata"))
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
        code = as_str(error.get("code")) or ""
        message = as_str(error.get("message")) or ""
        event_id = as_str(error.get("event_id"))
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
        t = as_num(trailer.get("t"))
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
            listed = as_list(self.trailer.get("undelivered_texts"))
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


def check_lines(
    lines: Iterable[str], *, slack: float = DEFAULT_SLACK, crossing: float = DEFAULT_CROSSING
) -> tuple[list[Violation], list[str]]:
    """Violations and warnings (unreadable lines, a truncated recording) of one trace.
    Raises :class:`TraceFormatError` when the first record is not a version-1 header; never
    anything else for what the lines contain."""
    checker, warnings = feed_trace(
        lines,
        lambda number, record: Checker(read_header(number, record), slack=slack, crossing=crossing),
        Checker.line,
        Checker.end,
    )
    if checker.truncated_line is not None:
        warnings.append(
            f"line {checker.truncated_line}: recording truncated (max_trace_bytes); the rest of"
            " the call is not in the trace, end-of-trace and lost-text rules not checked"
        )
    return checker.finish(), warnings


def check_file(
    path: str | Path, *, slack: float = DEFAULT_SLACK, crossing: float = DEFAULT_CROSSING
) -> tuple[list[Violation], list[str]]:
    """:func:`check_lines` of the trace at ``path``, what ``realtime-fsm replay`` runs.  Raises
    ``OSError`` for a file that cannot be read, and :class:`TraceFormatError` for one that is not
    a trace."""
    with open(path, encoding="utf-8") as handle:
        return check_lines(handle, slack=slack, crossing=crossing)
