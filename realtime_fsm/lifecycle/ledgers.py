"""The lifecycle's ledgers: what it remembers that is not a state of any machine.

A ledger is data with no states of its own beyond its contents: the ids of retired responses,
our create on the wire, and the playback ledger of what the caller has heard.  Guards read them
(``is_retired_response``, ``is_our_inflight``, ``caller_hearing_audio``); only actions write them.
"""

from __future__ import annotations

from array import array
from typing import Final

from .. import events as ev

#: How many finished or dropped response ids are remembered to recognise their late events.
RETIRED_MAX: Final = 64
#: How many assistant audio items with unheard audio are tracked (oldest are forgotten).
PLAYBACK_MAX: Final = 16
#: How many output items of one response are tracked (oldest are forgotten).
ITEMS_MAX: Final = 64
#: Flags of an output item of the current response (``LifecycleFields._items``): it got audio
#: (the caller may have heard some), its ``response.output_item.done`` came, it is a
#: ``function_call``, it is an assistant ``message``.
ITEM_AUDIO: Final = 1
ITEM_DONE: Final = 2
ITEM_CALL: Final = 4
ITEM_MESSAGE: Final = 8
#: How many given-up creates are remembered (to cancel a late response to one of them).
GIVEN_UP_MAX: Final = 64
#: The request reason of the one retry the no-audio watchdog makes.
RETRY_REASON: Final = "no_audio_retry"
#: The request reason used for held user text.
USER_TEXT_REASON: Final = "user_text"
#: The request reason of an answer to a committed caller turn that the server will not create
#: itself (turn detection without ``create_response``, a turn the server left unanswered, or a
#: session lost before it did).
USER_TURN_REASON: Final = "user_turn"

_WHY: Final = ("", "done", "dropped", "superseded", "abandoned")


class RecentIds:
    """The last ``size`` response ids retired, and why, in ~10 bytes each.

    A long call retires a response every few seconds; remembering each id as a string in a dict
    cost ~140 B per id (9 KB per call after 64 responses).  Here an id is its 64-bit ``hash``
    (cached on the ``str``, so free to compute) in a fixed ring plus a one-byte reason code.  A
    false match needs a 64-bit collision with one of 64 ids: about 1 in 3e17 per lookup.  Like
    a dict, re-retiring an id updates its reason in place and the oldest *first* retirement is
    forgotten first."""

    __slots__ = ("_hashes", "_next", "_why")

    def __init__(self, size: int) -> None:
        self._hashes = array("q", bytes(8 * size))
        self._why = bytearray(size)
        self._next = 0

    @property
    def capacity(self) -> int:
        return len(self._why)

    def __contains__(self, key: str) -> bool:
        return (hash(key) or 1) in self._hashes

    def why(self, key: str) -> str | None:
        """The latest reason ``key`` was retired for, or ``None`` if it is not remembered."""
        try:
            return _WHY[self._why[self._hashes.index(hash(key) or 1)]]
        except ValueError:
            return None

    def add(self, key: str, why: str) -> None:
        h = hash(key) or 1  # 0 marks an empty slot
        code = _WHY.index(why)
        hashes = self._hashes
        try:
            self._why[hashes.index(h)] = code
            return
        except ValueError:
            pass
        i = self._next
        hashes[i] = h
        self._why[i] = code
        self._next = (i + 1) % len(hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecentIds):
            return NotImplemented
        return (self._hashes, self._why, self._next) == (other._hashes, other._why, other._next)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<RecentIds {sum(1 for h in self._hashes if h)}/{len(self._hashes)}>"


#: Shared by every machine until its first response is retired (fresh calls stay small).
NO_RECENT_IDS: Final = RecentIds(0)


class Inflight:
    """Our ``response.create`` on the wire, whose answer (created or rejected) is unknown yet.

    The create machine's state says what becomes of it; this is its data: the event id the
    server echoes back (in ``response.created`` metadata, in ``error.event_id``), the requests
    it serves (none once the caller interrupted it: they were reported given up then), and when
    it was sent."""

    __slots__ = ("event_id", "is_retry", "requests", "sent_at")

    def __init__(
        self, event_id: str, requests: tuple[ev.RequestResponse, ...], sent_at: float
    ) -> None:
        self.event_id = event_id
        self.requests = requests
        self.sent_at = sent_at
        self.is_retry = any(r.reason == RETRY_REASON for r in requests)

    def reasons(self) -> tuple[str, ...]:
        return tuple(r.reason for r in self.requests)


def cut_plan(
    play: dict[str, list[int]], bytes_per_ms: int, live_item: str | None
) -> list[tuple[str, int]]:
    """What a barge-in cuts from the conversation: ``(item_id, audio_end_ms)`` per item, in
    order; ``0`` means delete (the server rejects a truncate at 0 ms).

    An item the caller heard in full needs nothing, unless it is the *live* item (its response
    is still generating): the server has made audio past what reached us, so it is truncated at
    what we received, the clamp that keeps a truncate within the audio the caller could hear.
    Otherwise the cut is ``min(played, received)``, floored to whole ms."""
    plan: list[tuple[str, int]] = []
    for item_id, (received, played) in play.items():
        if played * bytes_per_ms >= received and item_id != live_item:
            continue  # fully heard: nothing to cut
        plan.append((item_id, min(played, received // bytes_per_ms)))
    return plan
