"""Every field of a response lifecycle, and the few helpers every guard and action shares.

The fields are declared once, here, with a comment each: which machine's state or data it is,
or why it cannot change which transitions are legal (h11's ``_connection.py`` keeps the same
discipline).  The guards, the actions and the public machine are subclasses that add methods
only (``__slots__ = ()``), so an instance is one small object with no ``__dict__``.
"""

from __future__ import annotations

import logging
from typing import Final

from .. import events as ev
from ..commands import Command, DropResponseAudio, SendResponseCancel
from ..config import LifecycleConfig, thinking_scale
from ..table import (
    ACTIVE,
    C_NONE,
    IDLE,
    R_NONE,
    T_NONE,
    CreateState,
    RecoveryState,
    ResponseState,
    TurnState,
)
from .ledgers import (
    GIVEN_UP_MAX,
    ITEM_AUDIO,
    ITEM_CALL,
    ITEM_DONE,
    ITEM_MESSAGE,
    ITEMS_MAX,
    NO_RECENT_IDS,
    PLAYBACK_MAX,
    RETIRED_MAX,
    Inflight,
    RecentIds,
)

log = logging.getLogger("realtime_fsm.lifecycle")

#: Where commands go between two ``handle`` calls (nothing is emitted there).
NO_OUTBOX: Final[list[Command]] = []


