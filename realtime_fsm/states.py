"""The states of every machine in :mod:`realtime_fsm.table`, as value types.

The rows that move between them live in the table; these enums are here so that the table
module holds only the machines and their rows (h11 keeps both in ``_state.py``; ours outgrew a
module).  Import them from either place: :mod:`realtime_fsm.table` re-exports every one.
"""

from __future__ import annotations

import enum

__all__ = ["CallState", "CreateState", "RecoveryState", "ResponseState", "TurnState"]


class ResponseState(enum.Enum):
    """States of the default-conversation response slot."""

    #: Members are singletons compared by identity: hash them by identity too, in C.  (Enum's
    #: own ``__hash__`` is a Python call, and the engine hashes the state on every trigger.)
    __hash__ = object.__hash__

    #: Nothing generating, nothing in flight: the only state that sends ``response.create``.
    IDLE = "idle"
    #: ``response.create`` sent, waiting for ``response.created`` or an error.
    CREATING = "creating"
    #: A default-conversation response is in progress.
    ACTIVE = "active"
    #: Waiting for the ``response.done`` of a response we (or server VAD) are stopping.
    CANCELLING = "cancelling"
    #: The connection is gone; the machine accepts nothing more.
    CLOSED = "closed"


class CreateState(enum.Enum):
    """The fate of our ``response.create`` on the wire (at most one at a time)."""

    #: Members are singletons compared by identity: hash them by identity too, in C.  (Enum's
    #: own ``__hash__`` is a Python call, and the engine hashes the state on every trigger.)
    __hash__ = object.__hash__

    NONE = "none"
    SENT = "sent"
    #: Sent again once, with a new event id, after the first got no answer in time.
    RESENT = "resent"
    #: Interrupted by the caller before it was answered; its requests are already given up.
    UNWANTED = "unwanted"


class TurnState(enum.Enum):
    """A committed caller turn the server's VAD is to answer by itself."""

    #: Members are singletons compared by identity: hash them by identity too, in C.  (Enum's
    #: own ``__hash__`` is a Python call, and the engine hashes the state on every trigger.)
    __hash__ = object.__hash__

    NONE = "none"
    #: Committed while the slot was busy: the server answers when it frees, or not at all.
    OWED = "owed"
    #: The slot is free: the server's answer is due within ``create_timeout``.
    DUE = "due"


class RecoveryState(enum.Enum):
    """The no-audio watchdog's cancel-then-retry-once recovery."""

    #: Members are singletons compared by identity: hash them by identity too, in C.  (Enum's
    #: own ``__hash__`` is a Python call, and the engine hashes the state on every trigger.)
    __hash__ = object.__hash__

    NONE = "none"
    #: A silent response was cancelled; its ``response.done`` comes before the retry.
    CANCELLING = "cancelling"
    #: The retry is queued, in flight or playing; its outcome ends the recovery.
    RETRYING = "retrying"


class CallState(enum.Enum):
    """The whole call's own lifecycle (:class:`realtime_fsm.call.CallSession`)."""

    __hash__ = object.__hash__

    #: The telephony socket is open; Twilio's ``start`` has not named the call yet.
    AWAITING_START = "awaiting_start"
    #: Both sides up: frames flow, the response machine runs.
    RUNNING = "running"
    #: As running; the session is old, and the driver is opening and configuring the next one.
    ROTATING = "rotating"
    #: As running; the next session is configured and takes over at a quiet moment (or, past
    #: ``rotate_quiet_window``, at a response boundary).
    READY_TO_SWITCH = "ready_to_switch"
    #: The OpenAI session was lost; the driver is opening another (no response machine).
    RECONNECTING = "reconnecting"
    #: The call is over for a stated reason; the driver is closing both sockets.
    ENDING = "ending"
    #: Closed; the report is final.
    ENDED = "ended"
