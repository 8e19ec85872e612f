"""A bounded text record of one conversation, for restoring it on a new Realtime session.

A Realtime session holds the conversation server-side; when the socket drops or the session hits
its 60-minute cap, that state is gone.  What a bridge still knows is *text*: the user texts it
delivered, the caller's input transcripts and the transcripts of the assistant's finished
responses.  Replayed as ``conversation.item.create`` items on a fresh session, they give the model
back the thread of the call.  Audio is not kept: it is large, and the transcripts carry what the
model needs to go on.

Bounded twice, so a long call cannot grow memory and a restore cannot flood the new session: at
most ``max_items`` items and ``max_chars`` characters in total, the oldest items dropped first (the
recent turns matter most for continuing the call).  One item longer than ``max_chars`` on its own
keeps its first ``max_chars`` characters.  Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Literal

import attrs

Role = Literal["user", "assistant"]


@attrs.frozen
class HistoryItem:
    """One message of the conversation as text: ``user`` (typed text or what the caller said)
    or ``assistant`` (the transcript of a finished response)."""

    role: Role
    text: str


class ConversationHistory:
    """The most recent messages of a call, oldest first, within ``max_items`` / ``max_chars``."""

    __slots__ = ("_chars", "_items", "dropped", "max_chars", "max_items")

    def __init__(self, max_items: int = 40, max_chars: int = 8000) -> None:
        if type(max_items) is not int or max_items < 0:
            raise ValueError(f"max_items must be an int >= 0, got {max_items!r}")
        if type(max_chars) is not int or max_chars < 0:
            raise ValueError(f"max_chars must be an int >= 0, got {max_chars!r}")
        self.max_items = max_items
        self.max_chars = max_chars
        self._items: deque[HistoryItem] = deque()
        self._chars = 0
        #: Items pushed out by the bounds (or refused: empty bounds), for logs and metrics.
        self.dropped = 0

    def add(self, role: Role, text: str) -> None:
        """Record one message; blank text is ignored (nothing for the model to read)."""
        if role != "user" and role != "assistant":
            raise ValueError(f"role must be 'user' or 'assistant', got {role!r}")
        text = text.strip()
        if not text:
            return
        if self.max_items == 0 or self.max_chars == 0:
            self.dropped += 1
            return
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
        self._items.append(HistoryItem(role, text))
        self._chars += len(text)
        while len(self._items) > self.max_items or self._chars > self.max_chars:
            self._chars -= len(self._items.popleft().text)
            self.dropped += 1

    def items(self) -> tuple[HistoryItem, ...]:
        """The kept messages, oldest first."""
        return tuple(self._items)

    @property
    def latest(self) -> HistoryItem | None:
        """The newest kept message, if any."""
        return self._items[-1] if self._items else None

    @property
    def chars(self) -> int:
        """Characters held, in total."""
        return self._chars

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[HistoryItem]:
        return iter(tuple(self._items))


__all__ = ["ConversationHistory", "HistoryItem", "Role"]
