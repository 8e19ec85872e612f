"""The table module's builders: rows, the coupling between machines, the engines' arguments.

The tables are data built once at import; these tests call the builders again at test time, so
what they promise is checked on every run, not only when the package is imported (and a
mutation test sees them).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from realtime_fsm import LifecycleConfig, LocalProtocolError, ResponseLifecycle, Tick
from realtime_fsm.engine import FrozenTableMachine
from realtime_fsm.table import (
    ENGINES,
    MACHINES,
    MachineSpec,
    ResponseState,
    TurnState,
    _row,
    callback_names,
    fired_triggers,
    machine_kwargs,
)

IDLE, ACTIVE = ResponseState.IDLE, ResponseState.ACTIVE


def test_a_row_is_a_transitions_row_with_guards_before_actions() -> None:
    row = _row("done", IDLE, ACTIVE, when=("a", "b"), unless=("c",), do=("x", "m.t"))
    assert dict(row) == {
        "trigger": "done",
        "source": [IDLE],
        "dest": ACTIVE,
        "conditions": ["a", "b"],
        "unless": ["c"],
        "before": ["x", "m.t"],
    }
    assert dict(_row("tick", [IDLE, ACTIVE], None)) == {
        "trigger": "tick",
        "source": [IDLE, ACTIVE],
        "dest": None,
        "conditions": [],
        "unless": [],
        "before": [],
    }


def test_the_slot_machine_fires_exactly_these_sub_machine_triggers() -> None:
    """The whole coupling between the machines, in one list: a new ``machine.trigger`` action in
    a row is a design change and shows up here."""
    assert sorted(fired_triggers()) == [
        "create.adopted",
        "create.busy",
        "create.closed",
        "create.failed",
        "create.interrupted",
        "create.send",
        "create.timeout",
        "recovery.cancel_abandoned",
        "recovery.closed",
        "recovery.create_given_up",
        "recovery.fired",
        "recovery.response_done",
        "turn.answered",
        "turn.closed",
        "turn.committed",
        "turn.overdue",
        "turn.slot_freed",
    ]


def test_every_callback_name_is_a_method_and_every_method_named_is_used() -> None:
    names = callback_names()
    assert fired_triggers() <= names
    assert {"enter_idle", "turn.slot_freed", "clear_turn_deadline", "is_oob_request"} <= names
    for name in names:
        assert callable(getattr(ResponseLifecycle, name)), name
    guards_and_actions = {
        n
        for spec in MACHINES
        for row in spec.rows
        for n in (*row["conditions"], *row["unless"], *row["before"])
    }
    on_enter = {n for spec in MACHINES for names_ in spec.on_enter.values() for n in names_}
    assert names == guards_and_actions | on_enter


@pytest.mark.parametrize("spec", MACHINES, ids=[spec.name for spec in MACHINES])
def test_engine_arguments_are_stock_transitions_semantics(spec: MachineSpec) -> None:
    kwargs = machine_kwargs(spec)
    assert machine_kwargs() == machine_kwargs(MACHINES[0])
    assert kwargs["auto_transitions"] is False
    assert kwargs["ignore_invalid_triggers"] is False
    assert kwargs["queued"] is False
    assert kwargs["send_event"] is False
    assert kwargs["initial"] is spec.initial
    assert kwargs["model_attribute"] == spec.attribute
    assert [s["name"] for s in kwargs["states"]] == list(spec.states)
    for state in kwargs["states"]:
        assert state["on_enter"] == spec.on_enter.get(state["name"], [])
    assert kwargs["transitions"] == [dict(row) for row in spec.rows]
    assert kwargs["transitions"] is not spec.rows


def _shape(row: Any) -> tuple[object, ...]:
    return (row.dest, [(c.func, c.target) for c in row.conditions], row.before, row.after)


@pytest.mark.parametrize("spec", MACHINES, ids=[spec.name for spec in MACHINES])
def test_an_engine_rebuilt_now_has_the_same_rows_as_the_shared_one(spec: MachineSpec) -> None:
    fresh = FrozenTableMachine(model=None, **machine_kwargs(spec))
    shared = ENGINES[spec.name]
    assert fresh.initial == shared.initial
    assert list(fresh.states) == list(shared.states)
    assert list(fresh.events) == list(shared.events)
    for trigger, event in fresh.events.items():
        other = shared.events[trigger]
        assert list(event.transitions) == list(other.transitions)
        for source, rows in event.transitions.items():
            assert [_shape(r) for r in rows] == [_shape(r) for r in other.transitions[source]]


def test_a_trigger_its_machine_has_no_row_for_is_refused_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gap in the tables is a bug, but in a live call it must cost a log line and a counter,
    never a crash: ``turn.overdue`` has no row in ``none``."""
    m = ResponseLifecycle(LifecycleConfig(call_id="CA1"), now=0.0)
    with caplog.at_level(logging.INFO, logger="realtime_fsm"):
        getattr(m, "turn.overdue")()
    assert m.turn_state is TurnState.NONE
    assert m.stats == {"machine_refused": 1}
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.ERROR,
            "call=CA1 machine=turn refused overdue in none (a gap in the transition table)",
        )
    ]


def test_a_machine_starts_at_time_zero_by_default() -> None:
    m = ResponseLifecycle()
    assert m.handle(Tick(), 0.5) == []
    with pytest.raises(LocalProtocolError):
        m.handle(Tick(), 0.25)
