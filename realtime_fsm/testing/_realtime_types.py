"""The fake Realtime server's event names, configuration and records (public names are
re-exported by :mod:`realtime_fsm.testing.fake_realtime`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from ..validators import positive
from ._conversation import JSON

Api = Literal["ga", "beta"]
#: Who created a response: the client's ``response.create``, server VAD at the end of a turn,
#: or ``idle_timeout_ms`` (server VAD's idle timeout) after a silence.
Origin = Literal["client", "server_vad", "idle_timeout"]

# --- event names --------------------------------------------------------------------------------

_GA_TO_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_GA_ONLY = frozenset({"conversation.item.done", "input_audio_buffer.timeout_triggered"})

#: GA names of the per-response events other than deltas: pass them (or a subset, or delta
#: names) as ``ResponseFaults.duplicate_events`` to have each sent twice.
LIFECYCLE_EVENT_TYPES = frozenset(
    {
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    }
)

_CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)


def beta_event_name(ga_name: str) -> str:
    """The beta spelling of a GA server event name (unchanged where both agree)."""
    return _GA_TO_BETA.get(ga_name, ga_name)


# --- configuration ------------------------------------------------------------------------------


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _names(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class ResponseFaults:
    """Ways one response (or, as ``FakeRealtimeConfig.faults``, every response) misbehaves.

    They model what production bridges meet: a server that streams a transcript but no audio,
    that is slow to acknowledge a cancel, whose ``response.done`` is lost, that repeats itself or
    delivers events of an old response late, or whose socket dies mid-response.  The defaults
    are a well-behaved response.
    """

    #: Transcript deltas but no audio deltas (the "silent response" a no-audio watchdog catches).
    silent: bool = False
    #: After the last delta, stay ``in_progress`` this many seconds before the done events;
    #: ``None`` = until cancelled (a silent response that never ends by itself).
    hold_open_s: float | None = attrs.field(default=0.0, validator=_non_negative)
    #: Stop streaming after this many deltas and hang (still ``in_progress``) until cancelled:
    #: a server that "goes quiet" mid-response.  ``0`` = right after the output item and
    #: content part are added, before any delta (an item with no audio yet).
    stall_after_deltas: int | None = attrs.field(default=None, validator=_non_negative)
    #: Audio deltas still sent after a cancel arrives (deltas already on the wire), before the
    #: done events.  A correct bridge drops them.
    deltas_after_cancel: int = attrs.field(default=0, validator=_non_negative)
    #: Seconds between a cancel (client or VAD) and the cancelled response's done events and
    #: ``response.done``.  The slot stays busy meanwhile, as on the real server.
    cancel_ack_delay_s: float = attrs.field(default=0.0, validator=_non_negative)
    #: The response finishes server-side (the slot is freed) but ``response.done`` is never sent.
    drop_done: bool = False
    #: GA names of this response's events to send twice (same ``event_id``); see
    #: :data:`LIFECYCLE_EVENT_TYPES`.  Delta names are accepted too.
    duplicate_events: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    #: After ``response.done``, send stale events of this (by then old) response: one audio
    #: delta, one transcript delta and a repeat of its ``response.done``.
    late_events: bool = False
    #: When the late events go out: ``None`` = right after the *next* ``response.created`` on the
    #: connection (the nastiest moment); a number = that many seconds after ``response.done``.
    late_events_delay_s: float | None = attrs.field(default=None, validator=_non_negative)
    #: Abort the TCP connection (no close frame) after this many deltas of this response (audio
    #: deltas; transcript/text deltas for silent or text responses); ``0`` = right after
    #: ``response.created``.
    drop_socket_after_deltas: int | None = attrs.field(default=None, validator=_non_negative)
    #: Swallow the ``response.create``: no ``response.created``, no error, nothing.
    ignore_create: bool = False
    #: How the response ends when not cancelled: ``incomplete`` (reason ``max_output_tokens``,
    #: after half the audio) or ``failed`` (``status_details.error``, after half the audio).
    outcome: Literal["completed", "incomplete", "failed"] = "completed"


@attrs.frozen
class ReplyItem:
    """One assistant message item of a multi-item reply (reference 10.2: reasoning models
    speak a long reply as ``[message, message]``, or write a preamble before speaking)."""

    text: str
    #: ``audio``: spoken (``output_audio`` content: audio and transcript deltas) when the
    #: response's modalities include audio; ``text``: a text-only item (``output_text``
    #: content, ``response.output_text.*`` events) even in an audio response.
    modality: Literal["audio", "text"] = "audio"
    #: Defaults to ``len(text) * config.ms_per_char``.
    audio_ms: int | None = attrs.field(default=None, validator=_non_negative)


def _reply_items(value: Iterable[ReplyItem | str]) -> tuple[ReplyItem, ...]:
    return tuple(ReplyItem(v) if isinstance(v, str) else v for v in value)


@attrs.frozen
class ScriptedReply:
    """What one response says.  ``audio_ms`` defaults to ``len(text) * config.ms_per_char``.

    By default a reply is one assistant message item.  With ``items`` (build it with
    :meth:`of_items`) the response carries one message item per entry, in order, each with its
    own ``output_index``, content part, deltas and done events; ``response.done`` lists them
    all.  A cancel mid item 2 of 3 ends item 2 ``incomplete`` and never adds item 3.
    """

    text: str
    audio_ms: int | None = attrs.field(default=None, validator=_non_negative)
    #: Faults for this response (overridden by :meth:`FakeRealtimeServer.fault_next_response`).
    faults: ResponseFaults | None = None
    #: Several message items (``text`` and ``audio_ms`` are then only the record's summary).
    items: tuple[ReplyItem, ...] = attrs.field(default=(), converter=_reply_items)

    @classmethod
    def of_items(
        cls, *items: ReplyItem | str, faults: ResponseFaults | None = None
    ) -> ScriptedReply:
        """A reply spoken as several message items (a string is a spoken item)."""
        parsed = _reply_items(items)
        if not parsed:
            raise ValueError("of_items needs at least one item")
        return cls(" ".join(i.text for i in parsed), faults=faults, items=parsed)


@attrs.frozen
class ReplyContext:
    """What a reply callable may base its answer on."""

    response_id: str
    connection: int
    #: 1-based count of responses created by this server (all connections).
    number: int
    origin: Origin
    out_of_band: bool
    instructions: str
    metadata: Mapping[str, str] | None
    #: The latest user text: a created ``input_text`` item or an input-audio transcript.
    last_user_text: str | None


ReplySource = Callable[[ReplyContext], "str | ScriptedReply"]


@attrs.frozen
class ScriptedError:
    """An ``error`` event to send ``at_s`` seconds after each connection opens."""

    code: str | None
    message: str
    error_type: str = "invalid_request_error"
    param: str | None = None
    client_event_id: str | None = None
    at_s: float = attrs.field(default=0.0, validator=_non_negative)


def _errors(value: Iterable[ScriptedError]) -> tuple[ScriptedError, ...]:
    return tuple(value)


@attrs.frozen
class FakeRealtimeConfig:
    """Settings of a :class:`FakeRealtimeServer`.  The host is always 127.0.0.1."""

    #: 0 = any free port; read the real one from :attr:`FakeRealtimeServer.port`.
    port: int = attrs.field(default=0, validator=_non_negative)
    #: ``auto``: beta names when the client sends ``OpenAI-Beta: realtime=v1``, GA otherwise.
    api: Literal["auto", "ga", "beta"] = "auto"
    model: str = "gpt-realtime-2.1"
    #: Generation speed relative to real time (the real server is faster than real time too).
    #: ``math.inf`` = no pacing at all.
    realtime_factor: float = attrs.field(default=5.0, validator=positive)
    #: Latency between ``response.created`` and the output item / first delta.
    first_delta_delay_s: float = attrs.field(default=0.05, validator=_non_negative)
    #: Audio per delta (20 ms = 160 mu-law bytes).
    audio_delta_ms: int = attrs.field(default=20, validator=positive)
    #: Speech duration per character of reply text (about 15 characters a second).
    ms_per_char: int = attrs.field(default=60, validator=positive)
    default_reply: str = "This is a simulated reply."
    #: Input transcript used when no scripted transcript is queued.
    default_transcript: str = "hello"
    #: Delay of ``conversation.item.input_audio_transcription.completed`` after the commit
    #: (a streaming transcription model spreads its deltas over it).
    transcription_delay_s: float = attrs.field(default=0.05, validator=_non_negative)
    #: Normalised RMS level (full scale = 1.0) above which a 10 ms frame counts as speech at
    #: the session's default ``threshold`` (0.5); a session ``threshold`` moves it (see
    #: ``_Session.speech_level``: 0.8 needs about 0.21, 0.3 about 0.0096).
    vad_energy_threshold: float = attrs.field(default=0.02, validator=positive)
    #: Reasoning models (``gpt-realtime-2*``): the silent gap between ``response.created`` and
    #: the first output item at ``reasoning.effort`` ``medium``, scaled by the effort
    #: (``minimal`` x0.25, ``low`` x0.5, ``high`` x2, ``xhigh`` x4; ``low`` when neither the
    #: response nor the session sets one).  Added to ``first_delta_delay_s``.  ``0``: off.
    reasoning_delay_s: float = attrs.field(default=0.0, validator=_non_negative)
    #: Faults applied to every response unless a reply or ``fault_next_response`` says otherwise.
    faults: ResponseFaults = ResponseFaults()
    scripted_errors: tuple[ScriptedError, ...] = attrs.field(default=(), converter=_errors)
    #: Send ``rate_limits.updated`` after each ``response.created``, like the real server.
    rate_limits_events: bool = True
    #: Seed for ids, so a failing test can be replayed with the same ids.
    seed: int | None = None
    #: Session length cap, like the real server's 60 minutes: this many seconds after a
    #: connection opens it gets ``error`` ``session_expired`` and is closed.  ``None``: no cap.
    session_max_s: float | None = attrs.field(default=None, validator=_non_negative)
    #: Keep every event in :attr:`FakeRealtimeServer.sent` / ``received``.  Off for long runs
    #: with many calls (the load benchmark): the lists grow with every frame, and each sent
    #: event is decoded again for its record.  Error counts are kept either way.
    record_events: bool = True
    #: Write a :func:`~realtime_fsm.testing.audio.make_time_stamp` (source = connection index)
    #: after the audio tag of every delta, to measure the latency of the path to the caller.
    stamp_audio: bool = False


# --- records ------------------------------------------------------------------------------------


@attrs.frozen
class ReceivedEvent:
    """A client event as received (``event`` is the parsed JSON, or ``{"raw": text}``)."""

    at: float
    connection: int
    event: JSON


@attrs.frozen
class SentEvent:
    """A server event as queued for the socket (``injected``: from a fault knob, not the rules)."""

    at: float
    connection: int
    event: JSON
    injected: bool = False


@attrs.define(eq=False)
class ResponseRecord:
    """Everything the fake server knows about one response, updated as it runs.

    ``tag`` is the ordinal written into the audio tags of this response's deltas (see
    :mod:`realtime_fsm.testing.audio`), so audio heard by the fake caller can be traced back
    to its response.
    """

    id: str
    connection: int
    tag: int
    origin: Origin
    out_of_band: bool
    metadata: dict[str, str] | None
    client_event_id: str | None
    text: str
    modalities: tuple[str, ...]
    faults: ResponseFaults
    created_at: float
    status: str = "in_progress"
    reason: str | None = None
    #: The first message item (``None`` for a response of tool calls only or none at all).
    item_id: str | None = None
    #: Every message item of the response, in output order (several: ``ScriptedReply.items``).
    item_ids: list[str] = attrs.field(factory=list)
    #: ``response.done``'s ``usage`` (set when the response finishes).
    usage: JSON | None = None
    #: The silent "thinking" gap it was given before its first output item (reasoning
    #: models, ``FakeRealtimeConfig.reasoning_delay_s``); 0 for the others.
    reasoning_delay_s: float = 0.0
    audio_bytes: int = 0
    audio_bytes_per_ms: int = 8
    audio_deltas: int = 0
    text_deltas: int = 0
    first_audio_at: float | None = None
    last_audio_at: float | None = None
    cancel_requested_at: float | None = None
    done_at: float | None = None
    done_sent: bool = False
    socket_dropped: bool = False

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio sent for this response."""
        return self.audio_bytes // self.audio_bytes_per_ms

    @property
    def finished(self) -> bool:
        return self.status != "in_progress"
