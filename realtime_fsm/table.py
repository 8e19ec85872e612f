"""The response-lifecycle transition table: every rule of the machine, in one place.

Theory of operation
-------------------
One realtime conversation has one *slot* for a default-conversation response (the server
allows one at a time).  The slot is in one of four states; ``closed`` is terminal:

``idle``
    No known response and no ``response.create`` in flight.  The only state a create leaves.
``creating``
    A ``response.create`` is in flight (``inflight``): neither ``response.created`` nor an error
    has been seen for it yet.
``active``
    A default-conversation response is generating (``response_id``; ``None`` only when the
    server named a busy response we could not parse).  A create of ours may still be in flight
    when a server-created response (VAD, idle timeout) beat it: that create is expected to be
    rejected and is re-queued when it is.
``cancelling``
    We asked for the response to stop (or the server's VAD will stop it) and are waiting for
    its ``response.done``.  ``response_id`` is ``None`` when the barge-in came before
    ``response.created``: the response is cancelled by id the moment it is created.

Each row below is ``(trigger, source, dest, conditions, unless, before)``.  Rows for the same
trigger and source are tried top to bottom; the first whose guards pass runs.  ``dest=None`` is
an internal transition (the state stays, the actions run).  Actions run *before* the state
changes, so they still see the response they act on; the ``on_enter`` cleanup of the new state
runs after them and can therefore never be undone by an action.  Guards and actions are the names of
methods of :class:`realtime_fsm.lifecycle.ResponseLifecycle`; they only read the model and
append commands, never trigger, so one event is one transition.

Work that is not a state change of the slot stays off the trigger path on purpose: audio and
transcript deltas and playback marks are counters updated by plain methods (tens of them per
second per call), and draining the queue after a transition is a second, explicit ``drain``
trigger fired by the machine's ``handle``.

This module imports nothing of the package but the state names, so the table can be read,
checked and drawn without the machine.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, TypedDict

from .engine import FrozenTableMachine

# An application logging at INFO would otherwise make every trigger about 3x slower and flood
# its log with the engine's own lines (transitions-performance.md, "Logging trap").
logging.getLogger("transitions").setLevel(logging.WARNING)


class ResponseState(enum.Enum):
    """States of the default-conversation response slot."""

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


IDLE = ResponseState.IDLE
CREATING = ResponseState.CREATING
ACTIVE = ResponseState.ACTIVE
CANCELLING = ResponseState.CANCELLING
CLOSED = ResponseState.CLOSED
OPEN = [IDLE, CREATING, ACTIVE, CANCELLING]
BUSY = [CREATING, ACTIVE, CANCELLING]


class Row(TypedDict):
    trigger: str
    source: list[ResponseState]
    dest: ResponseState | None
    conditions: list[str]
    unless: list[str]
    before: list[str]


def _row(
    trigger: str,
    source: ResponseState | list[ResponseState],
    dest: ResponseState | None,
    *,
    when: tuple[str, ...] = (),
    unless: tuple[str, ...] = (),
    do: tuple[str, ...] = (),
) -> Row:
    return Row(
        trigger=trigger,
        source=source if isinstance(source, list) else [source],
        dest=dest,
        conditions=list(when),
        unless=list(unless),
        before=list(do),
    )


# fmt: off
TRANSITIONS: list[Row] = [
    # --- Rule 1: single active response.  A create only ever leaves idle; elsewhere it queues.
    # When the server's VAD will create the response for a committed turn, a create of ours
    # would only race it: requests wait (queued) until that response shows up or is overdue.
    _row("request",  IDLE,  CREATING, unless=("awaiting_server_response",),
         do=("enqueue_request", "send_create")),
    _row("request",  OPEN,  None,     do=("enqueue_request",)),
    _row("turn_committed", IDLE, CREATING, unless=("server_creates",),
         do=("enqueue_turn", "send_create")),
    _row("turn_committed", BUSY, None, unless=("server_creates",), do=("enqueue_turn",)),
    _row("turn_committed", OPEN, None, when=("server_creates",),
         do=("expect_server_response",)),
    _row("drain",    IDLE,  CREATING, when=("has_pending",), unless=("awaiting_server_response",),
         do=("send_create",)),
    _row("request_oob", OPEN, None,   do=("send_oob_create",)),

    # --- response.created: ours, ours-but-interrupted, or the server's own (VAD, idle timeout).
    _row("created",  OPEN,  None,       when=("is_known_response",), do=("ignore_stale",)),
    _row("created",  OPEN,  CANCELLING, when=("is_given_up_create",),
         do=("cancel_late_response",)),
    _row("created",  OPEN,  CANCELLING, when=("is_our_inflight", "inflight_cancel_wanted"),
         do=("adopt_response", "cancel_adopted")),
    _row("created",  OPEN,  ACTIVE,     when=("is_our_inflight",), do=("adopt_response",)),
    _row("created",  OPEN,  ACTIVE,     do=("adopt_server_response",)),
    _row("created_oob", OPEN, None,     when=("is_known_response",), do=("ignore_stale",)),
    _row("created_oob", OPEN, None,     do=("track_oob",)),

    # --- response.done: only the current response's done frees the slot; any final status.
    _row("done", [ACTIVE, CANCELLING], CREATING, when=("is_current_response", "has_inflight"),
         do=("finish_response",)),
    _row("done", [ACTIVE, CANCELLING], IDLE,     when=("is_current_response",),
         do=("finish_response",)),
    _row("done_oob", OPEN, None, do=("untrack_oob",)),

    # --- Rule 2: barge-in.  Text is held until response.done; speech relies on the server's
    # own cancel when interrupt_response is on.  In idle, and in cancelling (the response is
    # already being stopped), only playback is interrupted: it outlives generation.
    _row("user_text", IDLE, None, when=("caller_hearing_audio",),
         do=("interrupt_playback", "deliver_text")),
    _row("user_text", IDLE, None, do=("deliver_text",)),
    _row("user_text", [CREATING, ACTIVE], CANCELLING, do=("barge_in", "hold_text")),
    _row("user_text", CANCELLING, None, when=("caller_hearing_audio",),
         do=("interrupt_playback", "hold_text")),
    _row("user_text", CANCELLING, None, do=("hold_text",)),
    _row("speech_started", IDLE, None, when=("caller_hearing_audio",),
         do=("interrupt_playback",)),
    _row("speech_started", CANCELLING, None, when=("caller_hearing_audio",),
         do=("interrupt_playback",)),
    _row("speech_started", CREATING, CANCELLING, do=("barge_in",)),
    _row("speech_started", ACTIVE, CANCELLING, when=("server_interrupts",),
         do=("barge_in_server_cancels",)),
    _row("speech_started", ACTIVE, CANCELLING, do=("barge_in",)),

    # --- Errors, matched to our requests by the event_id the server echoes back.
    # Busy because of a response we stopped waiting for (cancel timeout): it is still being
    # cancelled, so wait for its done again (audio stays dropped) rather than adopt it.
    _row("create_busy", CREATING, CANCELLING, when=("busy_response_abandoned",),
         do=("requeue_inflight", "adopt_abandoned_response")),
    _row("create_busy", CREATING, ACTIVE, do=("requeue_inflight", "adopt_busy_response")),
    # Our create, interrupted by the caller before it was answered, lost the slot to a response
    # we never saw created: the caller interrupted that one too, so it is cancelled by the id
    # the error names (not adopted and played over the held text).  Unless the server's VAD
    # owes an answer to a turn committed meanwhile: the unseen response may be that answer.
    _row("create_busy", CANCELLING, CANCELLING, when=("awaiting_created", "busy_response_named"),
         unless=("awaiting_server_response",), do=("requeue_inflight", "cancel_busy_response")),
    _row("create_busy", CANCELLING, ACTIVE, when=("awaiting_created",),
         do=("requeue_inflight", "adopt_busy_response")),
    _row("create_busy", [ACTIVE, CANCELLING], None, do=("requeue_inflight",)),
    _row("create_failed", CREATING, IDLE, do=("give_up_inflight",)),
    _row("create_failed", CANCELLING, IDLE, when=("awaiting_created",),
         do=("give_up_inflight",)),
    _row("create_failed", [ACTIVE, CANCELLING], None, do=("give_up_inflight",)),
    _row("cancel_not_active", OPEN, None, do=("note_benign_error",)),
    _row("server_error", OPEN, None, do=("note_error",)),

    # --- Rule 3 and rule 4: the clock.  The watchdog, stall and timeouts all re-check elapsed
    # time in their guards, so an early or duplicate tick changes nothing.
    _row("tick", ACTIVE, CANCELLING, when=("watchdog_due",), do=("fire_watchdog",)),
    _row("tick", ACTIVE, None,       when=("watchdog_in_cooldown",), do=("suppress_watchdog",)),
    _row("tick", ACTIVE, CANCELLING, when=("stalled",), do=("cancel_stalled",)),
    _row("tick", CREATING, IDLE,     when=("deadline_passed",), do=("give_up_inflight",)),
    _row("tick", CANCELLING, IDLE,   when=("deadline_passed",), do=("abandon_cancel",)),
    _row("tick", IDLE, None,         when=("server_response_overdue",),
         do=("stop_awaiting_server_response",)),

    # --- Session settings and teardown.
    _row("configure", OPEN, None, do=("apply_session",)),
    _row("close", OPEN, CLOSED, do=("close_out",)),
]
# fmt: on

#: The actions that run on entering a state, whatever the trigger: leaving a response always
#: lands somewhere clean (rule 4).
ON_ENTER: dict[ResponseState, list[str]] = {
    IDLE: ["enter_idle"],
    CREATING: ["enter_creating"],
    CANCELLING: ["enter_cancelling"],
}


def callback_names() -> set[str]:
    """Every guard and action name the table refers to (checked against the model at import)."""
    names: set[str] = set()
    for row in TRANSITIONS:
        names.update(row["conditions"], row["unless"], row["before"])
    for actions in ON_ENTER.values():
        names.update(actions)
    return names


def machine_kwargs() -> dict[str, Any]:
    """Arguments shared by the runtime machine and the diagram machine, so they cannot drift."""
    states: list[dict[str, Any]] = [
        {"name": state, "on_enter": ON_ENTER.get(state, [])} for state in ResponseState
    ]
    return {
        "states": states,
        "transitions": [dict(row) for row in TRANSITIONS],
        "initial": IDLE,
        "auto_transitions": False,
        "ignore_invalid_triggers": False,
        "queued": False,
        "send_event": False,
    }


#: The one engine instance, shared by every call.  It never registers a model: each call's
#: plain object is driven with ``MACHINE.events[name].trigger(obj)``, which costs ~0.2 KB per call
#: instead of ~40 KB and creates no reference cycles (transitions-performance.md).  A
#: ``transitions.Machine`` with a frozen table and lean dispatch (:mod:`realtime_fsm.engine`).
MACHINE = FrozenTableMachine(model=None, **machine_kwargs())

TRIGGERS: frozenset[str] = frozenset(row["trigger"] for row in TRANSITIONS)
