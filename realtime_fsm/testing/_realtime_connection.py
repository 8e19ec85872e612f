"""The fake Realtime connection: receiving client events, ``session.update`` and conversation
items (the input audio buffer and VAD are in :mod:`._realtime_vad`, responses in
:mod:`._realtime_responses`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._conversation import JSON
from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_session import apply_update
from ._realtime_types import _CLIENT_EVENT_TYPES
from ._realtime_vad import _InputAudio
from ._support import openai_id
from .fake_tools import accept_output


class FakeRealtimeConnection(_InputAudio):
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
        apply_update(new, raw, voice_locked=self._voice_locked)
        self._session = new
        self._emit({"type": "session.updated", "session": new.render()})

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
