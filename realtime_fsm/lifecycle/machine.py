"""The response lifecycle of one conversation: events and time in, commands out.

Sans-IO in the h11 sense: no sockets, no threads, no sleeping and no clock of its own.  The driver
passes the current monotonic time with every call, reads :attr:`ResponseLifecycle.next_deadline`
and calls back with a :class:`~realtime_fsm.events.Tick` when it passes.  The rules live in
:mod:`realtime_fsm.table`; the guards and actions they name live in this package's ``guards``,
``slot_actions`` and ``machine_actions``; this module holds the public API, the event dispatch,
the coupling of the machines and the per-frame fast paths that are deliberately not
transitions.

One owner per object: the machine is not thread-safe and does not need to be (one call, one
task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
from transitions.core import MachineError

from .. import events as ev
from ..commands import Command
from ..config import LifecycleConfig
from ..errors import LocalProtocolError
from ..logsafe import safe
from ..table import (
    ACTIVE,
    C_NONE,
    CANCELLING,
    CLOSED,
    CREATING,
    DUE,
    ENGINES,
    IDLE,
    IN_FLIGHT,
    MACHINES,
    OWED,
    R_NONE,
    SUBMACHINES,
    T_NONE,
    UNWANTED,
    callback_names,
    fired_triggers,
)
from .fields import NO_OUTBOX
from .handover import Handover
from .ledgers import ITEM_CALL, ITEM_DONE, ITEM_MESSAGE
from .machine_actions import MachineActions

log = logging.getLogger("realtime_fsm.lifecycle")

#: The engines' trigger functions: ``machine name -> trigger -> trigger(model)``.
_TRIGGERS: dict[str, dict[str, Callable[..., bool]]] = {
    name: {trigger: event.trigger for trigger, event in engine.events.items()}
    for name, engine in ENGINES.items()
}
#: Every (machine, state, trigger) the tables have at least one row for.
_DEFINED: frozenset[tuple[str, Any, str]] = frozenset(
    (spec.name, source, row["trigger"])
    for spec in MACHINES
    for row in spec.rows
    for source in row["source"]
)
#: Per ``(machine, trigger)``: the model attribute holding that machine's state, and the states
#: it has rows for.
_FIRED: dict[tuple[str, str], tuple[str, frozenset[Any]]] = {
    (spec.name, trigger): (
        spec.attribute,
        frozenset(s for name, s, t in _DEFINED if name == spec.name and t == trigger),
    )
    for spec in MACHINES
    for trigger in {row["trigger"] for row in spec.rows}
}

#: The slot trigger each control event fires.  Audio, transcript and playback events take the
#: fast paths; ``speech_stopped`` is informational (server VAD, or the app, commits from there).
_TRIGGER_OF: dict[type, str] = {
    ev.RequestResponse: "request",
    ev.UserText: "user_text",
    ev.UserTurnCommitted: "turn_committed",
    ev.SessionConfigured: "configure",
    ev.SpeechStarted: "speech_started",
    ev.IdleTimeoutTriggered: "idle_timeout",
    ev.ResponseCreated: "created",
    ev.ResponseDone: "done",
    ev.ServerError: "error",
    ev.Tick: "tick",
    ev.ConnectionClosed: "close",
}


class ResponseLifecycle(MachineActions):
    """The response lifecycle of one realtime conversation.

    Feed it events with :meth:`handle` (control events) or the fast paths :meth:`audio_delta`,
    :meth:`transcript_delta`, :meth:`touch` and :meth:`playback_progress` (per-frame events); act
    on the commands :meth:`handle` returns, in order.
    """

    __slots__ = ()

    #: The engines' triggers per machine (a class attribute, so a test can run the very same
    #: code on stock ``transitions.Machine`` engines built from the same tables).
    _triggers: ClassVar[dict[str, dict[str, Callable[..., bool]]]] = _TRIGGERS

    def __init__(self, config: LifecycleConfig | None = None, *, now: float = 0.0) -> None:
        super().__init__(config, now=now)

    # ------------------------------------------------------------------------------ public API

    @property
    def config(self) -> LifecycleConfig:
        return self._cfg

    @property
    def next_deadline(self) -> float | None:
        """The monotonic time at which a :class:`~realtime_fsm.events.Tick` is due, if any."""
        state = self.state
        if state is CREATING or state is CANCELLING:
            return self._state_deadline
        if state is ACTIVE:
            # Mirrors the tick rows: nothing fires while a function call is open; with no item
            # open the response is thinking and gets the longer limit.
            if self._open_calls:
                return None
            limit = self._cfg.stall_timeout if self._open_items else self._think_limit
            deadline = self._last_activity + limit
            silent_at = self._silent_since()
            if silent_at is not None:
                deadline = min(deadline, silent_at)
            return deadline
        if state is IDLE:
            return self._turn_deadline
        return None

    @property
    def playback(self) -> Mapping[str, Sequence[int]]:
        """The playback ledger, read-only: per assistant item still tracked, ``[bytes
        received, ms heard]``.  The one count of an item's audio bytes: a telephony tracker
        places its marks from it (``LedgerPlaybackTracker``) instead of counting them again."""
        return self._play

    @property
    def caller_hearing(self) -> bool:
        """True while audio the caller has been sent is still playing (from playback marks)."""
        return self.caller_hearing_audio()

    def at_rest(self) -> bool:
        """Nothing of this conversation is in motion: the slot idle with nothing queued, held
        or on the wire, no caller turn the server owes an answer, no watchdog recovery, no
        out-of-band response.  A session at rest can be replaced without cutting anything
        off or carrying anything over (a rotation's quiet moment reads this)."""
        return (
            self.state is IDLE
            and not self.pending
            and self.inflight is None
            and not self.held_texts
            and self.turn_state is T_NONE
            and self.recovery_state is R_NONE
            and not self.oob_responses
        )

    def awaiting_server_response(self) -> bool:
        """The server's VAD owes an answer to a committed caller turn (the turn machine)."""
        return self.turn_state is not T_NONE

    def handle(self, event: ev.Event, now: float) -> list[Command]:
        """Apply one event at monotonic time ``now``; return the commands to execute, in order."""
        if now < self._now:
            raise LocalProtocolError(f"time went backwards: {now} < {self._now}")
        if self.state is CLOSED:
            if type(event) is ev.ConnectionClosed:
                return []
            raise LocalProtocolError(f"machine is closed; cannot handle {type(event).__name__}")
        kind = type(event)
        trigger = _TRIGGER_OF.get(kind)
        fast = None if trigger is not None else _FAST.get(kind)
        if trigger is None and fast is None:
            raise LocalProtocolError(f"not a lifecycle event: {event!r}")
        self._now = now
        self._ev = event
        out: list[Command] = []
        self._out = out
        try:
            if trigger is not None:
                self._fire(trigger)
            elif fast is not None:
                fast(self, event)
            if self.state is IDLE and self.pending:
                self._fire("drain")
        finally:
            self._ev = None
            self._out = NO_OUTBOX  # the caller owns the list now; keep no reference to it
        return out

    def hand_over(self, reason: str, now: float) -> Handover:
        """Close the machine for a lost session and return what the call carries on with.

        The close's own commands are not returned: its ``RequestGivenUp`` would list requests
        that are carried, not given up, and its held texts are in the handover."""
        state = self.state
        queued = list(self.pending)
        inflight = self.inflight
        if inflight is not None:
            queued[0:0] = inflight.requests
        served = self.response_requests if state is ACTIVE else ()
        handover = Handover(
            state=state,
            queued=tuple(queued),
            served=tuple(served),
            held_texts=tuple(self.held_texts),
            awaiting_server_response=self.awaiting_server_response(),
            watchdog_last_fire=self.watchdog_last_fire,
            stats={},
        )
        self.held_texts = []  # the handover has them: the close must not hand them back too
        self.handle(ev.ConnectionClosed(f"session lost: {reason}"), now)
        return attrs.evolve(handover, stats=self.stats)

    def resume(
        self,
        now: float,
        *,
        first: ev.RequestResponse | None,
        queued: Sequence[ev.RequestResponse],
        watchdog_last_fire: float | None,
    ) -> list[Command]:
        """Take over a lost session's requests on this fresh machine (see :meth:`hand_over`).

        ``first`` is asked for alone (a cut-off answer retold with its own instructions: the
        queue would otherwise be folded into it); ``queued`` then wait their turn.  Without
        ``first``, one create serves every interchangeable request of ``queued``, as the
        machine coalesces its own queue."""
        if self.state is not IDLE or self.pending or self.inflight is not None:
            raise LocalProtocolError("resume needs a fresh machine")
        self.watchdog_last_fire = watchdog_last_fire
        if first is not None:
            out = self.handle(first, now)
            self.pending.extend(queued)
            return out
        if not queued:
            return []
        self.pending.extend(queued[:-1])
        return self.handle(queued[-1], now)

    def withdraw(self, reason: str) -> int:
        """Drop the queued (not yet sent) requests with this ``reason``; return how many.

        For a request whose purpose something else already served: a tool's follow-up when a
        response the server created after the tool's output was added has begun (it answers
        with the output in view).  A request already on the wire is not touched."""
        before = len(self.pending)
        self.pending[:] = [r for r in self.pending if r.reason != reason]
        dropped = before - len(self.pending)
        if dropped:
            self._count("requests_withdrawn")
        return dropped

    def audio_delta(self, response_id: str, item_id: str, byte_count: int, now: float) -> bool:
        """Count one audio delta; return True if it should be played to the caller.

        The per-frame fast path: a comparison and three increments for the current response.
        Anything else (late audio of a cancelled response, an unknown id) takes the slow path,
        which decides and counts the drop."""
        if response_id == self.response_id and self.state is ACTIVE:
            self.audio_deltas += 1
            if now > self._last_activity:
                self._last_activity = now
            entry = self._play.get(item_id)
            if entry is None:
                self._track_item(item_id)[0] += byte_count
            else:
                entry[0] += byte_count
            return True
        return self._audio_slow(response_id, item_id, byte_count, now)

    def transcript_delta(self, response_id: str, now: float) -> None:
        """Count one audio-transcript delta (arms the no-audio watchdog on the first one)."""
        if response_id == self.response_id and self.state is ACTIVE:
            self.transcript_deltas += 1
            if self._first_transcript_at is None:
                self._first_transcript_at = now
            if now > self._last_activity:
                self._last_activity = now
        elif self.state is ACTIVE and self.response_id is None and self._is_unknown(response_id):
            self._adopt_id(response_id)
            self.transcript_delta(response_id, now)
        else:
            self._count("stale_transcript_deltas")

    def touch(self, response_id: str, now: float) -> None:
        """Any other sign of life of a response (text or function-call deltas, item events):
        keeps the stall timeout from firing on a response that is busy but not speaking."""
        if response_id == self.response_id and now > self._last_activity:
            self._last_activity = now

    def playback_progress(self, item_id: str, played_ms: int) -> None:
        """The caller has heard ``played_ms`` of this assistant item (from telephony marks)."""
        entry = self._play.get(item_id)
        if entry is None or played_ms <= entry[1]:
            return
        entry[1] = played_ms
        if (
            played_ms * self._cfg.audio_bytes_per_ms >= entry[0]
            and item_id != self._open_audio_item()
        ):
            del self._play[item_id]

    def item_added(self, response_id: str, item_id: str, item_type: str, now: float) -> None:
        """``response.output_item.added``: the response opened an output item.  A sign of life
        too.  Not a transition: it feeds the ledger the guards ``thinking`` and
        ``function_call_open`` read (a reasoning model's response can open several)."""
        if response_id == self.response_id and self.state is ACTIVE:
            if now > self._last_activity:
                self._last_activity = now
            items = self._items
            if item_id in items:
                return  # a duplicate
            flags = ITEM_CALL if item_type == "function_call" else 0
            if item_type == "message":
                flags = ITEM_MESSAGE
            self._note_item(item_id, flags)
        elif response_id == self._cut_response and item_type == "message":
            self._cut_later(item_id)

    def item_done(self, response_id: str, item_id: str, now: float) -> None:
        """``response.output_item.done``: the item is complete (or was cut off).  A sign of life
        too; a function call's done closes it, and the stall timer runs again."""
        if response_id != self.response_id:
            return
        if now > self._last_activity:
            self._last_activity = now
        items = self._items
        flags = items.get(item_id)
        if flags is None:
            self._note_item(item_id, ITEM_DONE)
        elif not flags & ITEM_DONE:
            items[item_id] = self._close_item(item_id, flags)

    def check_invariants(self) -> list[str]:
        """Rule 4 as code: what must hold in the current states.  Empty when all is well."""
        problems: list[str] = []
        state = self.state
        create = self.create_state
        if (self.inflight is None) != (create is C_NONE):
            problems.append(f"create machine {create.value} with inflight {self.inflight}")
        if (self.turn_state is DUE) != (self._turn_deadline is not None):
            problems.append(f"turn machine {self.turn_state.value} with a wrong deadline")
        if state is IDLE or state is CLOSED:
            if self.response_id is not None:
                problems.append("response_id set outside a response")
            if create is not C_NONE:
                problems.append(f"create {create.value} while {state.value}")
            if self.audio_deltas or self.transcript_deltas or self._first_transcript_at:
                problems.append("stale per-response counters")
            if self.response_is_retry or self.response_requests:
                problems.append("stale response flags")
            if state is IDLE and self.held_texts:
                problems.append("held text left in idle")
            if state is IDLE and self.pending and self.turn_state is T_NONE:
                problems.append("queued requests left in idle")
            if state is IDLE and self.turn_state is OWED:
                problems.append("turn owed while the slot is free")
            if self._state_deadline is not None:
                problems.append("deadline armed outside creating/cancelling")
            if state is CLOSED and (
                self.turn_state is not T_NONE or self.recovery_state is not R_NONE
            ):
                problems.append("a machine still open after close")
        elif state is CREATING:
            if create not in IN_FLIGHT:
                problems.append(f"creating with create {create.value}")
            if self.response_id is not None:
                problems.append("response id while creating")
        elif self.response_id is None:
            if state is ACTIVE and not self._current_unseen:
                problems.append("active with no response")
            if state is CANCELLING and not self._current_unseen and create is not UNWANTED:
                problems.append("cancelling nothing")
        elif state is CANCELLING and self.response_id not in self._retired:
            problems.append("cancelling a response whose audio is not dropped")
        return problems

    # ---------------------------------------------------------------- driving the machines

    def _fire(self, trigger: str) -> bool:
        """Fire a slot trigger (an event, or ``drain``): the first row whose guards pass runs."""
        source = self.state
        if ("slot", source, trigger) not in _DEFINED:
            # Not even a row for it: answer without the engine, whose MachineError would pin
            # this object in a traceback reference cycle until the next garbage collection.
            return False
        try:
            done = self._triggers["slot"][trigger](self)
        except MachineError:  # pragma: no cover - _DEFINED mirrors the table
            done = False
        if done and log.isEnabledFor(logging.INFO):
            log.info(
                "call=%s transition=%s %s->%s response=%s inflight=%s pending=%d held=%d",
                self._cfg.call_id,
                trigger,
                source.value,
                self.state.value,
                safe(self.response_id),
                self.inflight.event_id if self.inflight else None,
                len(self.pending),
                len(self.held_texts),
            )
        return done

    def _fire_in(self, machine: str, trigger: str) -> None:
        """A ``machine.trigger`` action of a row: fire that trigger on that machine.  The tables
        give every such trigger a row for every state it can be fired in; one that finds none
        is a bug in the tables, logged and counted (``machine_refused``), never a crash."""
        attribute, defined = _FIRED[machine, trigger]
        source = getattr(self, attribute)
        done = False
        if source in defined:
            try:
                done = self._triggers[machine][trigger](self)
            except MachineError:  # pragma: no cover - ``defined`` mirrors the table
                done = False
        if not done:
            self._count("machine_refused")
            log.error(
                "call=%s machine=%s refused %s in %s (a gap in the transition table)",
                self._cfg.call_id,
                machine,
                trigger,
                source.value,
            )
            return
        dest = getattr(self, attribute)
        if dest is not source and log.isEnabledFor(logging.INFO):
            log.info(
                "call=%s machine=%s transition=%s %s->%s",
                self._cfg.call_id,
                machine,
                trigger,
                source.value,
                dest.value,
            )

    def _on_audio(self, event: ev.AudioDelta) -> None:
        self.audio_delta(event.response_id, event.item_id, event.byte_count, self._now)

    def _on_transcript(self, event: ev.TranscriptDelta) -> None:
        self.transcript_delta(event.response_id, self._now)

    def _on_playback(self, event: ev.PlaybackProgress) -> None:
        self.playback_progress(event.item_id, event.played_ms)

    def _on_speech_stopped(self, event: ev.SpeechStopped) -> None:
        pass  # informational: server VAD creates (or the app commits) from here

    # -------------------------------------------------------------------------- fast paths

    def _audio_slow(self, response_id: str, item_id: str, byte_count: int, now: float) -> bool:
        if self.state is CLOSED:
            return False
        if response_id in self.oob_responses:
            self._count("oob_audio_deltas")
            return True
        if self.state is ACTIVE and self.response_id is None and self._is_unknown(response_id):
            self._adopt_id(response_id)
            return self.audio_delta(response_id, item_id, byte_count, now)
        if response_id in self._retired or response_id == self.response_id:
            self._count("dropped_audio_deltas")
            if response_id == self._cut_response:
                self._cut_later(item_id)
        else:
            self._count("unknown_audio_deltas")
        return False


_FAST: dict[type, Callable[[ResponseLifecycle, Any], None]] = {
    ev.AudioDelta: ResponseLifecycle._on_audio,
    ev.TranscriptDelta: ResponseLifecycle._on_transcript,
    ev.PlaybackProgress: ResponseLifecycle._on_playback,
    ev.SpeechStopped: ResponseLifecycle._on_speech_stopped,
}


def _firer(machine: str, trigger: str) -> Callable[[ResponseLifecycle], None]:
    def fire(self: ResponseLifecycle) -> None:
        self._fire_in(machine, trigger)

    fire.__name__ = fire.__qualname__ = f"{machine}.{trigger}"
    fire.__doc__ = f"Fire ``{trigger}`` on the {machine} machine."
    return fire


# The ``machine.trigger`` names the tables use as actions become methods of that very name, so
# ``transitions`` (and the lean engine) resolve them like any other callback.
for _name in sorted(fired_triggers()):
    _machine, _, _trigger = _name.partition(".")
    if _machine not in {spec.name for spec in SUBMACHINES} or _trigger not in _TRIGGERS[_machine]:
        raise ImportError(f"the tables fire an unknown trigger: {_name}")
    setattr(ResponseLifecycle, _name, _firer(_machine, _trigger))

_missing = callback_names() - set(dir(ResponseLifecycle))
if _missing:  # pragma: no cover - a typo in the table fails at import, not mid-call
    raise ImportError(f"transition tables name unknown callbacks: {sorted(_missing)}")

__all__ = ["ResponseLifecycle"]
