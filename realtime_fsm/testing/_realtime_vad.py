"""The input side of a fake Realtime connection: the input audio buffer, server VAD, the idle
timeout, commits and input transcription.

Everything here runs on the *audio timeline* (milliseconds of audio appended), like the real
server's detector, so a test can append a second of speech at once:

* a 10 ms frame is speech when its RMS level reaches the session's speech level
  (``FakeRealtimeConfig.vad_energy_threshold`` moved by the session's ``threshold``: "A higher
  threshold will require louder audio to activate the model");
* ``input_audio_buffer.speech_started`` carries ``audio_start_ms`` = the first speech frame
  minus ``prefix_padding_ms`` ("Amount of audio to include before the VAD detected speech");
* ``speech_stopped`` comes after ``silence_duration_ms`` of silence (``audio_end_ms`` includes
  it), then the commit and, with ``create_response``, a response;
* ``idle_timeout_ms`` (``server_vad`` only): once a default-conversation response is done, its
  playback is estimated to end its audio's length later (the docstring: "the ``response.done``
  time plus audio playback duration"); after ``idle_timeout_ms`` more of audio with no speech
  the server sends ``input_audio_buffer.timeout_triggered`` (``audio_start_ms`` = that
  playback end, ``audio_end_ms`` = now), commits the silent audio as a user item and creates a
  response itself (origin ``idle_timeout``).  Speech, or any new response, disarms it.  Being
  on the audio timeline, it fires only for a client that keeps sending audio, as a phone bridge
  does.

Input transcription: ``whisper-1`` sends only ``...input_audio_transcription.completed``; the
streaming models (``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``gpt-transcribe``,
``gpt-realtime-whisper``...) first send the transcript word by word as
``...input_audio_transcription.delta`` events, spread over ``transcription_delay_s``.  The
``completed`` event's ``usage`` is a duration for the models billed by audio length
(``whisper-1``, ``gpt-realtime-whisper``) and tokens for the others.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import time

from ._conversation import JSON
from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_responses import _ResponseHandling
from ._realtime_usage import INPUT_AUDIO_MS_PER_TOKEN, text_tokens
from ._support import openai_id
from .audio import alaw_decode, bytes_per_ms, mulaw_rms_level, pcm16_decode, rms_level

_WORD_RE = re.compile(r"\S+\s*|\s+")


class _InputAudio(_ResponseHandling):
    """``input_audio_buffer.*`` and what the server does on its own from the caller's audio."""

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
        speech = self._session.speech_level(self._server.config.vad_energy_threshold)
        for start in range(0, usable, frame):
            chunk = buf[start : start + frame]
            if fmt == "g711_ulaw":
                level = mulaw_rms_level(chunk)
            elif fmt == "g711_alaw":
                level = rms_level(alaw_decode(chunk))
            else:
                level = rms_level(pcm16_decode(chunk))
            self._vad_frame(level >= speech)

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
        elif self._idle_from_ms is not None:
            self._check_idle()

    def _speech_started(self, frame_start: int) -> None:
        self._speaking = True
        self._idle_from_ms = None
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

    def _check_idle(self) -> None:
        """Fire ``idle_timeout_ms`` once that much silence follows the estimated playback end."""
        start = self._idle_from_ms
        timeout = self._session.idle_timeout_ms
        if start is None or timeout is None or self._active is not None:
            return
        if self._audio_ms - start < timeout:
            return
        self._idle_from_ms = None
        item_id = openai_id("item", self._server.rng)
        self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start,
                "audio_end_ms": self._audio_ms,
                "item_id": item_id,
            }
        )
        # "The empty audio will be committed to the conversation as an input_audio item ...
        # and a model response will be generated."  Silence says nothing: no transcript is
        # taken from the queue.
        self._commit(item_id, self._audio_ms - start, text="")
        self._start_response(origin="idle_timeout", params={}, client_event_id=None)

    def _commit(self, item_id: str, audio_ms: int, text: str | None = None) -> None:
        """Commit the buffer as user item ``item_id``; ``text``: what it says (``None``: the
        next queued transcript)."""
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
        self._items[item_id] = _Item(id=item_id, item=item, input_audio_ms=max(audio_ms, 0))
        self._emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        # What the caller said is fixed at the commit (the model hears the audio, not the
        # transcript), so a tool rule can match the turn the VAD response answers.
        if text is None:
            text = self._server._next_transcript()
            self._server._tools.note_user_input(self.index, text)
        if self._session.transcription is not None:
            self._spawn(self._transcribe(item_id, audio_ms, text))

    async def _transcribe(self, item_id: str, audio_ms: int, text: str) -> None:
        delay = self._server.config.transcription_delay_s
        words = _WORD_RE.findall(text) if self._session.transcription_streams else []
        step = delay / (len(words) + 1)
        for word in words:
            await asyncio.sleep(step)
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": word,
                }
            )
            self._server._notifier.notify()
        await asyncio.sleep(step if words else delay)
        if text:
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
                "usage": self._transcription_usage(audio_ms, text),
            }
        )
        self._server._notifier.notify()

    def _transcription_usage(self, audio_ms: int, text: str) -> JSON:
        """Duration for the models billed by audio length, tokens for the others."""
        if self._session.transcription_billed_by_duration:
            return {"type": "duration", "seconds": round(max(audio_ms, 0) / 1000, 3)}
        audio = math.ceil(max(audio_ms, 0) / INPUT_AUDIO_MS_PER_TOKEN)
        out = text_tokens(text)
        return {
            "type": "tokens",
            "input_tokens": audio,
            "output_tokens": out,
            "total_tokens": audio + out,
            "input_token_details": {"audio_tokens": audio, "text_tokens": 0},
        }

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
