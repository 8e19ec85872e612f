"""What one session's machine hands to the next when the OpenAI session is lost mid-call.

A lost session takes its response slot with it, but not the call: the requests it had not
served, the user texts it held for a barge-in and the no-audio watchdog's last fire belong to
the call.  :meth:`ResponseLifecycle.hand_over` closes the old machine and returns them as one
:class:`Handover` value; :meth:`ResponseLifecycle.resume` is the only way a fresh machine takes
requests carried from elsewhere.  Nobody outside the machine writes its fields (``pending``,
``watchdog_last_fire``): the two operations are the whole contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from .. import events as ev
from ..table import ResponseState


def _ro(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Handover:
    """A closed machine's estate, oldest first everywhere."""

    #: The slot's state when the session was lost (``active``: an answer was cut off).
    state: ResponseState
    #: Requests not yet served: the create on the wire (unless the caller interrupted it: its
    #: requests were reported given up then), then the queue.
    queued: tuple[ev.RequestResponse, ...]
    #: The requests the response in play served, when it was ours and still ``active``: what
    #: a new session must be asked again to retell it.
    served: tuple[ev.RequestResponse, ...]
    #: User texts held for a barge-in, never sent.
    held_texts: tuple[ev.UserText, ...]
    #: The server's VAD owed an answer to a committed turn and had not begun it.
    awaiting_server_response: bool
    #: The watchdog's cooldown is per call, not per session.
    watchdog_last_fire: float | None
    stats: Mapping[str, int] = attrs.field(converter=_ro)
