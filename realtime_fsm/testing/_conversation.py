"""Conversation state shared by the fake Realtime server's modules.

Kept apart from :mod:`realtime_fsm.testing.fake_realtime` so that the modules it delegates to
(:mod:`realtime_fsm.testing.fake_tools`) can raise the server's errors and add conversation
items without importing the server module, which imports them.
"""

from __future__ import annotations

from typing import Any

import attrs

JSON = dict[str, Any]


class ProtocolError(Exception):
    """A client event the real server would reject; becomes an ``error`` event."""

    def __init__(
        self, code: str | None, message: str, param: str | None = None, etype: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.etype = etype or "invalid_request_error"


@attrs.define(eq=False)
class Item:
    """One conversation item, with the audio the server sent for it (for truncate checks)."""

    id: str
    item: JSON
    audio_bytes: int = 0
    bytes_per_ms: int = 8
    #: Model output audio: the only kind of item ``conversation.item.truncate`` accepts.
    assistant_audio: bool = False
    #: Caller audio committed into a user item (its input tokens, see ``_realtime_usage``).
    input_audio_ms: int = 0
