"""A fake Twilio caller: the Twilio side of a ``<Connect><Stream>`` Media Stream, as a websocket
client of a bridge's ``/media-stream`` endpoint.

Why it exists: what a caller *hears* is what matters in a voice call, and it depends on Twilio's
playback rules, not on what the bridge sent: audio is buffered and played in real time (8 bytes
of mu-law per millisecond), a ``mark`` comes back only once the audio sent before it has been
played, and a ``clear`` throws the buffered audio away and sends every pending mark back at once.
This caller implements those rules (``/work/shared/reference/twilio-media-streams.md``), records
what it received, played, echoed and flushed, with timestamps, and checks every message the
bridge sends against what Twilio accepts (``violations``).

It behaves like Twilio on the wire: ``connected``, ``start`` (``MZ…`` streamSid, callSid,
customParameters, ``audio/x-mulaw`` 8000 Hz mono), one ``media`` every 20 ms with string
``sequenceNumber`` / ``chunk`` / ``timestamp`` (mu-law silence 0xFF when the caller is not
speaking), and ``stop`` at the end.

Speaking and typing:

* :meth:`FakeTwilioCaller.speak` sends loud mu-law frames (a tone) instead of silence for a
  duration; an energy-based VAD (such as the fake OpenAI server's) hears it as speech.
* **Typed text is not a Twilio feature.**  Twilio Media Streams carry audio, DTMF and marks
  only.  :meth:`FakeTwilioCaller.type_text` therefore does nothing on the Twilio protocol unless
  you opt in: with ``FakeCallerConfig(text_event="text")`` it sends the non-Twilio JSON message
  ``{"event": "text", "streamSid": …, "sequenceNumber": …, "text": …}`` on the media websocket
  (for bridges that accept such a side channel), and/or it awaits the ``on_text`` hook you pass
  (to inject the text into the bridge some other way).  With neither, it raises.

Time: ``FakeCallerConfig.speed`` scales the caller's clock (media cadence, playback rate and
scripted times); 1.0 is real time, as Twilio.  All recorded times are ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ._support import Notifier, settle, twilio_sid
from .audio import STAMP_SIZE, AudioTag, TagScanner, make_time_stamp, silence, tone

__all__ = [
    "ClearRecord",
    "FakeCallerConfig",
    "FakeTwilioCaller",
    "HangUp",
    "HeardTag",
    "MarkEcho",
    "PlayedAudio",
    "ReceivedMedia",
    "ScriptStep",
    "SendDtmf",
    "Speak",
    "TypeText",
    "twilio_signature",
]

JSON = dict[str, Any]
_BYTES_PER_MS = 8  # mu-law, 8 kHz, mono
# base64 of (stamp + rest) is base64(stamp) + base64(rest) only if the stamp is whole 3-byte groups.
assert STAMP_SIZE % 3 == 0


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` for ``url`` (and POST ``params``), as Twilio computes it:
    base64(HMAC-SHA1(auth token, url + each key and value, keys sorted))."""
    payload = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _b64_tail(frame: bytes, stamped: bool) -> str:
    """The base64 of a frame after its time stamp (of all of it when frames are not stamped)."""
    return base64.b64encode(frame[STAMP_SIZE:] if stamped else frame).decode("ascii")


# --- script --------------------------------------------------------------------------------------


@attrs.frozen
class Speak:
    """At ``at_s`` (caller seconds after ``start``), speak for ``duration_s``."""

    at_s: float
    duration_s: float


@attrs.frozen
class TypeText:
    """At ``at_s``, type ``text`` (see the module docstring: needs an opt-in channel)."""

    at_s: float
    text: str


@attrs.frozen
class SendDtmf:
    """At ``at_s``, press ``digit`` (a Twilio ``dtmf`` message)."""

    at_s: float
    digit: str


@attrs.frozen
class HangUp:
    """At ``at_s``, send ``stop`` and close the socket."""

    at_s: float


ScriptStep = Speak | TypeText | SendDtmf | HangUp


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _steps(value: Iterable[ScriptStep]) -> tuple[ScriptStep, ...]:
    return tuple(value)


