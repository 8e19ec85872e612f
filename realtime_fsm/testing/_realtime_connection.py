"""The fake Realtime connection: receiving client events, ``session.update``, the input audio
buffer and server VAD, conversation items."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._conversation import JSON
from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_responses import _ResponseHandling
from ._realtime_session import (
    _BETA_ONLY_SESSION_KEYS,
    _GA_ONLY_SESSION_KEYS,
    _parse_beta_format,
    _parse_ga_format,
    _parse_turn_detection,
    _Session,
)
from ._realtime_types import _CLIENT_EVENT_TYPES
from ._support import openai_id
from .audio import (
    alaw_decode,
    bytes_per_ms,
    mulaw_rms_level,
    pcm16_decode,
    rms_level,
)
from .fake_tools import (
    accept_output,
)


class FakeRealtimeConnection(_ResponseHandling):
    """One client connection (one Realtime session).  Created by :class:`FakeRealtimeServer`.

    All protocol handling is synchronous per received event, so the state a test observes and
    the order of events on the wire always agree.  Per-response streaming runs in tasks.
    """

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
