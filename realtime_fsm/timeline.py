"""A call's timeline, read from its trace: what to draw for ``realtime-fsm replay --html``.

:func:`build_timeline` reads a trace (``docs/traces.md``) once and returns a :class:`Timeline`:
one :class:`Lane` per thing worth seeing over time, each a list of :class:`Span` (something
that lasts) and :class:`Mark` (something that happens):

* the four directions of the two sockets (Twilio in and out, OpenAI in and out): every frame,
  with runs of audio frames (20 ms each) and of transcript deltas drawn as one span each;
* the response slot as the client saw it (idle, creating, active, cancelling; "no session"
  between OpenAI sockets), rebuilt from the wire the way the checker does;
* barge-ins (the caller's speech, typed text or key press while an answer was under way),
  no-audio watchdog fires and the checker's violations;
* per answer (OpenAI item), the audio sent to the caller and the audio the caller heard, as
  Twilio's mark echoes prove it (an echo after a ``clear`` proves nothing was heard), and the
  truncations telling OpenAI where the caller stopped hearing.

Nothing here trusts the trace: text read from it is kept as it is and escaped by the page
(:mod:`realtime_fsm.timeline_page`); a field of the wrong type reads as missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from .replay import Checker
from .trace_format import (
    TraceConfig,
    as_num,
    as_obj,
    as_str,
    feed_trace,
    read_header,
)
from .trace_rules import Violation
from .twilio_media import MarkName

#: A frame of the same streamed kind this soon after the previous one continues its run.
RUN_GAP_S: Final = 0.25
#: mu-law at 8 kHz: bytes per ms of Twilio audio.
_TWILIO_BYTES_PER_MS: Final = 8
#: Frame types drawn as runs (streamed many times a second) instead of one mark each.
_AUDIO: Final = frozenset(
    {"media", "input_audio_buffer.append", "response.output_audio.delta", "response.audio.delta"}
)
_TRANSCRIPT: Final = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.output_text.delta",
        "response.text.delta",
    }
)
#: The lanes, in the order drawn, with their titles.
LANES: Final = (
    ("twilio-in", "Twilio → bridge"),
    ("twilio-out", "bridge → Twilio"),
    ("openai-out", "bridge → OpenAI"),
    ("openai-in", "OpenAI → bridge"),
    ("machine", "Response slot"),
    ("events", "Barge-ins, watchdog, problems"),
    ("sent", "Audio sent to caller"),
    ("heard", "Audio the caller heard"),
)
#: The response slot's states, as the table names them, plus the time with no OpenAI session.
STATES: Final = ("idle", "creating", "active", "cancelling", "no-session")


@attrs.frozen
class Span:
    """Something that lasted: ``kind`` names what (a CSS class), ``detail`` is the tooltip."""

    start: float
    end: float
    kind: str
    label: str
    detail: str
    line: int
    #: How many frames a run holds (1 for anything else).
    count: int = 1


@attrs.frozen
class Mark:
    """Something that happened at ``t``."""

    t: float
    kind: str
    label: str
    detail: str
    line: int


@attrs.frozen
class Lane:
    key: str
    title: str
    spans: tuple[Span, ...]
    marks: tuple[Mark, ...]


@attrs.frozen
class Timeline:
    """Everything the page shows of one call."""

    call_id: str | None
    started_at: str | None
    config: TraceConfig
    duration: float
    lanes: tuple[Lane, ...]
    violations: tuple[Violation, ...]
    warnings: tuple[str, ...]
    end_reason: str | None

    def lane(self, key: str) -> Lane:
        return next(lane for lane in self.lanes if lane.key == key)


@attrs.define
class _Run:
    start: float
    end: float
    line: int
    kind: str
    count: int = 1
    size: int = 0


@attrs.define
class _Item:
    """One answer's audio towards the caller, as the bridge's marks name it."""

    item_id: str
    first_sent: float
    last_sent: float
    sent_ms: int = 0
    line: int = 0
    heard_ms: int = 0
    heard_from: float | None = None
    heard_to: float | None = None


def _summary(frame: dict[str, Any], kind: str) -> str:
    """A few words of a frame for its tooltip (untrusted: the page escapes it)."""
    parts = [kind]
    for key in ("event_id", "response_id", "item_id", "text", "audio_end_ms"):
        value = frame.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            parts.append(f"{key}={str(value)[:80]}")
    rid = as_str(as_obj(frame.get("response")).get("id"))
    if rid is not None:
        parts.append(f"response={rid}")
    error = as_obj(frame.get("error"))
    if error:
        parts.append(
            f"error={as_str(error.get('code'))}: {(as_str(error.get('message')) or '')[:120]}"
        )
    mark = as_str(as_obj(frame.get("mark")).get("name"))
    if mark is not None:
        parts.append(f"mark={mark[:80]}")
    digit = as_str(as_obj(frame.get("dtmf")).get("digit"))
    if digit is not None:
        parts.append(f"digit={digit[:8]}")
    return " ".join(parts)


class _Builder:
    """One pass over the trace lines; :meth:`result` is the timeline."""

    def __init__(self, config: TraceConfig, header: dict[str, Any] | str) -> None:
        self.cfg = config
        #: The header record as read (a dict: ``read_header`` refused anything else).
        self.header: dict[str, Any] = header if isinstance(header, dict) else {}
        self.checker = Checker(config)
        self.spans: dict[str, list[Span]] = {key: [] for key, _ in LANES}
        self.marks: dict[str, list[Mark]] = {key: [] for key, _ in LANES}
        self.runs: dict[tuple[str, str], _Run] = {}
        self.end = 0.0
        self.started = False
        # The response slot, as the client sees it on the wire.
        self.state = "no-session"
        self.state_since = 0.0
        self.state_line = 0
        self.active_id: str | None = None
        self.pending_creates: list[str | None] = []
        #: The slot's state when an OpenAI socket was last recorded closed.  A rotation closes
        #: the old socket while the next one serves the call (and one socket can be recorded
        #: closed twice): OpenAI frames after a close with no new ``open`` mean the session
        #: went on, and the state before the close is restored.
        self.before_close: tuple[str, float, int] | None = None
        # Audio towards the caller, per item, and the marks that prove what was heard.
        self.items: dict[str, _Item] = {}
        #: Audio sent to Twilio since the last mark: first and last frame's time, bytes.  The
        #: next mark names the item it belongs to.
        self.unmarked: tuple[float, float, int] | None = None
        self.marks_sent: dict[str, tuple[float, MarkName]] = {}
        self.last_clear = -1.0
        self.heard_until = 0.0

    # ------------------------------------------------------------------------------ input

    def line(self, number: int, record: dict[str, Any]) -> None:
        self.checker.line(number, record)
        now = as_num(record.get("t"))
        if now is None:
            return
        self.end = max(self.end, now)
        side, direction = as_str(record.get("side")), as_str(record.get("dir"))
        frame = as_obj(record.get("frame"))
        if direction in ("open", "closed") and side in ("twilio", "openai"):
            self._socket(number, now, side, direction, record)
            return
        if direction == "truncated":
            self.marks["events"].append(
                Mark(now, "truncated", "trace cut", "the recording stopped here (size cap)", number)
            )
            return
        if side not in ("twilio", "openai") or direction not in ("in", "out"):
            return
        if side == "openai":
            self._session_went_on()
        key = "event" if side == "twilio" else "type"
        kind = as_str(frame.get(key)) or as_str(record.get("type")) or "(unreadable frame)"
        lane = f"{side}-{direction}"
        if kind in _AUDIO or kind in _TRANSCRIPT:
            self._run(lane, "audio" if kind in _AUDIO else "transcript", now, number, frame)
        else:
            self.marks[lane].append(Mark(now, "frame", kind, _summary(frame, kind), number))
        handler = _HANDLERS.get((side, direction))
        if handler is not None:
            handler(self, number, now, kind, frame)

    def end_line(self, number: int, record: dict[str, Any]) -> None:
        self.checker.end(number, record)
        t = as_num(record.get("t"))
        if t is not None:
            self.end = max(self.end, t)

    def _socket(
        self, number: int, now: float, side: str, direction: str, record: dict[str, Any]
    ) -> None:
        conn = record.get("conn")
        by = as_str(record.get("by"))
        label = f"{side} socket {direction}" + (f" by {by}" if by else "")
        detail = label + (f" (connection {conn})" if isinstance(conn, int) else "")
        self.marks[f"{side}-in"].append(Mark(now, "socket", label, detail, number))
        if side != "openai":
            return
        if direction == "open":
            self.before_close = None
            self._set_state("idle", now, number)
            self.active_id = None
            self.pending_creates.clear()
        elif self.state != "no-session":
            self.before_close = (self.state, self.state_since, self.state_line)
            self._set_state("no-session", now, number)

    def _session_went_on(self) -> None:
        """An OpenAI frame after a close with no ``open`` since: that close was not the end of
        the session (see ``before_close``); the span the close ended is taken back."""
        if self.before_close is None or self.state != "no-session":
            return
        self.spans["machine"].pop()
        self.state, self.state_since, self.state_line = self.before_close
        self.before_close = None

    def _run(self, lane: str, kind: str, now: float, number: int, frame: dict[str, Any]) -> None:
        size = 0
        for holder in (
            as_obj(frame.get("media")).get("payload"),
            frame.get("audio"),
            frame.get("delta"),
        ):
            elided = as_num(as_obj(holder).get("elided_bytes"))
            if elided is not None:
                size = int(elided)
        run = self.runs.get((lane, kind))
        if run is not None and now - run.end <= RUN_GAP_S:
            run.end = now
            run.count += 1
            run.size += size
            return
        if run is not None:
            self._close_run(lane, run)
        self.runs[(lane, kind)] = _Run(now, now, number, kind, 1, size)

    def _close_run(self, lane: str, run: _Run) -> None:
        what = "audio frames" if run.kind == "audio" else "transcript deltas"
        detail = f"{run.count} {what} from {run.start:.3f} s to {run.end:.3f} s"
        if run.size:
            detail += f", {run.size} bytes of audio"
        label = f"{run.count} {what}"
        self.spans[lane].append(
            Span(run.start, run.end, run.kind, label, detail, run.line, run.count)
        )

    # --------------------------------------------------------------------- response slot

    def _set_state(self, state: str, now: float, number: int) -> None:
        if state == self.state:
            return
        if now > self.state_since or self.state_line:
            self.spans["machine"].append(
                Span(
                    self.state_since,
                    now,
                    self.state,
                    self.state,
                    f"{self.state} from {self.state_since:.3f} s to {now:.3f} s"
                    f" (from line {self.state_line})",
                    self.state_line,
                )
            )
        self.state, self.state_since, self.state_line = state, now, number

    def _twilio_in(self, number: int, now: float, kind: str, frame: dict[str, Any]) -> None:
        if kind == "start":
            self.started = True
        elif kind == "mark":
            self._mark_echo(number, now, frame)
        elif not self.started:
            return
        elif kind == "text" and self.cfg.accept_text_messages:
            text = as_str(frame.get("text"))
            if text is not None and text.strip():
                self._caller_input(number, now, "text", f"typed text: {text[:200]}")
        elif kind == "dtmf" and self.cfg.dtmf_as_text:
            digit = as_str(as_obj(frame.get("dtmf")).get("digit"))
            if digit is not None and digit != self.cfg.commit_on_dtmf:
                self._caller_input(number, now, "dtmf", f"key pressed: {digit[:8]}")

    def _caller_input(self, number: int, now: float, how: str, detail: str) -> None:
        """The caller spoke, typed or pressed a key: a barge-in if an answer was under way
        (being asked for, streaming, or still playing at the caller's)."""
        playing = any(time > self.last_clear for time, _ in self.marks_sent.values())
        if self.state in ("creating", "active") or playing:
            kind, label = "barge-in", f"barge-in ({how})"
        else:
            kind, label = "input", f"caller input ({how})"
        self.marks["events"].append(Mark(now, kind, label, f"{label}: {detail}", number))

    def _twilio_out(self, number: int, now: float, kind: str, frame: dict[str, Any]) -> None:
        if kind == "media":
            elided = as_num(as_obj(as_obj(frame.get("media")).get("payload")).get("elided_bytes"))
            size = int(elided or 0)
            held = self.unmarked
            self.unmarked = (now, now, size) if held is None else (held[0], now, held[2] + size)
        elif kind == "mark":
            name = as_str(as_obj(frame.get("mark")).get("name"))
            parsed = MarkName.parse(name) if name is not None else None
            if name is None or parsed is None:
                return
            self.marks_sent[name] = (now, parsed)
            first, last, size = self.unmarked or (now, now, 0)
            self.unmarked = None
            item = self.items.get(parsed.item_id)
            if item is None:
                item = self.items[parsed.item_id] = _Item(parsed.item_id, first, now, line=number)
            item.last_sent = max(item.last_sent, last)
            item.sent_ms += size // _TWILIO_BYTES_PER_MS
        elif kind == "clear":
            self.last_clear = now
            self.unmarked = None
            self.marks["events"].append(
                Mark(now, "clear", "clear", "the bridge told Twilio to drop unplayed audio", number)
            )

    def _mark_echo(self, number: int, now: float, frame: dict[str, Any]) -> None:
        name = as_str(as_obj(frame.get("mark")).get("name"))
        sent = self.marks_sent.pop(name, None) if name is not None else None
        if sent is None:
            return
        sent_at, parsed = sent
        item = self.items.get(parsed.item_id)
        if item is None:
            return
        if self.last_clear >= sent_at:  # released by a clear: thrown away, not heard
            self.marks["heard"].append(
                Mark(
                    now,
                    "flushed",
                    "not heard",
                    f"{parsed.item_id}: audio to {parsed.end_ms} ms"
                    " was dropped by a clear before it played",
                    number,
                )
            )
            return
        if item.heard_from is None:
            item.heard_from = max(item.first_sent, self.heard_until)
        item.heard_to = now
        item.heard_ms = max(item.heard_ms, parsed.end_ms)
        self.heard_until = now

    def _openai_out(self, number: int, now: float, kind: str, frame: dict[str, Any]) -> None:
        if kind == "response.create":
            if as_obj(frame.get("response")).get("conversation") == "none":
                return
            self.pending_creates.append(as_str(frame.get("event_id")))
            if self.state == "idle":
                self._set_state("creating", now, number)
        elif kind == "response.cancel":
            if self.state in ("active", "creating"):
                self._set_state("cancelling", now, number)
        elif kind == "conversation.item.truncate":
            end_ms = as_num(frame.get("audio_end_ms"))
            item = as_str(frame.get("item_id")) or "?"
            at = f"{end_ms / 1000:.2f} s" if end_ms is not None else "?"
            self.marks["heard"].append(
                Mark(
                    now,
                    "truncate",
                    f"cut at {at}",
                    f"told OpenAI the caller heard {item}"
                    f" only up to {at}: the rest is cut from the conversation",
                    number,
                )
            )
        elif kind == "conversation.item.delete":
            item = as_str(frame.get("item_id")) or "?"
            self.marks["heard"].append(
                Mark(
                    now,
                    "truncate",
                    "deleted",
                    f"told OpenAI the caller heard none of {item}:"
                    " it is removed from the conversation",
                    number,
                )
            )

    def _openai_in(self, number: int, now: float, kind: str, frame: dict[str, Any]) -> None:
        if kind == "response.created":
            response = as_obj(frame.get("response"))
            if "conversation_id" in response and response["conversation_id"] is None:
                return  # out of band: not the slot
            self.active_id = as_str(response.get("id"))
            if self.pending_creates:
                self.pending_creates.pop(0)
            if self.state != "cancelling":
                self._set_state("active", now, number)
        elif kind == "response.done":
            rid = as_str(as_obj(frame.get("response")).get("id"))
            if rid is not None and rid == self.active_id:
                self.active_id = None
                self._set_state("creating" if self.pending_creates else "idle", now, number)
        elif kind == "error":
            event_id = as_str(as_obj(frame.get("error")).get("event_id"))
            if event_id in self.pending_creates:
                self.pending_creates.remove(event_id)
                if self.state == "creating" and not self.pending_creates:
                    self._set_state("idle", now, number)
        elif kind == "input_audio_buffer.speech_started":
            self._caller_input(number, now, "speech", "the caller started speaking")
            # The checker read the session's settings: does the server stop answers itself?
            if self.checker.server_interrupts and self.state == "active":
                self._set_state("cancelling", now, number)

    # ----------------------------------------------------------------------------- result

    def result(self, warnings: list[str]) -> Timeline:
        header = self.header
        for (lane, _), run in sorted(self.runs.items(), key=lambda kv: kv[1].start):
            self._close_run(lane, run)
        self.runs.clear()
        end = max(self.end, self.state_since)
        self._set_state("end of trace", end, 0)  # closes the last state's span
        violations = tuple(self.checker.finish())
        for line, t in self.checker.watchdog_fires:
            self.marks["events"].append(
                Mark(
                    t,
                    "watchdog",
                    "watchdog",
                    "no-audio watchdog: an answer streamed words but"
                    " no sound, so the bridge stopped it (and asks for it again)",
                    line,
                )
            )
        times = {mark.line: mark.t for marks in self.marks.values() for mark in marks}
        for violation in violations:
            t = times.get(violation.line, end)
            self.marks["events"].append(
                Mark(
                    t,
                    "violation",
                    violation.rule,
                    f"line {violation.line}: {violation.rule}: {violation.message}",
                    violation.line,
                )
            )
        for item in self.items.values():
            self.spans["sent"].append(
                Span(
                    item.first_sent,
                    item.last_sent,
                    "sent",
                    item.item_id,
                    f"{item.item_id}: {item.sent_ms / 1000:.2f} s of audio sent to the caller",
                    item.line,
                )
            )
            if item.heard_from is not None and item.heard_to is not None:
                self.spans["heard"].append(
                    Span(
                        item.heard_from,
                        item.heard_to,
                        "heard",
                        item.item_id,
                        f"{item.item_id}: the caller heard {item.heard_ms / 1000:.2f} s of"
                        f" the {item.sent_ms / 1000:.2f} s sent",
                        item.line,
                    )
                )
        lanes = tuple(
            Lane(
                key,
                title,
                tuple(sorted(self.spans[key], key=lambda s: (s.start, s.line))),
                tuple(sorted(self.marks[key], key=lambda m: (m.t, m.line))),
            )
            for key, title in LANES
        )
        trailer = self.checker.trailer or {}
        return Timeline(
            call_id=as_str(header.get("call_id")),
            started_at=as_str(header.get("started_at")),
            config=self.cfg,
            duration=end,
            lanes=lanes,
            violations=violations,
            warnings=tuple(warnings),
            end_reason=as_str(trailer.get("end_reason")),
        )


_HANDLERS: Final = {
    ("twilio", "in"): _Builder._twilio_in,
    ("twilio", "out"): _Builder._twilio_out,
    ("openai", "out"): _Builder._openai_out,
    ("openai", "in"): _Builder._openai_in,
}


def build_timeline(lines: Iterable[str]) -> Timeline:
    """The timeline of one trace.  Raises :class:`~realtime_fsm.trace_format.TraceFormatError`
    when the first record is not a version-1 header; unreadable lines are warnings."""
    builder, warnings = feed_trace(
        lines,
        lambda number, record: _Builder(read_header(number, record), record),
        _Builder.line,
        _Builder.end_line,
    )
    return builder.result(warnings)


def timeline_file(path: str | Path) -> Timeline:
    with open(path, encoding="utf-8") as handle:
        return build_timeline(handle)