class LifecycleFields:
    """The state of one conversation's response lifecycle (see :mod:`realtime_fsm.table`)."""

    __slots__ = (
        "_cfg",
        "_current_unseen",
        "_cut_items",
        "_cut_response",
        "_ev",
        "_first_transcript_at",
        "_flow",
        "_given_up",
        "_idle_timeout_item",
        "_items",
        "_last_activity",
        "_now",
        "_open_calls",
        "_open_items",
        "_out",
        "_play",
        "_retired",
        "_seq",
        "_server_creates",
        "_server_interrupts",
        "_state_deadline",
        "_think_limit",
        "_turn_deadline",
        "_watchdog_skipped",
        "audio_deltas",
        "create_state",
        "held_texts",
        "inflight",
        "oob_responses",
        "pending",
        "recovery_state",
        "response_expects_audio",
        "response_id",
        "response_is_retry",
        "response_requests",
        "state",
        "stats",
        "transcript_deltas",
        "turn_state",
        "watchdog_last_fire",
    )

    def __init__(self, config: LifecycleConfig | None = None, *, now: float = 0.0) -> None:
        cfg = config if config is not None else LifecycleConfig()
        # --- The machines' states (table.py).
        self.state: ResponseState = IDLE
        self.create_state: CreateState = C_NONE
        self.turn_state: TurnState = T_NONE
        self.recovery_state: RecoveryState = R_NONE
        # --- Settings and inputs.  Timeouts: the timers below are compared with them.
        self._cfg = cfg
        #: The session's turn-detection flags, written only by the ``configure`` row; the guards
        #: ``server_creates`` and ``server_interrupts`` read them.
        self._server_creates = cfg.server_creates_response
        self._server_interrupts = cfg.server_interrupts_response
        #: How long a response with no output item open may stay silent (``stall_timeout``
        #: scaled by the session's reasoning effort), written only by ``configure``; the guard
        #: ``thought_too_long`` compares with it.
        self._think_limit = cfg.stall_timeout * thinking_scale(cfg.reasoning_effort)
        #: The time and the event being handled: every guard reads its inputs from these two.
        self._now = float(now)
        self._ev: object = None
        # --- Timers: deadlines of the machines, compared with ``_now`` by guards.
        #: The slot's deadline in ``creating`` (an answer to our create) and ``cancelling`` (the
        #: done of what we stop); ``None`` elsewhere.
        self._state_deadline: float | None = None
        #: The turn machine's deadline in ``due``: the server's answer is overdue after it.
        self._turn_deadline: float | None = None
        #: The recovery machine's cooldown: when the watchdog last fired (per call, never reset).
        self.watchdog_last_fire: float | None = None
        # --- The slot's data: the current response and its ledger.
        self.response_id: str | None = None
        #: The current response is known only from a busy error (by id, or not even that when
        #: the error's old wording names none): its first response.created is news (the guards
        #: ``current_unseen``, ``current_unnamed``), a second one a duplicate; without an id,
        #: its done is the next unknown one (``is_current_done``).
        self._current_unseen = False
        #: Read by the watchdog guards: a retry is never retried; a text-only response is never
        #: silent.
        self.response_is_retry = False
        self.response_expects_audio = True
        #: The requests the current response serves, when it is ours (empty for one the server
        #: created): what a new session must ask for again if this one is cut off.  No guard
        #: reads it.
        self.response_requests: tuple[ev.RequestResponse, ...] = ()
        #: Per-response counters and activity times, read by ``watchdog_due``, ``stalled`` and
        #: ``silent_completion``.
        self.audio_deltas = 0
        self.transcript_deltas = 0
        self._first_transcript_at: float | None = None
        self._last_activity = self._now
        #: A silent response the watchdog let pass (cooldown) is not judged again.
        self._watchdog_skipped = False
        #: The current response's output items, in output order: ``item_id -> ITEM_*`` flags
        #: (ledgers.py), and how many are open (added, not done) and of those how many are
        #: function calls.  The guards ``thinking`` (nothing open) and ``function_call_open``
        #: read the counts; the barge-in reads the flags (which items are still generating,
        #: which got audio).
        self._items: dict[str, int] = {}
        self._open_items = 0
        self._open_calls = 0
        #: The response a barge-in stopped (or one cancelled unheard), until its done: its
        #: message items the caller heard nothing of, by id, are deleted then (``True``), those
        #: already cut by the barge-in are not (``False``).  ``None`` until first needed.  No
        #: guard reads them: they only become ``SendItemDelete`` commands.
        self._cut_response: str | None = None
        self._cut_items: dict[str, bool] | None = None
        #: The user item of the server's last idle timeout, until its commit arrives (the guard
        #: ``commit_of_idle_timeout``: that commit is answered by the server, not by us).
        self._idle_timeout_item: str | None = None
        # --- The create machine's data.
        self.inflight: Inflight | None = None
        #: Creates given up (timeout, busy rejection) by event id, oldest first, and whether an
        #: answer is still owed: a ``response.created`` naming one is cancelled, never played;
        #: an error naming one is its answer, not a rejection of the create in flight.
        self._given_up: dict[str, bool] = {}
        # --- Ledgers.
        #: Requests waiting for the slot, oldest first (the guard ``has_pending``).
        self.pending: list[ev.RequestResponse] = []
        #: User texts held during a barge-in.  No guard reads them: ``enter_idle`` delivers
        #: them whatever path led to ``idle``.
        self.held_texts: list[ev.UserText] = []
        #: Out-of-band responses in progress (the guard ``is_oob_done``).
        self.oob_responses: set[str] = set()
        #: Finished or dropped response ids, to recognise their late events.
        self._retired = NO_RECENT_IDS
        #: The playback ledger: per assistant item, ``[bytes received, ms heard]`` (the guard
        #: ``caller_hearing_audio``).
        self._play: dict[str, list[int]] = {}
        # --- Output and accounting: no guard reads these.
        self._out: list[Command] = []
        self._seq = 0
        #: The text barge-in's log narration, step by step.
        self._flow: list[str] | None = None
        #: Counters a bridge can export: stale events, benign errors, drops, fires.
        self.stats: dict[str, int] = {}

    # ---------------------------------------------------------------------- shared helpers

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _mint(self, kind: str) -> str:
        self._seq += 1
        return f"{self._cfg.event_id_prefix}_{kind}_{self._seq}"

    def _emit(self, command: Command) -> None:
        self._out.append(command)

    def _retire(self, response_id: str, why: str) -> None:
        if not self._retired.capacity:  # still the shared empty one (or a copy of it)
            self._retired = RecentIds(RETIRED_MAX)
        self._retired.add(response_id, why)

    def _remember_given_up(self, event_id: str, *, answer_owed: bool) -> None:
        given_up = self._given_up
        given_up[event_id] = answer_owed
        if len(given_up) > GIVEN_UP_MAX:
            del given_up[next(iter(given_up))]

    def _is_unknown(self, response_id: str) -> bool:
        return (
            response_id not in self._retired
            and response_id not in self.oob_responses
            and response_id != self.response_id
        )

    def _adopt_id(self, response_id: str) -> None:
        self.response_id = response_id
        self._last_activity = self._now

    def _track_item(self, item_id: str) -> list[int]:
        """The first audio of an item of the current response (once per item, not per delta)."""
        play = self._play
        if len(play) >= PLAYBACK_MAX:
            del play[next(iter(play))]
        entry = [0, 0]
        play[item_id] = entry
        items = self._items
        flags = items.get(item_id)
        if flags is None:  # audio before (or without) its output_item.added
            self._note_item(item_id, ITEM_AUDIO | ITEM_MESSAGE)
        else:
            items[item_id] = flags | ITEM_AUDIO
        return entry

    def _note_item(self, item_id: str, flags: int) -> None:
        """A new output item of the current response (bounded: the oldest is forgotten)."""
        items = self._items
        if len(items) >= ITEMS_MAX:
            oldest = next(iter(items))
            self._close_item(oldest, items.pop(oldest))
        items[item_id] = flags
        if not flags & ITEM_DONE:
            self._open_items += 1
            if flags & ITEM_CALL:
                self._open_calls += 1

    def _close_item(self, item_id: str, flags: int) -> int:
        """The counts without an open item; returns its flags marked done."""
        if not flags & ITEM_DONE:
            self._open_items -= 1
            if flags & ITEM_CALL:
                self._open_calls -= 1
        return flags | ITEM_DONE

    def _open_audio_item(self) -> str | None:
        """The newest item with audio while the current response still adds to it (active,
        its ``output_item.done`` not seen): the server may have more of it than reached us.
        An item heard in full that is finished, or is an earlier response's, is no such item:
        truncating it would only drop its transcript from the model's context."""
        play = self._play
        if self.state is not ACTIVE or not play:
            return None
        newest = next(reversed(play))
        flags = self._items.get(newest)
        return newest if flags is not None and not flags & ITEM_DONE else None

    def _flow_step(self, step: str) -> None:
        if self._flow is not None:
            self._flow.append(step)

    def _clear_response(self) -> None:
        self.response_id = None
        self._current_unseen = False
        self.response_is_retry = False
        self.response_requests = ()
        self.response_expects_audio = True
        self.audio_deltas = 0
        self.transcript_deltas = 0
        self._first_transcript_at = None
        self._watchdog_skipped = False
        if self._items:
            self._items.clear()
        self._open_items = 0
        self._open_calls = 0
        self._cut_response = None
        self._cut_items = None

    def _send_cancel(self, response_id: str | None) -> None:
        self._emit(SendResponseCancel(event_id=self._mint("cancel"), response_id=response_id))

    def _drop(self, response_id: str) -> None:
        """From now on the caller must not hear this response."""
        self._emit(DropResponseAudio(response_id=response_id))
        self._retire(response_id, "dropped")

    def _cancel_unheard(self, response_id: str) -> None:
        """Cancel a response by id and drop its audio: the caller must never hear it."""
        self._send_cancel(response_id)
        self._drop(response_id)
        self._start_cut(response_id)

    def _start_cut(self, response_id: str) -> None:
        """The caller hears nothing more of this response: each of its message items that got
        no audio to the caller (known now, added later, or whose audio only arrives now) is
        deleted at the response's done, when the server has stopped writing to it.  Items with
        audio are the playback ledger's (cut now, or heard in full)."""
        cut = dict.fromkeys(self._play, False)
        for item_id, flags in self._items.items():
            if flags & ITEM_AUDIO:
                cut.setdefault(item_id, False)
            elif flags & ITEM_MESSAGE:
                cut[item_id] = True
        self._cut_response = response_id
        self._cut_items = cut

    def _cut_later(self, item_id: str) -> None:
        """An item of the cut response shows up (added, or its audio) after the cut."""
        cut = self._cut_items
        if cut is None:
            cut = self._cut_items = {}
        if item_id not in cut and len(cut) < ITEMS_MAX:
            cut[item_id] = True

    def _call(self) -> str:
        return self._cfg.call_id


__all__ = ["NO_OUTBOX", "LifecycleFields", "log"]
