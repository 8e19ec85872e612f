"""The runtime machine, stock ``transitions`` and the benchmark's dict table behave identically.

The runtime drives the table with :class:`realtime_fsm.engine.FrozenTableMachine` (a
``transitions.Machine`` with lean dispatch); ``StockTransitionsLifecycle`` runs the same code on
an unmodified ``transitions.Machine``, so every differential run below also proves the lean
engine keeps stock semantics.

``benchmarks/dict_table.py`` replaces only the engine of :class:`ResponseLifecycle`; the core
benchmark compares the two, so it is only fair if they do the same work.  Checked three ways:

* structurally: the compiled table has, for every ``(state, trigger)``, the rows, guards,
  actions and ``on_enter`` callbacks of the ``transitions`` machine's own objects;
* differentially: hypothesis drives both with the same random, deliberately messy event
  sequences (requests, user text, speech, ``response.created``/``done`` with current, stale,
  retired and unknown ids, busy and other errors matched and unmatched, ticks early and past the
  deadline, audio and transcript deltas, playback marks, close, time going backwards) and
  compares every return value or exception, every command, and the whole machine state;
* the harness is sensitive: a table with one row missing is caught.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import dict_table
from benchmarks.dict_table import (
    TABLES,
    DictTableLifecycle,
    PlainCallState,
    StockTransitionsLifecycle,
)
from realtime_fsm import (
    META_EVENT_ID,
    AudioDelta,
    ConnectionClosed,
    IdleTimeoutTriggered,
    LifecycleConfig,
    PlaybackProgress,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    SendResponseCreate,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    Tick,
    TranscriptDelta,
    UserText,
    UserTurnCommitted,
)
from realtime_fsm.lifecycle.fields import LifecycleFields
from realtime_fsm.table import ENGINES, MACHINES, MachineSpec

BUSY_CODE = "conversation_already_has_active_response"
BUSY_MSG = "Conversation already has an active response in progress: {rid}. Wait until it is done."
#: A few response and item ids, so that stale, retired and current ids collide often.
RIDS = ("resp_1", "resp_2", "resp_3", "resp_4")
ITEMS = ("item_1", "item_2", "item_3")

Machine = ResponseLifecycle
Step = tuple[Any, ...]


# ------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("spec", MACHINES, ids=[spec.name for spec in MACHINES])
def test_compiled_table_matches_the_transitions_machine(spec: MachineSpec) -> None:
    machine = ENGINES[spec.name]
    assert not (
        machine.prepare_event
        or machine.finalize_event
        or machine.before_state_change
        or machine.after_state_change
        or machine.on_exception
        or machine.on_final
    ), "machine-level hooks are not compiled into the dict table"
    assert not machine.send_event and not machine.has_queue
    assert machine.model_attribute == spec.attribute
    table = TABLES[spec.name]
    seen: set[tuple[object, str]] = set()
    for trigger, event in machine.events.items():
        for state_name, transitions in event.transitions.items():
            state = spec.states[state_name]
            assert machine.get_state(state_name).on_exit == []
            entries = table[(state, trigger)]
            assert len(entries) == len(transitions), (state, trigger)
            for entry, trans in zip(entries, transitions, strict=True):
                assert trans.prepare == [] and trans.after == []
                want_guards = [(c.func, c.target) for c in trans.conditions]
                assert [(g.__name__, t) for g, t in entry.guards] == want_guards
                assert [a.__name__ for a in entry.actions] == trans.before
                if trans.dest is None:
                    assert entry.dest is None and entry.on_enter == ()
                else:
                    assert entry.dest is spec.states[trans.dest]
                    on_enter = machine.get_state(trans.dest).on_enter
                    assert [a.__name__ for a in entry.on_enter] == on_enter
                    assert on_enter == spec.on_enter.get(entry.dest, [])
            seen.add((state, trigger))
    assert seen == set(table)


def test_plain_object_has_the_same_fields() -> None:
    assert set(vars(PlainCallState())) == set(LifecycleFields.__slots__)
    assert DictTableLifecycle.__slots__ == () and ResponseLifecycle.__slots__ == ()


# ---------------------------------------------------------------------------- the harness


class Ids:
    """Ids the random steps can refer to: creates seen on the wire, plus a fresh-id counter."""

    def __init__(self) -> None:
        self.creates: list[str] = []
        self.fresh = 0

    def rid(self, m: Machine, choice: int) -> str:
        if choice == 0 and m.response_id is not None:
            return m.response_id
        if choice == len(RIDS) + 1:
            self.fresh += 1
            return f"resp_new_{self.fresh}"
        return RIDS[choice % len(RIDS)]

    def event_id(self, m: Machine, choice: int) -> str | None:
        if choice == 0:
            return m.inflight.event_id if m.inflight is not None else "evt_unknown"
        if choice == 1:
            return None
        if self.creates:
            return self.creates[choice % len(self.creates)]
        return "evt_unknown"

    def note(self, result: object) -> None:
        """Remember the creates a step sent, so later steps can answer them."""
        if isinstance(result, list):
            self.creates.extend(c.event_id for c in result if isinstance(c, SendResponseCreate))


def step_time(now: float, dt: float, step: Step, m: Machine) -> float:
    """When ``step`` happens: ``dt`` after ``now``; a deadline tick at or past the machine's
    deadline; ``back_in_time`` a second before ``now`` (the caller's clock then goes back to
    ``now``: the step must fail, and time must not have moved)."""
    if step[0] == "tick" and step[1] and m.next_deadline is not None:
        return max(now, m.next_deadline + dt)
    if step[0] == "back_in_time":
        return now - 1.0
    return now + dt


def snapshot(m: Machine) -> dict[str, Any]:
    """Every field of the machine (the inflight create as plain data, dicts with their order,
    which decides what the bounded ones forget first), plus derived views."""
    data: dict[str, Any] = {}
    for name in LifecycleFields.__slots__:
        if name in ("_cfg", "_out", "_ev", "inflight"):
            continue
        value = getattr(m, name)
        data[name] = list(value.items()) if isinstance(value, dict) else value
    inflight = m.inflight
    data["inflight"] = (
        None if inflight is None else (inflight.event_id, inflight.requests, inflight.sent_at)
    )
    data["next_deadline"] = m.next_deadline
    data["caller_hearing"] = m.caller_hearing
    data["invariants"] = m.check_invariants()
    return data


def outcome(call: Callable[[Machine], object], m: Machine) -> tuple[str, object]:
    try:
        return ("ok", call(m))
    except Exception as exc:  # both must fail the same way, e.g. LocalProtocolError
        return ("raised", f"{type(exc).__name__}: {exc}")


def resolve(step: Step, m: Machine, now: float, ids: Ids) -> Callable[[Machine], object]:
    """Turn an abstract step into one call, with ids resolved against the (shared) state."""
    kind = step[0]
    if kind == "request":
        _, instructions, oob = step
        event: Any = RequestResponse(reason="app", instructions=instructions, out_of_band=oob)
    elif kind == "user_text":
        event = UserText(text=step[1])
    elif kind == "turn":
        event = UserTurnCommitted(item_id=step[1] if len(step) > 1 else "item_user")
    elif kind == "idle_timeout":
        event = IdleTimeoutTriggered(item_id="item_idle", audio_start_ms=100, audio_end_ms=6100)
    elif kind == "session":
        # session.created unless a fifth item says session.updated (the answer to our update);
        # a sixth is the reasoning effort the server reports
        _, detection, create, interrupt, *rest = step
        event = SessionConfigured(
            turn_detection=detection,
            create_response=create,
            interrupt_response=interrupt,
            updated=bool(rest and rest[0]),
            reasoning_effort=rest[1] if len(rest) > 1 else None,
        )
    elif kind == "speech_started":
        event = SpeechStarted(item_id="item_user", audio_start_ms=10)
    elif kind == "speech_stopped":
        event = SpeechStopped(item_id="item_user", audio_end_ms=20)
    elif kind == "created":
        _, rid, eid, oob, modalities = step
        eid_value = ids.event_id(m, eid)
        metadata = {META_EVENT_ID: eid_value} if eid_value is not None else {}
        event = ResponseCreated(
            response_id=ids.rid(m, rid),
            out_of_band=oob,
            metadata=metadata,
            output_modalities=modalities,
        )
    elif kind == "done":
        _, rid, status = step
        event = ResponseDone(response_id=ids.rid(m, rid), status=status)
    elif kind == "error":
        _, what, eid, rid = step
        code: str | None = what
        message = "boom"
        if what == BUSY_CODE:
            message = BUSY_MSG.format(rid=ids.rid(m, rid))
        elif what == "busy_no_id":
            code, message = None, "Conversation already has an active response"
        elif what == "response_cancel_not_active":
            message = "Cancellation failed: no active response found"
        event = ServerError(code=code, message=message, event_id=ids.event_id(m, eid))
    elif kind == "audio":
        _, rid, item, nbytes, via_handle = step
        rid_value, item_id = ids.rid(m, rid), ITEMS[item]
        if not via_handle:
            return lambda x: x.audio_delta(rid_value, item_id, nbytes, now)
        event = AudioDelta(response_id=rid_value, item_id=item_id, byte_count=nbytes)
    elif kind == "transcript":
        _, rid, via_handle = step
        rid_value = ids.rid(m, rid)
        if not via_handle:
            return lambda x: x.transcript_delta(rid_value, now)
        event = TranscriptDelta(response_id=rid_value)
    elif kind == "touch":
        rid_value = ids.rid(m, step[1])
        return lambda x: x.touch(rid_value, now)
    elif kind == "item_added":
        _, rid, item, item_type = step
        rid_value, item_id = ids.rid(m, rid), ITEMS[item]
        return lambda x: x.item_added(rid_value, item_id, item_type, now)
    elif kind == "item_done":
        _, rid, item = step
        rid_value, item_id = ids.rid(m, rid), ITEMS[item]
        return lambda x: x.item_done(rid_value, item_id, now)
    elif kind == "playback":
        _, item, played_ms, via_handle = step
        if not via_handle:
            return lambda x: x.playback_progress(ITEMS[item], played_ms)
        event = PlaybackProgress(item_id=ITEMS[item], played_ms=played_ms)
    elif kind in ("tick", "back_in_time"):
        event = Tick()
    elif kind == "close":
        event = ConnectionClosed(reason="hangup")
    else:  # pragma: no cover
        raise AssertionError(kind)
    return lambda x: x.handle(event, now)


def run_both(config: LifecycleConfig, steps: list[tuple[float, Step]]) -> None:
    """Drive the runtime machine, the dict table and stock ``transitions`` in lockstep; fail at
    the first difference."""
    real = ResponseLifecycle(config, now=0.0)
    table = DictTableLifecycle(config, now=0.0)
    stock = StockTransitionsLifecycle(config, now=0.0)
    ids = Ids()
    now = 0.0
    for index, (dt, step) in enumerate(steps):
        now = step_time(now, dt, step, real)
        fresh_before = ids.fresh
        call = resolve(step, real, now, ids)
        ids.fresh = fresh_before
        call_table = resolve(step, table, now, ids)
        ids.fresh = fresh_before
        call_stock = resolve(step, stock, now, ids)
        got_real = outcome(call, real)
        got_table = outcome(call_table, table)
        got_stock = outcome(call_stock, stock)
        where = f"step {index}: {step} at t={now}"
        assert got_table == got_real, where
        assert got_stock == got_real, where
        assert snapshot(table) == snapshot(real), where
        assert snapshot(stock) == snapshot(real), where
        if step[0] == "back_in_time":
            now += 1.0
        ids.note(got_real[1])


_REQ: Step = ("request", None, False)
_OURS: Step = ("created", len(RIDS) + 1, 0, False, ())  # a new id, our in-flight create
_SERVERS: Step = ("created", len(RIDS) + 1, 1, False, ())  # a new id, no metadata (VAD)
_SPEECH: Step = ("speech_started",)
_AUDIO: Step = ("audio", 0, 0, 800, False)
_DEADLINE: Step = ("tick", True)
#: Rows that random sequences reach only rarely, each reached on purpose (see the comments).
#: Together with the random sequences they reach every row of the table except ``created`` in
#: idle for a create in flight, which cannot happen (a create in flight is never idle).
SCENARIOS: dict[str, list[Step]] = {
    # active+inflight: a server response took the slot; then ours is created, or rejected.
    "ours_after_server_response": [_REQ, _SERVERS, _OURS],
    "busy_while_active": [_REQ, _SERVERS, ("error", BUSY_CODE, 0, 0)],
    "done_while_ours_in_flight": [_REQ, _SERVERS, ("done", 0, "completed"), _OURS],
    "create_failed_while_active": [_REQ, _SERVERS, ("error", "invalid_value", 0, 0)],
    "ours_created_while_cancelling": [_REQ, _SERVERS, _SPEECH, _OURS],
    "done_while_cancelling_and_ours_in_flight": [_REQ, _SERVERS, _SPEECH, ("done", 0, "cancelled")],
    # text barge-in on a server response with ours in flight: ours is cancelled when created.
    "text_barge_in_cancels_ours_in_flight_too": [
        _REQ,
        _SERVERS,
        ("user_text", "stop"),
        ("done", 0, "cancelled"),
        _OURS,
    ],
    "create_failed_after_early_barge_in": [_REQ, _SPEECH, ("error", "invalid_value", 0, 0)],
    "create_failed_while_cancelling": [_REQ, _SERVERS, _SPEECH, ("error", "invalid_value", 0, 0)],
    # barge-in before response.created, then a server response, then ours: cancel it by id.
    "deferred_cancel_after_server_response": [_REQ, _SPEECH, _SERVERS, _OURS],
    # a create given up at its timeout is served while another response is being cancelled.
    "given_up_served_while_cancelling": [
        _REQ,
        _DEADLINE,
        _REQ,
        _SERVERS,
        _SPEECH,
        ("created", len(RIDS) + 1, 2, False, ()),
    ],
    "given_up_served_while_creating": [
        _REQ,
        _DEADLINE,
        _REQ,
        ("created", len(RIDS) + 1, 2, False, ()),
    ],
    "given_up_served_while_active": [
        _REQ,
        _DEADLINE,
        _SERVERS,
        ("created", len(RIDS) + 1, 2, False, ()),
    ],
    "busy_while_cancelling_a_known_response": [_REQ, _SERVERS, _SPEECH, ("error", BUSY_CODE, 0, 0)],
    # an out-of-band response (resp_2) during ours, its done, then a late duplicate created.
    "out_of_band": [
        _REQ,
        _OURS,
        ("created", 1, 1, True, ()),
        ("done", 1, "completed"),
        ("done", 0, "completed"),
        ("created", 1, 1, True, ()),
    ],
    "out_of_band_done_while_idle": [
        _REQ,
        _OURS,
        ("created", 1, 1, True, ()),
        ("done", 0, "completed"),
        ("done", 1, "completed"),
    ],
    # server VAD creates the committed turn's response: requests wait for it, then time out.
    "server_turn_awaited": [("session", "server_vad", True, True), ("turn",), _REQ, _DEADLINE],
    # a response abandoned at its cancel timeout turns out to be the one the server is busy with.
    "busy_by_abandoned_response": [
        _REQ,
        ("created", 1, 0, False, ()),
        _SPEECH,
        _DEADLINE,
        _REQ,
        ("error", BUSY_CODE, 0, 1),
    ],
    # server VAD that cancels by itself on speech.
    "server_vad": [("session", "server_vad", True, True), _REQ, _OURS, _SPEECH],
    # a pool id (resp_2) finished, then creating and cancelling: resp_2 is known (retired).
    "retired_pool_id": [
        _REQ,
        ("created", 1, 0, False, ()),
        ("done", 0, "completed"),
        _REQ,
        _SPEECH,
    ],
    # an out-of-band response (resp_2) open while creating and cancelling.
    "out_of_band_then_busy": [("created", 1, 1, True, ()), _REQ, _SPEECH],
    # the caller still hears the last response after its done / during a stall cancel.
    "speech_while_idle_and_hearing": [_REQ, _OURS, _AUDIO, ("done", 0, "completed"), _SPEECH],
    "text_while_stall_cancel_and_hearing": [_REQ, _OURS, _AUDIO, _DEADLINE, ("user_text", "hi")],
    "speech_while_stall_cancel_and_hearing": [_REQ, _OURS, _AUDIO, _DEADLINE, _SPEECH],
    # a create given up after its retry is served while idle: cancelled, never heard.
    "given_up_served_while_idle": [
        _REQ,
        _DEADLINE,
        _DEADLINE,
        ("created", len(RIDS) + 1, 2, False, ()),
    ],
    # a busy error names a response we never saw; its late response.created answers a create
    # we gave up on (cancelled), or is the server's own (first sighting).
    "busy_named_then_given_up_created": [
        _REQ,
        _DEADLINE,
        _DEADLINE,
        _REQ,
        ("error", BUSY_CODE, 0, 1),
        ("created", 0, 3, False, ()),
    ],
    "busy_named_then_server_created": [
        _REQ,
        ("error", BUSY_CODE, 0, 1),
        ("created", 0, 1, False, ()),
    ],
    # the old wording names no response; the caller barges in; then it is created, late.
    "unnamed_busy_barged_in_then_created": [_REQ, ("error", "busy_no_id", 0, 0), _SPEECH, _SERVERS],
    # a response abandoned at its cancel timeout ends later, while another is active/stopped.
    "abandoned_done_while_active": [
        _REQ,
        ("created", 1, 0, False, ()),
        _SPEECH,
        _DEADLINE,
        _REQ,
        _OURS,
        ("done", 1, "cancelled"),
    ],
    "abandoned_done_while_cancelling": [
        _REQ,
        ("created", 1, 0, False, ()),
        _SPEECH,
        _DEADLINE,
        _REQ,
        _OURS,
        _SPEECH,
        ("done", 1, "cancelled"),
    ],
    # late busy answers to given-up creates, naming a retired, an unseen or no response.
    **{
        f"given_up_answer_{where}_{named}": [
            _REQ,
            ("created", 1, 0, False, ()),
            ("done", 0, "completed"),
            *([("session", "server_vad", True, True)] if where == "owed" else []),
            _REQ,
            _DEADLINE,
            _DEADLINE,
            *([_REQ] if where != "idle" else []),
            *([_SPEECH] if where in ("cancelling", "owed") else []),
            *([("turn",)] if where == "owed" else []),
            ("error", *what),
        ]
        for where in ("idle", "creating", "cancelling", "owed")
        for named, what in (
            ("retired", (BUSY_CODE, 2, 1)),
            ("unseen", (BUSY_CODE, 2, 2)),
            ("unnamed", ("busy_no_id", 2, 0)),
        )
    },
    # our interrupted create is rejected as busy by the response we abandoned (bug 3).
    "interrupted_create_busy_by_abandoned": [
        _REQ,
        ("created", 1, 0, False, ()),
        _SPEECH,
        _DEADLINE,
        _REQ,
        _SPEECH,
        ("error", BUSY_CODE, 0, 1),
    ],
    # the turn machine: a second commit while owed or due, the slot freeing, answers, close.
    "turn_owed_twice_then_answered": [
        ("session", "server_vad", True, True),
        _REQ,
        _OURS,
        ("turn",),
        ("turn",),
        _SERVERS,
    ],
    "turn_owed_then_slot_freed": [
        ("session", "server_vad", True, True),
        _REQ,
        _OURS,
        ("turn",),
        ("done", 0, "completed"),
    ],
    "turn_owed_then_close": [
        ("session", "server_vad", True, True),
        _REQ,
        _OURS,
        ("turn",),
        ("close",),
    ],
    "turn_due_then_given_up_served": [
        ("session", "server_vad", True, True),
        _REQ,
        _DEADLINE,
        _DEADLINE,
        ("turn",),
        ("created", len(RIDS) + 1, 2, False, ()),
        ("turn",),
        ("done", 0, "cancelled"),
    ],
    # the server's idle timeout, and its commit, in every state of the slot.
    **{
        f"idle_timeout_commit_while_{where}": [
            *prefix,
            ("idle_timeout",),
            ("turn", "item_idle"),
        ]
        for where, prefix in (
            ("idle", []),
            ("creating", [_REQ]),
            ("active", [_REQ, _OURS]),
            ("cancelling", [_REQ, _OURS, _SPEECH]),
        )
    },
    # a reasoning response thinking past its allowance, one stalled with an item open, one
    # whose function call holds every timer off, and a silent preamble before a call.
    "thinking_too_long": [("session", "server_vad", True, True, "high"), _REQ, _OURS, _DEADLINE],
    "stalled_mid_item": [_REQ, _OURS, ("item_added", 0, 0, "message"), _DEADLINE],
    "function_call_open_then_done": [
        _REQ,
        _OURS,
        ("transcript", 0, False),
        ("item_added", 0, 1, "function_call"),
        ("wait", 30.0),
        ("tick", False),
        ("item_done", 0, 1),
        _DEADLINE,
    ],
    # a barge-in mid item 1 of 2: item 2 (no audio yet) and item 3 (audio after the barge-in)
    # are deleted at the response's done.
    "barge_in_cuts_later_items": [
        _REQ,
        _OURS,
        ("item_added", 0, 0, "message"),
        _AUDIO,
        ("item_added", 0, 1, "message"),
        _SPEECH,
        ("item_added", 0, 2, "message"),
        ("audio", 0, 2, 160, False),
        ("item_done", 0, 2),
        ("done", 0, "cancelled"),
    ],
    # the recovery machine: fires, silent ends and give-ups while it cancels or retries.
    "watchdog_fires_again_while_cancelling": [
        _REQ,
        _OURS,
        ("transcript", 0, False),
        _DEADLINE,
        _SERVERS,
        ("wait", 10.0),
        ("transcript", 0, False),
        _DEADLINE,
    ],
    **{
        f"watchdog_retrying_then_{end}": [
            _REQ,
            _OURS,
            ("transcript", 0, False),
            _DEADLINE,
            ("done", 0, "cancelled"),
            _SERVERS,
            *([("wait", 12.5)] if end in ("fires", "silent_done") else []),
            ("transcript", 0, False),
            *([_AUDIO] if end == "done" else []),
            _DEADLINE if end == "fires" else ("done", 0, "completed"),
        ]
        for end in ("fires", "silent_done", "silent_done_cooling", "done")
    },
    "watchdog_retry_cancel_abandoned": [
        _REQ,
        _OURS,
        ("transcript", 0, False),
        _DEADLINE,
        ("done", 0, "cancelled"),
        _OURS,
        _SPEECH,
        _DEADLINE,
    ],
    "watchdog_retrying_other_create_given_up": [
        _REQ,
        _SERVERS,
        ("transcript", 0, False),
        _DEADLINE,
        ("done", 0, "cancelled"),
        _DEADLINE,
        _DEADLINE,
    ],
    "watchdog_cancelling_create_interrupted": [
        _REQ,
        _SERVERS,
        ("transcript", 0, False),
        _DEADLINE,
        _SPEECH,
    ],
    # a silent response, the watchdog's retry, then another silent one inside the cooldown.
    "watchdog_cooldown": [
        _REQ,
        _OURS,
        ("transcript", 0, False),
        _DEADLINE,
        ("done", 0, "cancelled"),
        _OURS,
        ("done", 0, "completed"),
        _REQ,
        _OURS,
        ("transcript", 0, False),
        _DEADLINE,
    ],
}


#: One of every kind of event, with ids that are current, stale, retired, ours or unknown.
PROBES: list[Step] = [
    _REQ,
    ("request", "be brief", False),
    ("request", None, True),
    ("user_text", "hi"),
    ("turn",),
    ("turn", "item_idle"),
    ("idle_timeout",),
    ("session", "server_vad", True, True),
    ("session", "server_vad", False, True, False, "medium"),
    ("session", None, False, False),
    ("session", "server_vad", True, True, True),  # session.updated
    _SPEECH,
    ("speech_stopped",),
    _OURS,
    _SERVERS,
    ("created", 0, 1, False, ()),  # the current id again
    ("created", 1, 2, False, ()),  # a pool id, the first create seen (maybe given up)
    ("created", len(RIDS) + 1, 1, True, ()),  # a new out-of-band response
    ("created", 1, 1, True, ()),  # resp_2 out of band (retired if done before)
    ("done", 0, "completed"),
    ("done", 1, "completed"),  # resp_2: stale, or the out-of-band one
    ("error", BUSY_CODE, 0, 0),
    ("error", BUSY_CODE, 3, 0),
    ("error", "busy_no_id", 1, 0),
    ("error", "response_cancel_not_active", 1, 0),
    ("error", "invalid_value", 0, 0),
    ("error", "invalid_value", 3, 0),
    _DEADLINE,
    ("tick", False),
    _AUDIO,
    ("audio", 1, 1, 160, True),
    ("transcript", 0, True),
    ("touch", 0),
    ("item_added", 0, 0, "message"),
    ("item_added", 0, 1, "function_call"),
    ("item_done", 0, 1),
    ("playback", 0, 50, True),
    ("close",),
    ("back_in_time",),
]
#: Rows no sequence can reach (none: every row of every machine is reachable).
UNREACHABLE: set[tuple[str, object, str, int]] = set()


def timed(steps: list[Step]) -> list[tuple[float, Step]]:
    """0.1 s between steps; a ``("wait", seconds)`` step lengthens the gap before the next."""
    out: list[tuple[float, Step]] = []
    gap = 0.1
    for step in steps:
        if step[0] == "wait":
            gap = float(step[1])
            continue
        out.append((gap, step))
        gap = 0.1
    return out


@pytest.mark.slow
def test_every_prefix_then_every_probe_agrees_and_reaches_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every prefix of every scenario, followed by every probe: deterministic, and together they
    fire every reachable row of the table (recorded by an extra first action on each row)."""
    hits: set[tuple[str, object, str, int]] = set()

    def recorder(name: str, key: tuple[object, str], index: int) -> Callable[[object], None]:
        return lambda _m: hits.add((name, *key, index))

    recording = {
        name: {
            key: tuple(
                entry._replace(actions=(recorder(name, key, i), *entry.actions))
                for i, entry in enumerate(entries)
            )
            for key, entries in table.items()
        }
        for name, table in TABLES.items()
    }
    monkeypatch.setattr(dict_table, "TABLES", recording)
    monkeypatch.setattr(dict_table, "TABLE", recording["slot"])
    prefixes = {tuple(steps[:n]) for steps in SCENARIOS.values() for n in range(len(steps) + 1)}
    for prefix in sorted(prefixes, key=repr):
        for probe in PROBES:
            run_both(LifecycleConfig(), timed([*prefix, probe]))
    every_row = {
        (name, *key, i)
        for name, table in TABLES.items()
        for key, entries in table.items()
        for i in range(len(entries))
    }
    missing = every_row - UNREACHABLE - hits
    assert missing == set(), sorted(map(str, missing))
    assert not hits & UNREACHABLE


def test_a_broken_table_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the ``created`` row in ``active`` that ignores a duplicate response.created: a
    duplicate then replaces the response instead, and the harness must notice."""
    key = (ResponseState.ACTIVE, "created")
    table = TABLES["slot"]
    broken = dict(table)
    broken[key] = tuple(
        entry
        for entry in table[key]
        if [g.__name__ for g, _ in entry.guards] != ["is_current_response"]
    )
    assert len(broken[key]) == len(table[key]) - 1
    monkeypatch.setattr(dict_table, "TABLE", broken)
    steps: list[tuple[float, Step]] = [
        (0.1, ("request", None, False)),
        (0.1, ("created", len(RIDS), 0, False, ())),  # resp_1, our in-flight create
        (0.1, ("created", 0, 4, False, ())),  # the current id again: a duplicate
    ]
    with pytest.raises(AssertionError):
        run_both(LifecycleConfig(), steps)
    monkeypatch.undo()
    run_both(LifecycleConfig(), steps)
