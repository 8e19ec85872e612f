"""Label values for metrics: a few known words per label, never free text.

A metric's label values must be a small, fixed set: every distinct value is a time series a
Prometheus server keeps.  The call's reasons are free text (``openai session lost (openai
closed) after 3 reconnects``, an application's own ``end_call`` reason), and error codes come
from a peer, so each is mapped here to one of a few words; spans keep the full text.
"""

from __future__ import annotations

import re
from typing import Final

#: End reasons, by how they begin (the call layer's own wording), and the word counted.
_END_KINDS: Final = (
    ("telephony stop", "telephony_stop"),
    ("telephony closed before start", "no_start"),
    ("telephony stopped before start", "no_start"),
    ("no start from telephony", "no_start"),
    ("telephony closed", "telephony_closed"),
    ("bad ", "bad_input"),
    ("openai reconnect", "openai_lost"),
    ("openai session lost", "openai_lost"),
    ("openai error", "openai_error"),
    ("openai refused", "openai_error"),
    ("openai session audio", "openai_error"),
    ("realtime server unreachable", "upstream_unreachable"),
    ("internal error", "internal_error"),
    ("openai socket not keeping up", "backpressure"),
    ("telephony socket not keeping up", "backpressure"),
)
#: End kinds that mean something went wrong on our side or upstream (the call span's status).
ERROR_END_KINDS: Final = frozenset(
    {"openai_lost", "openai_error", "upstream_unreachable", "internal_error", "backpressure"}
)
#: Response statuses the API defines (``response.done``); anything else counts as ``other``.
RESPONSE_STATUSES: Final = frozenset({"completed", "cancelled", "incomplete", "failed"})
#: What a given-up request's reason begins with (``rejected:<code>``, ``closed:<why>``).
GIVEN_UP_KINDS: Final = frozenset(
    {"create_timeout", "rejected", "interrupted", "closed", "reconnecting"}
)
_CODE: Final = re.compile(r"[a-z0-9_.]{1,48}").fullmatch


def end_kind(reason: str) -> str:
    """The word an end reason is counted under: ``ended`` (the driver's own), one of the
    library's kinds, or ``application`` (an ``end_call`` reason of the application's)."""
    if reason == "ended":
        return "ended"
    for prefix, kind in _END_KINDS:
        if reason.startswith(prefix):
            return kind
    return "application"


def response_status(status: str) -> str:
    return status if status in RESPONSE_STATUSES else "other"


def given_up_kind(reason: str) -> str:
    """``rejected:conversation_already_has_active_response`` -> ``rejected``."""
    head = reason.split(":", 1)[0].strip()
    return head if head in GIVEN_UP_KINDS else "other"


def session_loss_kind(reason: str) -> str:
    """Why a session was lost, in a word: the server's error code (``session_expired``),
    ``closed`` (its socket closed) or ``other``."""
    if reason.startswith("openai error "):
        return code(reason.removeprefix("openai error "))
    return "closed" if "closed" in reason else "other"


def code(value: str | None) -> str:
    """An error code as a label: a server's own code when it looks like one (lower case,
    digits, ``_``, ``.``; at most 48 characters), ``none`` when there is none, else
    ``other``.  The number of distinct codes is bounded again where they are counted."""
    if not value:
        return "none"
    return value if _CODE(value) else "other"
