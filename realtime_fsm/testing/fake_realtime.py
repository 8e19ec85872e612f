"""A fake OpenAI Realtime server on 127.0.0.1, faithful where the response lifecycle is concerned.

Why it exists: the hard bugs of a realtime voice bridge are races between the client and the
server's response slot (a ``response.create`` while a response is still in progress, a cancel
racing completion, late deltas of a cancelled response, a truncate past the audio actually
sent).  Those races need a server that enforces the same rules as OpenAI's, with the same event
names, shapes, error codes and messages, and that can be made to misbehave on purpose.  This one
speaks raw protocol JSON over a real websocket, so it tests a bridge exactly as it runs in
production, without an account or a network.

What it enforces (see ``/work/shared/reference/openai-realtime.md``):

* ``session.created`` on connect; ``session.update`` -> ``session.updated`` with the effective
  configuration, in the GA nested shape or the beta flat shape.  A GA session given beta keys
  (or the reverse) gets the real ``unknown_parameter`` error instead of being silently accepted.
* Exactly one default-conversation response at a time: a second ``response.create`` gets
  ``conversation_already_has_active_response`` (``error.event_id`` = the client's ``event_id``)
  and no response.  The slot is busy until ``response.done`` has been sent, so a create sent
  after ``response.cancel`` but before that response's ``response.done`` is rejected too.
  Out-of-band responses (``conversation: "none"``) run in parallel and never hold the slot.
* Streaming: ``response.created`` (metadata echoed, ``conversation_id`` null for OOB),
  ``rate_limits.updated``, ``response.output_item.added``, ``conversation.item.added`` (GA) /
  ``.created`` (beta), ``response.content_part.added``, paced audio and transcript deltas, the
  done events and ``response.done`` with ``status`` and ``status_details.reason``.
* ``response.cancel``: the remaining done events and ``response.done`` cancelled /
  ``client_cancelled``; nothing to cancel -> ``response_cancel_not_active``.
* ``conversation.item.truncate`` checked against the audio bytes actually sent for the item.
* Server VAD from the energy of the appended audio, honouring ``create_response`` and
  ``interrupt_response``; input transcription events with scripted text.

Timing is on the audio timeline for VAD (milliseconds of audio appended, like the real server)
and on the event loop's clock for generation (``realtime_factor`` times faster than real time).

Every client event received and every server event sent is recorded (at the moment it is queued
for the socket, so the record order is the wire order); every error sent is counted by code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._support import LOOPBACK_HOST, Notifier, openai_id, settle
from .audio import (
    STAMP_SIZE,
    TAG_SIZE,
    alaw_decode,
    bytes_per_ms,
    make_audio_tag,
    make_time_stamp,
    mulaw_rms_level,
    pcm16_decode,
    rms_level,
    tone,
)
from .fake_tools import (
    ToolPlan,
    ToolScript,
    ToolScripting,
    accept_output,
    before_client_create,
    stream_calls,
)

__all__ = [
    "LIFECYCLE_EVENT_TYPES",
    "FakeRealtimeConfig",
    "FakeRealtimeConnection",
    "FakeRealtimeServer",
    "ReceivedEvent",
    "ReplyContext",
    "ReplySource",
    "ResponseFaults",
    "ResponseRecord",
    "ScriptedError",
    "ScriptedReply",
    "SESSION_EXPIRED_MESSAGE",
    "SentEvent",
    "beta_event_name",
]

JSON = dict[str, Any]
Api = Literal["ga", "beta"]

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


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


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
class ScriptedReply:
    """What one response says.  ``audio_ms`` defaults to ``len(text) * config.ms_per_char``."""

    text: str
    audio_ms: int | None = attrs.field(default=None, validator=_non_negative)
    #: Faults for this response (overridden by :meth:`FakeRealtimeServer.fault_next_response`).
    faults: ResponseFaults | None = None


@attrs.frozen
class ReplyContext:
    """What a reply callable may base its answer on."""

    response_id: str
    connection: int
    #: 1-based count of responses created by this server (all connections).
    number: int
    origin: Literal["client", "server_vad"]
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
    model: str = "gpt-realtime"
    #: Generation speed relative to real time (the real server is faster than real time too).
    #: ``math.inf`` = no pacing at all.
    realtime_factor: float = attrs.field(default=5.0, validator=_positive)
    #: Latency between ``response.created`` and the output item / first delta.
    first_delta_delay_s: float = attrs.field(default=0.05, validator=_non_negative)
    #: Audio per delta (20 ms = 160 mu-law bytes).
    audio_delta_ms: int = attrs.field(default=20, validator=_positive)
    #: Speech duration per character of reply text (about 15 characters a second).
    ms_per_char: int = attrs.field(default=60, validator=_positive)
    default_reply: str = "This is a simulated reply."
    #: Input transcript used when no scripted transcript is queued.
    default_transcript: str = "hello"
    #: Delay of ``conversation.item.input_audio_transcription.completed`` after the commit.
    transcription_delay_s: float = attrs.field(default=0.05, validator=_non_negative)
    #: Normalised RMS level (full scale = 1.0) above which a 10 ms frame counts as speech.
    #: The session's ``threshold`` (a probability on the real server) is echoed but not used.
    vad_energy_threshold: float = attrs.field(default=0.02, validator=_positive)
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
    origin: Literal["client", "server_vad"]
    out_of_band: bool
    metadata: dict[str, str] | None
    client_event_id: str | None
    text: str
    modalities: tuple[str, ...]
    faults: ResponseFaults
    created_at: float
    status: str = "in_progress"
    reason: str | None = None
    item_id: str | None = None
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


# --- internal state -----------------------------------------------------------------------------


_GA_FORMAT_TYPES = {"audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw", "audio/pcm": "pcm16"}
_BETA_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
_SERVER_VAD_DEFAULTS: JSON = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: JSON = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
_EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 300}
_BETA_ONLY_SESSION_KEYS = frozenset(
    {
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "voice",
        "modalities",
        "max_response_output_tokens",
        "temperature",
    }
)
_GA_ONLY_SESSION_KEYS = frozenset(
    {"type", "audio", "output_modalities", "max_output_tokens", "include", "truncation", "prompt"}
)
_BETA_ONLY_RESPONSE_KEYS = frozenset(
    {"modalities", "voice", "output_audio_format", "max_response_output_tokens", "temperature"}
)
_GA_ONLY_RESPONSE_KEYS = frozenset({"output_modalities", "audio", "max_output_tokens"})


@attrs.define
class _Session:
    id: str
    model: str
    api: Api
    instructions: str = ""
    voice: str = "alloy"
    output_modalities: list[str] = attrs.field(factory=lambda: ["audio"])
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    turn_detection: JSON | None = attrs.field(factory=lambda: dict(_SERVER_VAD_DEFAULTS))
    transcription: JSON | None = None
    noise_reduction: JSON | None = None
    max_output_tokens: int | str = "inf"
    tools: list[Any] = attrs.field(factory=list)
    tool_choice: Any = "auto"
    temperature: float = 0.8
    speed: float = 1.0
    extra: JSON = attrs.field(factory=dict)
    expires_at: int = attrs.field(factory=lambda: int(time.time()) + 3600)

    def render(self) -> JSON:
        if self.api == "beta":
            return {
                "id": self.id,
                "object": "realtime.session",
                "model": self.model,
                "expires_at": self.expires_at,
                "modalities": list(self.output_modalities),
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": self.input_format,
                "output_audio_format": self.output_format,
                "input_audio_transcription": self.transcription,
                "input_audio_noise_reduction": self.noise_reduction,
                "turn_detection": dict(self.turn_detection) if self.turn_detection else None,
                "tools": list(self.tools),
                "tool_choice": self.tool_choice,
                "temperature": self.temperature,
                "max_response_output_tokens": self.max_output_tokens,
                "speed": self.speed,
            }
        session: JSON = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "expires_at": self.expires_at,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": list(self.tools),
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": _ga_format(self.input_format),
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": dict(self.turn_detection) if self.turn_detection else None,
                },
                "output": {
                    "format": _ga_format(self.output_format),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
        }
        session.update(self.extra)
        return session

    @property
    def vad_silence_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") == "semantic_vad":
            return _EAGERNESS_SILENCE_MS.get(str(td.get("eagerness")), 800)
        return int(td.get("silence_duration_ms") or 500)

    @property
    def vad_prefix_ms(self) -> int:
        td = self.turn_detection or {}
        return int(td.get("prefix_padding_ms") or (300 if td.get("type") == "server_vad" else 0))


def _ga_format(canonical: str) -> JSON:
    if canonical == "pcm16":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": "audio/pcmu" if canonical == "g711_ulaw" else "audio/pcma"}


def _parse_ga_format(value: Any, param: str) -> str:
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    ftype = value.get("type")
    if ftype not in _GA_FORMAT_TYPES:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{ftype}'. Supported values are: 'audio/pcm', 'audio/pcmu', and "
            "'audio/pcma'.",
            f"{param}.type",
        )
    if ftype == "audio/pcm" and value.get("rate", 24000) != 24000:
        raise _ProtocolError(
            "invalid_value", "Invalid value: only a rate of 24000 is supported.", f"{param}.rate"
        )
    return _GA_FORMAT_TYPES[ftype]


def _parse_beta_format(value: Any, param: str) -> str:
    if value not in _BETA_FORMATS:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: 'pcm16', 'g711_ulaw', and "
            "'g711_alaw'.",
            param,
        )
    return str(value)


def _parse_turn_detection(value: Any, param: str, api: Api) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    if "type" not in value and api == "ga":
        raise _ProtocolError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}.type'.",
            f"{param}.type",
        )
    ttype = value.get("type", "server_vad")
    if ttype == "server_vad":
        result = dict(_SERVER_VAD_DEFAULTS)
    elif ttype == "semantic_vad":
        result = dict(_SEMANTIC_VAD_DEFAULTS)
    else:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{ttype}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            f"{param}.type",
        )
    for key, item in value.items():
        if key not in result:
            raise _ProtocolError(
                "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
            )
        result[key] = item
    return result


def _validate_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    param = "response.metadata"
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    if len(value) > 16:
        raise _ProtocolError(
            "object_above_max_properties",
            f"Invalid '{param}': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param,
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise _ProtocolError(
                "invalid_type", f"Invalid type for '{param}.{key}': expected a string.", param
            )
        if len(key) > 64 or len(item) > 512:
            raise _ProtocolError(
                "string_above_max_length",
                f"Invalid '{param}': keys may be at most 64 and values at most 512 characters.",
                param,
            )
    return dict(value)


class _Abort:
    """Sentinel in the outbound queue: abort the TCP connection once everything before is sent."""


_ABORT = _Abort()


class _Close:
    """Sentinel in the outbound queue: close the WebSocket (close frame) once everything before
    is sent, as the real server does after ``session_expired``."""


_CLOSE = _Close()
#: The real server's message when a session reaches its maximum duration.
SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."
_WORD_RE = re.compile(r"\S+\s*|\s+")


@attrs.define(eq=False)
class _Live:
    """Runtime state of a response that has not finished yet."""

    record: ResponseRecord
    text: str
    audio_ms: int
    output_format: str
    voice: str
    max_output_tokens: int | str
    cancel_event: asyncio.Event = attrs.field(factory=asyncio.Event)
    cancel_reason: str | None = None
    item: _Item | None = None
    transcript_sent: str = ""
    task: asyncio.Task[None] | None = None
    done_event: JSON | None = None
    #: The pause in progress (see ``_pause``): resolved True by a cancel, False by its timer.
    pause_waiter: asyncio.Future[bool] | None = None
    #: Tool calls of this response (see :mod:`.fake_tools`); their items follow ``item``.
    tools: ToolPlan | None = None
    extra_output: list[JSON] = attrs.field(factory=list)
    #: The message item's done events were sent (before the calls that follow it).
    item_finished: bool = False


# --- connection -----------------------------------------------------------------------------


class FakeRealtimeConnection:
    """One client connection (one Realtime session).  Created by :class:`FakeRealtimeServer`.

    All protocol handling is synchronous per received event, so the state a test observes and
    the order of events on the wire always agree.  Per-response streaming runs in tasks.
    """

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int) -> None:
        self._server = server
        self._ws = ws
        self.index = index
        request = ws.request
        self.path: str = request.path if request is not None else ""
        self.headers: dict[str, str] = dict(request.headers.raw_items()) if request else {}
        self.api: Api = self._pick_api()
        self.opened_at = time.monotonic()
        self.closed = False
        #: Ended by :meth:`expire` (or ``config.session_max_s``).
        self.expired = False
        model = self._query_model() or server.config.model
        self._session = _Session(id=openai_id("sess", server.rng), model=model, api=self.api)
        if self.api == "beta":
            self._session.output_modalities = ["text", "audio"]
        self._conversation_id = openai_id("conv", server.rng)
        self._out: asyncio.Queue[str | _Abort | _Close | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._items: dict[str, _Item] = {}
        self._oob_items: dict[str, _Item] = {}
        self._active: _Live | None = None
        self._live: dict[str, _Live] = {}
        self._server_create_pending = False
        self._pending_late: list[tuple[JSON, bool]] = []
        self._last_user_text: str | None = None
        # VAD, on the audio timeline.
        self._audio_ms = 0
        self._uncommitted_ms = 0
        self._residual = b""
        self._speaking = False
        self._speech_item: str | None = None
        self._silence_ms = 0
        self._speech_start_ms = 0

    # -- public --------------------------------------------------------------------------------

    @property
    def session(self) -> JSON:
        """The effective session configuration, rendered as ``session.updated`` would show it."""
        return self._session.render()

    @property
    def active_response_id(self) -> str | None:
        """The default-conversation response holding the slot, if any."""
        return self._active.record.id if self._active else None

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an arbitrary server event (an ``event_id`` is added if missing)."""
        self._emit(dict(event), injected=True)

    def inject_error(
        self,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Send an ``error`` event now.  Counted in ``injected_error_counts``, not as a
        protocol error."""
        self._send_error(code, message, error_type, param, client_event_id, injected=True)

    def drop(self) -> None:
        """Abort the TCP connection (no close frame) once the events already queued are sent."""
        self._out.put_nowait(_ABORT)

    def expire(self) -> None:
        """End the session as the real server does at its 60-minute cap: ``error``
        ``session_expired`` (type ``invalid_request_error``, no ``event_id``), then a close."""
        if self.closed:
            return
        self._send_error("session_expired", SESSION_EXPIRED_MESSAGE, injected=True)
        self._out.put_nowait(_CLOSE)
        self.expired = True

    @property
    def items(self) -> list[JSON]:
        """The conversation items of this session, in order (as ``conversation.item.added``
        shows them): what a restored conversation looks like to the model."""
        return [item.item for item in self._items.values()]

    # -- lifecycle -----------------------------------------------------------------------------

    def _pick_api(self) -> Api:
        configured = self._server.config.api
        if configured != "auto":
            return configured
        beta = any(
            k.lower() == "openai-beta" and "realtime=v1" in v.replace(" ", "").lower()
            for k, v in self.headers.items()
        )
        return "beta" if beta else "ga"

    def _query_model(self) -> str | None:
        match = re.search(r"[?&]model=([^&]+)", self.path)
        return match.group(1) if match else None

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        self._spawn(self._writer())
        self._emit({"type": "session.created", "session": self._session.render()})
        for scripted in self._server.config.scripted_errors:
            self._spawn(self._scripted_error(scripted))
        if self._server.config.session_max_s is not None:
            self._spawn(self._expire_after(self._server.config.session_max_s))
        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for live in list(self._live.values()):
                live.record.socket_dropped = True
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._server._notifier.notify()

    async def _writer(self) -> None:
        while True:
            item = await self._out.get()
            if item is None:
                return
            if isinstance(item, _Abort):
                for live in self._live.values():
                    live.record.socket_dropped = True
                self._ws.transport.abort()
                return
            if isinstance(item, _Close):
                for live in self._live.values():
                    live.record.socket_dropped = True
                await self._ws.close(1000, "session expired")
                return
            try:
                await self._ws.send(item)
            except ConnectionClosed:
                return

    async def _expire_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.expire()

    async def _scripted_error(self, scripted: ScriptedError) -> None:
        await asyncio.sleep(scripted.at_s)
        self._send_error(
            scripted.code,
            scripted.message,
            scripted.error_type,
            scripted.param,
            scripted.client_event_id,
            injected=True,
        )

    # -- sending -------------------------------------------------------------------------------

    def _emit(self, event: JSON, *, injected: bool = False, twice: bool = False) -> None:
        """Queue ``event`` (GA name in ``type``) for the socket, renamed for beta sessions."""
        if self.closed:
            return
        etype = str(event.get("type", ""))
        if self.api == "beta":
            if etype in _GA_ONLY:
                return
            event["type"] = beta_event_name(etype)
        event.setdefault("event_id", openai_id("event", self._server.rng))
        # Serialise now: later changes to server state (a truncate, a transcript) must not
        # reach an event already sent, and the record must be exactly what went on the wire.
        text = json.dumps(event)
        server = self._server
        for _ in range(2 if twice else 1):
            server.messages_sent += 1
            self._out.put_nowait(text)
            if server.config.record_events:
                server._record_sent(self.index, json.loads(text), injected)
            else:
                server._count_sent(event, injected)
        if server._on_event is not None:
            server._on_event(self.index, etype, time.monotonic())

    def _send_error(
        self,
        code: str | None,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
        *,
        injected: bool = False,
    ) -> None:
        self._emit(
            {
                "type": "error",
                "error": {
                    "type": error_type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": client_event_id,
                },
            },
            injected=injected,
        )

    def _emit_for(self, live: _Live, event: JSON, *, injected: bool = False) -> None:
        twice = event.get("type") in live.record.faults.duplicate_events
        self._emit(event, injected=injected, twice=twice)

    # -- receiving -----------------------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        self._server.messages_received += 1
        if isinstance(message, bytes):
            self._server._record_received(now, self.index, {"raw_bytes": len(message)})
            self._send_error("invalid_json", "Binary frames are not supported.", param=None)
            return
        try:
            event = json.loads(message)
        except ValueError:
            self._server._record_received(now, self.index, {"raw": message})
            self._send_error(
                "invalid_json",
                "The server failed to parse the JSON of the client event.",
            )
            return
        if not isinstance(event, dict):
            self._server._record_received(now, self.index, {"raw": message})
            self._send_error("invalid_type", "Invalid type for event: expected an object.")
            return
        if self._server.config.record_events:
            self._server._record_received(now, self.index, event)
        etype = event.get("type")
        client_event_id = event.get("event_id")
        client_event_id = client_event_id if isinstance(client_event_id, str) else None
        rule = self._server._take_error_rule(str(etype))
        if rule is not None:
            scripted, swallow = rule
            self._send_error(
                scripted.code,
                scripted.message,
                scripted.error_type,
                scripted.param,
                client_event_id,
                injected=True,
            )
            if swallow:
                return
        handler = _HANDLERS.get(str(etype))
        try:
            if handler is None:
                supported = ", ".join(f"'{t}'" for t in _CLIENT_EVENT_TYPES)
                raise _ProtocolError(
                    "invalid_value",
                    f"Invalid value: '{etype}'. Supported values are: {supported}.",
                    "type",
                )
            handler(self, event, client_event_id)
        except _ProtocolError as exc:
            self._send_error(exc.code, exc.message, exc.etype, exc.param, client_event_id)
        self._server._notifier.notify()

    # -- session.update ----------------------------------------------------------------------

    def _on_session_update(self, event: JSON, _eid: str | None) -> None:
        raw = event.get("session")
        if not isinstance(raw, dict):
            raise _ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'session'.", "session"
            )
        new = attrs.evolve(self._session)
        if self.api == "ga":
            self._update_ga(new, raw)
        else:
            self._update_beta(new, raw)
        self._session = new
        self._emit({"type": "session.updated", "session": new.render()})

    def _reject_keys(self, raw: Mapping[str, Any], keys: Iterable[str], prefix: str) -> None:
        for key in raw:
            if key in keys:
                raise _ProtocolError(
                    "unknown_parameter", f"Unknown parameter: '{prefix}.{key}'.", f"{prefix}.{key}"
                )

    def _update_ga(self, new: _Session, raw: JSON) -> None:
        self._reject_keys(raw, _BETA_ONLY_SESSION_KEYS - {"tools"}, "session")
        if "type" not in raw:
            raise _ProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
            )
        if raw["type"] != "realtime":
            raise _ProtocolError(
                "invalid_value",
                f"Invalid value: '{raw['type']}'. This fake server only simulates 'realtime' "
                "sessions.",
                "session.type",
            )
        audio = raw.get("audio") or {}
        audio_in = audio.get("input") or {}
        audio_out = audio.get("output") or {}
        if "format" in audio_in:
            new.input_format = _parse_ga_format(audio_in["format"], "session.audio.input.format")
        if "turn_detection" in audio_in:
            new.turn_detection = _parse_turn_detection(
                audio_in["turn_detection"], "session.audio.input.turn_detection", "ga"
            )
        if "transcription" in audio_in:
            new.transcription = audio_in["transcription"]
        if "noise_reduction" in audio_in:
            new.noise_reduction = audio_in["noise_reduction"]
        if "format" in audio_out:
            new.output_format = _parse_ga_format(audio_out["format"], "session.audio.output.format")
        if "voice" in audio_out:
            new.voice = audio_out["voice"]
        if "speed" in audio_out:
            new.speed = audio_out["speed"]
        if "output_modalities" in raw:
            new.output_modalities = list(raw["output_modalities"])
        if "max_output_tokens" in raw:
            new.max_output_tokens = raw["max_output_tokens"]
        self._update_common(new, raw)
        for key in ("tracing", "truncation", "prompt", "include"):
            if key in raw:
                new.extra = {**new.extra, key: raw[key]}

    def _update_beta(self, new: _Session, raw: JSON) -> None:
        self._reject_keys(raw, _GA_ONLY_SESSION_KEYS, "session")
        if "input_audio_format" in raw:
            new.input_format = _parse_beta_format(
                raw["input_audio_format"], "session.input_audio_format"
            )
        if "output_audio_format" in raw:
            new.output_format = _parse_beta_format(
                raw["output_audio_format"], "session.output_audio_format"
            )
        if "turn_detection" in raw:
            new.turn_detection = _parse_turn_detection(
                raw["turn_detection"], "session.turn_detection", "beta"
            )
        if "input_audio_transcription" in raw:
            new.transcription = raw["input_audio_transcription"]
        if "input_audio_noise_reduction" in raw:
            new.noise_reduction = raw["input_audio_noise_reduction"]
        if "voice" in raw:
            new.voice = raw["voice"]
        if "modalities" in raw:
            new.output_modalities = list(raw["modalities"])
        if "max_response_output_tokens" in raw:
            new.max_output_tokens = raw["max_response_output_tokens"]
        if "temperature" in raw:
            new.temperature = raw["temperature"]
        if "speed" in raw:
            new.speed = raw["speed"]
        self._update_common(new, raw)

    @staticmethod
    def _update_common(new: _Session, raw: JSON) -> None:
        if "instructions" in raw:
            new.instructions = str(raw["instructions"])
        if "tools" in raw:
            new.tools = list(raw["tools"] or [])
        if "tool_choice" in raw:
            new.tool_choice = raw["tool_choice"]

    # -- input audio buffer and VAD ----------------------------------------------------------

    def _on_append(self, event: JSON, _eid: str | None) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'audio'.", "audio"
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _ProtocolError(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio.", "audio"
            ) from None
        on_append = self._server._on_append
        if on_append is not None:
            on_append(self.index, data, time.monotonic())
        fmt = self._session.input_format
        bpm = bytes_per_ms(fmt)
        frame = 10 * bpm
        buf = self._residual + data
        usable = len(buf) - len(buf) % frame
        self._residual = buf[usable:]
        for start in range(0, usable, frame):
            chunk = buf[start : start + frame]
            if fmt == "g711_ulaw":
                level = mulaw_rms_level(chunk)
            elif fmt == "g711_alaw":
                level = rms_level(alaw_decode(chunk))
            else:
                level = rms_level(pcm16_decode(chunk))
            self._vad_frame(level >= self._server.config.vad_energy_threshold)

    def _vad_frame(self, loud: bool) -> None:
        frame_start = self._audio_ms
        self._audio_ms += 10
        self._uncommitted_ms += 10
        if self._session.turn_detection is None:
            return
        if loud:
            self._silence_ms = 0
            if not self._speaking:
                self._speech_started(frame_start)
        elif self._speaking:
            self._silence_ms += 10
            if self._silence_ms >= self._session.vad_silence_ms:
                self._speech_stopped()

    def _speech_started(self, frame_start: int) -> None:
        self._speaking = True
        self._speech_item = openai_id("item", self._server.rng)
        self._speech_start_ms = max(0, frame_start - self._session.vad_prefix_ms)
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self._speech_start_ms,
                "item_id": self._speech_item,
            }
        )
        td = self._session.turn_detection or {}
        active = self._active
        if td.get("interrupt_response") and active is not None and active.cancel_reason is None:
            self._request_cancel(active, "turn_detected")

    def _speech_stopped(self) -> None:
        item_id = self._speech_item or openai_id("item", self._server.rng)
        self._speaking = False
        self._silence_ms = 0
        self._speech_item = None
        self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": self._audio_ms,
                "item_id": item_id,
            }
        )
        self._commit(item_id, self._audio_ms - self._speech_start_ms)
        td = self._session.turn_detection or {}
        if td.get("create_response"):
            if self._active is None:
                self._start_response(origin="server_vad", params={}, client_event_id=None)
            elif self._active.cancel_reason is not None:
                # The real server cancels its response on speech and creates the next one
                # (semantic-kernel trace, reference 3.6): do it once the slot is free.
                self._server_create_pending = True
            # else: interrupt_response is off and the model is still responding; the real
            # server "may fail to create a response" -- the fake creates none.

    def _commit(self, item_id: str, audio_ms: int) -> None:
        previous = next(reversed(self._items), None)
        self._uncommitted_ms = 0
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item: JSON = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._items[item_id] = _Item(id=item_id, item=item)
        self._emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        # What the caller said is fixed at the commit (the model hears the audio, not the
        # transcript), so a tool rule can match the turn the VAD response answers.
        text = self._server._next_transcript()
        self._server._tools.note_user_input(self.index, text)
        if self._session.transcription is not None:
            self._spawn(self._transcribe(item_id, audio_ms, text))

    async def _transcribe(self, item_id: str, audio_ms: int, text: str) -> None:
        await asyncio.sleep(self._server.config.transcription_delay_s)
        self._last_user_text = text
        item = self._items.get(item_id)
        if item is not None:
            item.item["content"][0]["transcript"] = text
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": round(max(audio_ms, 0) / 1000, 3)},
            }
        )
        self._server._notifier.notify()

    def _on_commit(self, _event: JSON, _eid: str | None) -> None:
        if self._uncommitted_ms < 100:
            raise _ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {float(self._uncommitted_ms):.2f}ms of audio.",
            )
        item_id = self._speech_item or openai_id("item", self._server.rng)
        self._speaking = False
        self._speech_item = None
        self._silence_ms = 0
        self._commit(item_id, self._uncommitted_ms)

    def _on_clear(self, _event: JSON, _eid: str | None) -> None:
        self._uncommitted_ms = 0
        self._residual = b""
        self._speaking = False
        self._speech_item = None
        self._silence_ms = 0
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, _event: JSON, _eid: str | None) -> None:
        # WebRTC/SIP only: over a websocket there is no server-side output buffer to clear.
        return

    # -- conversation items ------------------------------------------------------------------

    def _find_item(self, item_id: Any) -> _Item:
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise _ProtocolError(
                "item_not_found", f"Item with item_id '{item_id}' not found.", "item_id"
            )
        return item

    def _on_item_create(self, event: JSON, _eid: str | None) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise _ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'item'.", "item"
            )
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            raise _ProtocolError(
                "item_not_found",
                f"Previous item with item_id '{previous}' not found.",
                "previous_item_id",
            )
        item_id = raw.get("id") or openai_id("item", self._server.rng)
        if item_id in self._items:
            raise _ProtocolError(
                "invalid_value", f"Item with item_id '{item_id}' already exists.", "item.id"
            )
        content = raw.get("content") or []
        if raw.get("role") == "assistant" and any(
            isinstance(c, dict) and c.get("type") in ("output_audio", "audio") for c in content
        ):
            raise _ProtocolError(
                "invalid_value",
                "conversation.item.create cannot populate assistant audio messages.",
                "item.content",
            )
        if raw.get("type") == "function_call_output":
            accept_output(self, raw)
        item = {**raw, "id": item_id, "object": "realtime.item", "status": "completed"}
        if previous is None:
            previous = next(reversed(self._items), None)
        self._items[item_id] = _Item(id=item_id, item=item)
        if raw.get("role") == "user":
            texts = [
                c.get("text")
                for c in content
                if isinstance(c, dict) and c.get("type") == "input_text" and c.get("text")
            ]
            if texts:
                self._last_user_text = " ".join(str(t) for t in texts)
                self._server._tools.note_user_input(self.index, self._last_user_text)
        prev = None if previous == "root" else previous
        self._emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})

    def _on_item_delete(self, event: JSON, _eid: str | None) -> None:
        item = self._find_item(event.get("item_id"))
        del self._items[item.id]
        self._emit({"type": "conversation.item.deleted", "item_id": item.id})

    def _on_item_retrieve(self, event: JSON, _eid: str | None) -> None:
        item = self._find_item(event.get("item_id"))
        self._emit({"type": "conversation.item.retrieved", "item": item.item})

    def _on_item_truncate(self, event: JSON, _eid: str | None) -> None:
        item = self._find_item(event.get("item_id"))
        end = event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool):
            raise _ProtocolError(
                "invalid_type",
                "Invalid type for 'audio_end_ms': expected an integer.",
                "audio_end_ms",
            )
        if end < 0:
            raise _ProtocolError(
                "integer_below_min_value",
                "Invalid 'audio_end_ms': integer below minimum value. Expected a value >= 0, "
                f"but got {end} instead.",
                "audio_end_ms",
            )
        index = event.get("content_index", 0)
        if not item.assistant_audio or item.audio_bytes == 0 or index != 0:
            raise _ProtocolError(
                "invalid_value", "Only model output audio messages can be truncated", "item_id"
            )
        have_ms = item.audio_bytes // item.bytes_per_ms
        if end > have_ms:
            raise _ProtocolError(
                "invalid_value",
                f"Audio content of {have_ms}ms is already shorter than {end}ms",
                "audio_end_ms",
            )
        item.audio_bytes = end * item.bytes_per_ms
        for part in item.item.get("content", []):
            part["transcript"] = ""
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": 0,
                "audio_end_ms": end,
            }
        )

    # -- responses -----------------------------------------------------------------------------

    def _on_response_create(self, event: JSON, client_event_id: str | None) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise _ProtocolError(
                "invalid_type", "Invalid type for 'response': expected an object.", "response"
            )
        if self.api == "ga":
            self._reject_keys(params, _BETA_ONLY_RESPONSE_KEYS, "response")
        else:
            self._reject_keys(params, _GA_ONLY_RESPONSE_KEYS, "response")
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise _ProtocolError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        _validate_metadata(params.get("metadata"))
        if conversation == "auto":
            before_client_create(self)
        if conversation == "auto" and self._active is not None:
            raise _ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self._active.record.id}. Wait until the response is finished before "
                "creating a new one.",
            )
        self._start_response(origin="client", params=params, client_event_id=client_event_id)

    def _on_response_cancel(self, event: JSON, _eid: str | None) -> None:
        response_id = event.get("response_id")
        live = self._live.get(response_id) if response_id else self._active
        if live is None or live.record.finished:
            raise _ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        if live.cancel_reason is None:
            self._request_cancel(live, "client_cancelled")
        # A second cancel while the first is being acknowledged changes nothing.

    def _request_cancel(self, live: _Live, reason: str) -> None:
        live.cancel_reason = reason
        live.record.cancel_requested_at = time.monotonic()
        live.cancel_event.set()
        if live.pause_waiter is not None:
            settle(live.pause_waiter, True)

    def _start_response(
        self, *, origin: Literal["client", "server_vad"], params: JSON, client_event_id: str | None
    ) -> None:
        server = self._server
        config = server.config
        out_of_band = params.get("conversation") == "none"
        response_id = openai_id("resp", server.rng)
        session = self._session
        instructions = params.get("instructions")
        metadata = _validate_metadata(params.get("metadata"))
        number = server._response_number + 1
        ctx = ReplyContext(
            response_id=response_id,
            connection=self.index,
            number=number,
            origin=origin,
            out_of_band=out_of_band,
            instructions=instructions if isinstance(instructions, str) else session.instructions,
            metadata=metadata,
            last_user_text=self._last_user_text,
        )
        plan = server._tools.plan(self.index, origin, out_of_band)
        scripted = None if plan is None or plan.text is None else ScriptedReply(plan.text)
        chosen = server._next_reply(ctx, scripted)
        if chosen is None:  # ResponseFaults.ignore_create: the server goes quiet
            return
        reply, faults = chosen
        server._response_number = number
        if self.api == "ga":
            modalities = params.get("output_modalities") or session.output_modalities
            audio_out = (params.get("audio") or {}).get("output") or {}
            output_format = (
                _parse_ga_format(audio_out["format"], "response.audio.output.format")
                if "format" in audio_out
                else session.output_format
            )
            voice = audio_out.get("voice", session.voice)
            max_tokens = params.get("max_output_tokens", session.max_output_tokens)
        else:
            modalities = params.get("modalities") or session.output_modalities
            output_format = (
                _parse_beta_format(params["output_audio_format"], "response.output_audio_format")
                if "output_audio_format" in params
                else session.output_format
            )
            voice = params.get("voice", session.voice)
            max_tokens = params.get("max_response_output_tokens", session.max_output_tokens)
        audio_ms = (
            reply.audio_ms
            if reply.audio_ms is not None
            else max(config.audio_delta_ms, len(reply.text) * config.ms_per_char)
        )
        record = ResponseRecord(
            id=response_id,
            connection=self.index,
            tag=number,
            origin=origin,
            out_of_band=out_of_band,
            metadata=metadata,
            client_event_id=client_event_id if origin == "client" else None,
            text=reply.text,
            modalities=tuple(modalities),
            faults=faults,
            created_at=time.monotonic(),
            audio_bytes_per_ms=bytes_per_ms(output_format),
        )
        live = _Live(
            record=record,
            text=reply.text,
            audio_ms=audio_ms,
            output_format=output_format,
            voice=str(voice),
            max_output_tokens=max_tokens,
            tools=plan if plan is not None and plan.calls else None,
        )
        server.responses.append(record)
        self._live[response_id] = live
        if not out_of_band:
            self._active = live
        self._emit_for(live, {"type": "response.created", "response": self._render(live)})
        late, self._pending_late = self._pending_late, []
        for late_event, _ in late:
            self._emit(late_event, injected=True)
        if faults.drop_socket_after_deltas == 0:
            self.drop()
            return
        if config.rate_limits_events:
            self._emit(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {
                            "name": "requests",
                            "limit": 5000,
                            "remaining": 4999,
                            "reset_seconds": 0.012,
                        },
                        {
                            "name": "tokens",
                            "limit": 400000,
                            "remaining": 395000,
                            "reset_seconds": 0.7,
                        },
                    ],
                }
            )
        task = asyncio.get_running_loop().create_task(self._stream(live))
        live.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _render(
        self, live: _Live, *, status: str = "in_progress", reason: str | None = None
    ) -> JSON:
        record = live.record
        output: list[JSON] = [live.item.item] if live.item is not None else []
        output += live.extra_output
        details: JSON | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": reason}
        elif status == "failed":
            details = {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": "server_error",
                    "message": "The server had an error while processing your request.",
                },
            }
        usage: JSON | None = None
        if status != "in_progress":
            out_tokens = len(live.transcript_sent.split()) * 2
            usage = {"total_tokens": out_tokens, "input_tokens": 0, "output_tokens": out_tokens}
        body: JSON = {
            "object": "realtime.response",
            "id": record.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": None if record.out_of_band else self._conversation_id,
            "usage": usage,
            "metadata": record.metadata,
        }
        if self.api == "ga":
            body["output_modalities"] = list(record.modalities)
            body["max_output_tokens"] = live.max_output_tokens
            body["audio"] = {
                "output": {"format": _ga_format(live.output_format), "voice": live.voice}
            }
        else:
            body["modalities"] = list(record.modalities)
            body["max_output_tokens"] = live.max_output_tokens
            body["output_audio_format"] = live.output_format
            body["voice"] = live.voice
            body["temperature"] = self._session.temperature
        return body

    async def _pause(self, live: _Live, seconds: float) -> bool:
        """Sleep ``seconds`` unless a cancel arrives first; True if cancelled."""
        if live.cancel_event.is_set():
            await asyncio.sleep(0)
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return live.cancel_event.is_set()
        # A timer and a future rather than wait_for, which wraps the wait in a task: this runs
        # between every two audio deltas of every response.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        live.pause_waiter = waiter
        timer = loop.call_later(seconds, settle, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            live.pause_waiter = None

    def _content_type(self, audio: bool) -> str:
        if self.api == "ga":
            return "output_audio" if audio else "output_text"
        return "audio" if audio else "text"

    async def _stream(self, live: _Live) -> None:
        """Generate one response's events; ends with :meth:`_finish` unless the socket drops."""
        config = self._server.config
        record = live.record
        faults = record.faults
        audio_mode = "audio" in record.modalities
        send_audio = audio_mode and not faults.silent
        chunk_ms = config.audio_delta_ms
        n_chunks = max(1, math.ceil(live.audio_ms / chunk_ms))
        words = _WORD_RE.findall(live.text)
        per_chunk: list[list[str]] = [[] for _ in range(n_chunks)]
        for j, word in enumerate(words):
            per_chunk[min(n_chunks - 1, j * n_chunks // max(1, len(words)))].append(word)
        interval = chunk_ms / 1000 / config.realtime_factor
        frame = tone(chunk_ms, audio_format=live.output_format)
        stop_at = n_chunks if faults.outcome == "completed" else max(1, n_chunks // 2)

        if await self._pause(live, config.first_delta_delay_s) and faults.deltas_after_cancel == 0:
            await self._finish(live)
            return
        if live.tools is not None and not live.tools.preamble:  # calls only, no message item
            await stream_calls(self, live, 0)
            await self._finish(live)
            return
        item_id = openai_id("item", self._server.rng)
        record.item_id = item_id
        item_json: JSON = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        live.item = _Item(
            id=item_id,
            item=item_json,
            bytes_per_ms=bytes_per_ms(live.output_format),
            assistant_audio=audio_mode,
        )
        previous = next(reversed(self._items), None)
        if record.out_of_band:
            self._oob_items[item_id] = live.item
        else:
            self._items[item_id] = live.item
        ids = {"response_id": record.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self._emit_for(
            live,
            {
                "type": "response.output_item.added",
                "response_id": record.id,
                "output_index": 0,
                "item": dict(item_json),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.added",
                    "previous_item_id": previous,
                    "item": dict(item_json),
                },
            )
        part_type = "audio" if audio_mode else "text"
        part: JSON = (
            {"type": part_type, "transcript": ""} if audio_mode else {"type": "text", "text": ""}
        )
        self._emit_for(live, {"type": "response.content_part.added", **ids, "part": part})
        item_json["content"] = [
            {"type": self._content_type(audio_mode), ("transcript" if audio_mode else "text"): ""}
        ]

        after_cancel_budget = faults.deltas_after_cancel
        ended_early = False
        for index in range(n_chunks):
            if live.cancel_event.is_set():
                if after_cancel_budget <= 0:
                    break
                after_cancel_budget -= 1
            if index >= stop_at:
                ended_early = True
                break
            if faults.stall_after_deltas is not None and index >= faults.stall_after_deltas:
                await live.cancel_event.wait()
                break
            for word in per_chunk[index]:
                live.transcript_sent += word
                record.text_deltas += 1
                text_type = (
                    "response.output_audio_transcript.delta"
                    if audio_mode
                    else "response.output_text.delta"
                )
                self._emit_for(live, {"type": text_type, **ids, "delta": word})
            if send_audio:
                chunk = make_audio_tag(record.tag, index) + frame[TAG_SIZE:]
                if config.stamp_audio:
                    stamp = make_time_stamp(self.index, time.monotonic_ns())
                    chunk = chunk[:TAG_SIZE] + stamp + chunk[TAG_SIZE + STAMP_SIZE :]
                self._emit_for(
                    live,
                    {
                        "type": "response.output_audio.delta",
                        **ids,
                        "delta": base64.b64encode(chunk).decode("ascii"),
                    },
                )
                record.audio_bytes += len(chunk)
                record.audio_deltas += 1
                record.last_audio_at = time.monotonic()
                if record.first_audio_at is None:
                    record.first_audio_at = record.last_audio_at
                live.item.audio_bytes += len(chunk)
            self._server._notifier.notify()
            if (
                faults.drop_socket_after_deltas is not None
                and index + 1 >= faults.drop_socket_after_deltas
            ):
                self.drop()
                return
            await self._pause(live, interval)
        else:
            if faults.hold_open_s is None:
                await live.cancel_event.wait()
            elif faults.hold_open_s > 0:
                await self._pause(live, faults.hold_open_s)
        if live.tools is not None and not ended_early and not live.cancel_event.is_set():
            self._finish_item(live, "completed")  # the preamble, then the calls
            await stream_calls(self, live, 1)
        await self._finish(live, ended_early=ended_early)

    async def _finish(self, live: _Live, *, ended_early: bool = False) -> None:
        record = live.record
        faults = record.faults
        if live.cancel_reason is not None:
            status, reason = "cancelled", live.cancel_reason
            if faults.cancel_ack_delay_s > 0:
                await asyncio.sleep(faults.cancel_ack_delay_s)
        elif ended_early and faults.outcome == "incomplete":
            status, reason = "incomplete", "max_output_tokens"
        elif ended_early and faults.outcome == "failed":
            status, reason = "failed", None
        else:
            status, reason = "completed", None
        if live.item is not None and not live.item_finished:
            self._finish_item(live, "completed" if status == "completed" else "incomplete")
        record.status = status
        record.reason = reason
        record.done_at = time.monotonic()
        done: JSON = {
            "type": "response.done",
            "response": self._render(live, status=status, reason=reason),
        }
        live.done_event = done
        if self._active is live:
            self._active = None
        self._live.pop(record.id, None)
        if not faults.drop_done:
            record.done_sent = True
            self._emit_for(live, done)
        if faults.late_events:
            self._schedule_late(live)
        self._server._notifier.notify()
        if self._server_create_pending and self._active is None:
            self._server_create_pending = False
            self._start_response(origin="server_vad", params={}, client_event_id=None)

    def _finish_item(self, live: _Live, status: str) -> None:
        """The done events of the response's message item, which end with ``status``."""
        item = live.item
        if item is None:
            return
        live.item_finished = True
        record = live.record
        audio_mode = "audio" in record.modalities
        ids = {
            "response_id": record.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        text = live.transcript_sent
        if audio_mode:
            self._emit_for(live, {"type": "response.output_audio.done", **ids})
            self._emit_for(
                live,
                {"type": "response.output_audio_transcript.done", **ids, "transcript": text},
            )
            part: JSON = {"type": "audio", "transcript": text}
        else:
            self._emit_for(live, {"type": "response.output_text.done", **ids, "text": text})
            part = {"type": "text", "text": text}
        self._emit_for(live, {"type": "response.content_part.done", **ids, "part": part})
        key = "transcript" if audio_mode else "text"
        item.item["status"] = status
        item.item["content"] = [{"type": self._content_type(audio_mode), key: text}]
        self._emit_for(
            live,
            {
                "type": "response.output_item.done",
                "response_id": record.id,
                "output_index": 0,
                "item": dict(item.item),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.done",
                    "previous_item_id": None,
                    "item": dict(item.item),
                },
            )

    def _schedule_late(self, live: _Live) -> None:
        record = live.record
        item_id = record.item_id or openai_id("item", self._server.rng)
        ids = {"response_id": record.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        chunk_ms = self._server.config.audio_delta_ms
        frame = tone(chunk_ms, audio_format=live.output_format)
        chunk = make_audio_tag(record.tag, 0xFFFF) + frame[TAG_SIZE:]
        # GA names: _emit renames them for beta sessions.  Fresh event ids: these are late
        # events, not duplicates of earlier ones.
        events: list[JSON] = [
            {
                "type": "response.output_audio.delta",
                **ids,
                "delta": base64.b64encode(chunk).decode("ascii"),
            },
            {"type": "response.output_audio_transcript.delta", **ids, "delta": " (late)"},
        ]
        if live.done_event is not None:
            stale_done = {k: v for k, v in live.done_event.items() if k != "event_id"}
            events.append(stale_done)
        delay = record.faults.late_events_delay_s
        if delay is None:
            self._pending_late.extend((event, True) for event in events)
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            for event in events:
                self._emit(event, injected=True)
            self._server._notifier.notify()

        self._spawn(later())


_Handler = Callable[[FakeRealtimeConnection, JSON, "str | None"], None]
_HANDLERS: dict[str, _Handler] = {
    "session.update": FakeRealtimeConnection._on_session_update,
    "input_audio_buffer.append": FakeRealtimeConnection._on_append,
    "input_audio_buffer.commit": FakeRealtimeConnection._on_commit,
    "input_audio_buffer.clear": FakeRealtimeConnection._on_clear,
    "conversation.item.create": FakeRealtimeConnection._on_item_create,
    "conversation.item.retrieve": FakeRealtimeConnection._on_item_retrieve,
    "conversation.item.truncate": FakeRealtimeConnection._on_item_truncate,
    "conversation.item.delete": FakeRealtimeConnection._on_item_delete,
    "response.create": FakeRealtimeConnection._on_response_create,
    "response.cancel": FakeRealtimeConnection._on_response_cancel,
    "output_audio_buffer.clear": FakeRealtimeConnection._on_output_audio_buffer_clear,
}


# --- server -------------------------------------------------------------------------------------


class FakeRealtimeServer(ToolScripting):
    """The fake OpenAI Realtime server.  Use it as an async context manager::

        async with FakeRealtimeServer(FakeRealtimeConfig(realtime_factor=20)) as server:
            server.queue_reply("Hello! How can I help?")
            bridge = MyBridge(openai_url=server.url)   # ws://127.0.0.1:<port>/v1/realtime
            ...
            assert server.error_counts == {}

    ``replies``: scripted reply texts (or :class:`ScriptedReply`) used in order, or a callable
    ``(ReplyContext) -> str | ScriptedReply``.  When the queue is empty (and there is no
    callable) responses say ``config.default_reply``.
    """

    def __init__(
        self,
        config: FakeRealtimeConfig | None = None,
        *,
        replies: Sequence[str | ScriptedReply] | ReplySource | None = None,
        transcripts: Sequence[str] = (),
        on_append: Callable[[int, bytes, float], None] | None = None,
        on_event: Callable[[int, str, float], None] | None = None,
    ) -> None:
        self.config = config or FakeRealtimeConfig()
        # Measurement hooks (the load benchmark): ``on_append(connection, audio, monotonic)``
        # for every decoded ``input_audio_buffer.append``, ``on_event(connection, type,
        # monotonic)`` for every server event queued.  Called synchronously: keep them cheap.
        self._on_append = on_append
        self._on_event = on_event
        self.rng = random.Random(self.config.seed)
        self._reply_queue: list[ScriptedReply] = []
        self._reply_source: ReplySource | None = None
        if callable(replies):
            self._reply_source = replies
        elif replies is not None:
            for reply in replies:
                self.queue_reply(reply)
        self._transcripts: list[str] = list(transcripts)
        self._fault_queue: list[ResponseFaults] = []
        self._error_rules: list[tuple[str, ScriptedError, bool]] = []
        self._server: Server | None = None
        self._notifier = Notifier()
        self._response_number = 0
        self._tools = ToolScript()
        #: Connections in the order they were opened (index = position in this list).
        self.connections: list[FakeRealtimeConnection] = []
        #: Every client event received, in order.
        self.received: list[ReceivedEvent] = []
        #: Every server event sent (queued for the socket), in order.
        self.sent: list[SentEvent] = []
        #: Every response created, in order.
        self.responses: list[ResponseRecord] = []
        #: ``error`` events the protocol rules produced, by code (``"null"`` for no code).  A
        #: correct client keeps this empty, except for what it provokes on purpose.
        self.error_counts: Counter[str] = Counter()
        #: ``error`` events sent because a test asked for them (fault knobs), by code.
        self.injected_error_counts: Counter[str] = Counter()
        #: WebSocket handshakes answered with HTTP 503 (see :meth:`refuse_connections`).
        self.refused = 0
        #: Messages queued for the sockets and messages received, on all connections, kept
        #: even with ``record_events=False``: the client's share of the traffic.
        self.messages_sent = 0
        self.messages_received = 0
        self._refuse = 0

    # -- start / stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 (``config.port``, 0 = a free port)."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            LOOPBACK_HOST,
            self.config.port,
            max_size=16 * 1024 * 1024,
            process_request=self._process_request,
        )

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port actually bound (valid after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the fake Realtime server is not started")
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the fake Realtime server has no socket")

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/v1/realtime`` (any path and query are accepted)."""
        return f"ws://{LOOPBACK_HOST}:{self.port}/v1/realtime"

    def _process_request(self, ws: ServerConnection, _request: Request) -> Response | None:
        refuse = self._refuse  # -1: refuse all, n > 0: the next n, 0: accept
        if refuse == 0:
            return None
        if refuse > 0:
            self._refuse = refuse - 1
        self.refused += 1
        self._notifier.notify()
        return ws.respond(503, "Service Unavailable: refused by the simulator\n")

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeRealtimeConnection(self, ws, len(self.connections))
        self.connections.append(conn)
        self._notifier.notify()
        await conn._run()

    # -- scripting -------------------------------------------------------------------------

    def queue_reply(
        self, reply: str | ScriptedReply, *, faults: ResponseFaults | None = None
    ) -> None:
        """Add a reply for a future response (used in order, one per response)."""
        if isinstance(reply, str):
            reply = ScriptedReply(reply, faults=faults)
        elif faults is not None:
            reply = attrs.evolve(reply, faults=faults)
        self._reply_queue.append(reply)

    def set_reply_source(self, source: ReplySource | None) -> None:
        """Answer responses with ``source(ReplyContext)`` once the reply queue is empty."""
        self._reply_source = source

    def queue_transcript(self, text: str) -> None:
        """The text of the next input-audio transcription (sent if the session enables it)."""
        self._transcripts.append(text)

    def fault_next_response(self, faults: ResponseFaults) -> None:
        """Apply ``faults`` to the next response created (queued: one entry per response).

        Takes precedence over a reply's faults and over ``config.faults``.
        """
        self._fault_queue.append(faults)

    def error_on_next(
        self,
        client_event_type: str,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        swallow: bool = True,
    ) -> None:
        """Answer the next client event of ``client_event_type`` with this error (its
        ``error.event_id`` is that event's ``event_id``).  ``swallow``: the event is then not
        processed, as when the real server rejects it."""
        rule = ScriptedError(code=code, message=message, error_type=error_type, param=param)
        self._error_rules.append((client_event_type, rule, swallow))

    def inject_error(
        self,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Send an ``error`` event now on every open connection."""
        for conn in self.open_connections():
            conn.inject_error(
                code, message, error_type=error_type, param=param, client_event_id=client_event_id
            )

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an arbitrary server event now on every open connection."""
        for conn in self.open_connections():
            conn.send_event(event)

    def drop_connections(self) -> None:
        """Abort every open connection (no close frame), as a network failure would."""
        for conn in self.open_connections():
            conn.drop()

    def expire_sessions(self) -> None:
        """End every open session as the real server does at its 60-minute cap: ``error``
        ``session_expired``, then a close frame."""
        for conn in self.open_connections():
            conn.expire()

    def refuse_connections(self, count: int | None = None) -> None:
        """Answer the next ``count`` WebSocket handshakes (``None``: all, until
        :meth:`accept_connections`) with HTTP 503, as an overloaded or unreachable service
        would.  Open connections are not touched."""
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._refuse = -1 if count is None else count

    def accept_connections(self) -> None:
        """Undo :meth:`refuse_connections`."""
        self._refuse = 0

    def open_connections(self) -> list[FakeRealtimeConnection]:
        return [c for c in self.connections if not c.closed]

    def _next_reply(
        self, ctx: ReplyContext, scripted: ScriptedReply | None = None
    ) -> tuple[ScriptedReply, ResponseFaults] | None:
        """The reply and faults of a new response; None if the create is to be swallowed (the
        swallowed create consumes its queued faults but not a queued reply).  ``scripted``
        (a tool turn's text) is said instead of the queued or sourced reply."""
        if self._fault_queue and self._fault_queue[0].ignore_create:
            self._fault_queue.pop(0)
            return None
        if not self._fault_queue and not self._reply_queue and self.config.faults.ignore_create:
            return None
        if scripted is not None:
            reply = scripted
        elif self._reply_queue:
            reply = self._reply_queue.pop(0)
        elif self._reply_source is not None:
            produced = self._reply_source(ctx)
            reply = ScriptedReply(produced) if isinstance(produced, str) else produced
        else:
            reply = ScriptedReply(self.config.default_reply)
        if self._fault_queue:
            faults = self._fault_queue.pop(0)
        elif reply.faults is not None:
            faults = reply.faults
        else:
            faults = self.config.faults
        if faults.ignore_create:  # from the reply itself: the reply is spent
            return None
        return reply, faults

    def _next_transcript(self) -> str:
        return self._transcripts.pop(0) if self._transcripts else self.config.default_transcript

    def _take_error_rule(self, event_type: str) -> tuple[ScriptedError, bool] | None:
        for i, (etype, rule, swallow) in enumerate(self._error_rules):
            if etype == event_type:
                del self._error_rules[i]
                return rule, swallow
        return None

    # -- records ---------------------------------------------------------------------------

    def _record_sent(self, connection: int, event: JSON, injected: bool) -> None:
        self.sent.append(SentEvent(time.monotonic(), connection, event, injected))
        if event.get("type") == "error":
            code = event.get("error", {}).get("code")
            counter = self.injected_error_counts if injected else self.error_counts
            counter[str(code) if code is not None else "null"] += 1
        self._notifier.notify()

    def _count_sent(self, event: JSON, injected: bool) -> None:
        """:meth:`_record_sent` without the record (``config.record_events`` off)."""
        if event.get("type") == "error":
            code = event.get("error", {}).get("code")
            counter = self.injected_error_counts if injected else self.error_counts
            counter[str(code) if code is not None else "null"] += 1
        self._notifier.notify()

    def _record_received(self, at: float, connection: int, event: JSON) -> None:
        self.received.append(ReceivedEvent(at, connection, event))

    def client_events(
        self, event_type: str | None = None, *, connection: int | None = None
    ) -> list[JSON]:
        """Client events received (all connections, or one by index), optionally only those
        of one type."""
        return [
            r.event
            for r in self.received
            if (event_type is None or r.event.get("type") == event_type)
            and (connection is None or r.connection == connection)
        ]

    def server_events(self, event_type: str | None = None) -> list[JSON]:
        """Server events sent (all connections), optionally only those of one type (use the
        name as sent: beta names for beta sessions)."""
        return [
            s.event for s in self.sent if event_type is None or s.event.get("type") == event_type
        ]

    def response(self, response_id: str) -> ResponseRecord:
        """The record of a response by id (``KeyError`` if unknown)."""
        for record in self.responses:
            if record.id == response_id:
                return record
        raise KeyError(response_id)

    @property
    def protocol_error_total(self) -> int:
        """Number of protocol-rule errors sent (injected ones excluded)."""
        return sum(self.error_counts.values())

    # -- waiting -----------------------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds (re-checked on every event sent or received)."""
        await self._notifier.wait_until(predicate, timeout, what)

    async def wait_for_connection(self, timeout: float = 5.0) -> FakeRealtimeConnection:
        """The first connection, once a client has connected."""
        await self.wait_until(lambda: bool(self.connections), timeout, "a connection")
        return self.connections[0]

    async def wait_for_event(
        self,
        event_type: str,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        timeout: float = 5.0,
        start: int = 0,
    ) -> JSON:
        """The first *server* event of ``event_type`` (matching ``predicate``) sent at or after
        position ``start`` of :attr:`sent`; waits for it if needed."""
        return await self._wait_for_first(
            self.sent, event_type, predicate, timeout, start, "server event"
        )

    async def wait_for_client_event(
        self,
        event_type: str,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        timeout: float = 5.0,
        start: int = 0,
    ) -> JSON:
        """The first *client* event of ``event_type`` received at or after position ``start``
        of :attr:`received`."""
        return await self._wait_for_first(
            self.received, event_type, predicate, timeout, start, "client event"
        )

    async def _wait_for_first(
        self,
        records: Sequence[ReceivedEvent] | Sequence[SentEvent],
        event_type: str,
        predicate: Callable[[JSON], bool] | None,
        timeout: float,
        start: int,
        what: str,
    ) -> JSON:
        """The first event of ``event_type`` (matching ``predicate``) at or after position
        ``start`` of ``records`` (a live list: waits for it to appear)."""
        found: list[JSON] = []

        def check() -> bool:
            for record in records[start:]:
                event = record.event
                if event.get("type") == event_type and (predicate is None or predicate(event)):
                    found.append(event)
                    return True
            return False

        await self.wait_until(check, timeout, f"{what} {event_type}")
        return found[0]
