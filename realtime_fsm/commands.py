"""Outputs of the response-lifecycle machine: what the driver must do, in order.

Commands are protocol-neutral.  The OpenAI adapter renders the ``Send*`` ones as client events;
the telephony adapter acts on ``ClearPlayback``; the bridge honours ``DropResponseAudio``; the
application receives ``RequestGivenUp`` and ``ReturnUndeliveredText``.  Every command that becomes
a client event carries the ``event_id`` the machine will later match an ``error`` against.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs


def _ro(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class SendResponseCreate:
    """Send ``response.create``.  ``metadata`` already holds the correlation keys
    (:data:`META_EVENT_ID`, :data:`META_REASON`) so ``response.created`` can be matched to it."""

    event_id: str
    reason: str
    instructions: str | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_ro)
    out_of_band: bool = False


@attrs.frozen
class SendResponseCancel:
    """Send ``response.cancel`` for exactly this response.

    ``response_id`` is ``None`` only when the server reported a busy response whose id could not
    be read; the id-less cancel then targets the default conversation's response, which is it."""

    event_id: str
    response_id: str | None


@attrs.frozen
class SendUserText:
    """Send ``conversation.item.create`` with a user ``input_text`` message."""

    event_id: str
    text: str
    source: str = "typed"


@attrs.frozen
class SendTruncate:
    """Send ``conversation.item.truncate`` (content_index 0) at what the caller really heard."""

    event_id: str
    item_id: str
    audio_end_ms: int
    #: How much of the item's audio the machine had received: what the truncate cuts is the
    #: difference.  For observers only (not rendered, not compared).
    received_ms: int = attrs.field(default=0, eq=False, kw_only=True)


@attrs.frozen
class SendItemDelete:
    """Send ``conversation.item.delete`` for an assistant audio item the caller never heard a
    millisecond of (the server rejects a truncate at 0 ms)."""

    event_id: str
    item_id: str
    #: How much of the item's audio the machine had received (for observers only).
    received_ms: int = attrs.field(default=0, eq=False, kw_only=True)


@attrs.frozen
class ClearPlayback:
    """Flush audio buffered at the telephony side (Twilio ``clear``)."""

    reason: str


@attrs.frozen
class DropResponseAudio:
    """From now on, audio of this response must not reach the caller."""

    response_id: str


@attrs.frozen
class RequestGivenUp:
    """A response request that will not be served, and why (timeout, server rejection, close)."""

    reason: str
    request_reasons: tuple[str, ...] = ()
    event_id: str | None = None


@attrs.frozen
class ReturnUndeliveredText:
    """On close: user texts that never reached the server, in order, for the app to keep."""

    texts: tuple[str, ...]


Command = (
    SendResponseCreate
    | SendResponseCancel
    | SendUserText
    | SendTruncate
    | SendItemDelete
    | ClearPlayback
    | DropResponseAudio
    | RequestGivenUp
    | ReturnUndeliveredText
)

#: Metadata key carrying the ``event_id`` of the ``response.create`` that asked for a response.
META_EVENT_ID = "rtfsm_event_id"
#: Metadata key carrying why the response was requested (``app``, ``user_text``, ...).
META_REASON = "rtfsm_reason"

__all__ = [
    "META_EVENT_ID",
    "META_REASON",
    "ClearPlayback",
    "Command",
    "DropResponseAudio",
    "RequestGivenUp",
    "ReturnUndeliveredText",
    "SendItemDelete",
    "SendResponseCancel",
    "SendResponseCreate",
    "SendTruncate",
    "SendUserText",
]
