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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ._support import Notifier, twilio_sid
from ._twilio_config import FakeCallerConfig, HangUp, ScriptStep, SendDtmf, Speak, TypeText
from ._twilio_playback import TwilioPlayback
from ._twilio_records import (
    BYTES_PER_MS,
    ClearRecord,
    HeardTag,
    MarkEcho,
    PlayedAudio,
    ReceivedMedia,
)
from .audio import STAMP_SIZE, TagScanner, make_time_stamp, silence, tone

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
        # Twilio's playback rules: what the bridge sends is buffered and played in real time.
        self._playback = TwilioPlayback(
            frame_ms=self.config.frame_ms,
            speed=self.config.speed,
            record_audio=self.config.record_audio,
            echo=self._send_mark_echo,
            notify=self._notifier.notify,
        )
        self._received_scanner = TagScanner()
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
        self.played: list[PlayedAudio] = self._playback.played
        #: ``(time, name)`` of every ``mark`` received from the bridge.
        self.marks_received: list[tuple[float, str]] = []
        #: Every mark sent back, in order.
        self.marks_echoed: list[MarkEcho] = self._playback.marks_echoed
        #: Every ``clear`` received.
        self.clears: list[ClearRecord] = self._playback.clears
        #: Audio tags in received / played audio.
        self.tags_received: list[HeardTag] = []
        self.tags_played: list[HeardTag] = self._playback.tags_played
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
        tasks = (self._media_loop(), self._receiver(), self._playback.run(), self._run_script())
        for coro in tasks:
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
        return sum(len(m.payload) for m in self.media_received) / BYTES_PER_MS

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio played to the end."""
        return sum(len(p.data) for p in self.played) / BYTES_PER_MS

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of audio waiting to be played (including the piece playing now)."""
        return self._playback.buffered_ms

    @property
    def is_playing(self) -> bool:
        return self._playback.is_playing

    @property
    def pending_marks(self) -> list[str]:
        """Marks received but not echoed yet (waiting for their audio to play)."""
        return self._playback.pending_marks

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
            self._playback.add_mark(name)
        else:
            self._playback.clear(now)
        self._notifier.notify()

    def _on_media(self, now: float, data: bytes) -> None:
        if self._on_media_hook is not None:
            self._on_media_hook(now, data)
        if self.config.record_audio:
            self.media_received.append(ReceivedMedia(now, data))
        for tag in self._received_scanner.feed(data):
            self.tags_received.append(HeardTag(now, tag))
        self._playback.add_audio(data)

    def _send_mark_echo(self, name: str) -> None:
        """Twilio's echo of a mark (played, or released by a ``clear``)."""
        self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
