"""The response lifecycle of one realtime conversation, as four coupled state machines.

:class:`ResponseLifecycle` is the public object: events and time in, commands out.  The machines
and their rules are in :mod:`realtime_fsm.table`; this package holds the code the rules name:

* :mod:`~realtime_fsm.lifecycle.fields`: every field, with why it is there;
* :mod:`~realtime_fsm.lifecycle.ledgers`: retired ids, the create on the wire, the cut plan;
* :mod:`~realtime_fsm.lifecycle.guards`: the guards, in table order;
* :mod:`~realtime_fsm.lifecycle.stopping`: the slot's barge-in and timer actions;
* :mod:`~realtime_fsm.lifecycle.slot_actions`: the slot machine's other actions and entry hooks;
* :mod:`~realtime_fsm.lifecycle.machine_actions`: the create, turn and recovery machines' actions;
* :mod:`~realtime_fsm.lifecycle.machine`: the public API, dispatch and the per-frame fast paths;
* :mod:`~realtime_fsm.lifecycle.handover`: what a lost session's machine hands to the next.
"""

from __future__ import annotations

from .fields import log
from .guards import BUSY_CODE, CANCEL_NOT_ACTIVE_CODE
from .handover import Handover
from .ledgers import (
    PLAYBACK_MAX as _PLAYBACK_MAX,
)
from .ledgers import (
    RETIRED_MAX as _RETIRED_MAX,
)
from .ledgers import (
    RETRY_REASON,
    USER_TEXT_REASON,
    USER_TURN_REASON,
    Inflight,
)
from .ledgers import (
    RecentIds as _RecentIds,
)
from .machine import ResponseLifecycle

__all__ = [
    "BUSY_CODE",
    "CANCEL_NOT_ACTIVE_CODE",
    "Handover",
    "RETRY_REASON",
    "USER_TEXT_REASON",
    "USER_TURN_REASON",
    "Inflight",
    "ResponseLifecycle",
    "_PLAYBACK_MAX",
    "_RETIRED_MAX",
    "_RecentIds",
    "log",
]
