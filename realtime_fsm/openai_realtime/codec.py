"""The codec: one Realtime connection's translator, :class:`OpenAIRealtimeCodec`.

The pure functions of :mod:`~realtime_fsm.openai_realtime.parsing`,
:mod:`~realtime_fsm.openai_realtime.rendering` and :mod:`~realtime_fsm.openai_realtime.session`
bound to what a connection fixes (its :class:`~realtime_fsm.openai_realtime.messages.Dialect`,
frame limit and response modalities), plus the one piece of state they lack: the bounded count
of unknown server event types, logged once each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Literal

from ..logsafe import safe
from .messages import ClientCommand, Dialect, Ignored, ServerMessage
from .parsing import DEFAULT_MAX_FRAME_SIZE, parse_server_event
from .rendering import _modalities, dumps, render_command, render_message_item
from .session import SessionConfig, render_session_update

log = logging.getLogger("realtime_fsm.openai_realtime")

#: How many distinct unknown event types a codec counts by name; the rest share one bucket, so a
#: misbehaving server cannot grow the table without bound.
MAX_UNKNOWN_TYPES: Final = 256
#: The bucket unknown types go to once :data:`MAX_UNKNOWN_TYPES` names are tracked.
OTHER_UNKNOWN: Final = "<other>"


class OpenAIRealtimeCodec:
    """One Realtime connection's translator: the pure functions of this package plus the two
    things that need state, the chosen :class:`Dialect` and the count of unknown event types.

    An unknown type is logged once (at WARNING, with the call id) and counted every time, so a
    new server event shows up in logs without flooding them; :attr:`unknown_types` is there for
    metrics.  One codec per connection; not thread-safe (one task owns it)."""

    __slots__ = ("_call_id", "_dialect", "_max_frame_size", "_modalities", "unknown_types")

    def __init__(
        self,
        *,
        dialect: Dialect = Dialect.GA,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        response_modalities: Sequence[str] | None = None,
        call_id: str = "-",
    ) -> None:
        if not isinstance(dialect, Dialect):
            raise TypeError(f"dialect must be a Dialect, got {dialect!r}")
        if type(max_frame_size) is not int or max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be a positive int, got {max_frame_size!r}")
        self._dialect = dialect
        self._max_frame_size = max_frame_size
        self._modalities = tuple(response_modalities) if response_modalities else None
        if self._modalities is not None:
            _modalities(self._modalities, dialect)  # refuse a bad value now, not per response
        self._call_id = call_id
        #: Unknown event type -> how many times it was seen (bounded, see MAX_UNKNOWN_TYPES).
        self.unknown_types: dict[str, int] = {}

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def max_frame_size(self) -> int:
        return self._max_frame_size

    def parse(self, frame: str | bytes | bytearray) -> ServerMessage:
        """:func:`parse_server_event`, counting and logging (once) unknown types."""
        message = parse_server_event(frame, max_frame_size=self._max_frame_size)
        if type(message) is Ignored and not message.known:
            self._note_unknown(message.event_type)
        return message

    def _note_unknown(self, event_type: str) -> None:
        counts = self.unknown_types
        key = event_type
        if key not in counts and len(counts) >= MAX_UNKNOWN_TYPES:
            key = OTHER_UNKNOWN
        seen = counts.get(key, 0)
        counts[key] = seen + 1
        if seen == 0:
            log.warning(
                "call=%s unknown OpenAI Realtime event type '%s' ignored (logged once per type)",
                self._call_id,
                safe(event_type, 100),
            )

    def render(self, command: ClientCommand) -> dict[str, Any]:
        """:func:`render_command` in this codec's dialect."""
        return render_command(command, dialect=self._dialect, response_modalities=self._modalities)

    def render_json(self, command: ClientCommand) -> str:
        return dumps(self.render(command))

    def message_item(
        self, role: Literal["user", "assistant"], text: str, *, event_id: str | None = None
    ) -> dict[str, Any]:
        """:func:`render_message_item` in this codec's dialect."""
        return render_message_item(role, text, dialect=self._dialect, event_id=event_id)

    def session_update(
        self, config: SessionConfig, *, event_id: str | None = None
    ) -> dict[str, Any]:
        """:func:`render_session_update` in this codec's dialect."""
        return render_session_update(config, dialect=self._dialect, event_id=event_id)