@attrs.frozen
class FakeCallerConfig:
    """Settings of a :class:`FakeTwilioCaller`."""

    #: ``start.customParameters`` (the TwiML ``<Parameter>`` pairs).
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict)
    #: Ids; generated Twilio-style (``MZ``/``CA``/``AC`` + 32 hex digits) when None.
    stream_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    #: Audio per inbound ``media`` message (Twilio sends 20 ms = 160 bytes).
    frame_ms: int = attrs.field(default=20, validator=_positive)
    #: Clock multiplier for media cadence, playback and script times (1.0 = real time).
    speed: float = attrs.field(default=1.0, validator=_positive)
    #: Peak level of the speech tone (fraction of full scale).
    speech_level: float = 0.3
    #: ``media.timestamp`` of the first frame (real streams start at a few tens of ms).
    first_timestamp_ms: int = 0
    #: Twilio always sends ``connected`` first; turn off to test a bridge's tolerance.
    send_connected: bool = True
    protocol_version: str = "1.0.0"
    #: Opt-in non-Twilio side channel for typed text: the ``event`` name to use (e.g. "text").
    text_event: str | None = None
    #: Extra HTTP headers on the websocket upgrade.
    extra_headers: Mapping[str, str] = attrs.field(factory=dict)
    #: If set, send ``X-Twilio-Signature`` computed with this token over ``signature_url``
    #: (default: the URL connected to).
    auth_token: str | None = None
    signature_url: str | None = None
    #: Steps run after ``start``, by time.
    script: tuple[ScriptStep, ...] = attrs.field(default=(), converter=_steps)
    seed: int | None = None
    #: Write a :func:`~realtime_fsm.testing.audio.make_time_stamp` with this source id and the
    #: time of sending over the start of every inbound frame (inaudible: silence stays silence
    #: and speech stays speech), to measure the latency of the path to the Realtime server.
    stamp_source: int | None = None
    #: Keep the audio received and played (:attr:`FakeTwilioCaller.media_received`,
    #: :attr:`~FakeTwilioCaller.played`).  Off for long runs with many calls; the tags heard
    #: and every other record are kept either way.
    record_audio: bool = True


# --- records -------------------------------------------------------------------------------------


@attrs.frozen
class ReceivedMedia:
    """An outbound ``media`` message from the bridge, as received (before playback)."""

    at: float
    payload: bytes


@attrs.frozen
class PlayedAudio:
    """A piece of audio that was played to the end (a piece cut by ``clear`` is not here)."""

    started_at: float
    ended_at: float
    data: bytes


@attrs.frozen
class MarkEcho:
    """A ``mark`` sent back to the bridge: ``cleared`` = because of a ``clear``, not played."""

    at: float
    name: str
    cleared: bool


@attrs.frozen
class ClearRecord:
    """A ``clear`` from the bridge: audio thrown away and marks released by it."""

    at: float
    flushed_bytes: int
    marks_released: tuple[str, ...]

    @property
    def flushed_ms(self) -> float:
        return self.flushed_bytes / _BYTES_PER_MS


@attrs.frozen
class HeardTag:
    """An audio tag (see :mod:`realtime_fsm.testing.audio`) found in received or played audio."""

    at: float
    tag: AudioTag


# --- the caller ----------------------------------------------------------------------------------


