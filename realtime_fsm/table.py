"""The response lifecycle's transition tables: every machine and every rule, in one place.

We have five state machines here: four for the questions the lifecycle must answer at every moment,
and one for the call around it
(h11's ``_state.py`` names its machines the same way).  Each is a ``transitions`` table over one
attribute of the same :class:`~realtime_fsm.lifecycle.ResponseLifecycle` object, and each is drawn
in ``docs/state-diagram.md``:

``slot`` (``state``, :class:`ResponseState`): who holds the one default-conversation response
    slot the server allows.  ``idle``: nothing known generating, nothing of ours in flight -- the
    only state a create leaves.  ``creating``: our ``response.create`` is on the wire, no response
    yet.  ``active``: a default response is generating (ours or the server's own: VAD, idle
    timeout); its id is ``None`` only while the server has named a busy response we could not
    parse.  ``cancelling``: we (or the server's VAD) are stopping it and wait for its
    ``response.done``; with no id, we wait for an interrupted create of ours to be answered.
    ``closed`` is terminal.
``create`` (``create_state``, :class:`CreateState`): the fate of our ``response.create`` on the
    wire.  ``none``; ``sent``; ``resent``, the one retry of a create the server swallowed (no
    ``response.created``, no error within ``create_timeout``); ``unwanted``, interrupted by the
    caller before it was answered: its requests are already reported given up, a response it
    gets is cancelled by id the moment it is created and a rejection of it needs nothing.
``turn`` (``turn_state``, :class:`TurnState`): a caller turn the server's VAD committed and
    promised to answer itself (``create_response``).  ``none``; ``owed``, committed while the
    slot was busy (the server may create when the slot frees, or skip it: "may fail to create a
    response if the model is already responding"); ``due``, the slot is free and the server's
    answer should come within ``create_timeout``.  Our own creates wait meanwhile (they would
    only race it); when the answer is overdue, we answer the turn ourselves.
``recovery`` (``recovery_state``, :class:`RecoveryState`): the no-audio watchdog's one retry.
    ``none``; ``cancelling``, a silent response was cancelled and its ``response.done`` is
    awaited before the retry may be asked for; ``retrying``, the retry is queued, in flight or
    playing, until its outcome is known.

``call`` (``call_state``, :class:`CallState`), over a :class:`realtime_fsm.call.CallSession`
    rather than the lifecycle: the whole call.  ``awaiting_start`` (Twilio's ``start`` not yet
    seen), ``running``, ``rotating`` and ``ready_to_switch`` (the session is old: the next one
    is being opened and configured, then waits for a quiet moment to take over, while the
    current one serves the call), ``reconnecting`` (the OpenAI session was lost and another is
    being opened: no response machine exists meanwhile), ``ending`` (a reason to end is known;
    the driver closes both sockets), ``ended``.  :data:`MACHINES` are the lifecycle's four;
    :data:`ALL_MACHINES` adds this one.

Everything else the lifecycle keeps is a *ledger*, not a machine: the queue of requests, the
held user texts, the playback ledger (per assistant item: bytes received, ms heard), the ids of
retired responses and of given-up creates, the current response's counters.  Guards read
ledgers (``has_pending``, ``caller_hearing_audio``, ``is_retired_response``); a ledger has no
state of its own beyond its contents.

Rows
----
Each row is ``(trigger, source, dest, conditions, unless, before)``.  Rows for the same trigger
and source are tried top to bottom; the first whose guards pass runs.  ``dest=None`` is an
internal transition (the state stays, the actions run).  Actions run *before* the state
changes, so they still see the response they act on; the ``on_enter`` cleanup of the new state
runs after them and can therefore never be undone by an action.  Guards and actions are the
names of methods of :class:`realtime_fsm.lifecycle.ResponseLifecycle`; guards only read, and
actions never re-test the state their row chose.

An action named ``machine.trigger`` (``"create.send"``) fires that trigger on that machine, at
that point in the row: the machines are coupled only there, in the table, where it can be read.
Only the slot machine receives events; the others move when a slot row says so.  Work that is
not a state change stays off the trigger path on purpose: audio and transcript deltas and
playback marks are counters updated by plain methods (tens per second per call), and draining
the queue after an event is a second, explicit ``drain`` trigger fired by ``handle``.

This module imports nothing of the package but the engine, so the tables can be read, checked
and drawn without the machine.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, NamedTuple, TypedDict

from .engine import FrozenTableMachine

# Re-exported: the table is where a reader looks for the states of a machine.
from .states import CallState as CallState
from .states import CreateState as CreateState
from .states import RecoveryState as RecoveryState
from .states import ResponseState as ResponseState
from .states import TurnState as TurnState

# An application logging at INFO would otherwise make every trigger about 3x slower and flood
# its log with the engine's own lines (transitions-performance.md, "Logging trap").
logging.getLogger("transitions").setLevel(logging.WARNING)


IDLE = ResponseState.IDLE
CREATING = ResponseState.CREATING
ACTIVE = ResponseState.ACTIVE
CANCELLING = ResponseState.CANCELLING
CLOSED = ResponseState.CLOSED
OPEN = [IDLE, CREATING, ACTIVE, CANCELLING]
BUSY = [CREATING, ACTIVE, CANCELLING]

C_NONE = CreateState.NONE
SENT = CreateState.SENT
RESENT = CreateState.RESENT
UNWANTED = CreateState.UNWANTED
IN_FLIGHT = [SENT, RESENT]

T_NONE = TurnState.NONE
OWED = TurnState.OWED
DUE = TurnState.DUE
T_ANY = list(TurnState)

R_NONE = RecoveryState.NONE
R_CANCELLING = RecoveryState.CANCELLING
RETRYING = RecoveryState.RETRYING
R_ANY = list(RecoveryState)


class Row(TypedDict):
    trigger: str
    source: list[Any]
    dest: Any
    conditions: list[str]
    unless: list[str]
    before: list[str]


def _row(
    trigger: str,
    source: Any,
    dest: Any,
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
    # While the server's VAD owes an answer to a committed turn, a create of ours would only
    # race it: requests wait (queued) until that response shows up or is overdue.
    _row("request", OPEN, None, when=("is_oob_request",), do=("send_oob_create",)),
    _row("request", IDLE, CREATING, unless=("turn_owed",), do=("enqueue_request", "create.send")),
    _row("request", OPEN, None, do=("queue_request",)),
    # The server's idle timeout (server VAD ``idle_timeout_ms``) commits the caller's silence
    # and creates the response itself, whatever ``create_response`` says: a turn the server
    # owes, like a VAD one, so our requests wait for it (a create would only race it).  Its
    # commit, which follows, asks nothing more of us.
    _row("idle_timeout", OPEN, None, do=("note_idle_timeout", "turn.committed")),
    _row("turn_committed", OPEN, None, when=("commit_of_idle_timeout",),
         do=("settle_idle_timeout",)),
    _row("turn_committed", IDLE, CREATING, unless=("server_creates",),
         do=("enqueue_turn", "create.send")),
    _row("turn_committed", BUSY, None, unless=("server_creates",), do=("enqueue_turn",)),
    _row("turn_committed", OPEN, None, do=("turn.committed",)),
    _row("drain", IDLE, CREATING, when=("has_pending",), unless=("turn_owed",),
         do=("create.send",)),

    # --- response.created: ours (tried first: its event id is fresh, so it can be nothing
    # else), out of band, stale, given up, known from a busy error, or the server's own (VAD,
    # idle timeout).  A create we gave up on (timeout, busy rejection) that is served after all
    # is cancelled and never heard, even when a busy error named it first.
    _row("created", [ACTIVE, CANCELLING], CANCELLING, when=("is_our_inflight", "create_unwanted"),
         do=("adopt_response", "cancel_adopted", "create.adopted")),
    # Our own response does not answer a turn the server's VAD committed while our create was
    # on the wire: it was created before the commit (else the VAD's own response would hold
    # the slot and ours would be rejected), and the VAD skipped answering (the slot was busy).
    _row("created", BUSY, ACTIVE, when=("is_our_inflight",),
         do=("adopt_response", "create.adopted")),
    _row("created", OPEN, None, when=("is_oob_created", "is_retired_response"),
         do=("ignore_stale",)),
    _row("created", OPEN, None, when=("is_oob_created",), do=("track_oob",)),
    _row("created", OPEN, None, when=("is_retired_response",), do=("ignore_stale",)),
    _row("created", ACTIVE, CANCELLING, when=("is_given_up_create", "is_current_response"),
         do=("cancel_current_late",)),
    _row("created", OPEN, CANCELLING, when=("is_given_up_create",), do=("cancel_late_response",)),
    _row("created", ACTIVE, None, when=("is_current_response", "current_unseen"),
         do=("see_current", "turn.answered")),
    _row("created", ACTIVE, None, when=("is_current_response",), do=("ignore_stale",)),
    _row("created", CANCELLING, None, when=("current_unnamed",), do=("name_current",)),
    _row("created", OPEN, ACTIVE, do=("adopt_server_response", "turn.answered")),

    # --- response.done: only the current response's done frees the slot; any final status.
    # An interrupted create of ours still unanswered keeps the slot (and the held text) busy.
    _row("done", OPEN, None, when=("is_oob_done",), do=("untrack_oob",)),
    _row("done", [ACTIVE, CANCELLING], IDLE, when=("create_idle", "is_current_done"),
         do=("recovery.response_done", "finish_response")),
    _row("done", [ACTIVE, CANCELLING], CANCELLING, when=("create_unwanted", "is_current_done"),
         do=("recovery.response_done", "finish_response", "forget_response")),
    _row("done", [ACTIVE, CANCELLING], CREATING, when=("is_current_done",),
         do=("recovery.response_done", "finish_response")),
    _row("done", OPEN, None, when=("is_abandoned_done",), do=("note_abandoned_done",)),
    _row("done", OPEN, None, do=("ignore_stale_done",)),

    # --- Rule 2: barge-in.  Text is held until response.done; speech relies on the server's
    # own cancel when interrupt_response is on.  Every barge-in interrupts our create in flight
    # too.  In idle, and in cancelling (the response is already being stopped), only playback
    # is interrupted: it outlives generation.
    _row("user_text", IDLE, None, when=("caller_hearing_audio",),
         do=("interrupt_playback", "deliver_text")),
    _row("user_text", IDLE, None, do=("deliver_text",)),
    _row("user_text", CREATING, CANCELLING, do=("barge_in_before_created", "create.interrupted",
                                                 "hold_text")),
    _row("user_text", ACTIVE, CANCELLING, do=("barge_in", "create.interrupted", "hold_text")),
    _row("user_text", CANCELLING, None, when=("caller_hearing_audio",),
         do=("interrupt_playback", "create.interrupted", "hold_text")),
    _row("user_text", CANCELLING, None, do=("create.interrupted", "hold_text")),
    _row("speech_started", IDLE, None, when=("caller_hearing_audio",),
         do=("interrupt_playback",)),
    _row("speech_started", CANCELLING, None, when=("caller_hearing_audio",),
         do=("interrupt_playback", "create.interrupted")),
    _row("speech_started", CANCELLING, None, do=("create.interrupted",)),
    _row("speech_started", CREATING, CANCELLING,
         do=("barge_in_before_created", "create.interrupted")),
    _row("speech_started", ACTIVE, CANCELLING, when=("server_interrupts",),
         do=("barge_in_server_cancels", "create.interrupted")),
    _row("speech_started", ACTIVE, CANCELLING, do=("barge_in", "create.interrupted")),

    # --- Errors, matched to our requests by the event_id the server echoes back (or, without
    # one, by order: the server answers creates in the order they were sent).
    # The late answer to a create we gave up on.  A busy one still tells who holds the slot:
    # a response we never saw (tracked, so no create of ours goes into it; if it answers the
    # given-up create, its response.created cancels it) or one we stopped tracking (cancelled
    # again).
    _row("error", [IDLE, CREATING], CANCELLING,
         when=("error_answers_given_up", "error_is_busy", "busy_names_retired"),
         do=("settle_given_up", "recancel_busy_response")),
    _row("error", [IDLE, CREATING], ACTIVE,
         when=("error_answers_given_up", "error_is_busy", "busy_names_unseen"),
         do=("settle_given_up", "adopt_busy_response")),
    _row("error", CANCELLING, CANCELLING,
         when=("error_answers_given_up", "error_is_busy", "awaiting_created",
               "busy_names_retired"),
         do=("settle_given_up", "recancel_busy_response")),
    _row("error", CANCELLING, CANCELLING,
         when=("error_answers_given_up", "error_is_busy", "awaiting_created", "busy_names_unseen"),
         unless=("turn_owed",), do=("settle_given_up", "cancel_busy_response")),
    _row("error", CANCELLING, ACTIVE,
         when=("error_answers_given_up", "error_is_busy", "awaiting_created", "busy_names_unseen"),
         do=("settle_given_up", "adopt_busy_response")),
    _row("error", OPEN, None, when=("error_answers_given_up",), do=("settle_given_up",)),
    # Busy because of a response we stopped waiting for (cancel timeout): it is still alive,
    # so cancel it again and wait for its done (its audio stays dropped) rather than adopt it.
    _row("error", CREATING, CANCELLING,
         when=("error_is_busy", "error_for_our_create", "busy_names_retired"),
         do=("recancel_busy_response", "create.busy")),
    _row("error", CREATING, ACTIVE, when=("error_is_busy", "error_for_our_create"),
         do=("adopt_busy_response", "create.busy")),
    _row("error", CANCELLING, CANCELLING,
         when=("error_is_busy", "error_for_our_create", "awaiting_created", "busy_names_retired"),
         do=("recancel_busy_response", "create.busy")),
    # Our create, interrupted by the caller before it was answered, lost the slot to a response
    # we never saw created: the caller interrupted that one too, so it is cancelled by the id
    # the error names.  Unless the server's VAD owes an answer to a turn committed meanwhile:
    # the unseen response may be that answer.
    _row("error", CANCELLING, CANCELLING,
         when=("error_is_busy", "error_for_our_create", "awaiting_created", "busy_names_unseen"),
         unless=("turn_owed",), do=("cancel_busy_response", "create.busy")),
    _row("error", CANCELLING, ACTIVE,
         when=("error_is_busy", "error_for_our_create", "awaiting_created"),
         do=("adopt_busy_response", "create.busy")),
    _row("error", [ACTIVE, CANCELLING], None, when=("error_is_busy", "error_for_our_create"),
         do=("create.busy",)),
    _row("error", CREATING, IDLE, when=("error_names_our_create",), do=("create.failed",)),
    _row("error", CANCELLING, IDLE, when=("error_names_our_create", "awaiting_created"),
         do=("create.failed",)),
    _row("error", [ACTIVE, CANCELLING], None, when=("error_names_our_create",),
         do=("create.failed",)),
    _row("error", OPEN, None, when=("error_cancel_not_active",), do=("note_benign_error",)),
    _row("error", OPEN, None, do=("note_error",)),

    # --- Rule 3 and rule 4: the clock.  Every timer re-checks elapsed time in its guard, so an
    # early or duplicate tick changes nothing.  A create that got no answer is sent once more
    # before it is given up; a cancel that got no answer is abandoned.
    # Nothing cancels a response while one of its function calls is being generated (a
    # cut-off call is never run); a silent one is still caught at its response.done.  With no
    # output item open the response is thinking (reasoning models: no event marks it) and gets
    # the longer allowance before it counts as hung.
    _row("tick", ACTIVE, CANCELLING, when=("watchdog_due",), unless=("function_call_open",),
         do=("cancel_silent", "recovery.fired")),
    _row("tick", ACTIVE, None, when=("watchdog_in_cooldown",), unless=("function_call_open",),
         do=("suppress_watchdog",)),
    _row("tick", ACTIVE, CANCELLING, when=("thinking", "thought_too_long"),
         do=("cancel_thinking_stall",)),
    _row("tick", ACTIVE, CANCELLING, when=("stalled",), unless=("thinking", "function_call_open"),
         do=("cancel_stalled",)),
    _row("tick", CREATING, CREATING, when=("deadline_passed", "create_first_attempt"),
         do=("create.timeout",)),
    _row("tick", CREATING, IDLE, when=("deadline_passed",), do=("create.timeout",)),
    _row("tick", CANCELLING, CREATING, when=("deadline_passed", "create_in_flight"),
         do=("abandon_cancel", "recovery.cancel_abandoned")),
    _row("tick", CANCELLING, IDLE, when=("deadline_passed",),
         do=("abandon_cancel", "recovery.cancel_abandoned", "create.timeout")),
    _row("tick", IDLE, None, when=("turn_overdue",), do=("turn.overdue",)),

    # --- Session settings and teardown.  The server's first event on a connection is
    # session.created, so no answer to a create can come before it: a create sent before it
    # (the greeting goes out with Twilio's start, while the OpenAI socket is still being
    # opened) waits for its answer from there, not from before the connect.
    _row("configure", CREATING, None, when=("session_created",),
         do=("apply_session", "restart_create_clock")),
    _row("configure", CANCELLING, None, when=("session_created", "awaiting_created"),
         unless=("create_idle",), do=("apply_session", "restart_create_clock")),
    _row("configure", OPEN, None, do=("apply_session",)),
    _row("close", OPEN, CLOSED,
         do=("close_out", "create.closed", "turn.closed", "recovery.closed")),
]

CREATE_TRANSITIONS: list[Row] = [
    _row("send", C_NONE, SENT, do=("send_create",)),
    # No answer in time: once more with a new event id (the first one's late response, if it
    # comes, is cancelled), then given up.
    _row("timeout", SENT, RESENT, do=("resend_create",)),
    _row("timeout", RESENT, C_NONE, do=("recovery.create_given_up", "give_up_timed_out")),
    _row("timeout", UNWANTED, C_NONE, do=("forget_unwanted",)),
    _row("timeout", C_NONE, None),
    _row("adopted", [SENT, RESENT, UNWANTED], C_NONE, do=("drop_inflight",)),
    _row("busy", [SENT, RESENT, UNWANTED], C_NONE, do=("requeue_rejected",)),
    _row("failed", IN_FLIGHT, C_NONE, do=("recovery.create_given_up", "give_up_rejected")),
    _row("failed", UNWANTED, C_NONE, do=("drop_inflight",)),
    _row("interrupted", IN_FLIGHT, UNWANTED,
         do=("recovery.create_given_up", "give_up_interrupted")),
    _row("interrupted", [C_NONE, UNWANTED], None),
    _row("closed", [SENT, RESENT, UNWANTED], C_NONE, do=("drop_inflight",)),
    _row("closed", C_NONE, None),
]

TURN_TRANSITIONS: list[Row] = [
    _row("committed", [T_NONE, DUE], DUE, when=("slot_idle",), do=("arm_turn_deadline",)),
    _row("committed", T_ANY, OWED),
    _row("slot_freed", [OWED, DUE], DUE, do=("arm_turn_grace",)),
    _row("slot_freed", T_NONE, None),
    _row("answered", [OWED, DUE], T_NONE),
    _row("answered", T_NONE, None),
    # The server did not answer: we do, rather than leave the caller's turn unanswered.
    _row("overdue", DUE, T_NONE, do=("answer_turn_ourselves",)),
    _row("closed", [OWED, DUE], T_NONE),
    _row("closed", T_NONE, None),
]

RECOVERY_TRANSITIONS: list[Row] = [
    _row("fired", R_ANY, R_CANCELLING),
    _row("response_done", R_CANCELLING, RETRYING, do=("queue_retry",)),
    _row("response_done", RETRYING, R_NONE, when=("done_is_retry",), do=("report_retry",)),
    # A response that ended on its own with transcript and no audio is silent too, however
    # short: its retry is asked for at once (no cancel needed).
    _row("response_done", [R_NONE, RETRYING], RETRYING,
         when=("silent_completion", "watchdog_cooled"), do=("fire_at_done", "queue_retry")),
    _row("response_done", [R_NONE, RETRYING], None, when=("silent_completion",),
         do=("suppress_at_done",)),
    _row("response_done", [R_NONE, RETRYING], None),
    _row("cancel_abandoned", R_CANCELLING, RETRYING, do=("queue_retry",)),
    _row("cancel_abandoned", [R_NONE, RETRYING], None),
    _row("create_given_up", RETRYING, R_NONE, when=("given_up_create_is_retry",),
         do=("report_retry_failed",)),
    _row("create_given_up", R_ANY, None),
    _row("closed", [R_CANCELLING, RETRYING], R_NONE, do=("report_recovery_closed",)),
    _row("closed", R_NONE, None),
]
# fmt: on

AWAITING_START = CallState.AWAITING_START
RUNNING = CallState.RUNNING
RECONNECTING = CallState.RECONNECTING
ROTATING = CallState.ROTATING
READY_TO_SWITCH = CallState.READY_TO_SWITCH
ENDING = CallState.ENDING
ENDED = CallState.ENDED
#: A session is up and serves the call (frames flow, a response machine runs).
SERVING = [RUNNING, ROTATING, READY_TO_SWITCH]
LIVE = [AWAITING_START, *SERVING, RECONNECTING]

# The call machine: one per call, over a ``CallSession``.  It receives the call's own events:
# Twilio's ``start``, the loss and reopening of the OpenAI session, a reason to end, the
# driver's report that both sockets are closed.  Reasons and frames travel as the session's
# data (the event being handled), like the response machine's ``_ev``.
# fmt: off
CALL_TRANSITIONS: list[Row] = [
    # A stream must prove it is for the call the signed webhook answered (realtime_fsm.
    # credentials) before anything is opened for it: refused, it ends with 1008, no upstream.
    _row("start", AWAITING_START, ENDING, when=("credential_refused",),
         do=("end_bad_credential",)),
    _row("start", AWAITING_START, ENDING, when=("bad_media_format",), do=("end_bad_format",)),
    # Capacity is decided at the webhook (realtime_fsm.admission); a stream whose call no
    # webhook admitted is refused here while the server drains or is full (1013), before any
    # OpenAI session.  A served call holds its place until it is closed.
    _row("start", AWAITING_START, ENDING, when=("not_admitted",), do=("end_not_admitted",)),
    _row("start", AWAITING_START, RUNNING, do=("take_place", "begin_call")),
    _row("start", [*SERVING, RECONNECTING], None, do=("count_duplicate_start",)),
    _row("start", ENDING, None),
    # A lost session ends the call when nothing can open another, or after too many; its
    # estate is kept either way (held texts go back to the application at the end).  A next
    # session already configured for a rotation takes over at once (make before break pays
    # off: no connection to open); it gets what a reconnected session gets.  One still being
    # opened or configured is dropped with the lost one, and the reconnect rows run.
    _row("session_lost", SERVING, ENDING, unless=("can_reconnect",),
         do=("drop_next_session", "note_end")),
    _row("session_lost", SERVING, ENDING, when=("reconnects_exhausted",),
         do=("drop_next_session", "hand_over", "end_reconnects_exhausted")),
    _row("session_lost", READY_TO_SWITCH, RUNNING, when=("next_session_ready",),
         do=("hand_over", "switch_to_ready_session")),
    _row("session_lost", SERVING, ENDING, when=("attempts_exhausted",),
         do=("drop_next_session", "hand_over", "end_attempts_exhausted")),
    _row("session_lost", SERVING, RECONNECTING,
         do=("drop_next_session", "hand_over", "plan_reconnect")),
    _row("session_lost", [RECONNECTING, ENDING], None),
    _row("connect_failed", RECONNECTING, ENDING, when=("connect_refused",), do=("note_end",)),
    _row("connect_failed", RECONNECTING, ENDING, when=("attempts_exhausted",),
         do=("end_attempts_exhausted",)),
    _row("connect_failed", RECONNECTING, None, do=("plan_retry",)),
    _row("session_opened", RECONNECTING, RUNNING, do=("restore_session",)),

    # --- Rotation: the server ends a session at its cap (60 minutes, ``session_expired``, an
    # answer in progress cut off).  Before that, the next session is opened and configured
    # while the current one serves the call (make before break), and takes over at a quiet
    # moment: nothing generating or queued, the caller's playback drained, the caller silent.
    # Past the quiet window, a response boundary will do: the done of the current response,
    # whatever was queued behind it carried over (the answer the caller hears plays out).
    # A next session that fails keeps the call where it is; another is tried later, a few
    # times, and then the cap is left to the reconnect rows above.
    _row("tick", RUNNING, ROTATING, when=("rotation_due",), do=("open_next_session",)),
    _row("next_opened", ROTATING, None, do=("configure_next_session",)),
    _row("next_configured", ROTATING, READY_TO_SWITCH, unless=("next_audio_wrong",),
         do=("note_next_ready",)),
    _row("next_configured", ROTATING, RUNNING,
         when=("next_audio_wrong", "rotation_attempts_left"), do=("retry_rotation_later",)),
    _row("next_configured", ROTATING, RUNNING, do=("give_up_rotation",)),
    _row("next_failed", ROTATING, RUNNING, when=("rotation_attempts_left",),
         do=("retry_rotation_later",)),
    _row("next_failed", ROTATING, RUNNING, do=("give_up_rotation",)),
    _row("settle", READY_TO_SWITCH, RUNNING, when=("quiet_moment",),
         do=("switch_at_quiet_moment",)),
    _row("settle", READY_TO_SWITCH, RUNNING,
         when=("quiet_window_passed", "at_response_boundary"), do=("switch_at_boundary",)),
    # A session replaced (rotated, or lost after its answer was done) while that answer still
    # plays at Twilio: the new session's machine knows nothing of it, so a barge-in it does
    # not answer with a clear of its own (speech or text over that audio) clears it here.
    _row("barge_in_seen", SERVING, None, when=("hearing_retired_audio",),
         do=("clear_retired_audio",)),

    _row("end", LIVE, ENDING, do=("drop_next_session", "note_end")),
    _row("end", ENDING, None),
    # The server's drain deadline passed: the call ends, its peers told "going away" (1001).
    _row("going_away", LIVE, ENDING, do=("drop_next_session", "end_going_away")),
    _row("going_away", ENDING, None),
    _row("closed", [*LIVE, ENDING], ENDED, do=("drop_next_session", "finish")),
    _row("closed", ENDED, None),
]
# fmt: on
CALL_ON_ENTER: dict[CallState, list[str]] = {}


#: The actions that run on entering a state, whatever the trigger: leaving a response always
#: lands somewhere clean (rule 4).
ON_ENTER: dict[ResponseState, list[str]] = {
    IDLE: ["enter_idle", "turn.slot_freed"],
    CREATING: ["enter_creating"],
    CANCELLING: ["enter_cancelling"],
}
TURN_ON_ENTER: dict[TurnState, list[str]] = {
    T_NONE: ["clear_turn_deadline"],
    OWED: ["clear_turn_deadline"],
}


class MachineSpec(NamedTuple):
    """One machine of the lifecycle: its name (the prefix of ``name.trigger`` actions), the
    model attribute holding its state, its states, initial state, rows and ``on_enter``."""

    name: str
    attribute: str
    states: type[enum.Enum]
    initial: Any
    rows: list[Row]
    on_enter: dict[Any, list[str]]


#: Every machine, the slot first: the order ``docs/state-diagram.md`` draws them in.
MACHINES: tuple[MachineSpec, ...] = (
    MachineSpec("slot", "state", ResponseState, IDLE, TRANSITIONS, ON_ENTER),
    MachineSpec("create", "create_state", CreateState, C_NONE, CREATE_TRANSITIONS, {}),
    MachineSpec("turn", "turn_state", TurnState, T_NONE, TURN_TRANSITIONS, TURN_ON_ENTER),
    MachineSpec("recovery", "recovery_state", RecoveryState, R_NONE, RECOVERY_TRANSITIONS, {}),
)
SUBMACHINES: tuple[MachineSpec, ...] = MACHINES[1:]
#: The call's own machine, over a :class:`realtime_fsm.call.CallSession` (not the lifecycle).
CALL_MACHINE = MachineSpec(
    "call", "call_state", CallState, AWAITING_START, CALL_TRANSITIONS, CALL_ON_ENTER
)
#: Every machine of the package, in the order ``docs/state-diagram.md`` draws them.
ALL_MACHINES: tuple[MachineSpec, ...] = (*MACHINES, CALL_MACHINE)


def fired_triggers() -> set[str]:
    """Every ``machine.trigger`` action the tables name (each is a trigger of that machine)."""
    names: set[str] = set()
    for spec in MACHINES:
        for row in spec.rows:
            names.update(n for n in row["before"] if "." in n)
        for actions in spec.on_enter.values():
            names.update(n for n in actions if "." in n)
    return names


def callback_names() -> set[str]:
    """Every guard and action name the tables refer to (checked against the model at import)."""
    names: set[str] = set()
    for spec in MACHINES:
        for row in spec.rows:
            names.update(row["conditions"], row["unless"], row["before"])
        for actions in spec.on_enter.values():
            names.update(actions)
    return names


def machine_kwargs(spec: MachineSpec | None = None) -> dict[str, Any]:
    """Arguments shared by a runtime machine and its diagram machine, so they cannot drift."""
    spec = MACHINES[0] if spec is None else spec
    states: list[dict[str, Any]] = [
        {"name": state, "on_enter": spec.on_enter.get(state, [])} for state in spec.states
    ]
    return {
        "states": states,
        "transitions": [dict(row) for row in spec.rows],
        "initial": spec.initial,
        "model_attribute": spec.attribute,
        "auto_transitions": False,
        "ignore_invalid_triggers": False,
        "queued": False,
        "send_event": False,
    }


#: One engine instance per machine, shared by every call.  None registers a model: each call's
#: plain object is driven with ``ENGINES[name].events[trigger].trigger(obj)``, which costs
#: ~0.2 KB per call instead of ~40 KB and creates no reference cycles
#: (transitions-performance.md).  ``transitions.Machine`` subclasses with a frozen table and
#: lean dispatch (:mod:`realtime_fsm.engine`).
ENGINES: dict[str, FrozenTableMachine] = {
    spec.name: FrozenTableMachine(model=None, **machine_kwargs(spec)) for spec in MACHINES
}
#: The call machine's engine, shared by every call like the others.
CALL_ENGINE = FrozenTableMachine(model=None, **machine_kwargs(CALL_MACHINE))
#: The slot machine's engine (the one events are fed to).
MACHINE = ENGINES["slot"]

TRIGGERS: frozenset[str] = frozenset(row["trigger"] for row in TRANSITIONS)