class FakeTwilioCaller:
    """Connects to a bridge like Twilio does and plays what the bridge sends back.

    ::

        async with FakeTwilioCaller("ws://127.0.0.1:8080/media-stream") as caller:
            await caller.wait_for_audio()          # the AI started talking
            await caller.speak(0.6)                # barge in
            ...
        # leaving the block sends ``stop`` and closes the socket

    ``on_text``: an async hook called by :meth:`type_text` (see the module docstring).
    """

    def __init__(
        self,
        url: str,
        config: FakeCallerConfig | None = None,
        *,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        on_media: Callable[[float, bytes], None] | None = None,
    ) -> None:
        self.url = url
        self.config = config or FakeCallerConfig()
        self._on_text = on_text
        #: ``on_media(monotonic, audio)`` for every ``media`` received (measurement hook).
        self._on_media_hook = on_media
        if (
            any(isinstance(step, TypeText) for step in self.config.script)
            and self.config.text_event is None
            and on_text is None
        ):
            raise ValueError(
                "the script types text, but typed text is not a Twilio feature: set "
                "FakeCallerConfig(text_event=...) or pass on_text=..."
            )
        rng = random.Random(self.config.seed)
        self.stream_sid = self.config.stream_sid or twilio_sid("MZ", rng)
        self.call_sid = self.config.call_sid or twilio_sid("CA", rng)
        self.account_sid = self.config.account_sid or twilio_sid("AC", rng)
        self._ws: ClientConnection | None = None
        #: Messages for the writer: dicts, or JSON text already serialised (media frames).
        self._out: asyncio.Queue[JSON | str | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._notifier = Notifier()
        self._seq = 0
        self._chunk = 0
        self._speech_frames = 0
        self._speech_frame = tone(self.config.frame_ms, level=self.config.speech_level)
        self._silence_frame = silence(self.config.frame_ms)
        # Each inbound frame is one of two fixed frames with a time stamp written over its start,
        # so the JSON text around the payload and the payload's base64 after the stamp are
        # computed once (media_message below), not per frame.
        stamped = self.config.stamp_source is not None
        self._b64_speech = _b64_tail(self._speech_frame, stamped)
        self._b64_silence = _b64_tail(self._silence_frame, stamped)
        self._media_tail = '"}, "streamSid": ' + json.dumps(self.stream_sid) + "}"
        # Playback: audio pieces (bytearray) and mark names (str), in arrival order.
        self._queue: deque[bytearray | str] = deque()
        self._playing: bytes | None = None
        self._wake = asyncio.Event()
        # A ``clear`` sets ``_cut`` and wakes the player through ``_cut_waiter``.
        self._cut = False
        self._cut_waiter: asyncio.Future[None] | None = None
        self._received_scanner = TagScanner()
        self._played_scanner = TagScanner()
        self._stopping = False
        self.started_at: float | None = None
        #: True once the socket is closed (by us or by the bridge).
        self.closed = False
        #: Close code seen when the socket closed (None while open).
        self.close_code: int | None = None
        self.stop_sent = False
        #: Every ``media`` message received from the bridge.
        self.media_received: list[ReceivedMedia] = []
        #: Audio that finished playing, in order.
        self.played: list[PlayedAudio] = []
        #: ``(time, name)`` of every ``mark`` received from the bridge.
        self.marks_received: list[tuple[float, str]] = []
        #: Every mark sent back, in order.
        self.marks_echoed: list[MarkEcho] = []
        #: Every ``clear`` received.
        self.clears: list[ClearRecord] = []
        #: Audio tags in received / played audio.
        self.tags_received: list[HeardTag] = []
        self.tags_played: list[HeardTag] = []
        #: Messages from the bridge that Twilio would reject or ignore, with the reason.
        self.violations: list[str] = []
        #: Non-media messages the caller sent, ``(time, message)``.
        self.sent: list[tuple[float, JSON]] = []
        self.media_sent = 0
        #: Every message the caller queued or sent (media included), and every text frame it
        #: received: the bridge's share of the traffic, for measuring work per message.
        self.messages_sent = 0
        self.messages_received = 0
        self.speech_frames_sent = 0
        #: When each burst of speech started (its first loud frame was queued), for measuring
        #: how fast a bridge reacts to barge-in (compare with :attr:`clears`).
        self.speech_started_at: list[float] = []
        self.texts_typed: list[tuple[float, str]] = []

    # -- start / stop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, send ``connected`` and ``start``, then stream media and run the script."""
        if self._ws is not None:
            return
        headers = dict(self.config.extra_headers)
        if self.config.auth_token is not None:
            signed_url = self.config.signature_url or self.url
            headers["X-Twilio-Signature"] = twilio_signature(self.config.auth_token, signed_url)
        self._ws = await connect(self.url, additional_headers=headers, max_size=16 * 1024 * 1024)
        self.started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._writer()))
        if self.config.send_connected:
            self._send(
                {"event": "connected", "protocol": "Call", "version": self.config.protocol_version},
                numbered=False,
            )
        self._send(
            {
                "event": "start",
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(self.config.custom_parameters),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )
        for coro in (self._media_loop(), self._receiver(), self._player(), self._run_script()):
            self._tasks.append(loop.create_task(coro))

    async def hang_up(self) -> None:
        """Send ``stop`` and close the socket (idempotent)."""
        if self._ws is None or self._stopping:
            await self._shutdown()
            return
        self._stopping = True
        if not self.closed:
            self._send(
                {
                    "event": "stop",
                    "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                    "streamSid": self.stream_sid,
                }
            )
            self.stop_sent = True
        self._out.put_nowait(None)  # the writer sends what is queued, then closes
        await self._shutdown()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        writer = self._tasks[0] if self._tasks else None
        if writer is not None and writer is not current:
            await asyncio.wait({writer}, timeout=2.0)  # let queued messages (stop) go out
        if self._ws is not None:
            await self._ws.close()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        others = [t for t in self._tasks if t is not current]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        self._mark_closed()

    async def __aenter__(self) -> FakeTwilioCaller:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hang_up()

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            if self._ws is not None and self.close_code is None:
                self.close_code = self._ws.close_code
        self._notifier.notify()

    # -- actions -------------------------------------------------------------------------------

    async def speak(self, duration_s: float) -> None:
        """Send loud frames instead of silence for ``duration_s`` (caller seconds); returns
        when the last of them has been sent."""
        frames = max(1, math.ceil(duration_s * 1000 / self.config.frame_ms))
        self._speech_frames += frames
        await self.wait_until(
            lambda: self._speech_frames == 0 or self.closed,
            timeout=duration_s / self.config.speed + 5.0,
            what="speech to be sent",
        )

    async def type_text(self, text: str) -> None:
        """Deliver typed text through the opt-in channel (``text_event`` and/or ``on_text``)."""
        if self.config.text_event is None and self._on_text is None:
            raise RuntimeError(
                "typed text is not a Twilio Media Streams feature: set "
                "FakeCallerConfig(text_event=...) to send it on the media websocket, or pass "
                "on_text=... to deliver it another way"
            )
        self.texts_typed.append((time.monotonic(), text))
        if self.config.text_event is not None:
            self._send(
                {"event": self.config.text_event, "streamSid": self.stream_sid, "text": text}
            )
        if self._on_text is not None:
            await self._on_text(text)
        self._notifier.notify()

    async def send_dtmf(self, digit: str) -> None:
        """Press a key: a Twilio ``dtmf`` message (track ``inbound_track``)."""
        self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    # -- what was heard ------------------------------------------------------------------------

    @property
    def received_ms(self) -> float:
        """Milliseconds of audio received from the bridge."""
        return sum(len(m.payload) for m in self.media_received) / _BYTES_PER_MS

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio played to the end."""
        return sum(len(p.data) for p in self.played) / _BYTES_PER_MS

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of audio waiting to be played (including the piece playing now)."""
        queued = sum(len(x) for x in self._queue if isinstance(x, bytearray))
        return (queued + len(self._playing or b"")) / _BYTES_PER_MS

    @property
    def is_playing(self) -> bool:
        return self._playing is not None or any(isinstance(x, bytearray) for x in self._queue)

    @property
    def pending_marks(self) -> list[str]:
        """Marks received but not echoed yet (waiting for their audio to play)."""
        return [x for x in self._queue if isinstance(x, str)]

    def tags_received_after(self, at: float, ordinal: int | None = None) -> list[HeardTag]:
        """Tags in audio received after ``at`` (optionally of one response ``ordinal``)."""
        return [
            t
            for t in self.tags_received
            if t.at > at and (ordinal is None or t.tag.ordinal == ordinal)
        ]

    def tags_played_after(self, at: float, ordinal: int | None = None) -> list[HeardTag]:
        """Tags in audio that finished playing after ``at`` (optionally of one ordinal)."""
        return [
            t
            for t in self.tags_played
            if t.at > at and (ordinal is None or t.tag.ordinal == ordinal)
        ]

    # -- waiting -------------------------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever something is recorded)."""
        await self._notifier.wait_until(predicate, timeout, what)

    async def wait_for_audio(self, min_ms: float = 20.0, timeout: float = 5.0) -> None:
        """Wait until at least ``min_ms`` more audio has been received from now."""
        target = self.received_ms + min_ms
        await self.wait_until(lambda: self.received_ms >= target, timeout, f"{min_ms:g} ms audio")

    async def wait_for_playing(self, timeout: float = 5.0) -> None:
        """Wait until audio is playing (or buffered to play)."""
        await self.wait_until(lambda: self.is_playing, timeout, "audio playing")

    async def wait_for_quiet(self, timeout: float = 5.0) -> None:
        """Wait until nothing is playing or buffered."""
        await self.wait_until(lambda: not self.is_playing, timeout, "playback to drain")

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.closed, timeout, "the socket to close")

    # -- internals -----------------------------------------------------------------------------

    def _send(self, message: JSON, *, numbered: bool = True) -> None:
        """Queue a message; sequence numbers are assigned here, so they follow wire order."""
        if self.closed:
            return
        if numbered:
            self._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self._seq), **message}
        if message["event"] != "media":
            self.sent.append((time.monotonic(), message))
        self.messages_sent += 1
        self._out.put_nowait(message)

    async def _writer(self) -> None:
        assert self._ws is not None
        while True:
            message = await self._out.get()
            if message is None:
                return
            try:
                await self._ws.send(message if isinstance(message, str) else json.dumps(message))
            except ConnectionClosed:
                self._mark_closed()
                return

    async def _send_media(self, text: str) -> None:
        """Send a media frame now if nothing is waiting for the writer, else queue it.

        With the writer's queue empty, everything queued before is already written (the
        websocket writes synchronously in ``send``; only flow control waits), so sending
        directly keeps the wire order and saves a task switch per frame.  With data still in the
        socket's buffer the frame is queued as before, so flow control never holds up the
        caller's clock."""
        ws = self._ws
        assert ws is not None
        if self._out.empty() and ws.transport.get_write_buffer_size() == 0:
            try:
                await ws.send(text)
            except ConnectionClosed:
                self._mark_closed()
        else:
            self._out.put_nowait(text)

    async def _media_loop(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        interval = config.frame_ms / 1000 / config.speed
        next_t = loop.time()
        was_speaking = False
        source = config.stamp_source
        while not self._stopping and not self.closed:
            self._chunk += 1
            speaking = self._speech_frames > 0
            payload = self._b64_speech if speaking else self._b64_silence
            if source is not None:
                stamp = make_time_stamp(source, time.monotonic_ns())
                payload = base64.b64encode(stamp).decode("ascii") + payload
            timestamp = config.first_timestamp_ms + (self._chunk - 1) * config.frame_ms
            self._seq += 1
            # Byte for byte what json.dumps gives for the media message (as _send would number
            # it), built as text: the payload and the ids need no escaping.
            await self._send_media(
                '{"event": "media", "sequenceNumber": "'
                + str(self._seq)
                + '", "media": {"track": "inbound", "chunk": "'
                + str(self._chunk)
                + '", "timestamp": "'
                + str(timestamp)
                + '", "payload": "'
                + payload
                + self._media_tail
            )
            self.media_sent += 1
            self.messages_sent += 1
            if speaking and not was_speaking:
                self.speech_started_at.append(time.monotonic())
            was_speaking = speaking
            if speaking:
                self._speech_frames -= 1
                self.speech_frames_sent += 1
                self._notifier.notify()
            next_t += interval
            await asyncio.sleep(max(0.0, next_t - loop.time()))

    async def _run_script(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for step in sorted(self.config.script, key=lambda s: s.at_s):
            await asyncio.sleep(max(0.0, t0 + step.at_s / self.config.speed - loop.time()))
            if self.closed:
                return
            if isinstance(step, Speak):
                frames = max(1, math.ceil(step.duration_s * 1000 / self.config.frame_ms))
                self._speech_frames += frames
            elif isinstance(step, TypeText):
                await self.type_text(step.text)
            elif isinstance(step, SendDtmf):
                await self.send_dtmf(step.digit)
            else:
                await self.hang_up()
                return

    async def _receiver(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self._mark_closed()

    def _violation(self, reason: str) -> None:
        self.violations.append(reason)
        self._notifier.notify()

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        self.messages_received += 1
        if isinstance(message, bytes):
            self._violation("binary frame (Twilio warning 31950: use JSON text frames)")
            return
        try:
            msg = json.loads(message)
        except ValueError:
            self._violation(f"invalid JSON (31951): {message[:80]!r}")
            return
        if not isinstance(msg, dict):
            self._violation(f"not a JSON object (31951): {message[:80]!r}")
            return
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            self._violation(f"unsupported event {event!r} (31951: only media, mark and clear)")
            return
        if msg.get("streamSid") != self.stream_sid:
            self._violation(f"{event} with streamSid {msg.get('streamSid')!r} (31951: mismatch)")
            return
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._violation("media without media.payload (31951)")
                return
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self._violation("media.payload is not base64 (31951)")
                return
            self._on_media(now, data)
        elif event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._violation("mark without mark.name (31951)")
                return
            self.marks_received.append((now, name))
            self._queue.append(name)
            self._wake.set()
        else:
            self._on_clear(now)
        self._notifier.notify()

    def _on_media(self, now: float, data: bytes) -> None:
        if self._on_media_hook is not None:
            self._on_media_hook(now, data)
        if self.config.record_audio:
            self.media_received.append(ReceivedMedia(now, data))
        for tag in self._received_scanner.feed(data):
            self.tags_received.append(HeardTag(now, tag))
        if data:
            self._queue.append(bytearray(data))
            self._wake.set()

    def _on_clear(self, now: float) -> None:
        flushed = sum(len(x) for x in self._queue if isinstance(x, bytearray))
        flushed += len(self._playing or b"")
        marks = tuple(x for x in self._queue if isinstance(x, str))
        self._queue.clear()
        self._playing = None
        self._cut = True
        if self._cut_waiter is not None:
            settle(self._cut_waiter, None)
        self._played_scanner.reset()
        self.clears.append(ClearRecord(now, flushed, marks))
        for name in marks:
            self._echo_mark(name, cleared=True)

    def _echo_mark(self, name: str, *, cleared: bool) -> None:
        self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        self.marks_echoed.append(MarkEcho(time.monotonic(), name, cleared))
        self._notifier.notify()

    async def _player(self) -> None:
        """Plays the buffer at 8 bytes/ms (scaled by ``speed``) in pieces of one frame.

        A piece counts as played when its last byte has played; a ``clear`` cuts the piece
        playing at that moment, which then counts as flushed.
        """
        loop = asyncio.get_running_loop()
        piece_bytes = self.config.frame_ms * _BYTES_PER_MS
        clock = loop.time()
        while True:
            if not self._queue:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                clock = loop.time()  # an underrun: playback restarts when audio comes
            head = self._queue[0]
            if isinstance(head, str):
                self._queue.popleft()
                self._echo_mark(head, cleared=False)
                continue
            data = bytes(head[:piece_bytes])
            del head[:piece_bytes]
            if not head:
                self._queue.popleft()
            self._playing = data
            self._cut = False
            started = time.monotonic()
            # Piece after piece on one clock, as a real player's sample clock: restarting each
            # piece from when its timer fired would drop the timer's lateness (~5% here).
            clock += len(data) / _BYTES_PER_MS / 1000 / self.config.speed
            # Wait until the piece has played or a clear cuts it (a timer and a future: cheaper
            # than wait_for, which wraps the wait in a task for every piece).
            waiter: asyncio.Future[None] = loop.create_future()
            self._cut_waiter = waiter
            timer = loop.call_at(clock, settle, waiter, None)
            try:
                await waiter
            finally:
                timer.cancel()
                self._cut_waiter = None
            if self._cut:  # cleared while playing: the piece was cut off
                clock = loop.time()
                continue
            self._playing = None
            ended = time.monotonic()
            if self.config.record_audio:
                self.played.append(PlayedAudio(started, ended, data))
            for tag in self._played_scanner.feed(data):
                self.tags_played.append(HeardTag(ended, tag))
            self._notifier.notify()
