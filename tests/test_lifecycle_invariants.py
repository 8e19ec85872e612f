"""``check_invariants`` names each broken invariant, and only the broken ones.

The promises tests call ``check_invariants()`` after every step and expect it empty; that shows
the machine never breaks an invariant, but not that the check would notice if it did.  Each case
here forges one broken state on a fresh machine (fields are plain attributes) and expects exactly
that one problem, in words; the ``ok`` cases are the nearest legal states, so a check that is too
eager fails too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from realtime_fsm import LifecycleConfig, RequestResponse, ResponseLifecycle, ResponseState
from realtime_fsm.lifecycle.ledgers import Inflight
from realtime_fsm.table import CreateState, RecoveryState, TurnState

REQ = RequestResponse(reason="app")


def _inflight(m: ResponseLifecycle, create: CreateState = CreateState.SENT) -> Inflight:
    m.inflight = Inflight("evt_1", (REQ,), 0.0)
    m.create_state = create
    return m.inflight


def _set(**fields: object) -> Callable[[ResponseLifecycle], None]:
    def forge(m: ResponseLifecycle) -> None:
        for name, value in fields.items():
            setattr(m, name, value)

    return forge


def _inflight_without_create(m: ResponseLifecycle) -> None:
    m.inflight = Inflight("evt_1", (REQ,), 0.0)


def _create_while(state: ResponseState) -> Callable[[ResponseLifecycle], None]:
    def forge(m: ResponseLifecycle) -> None:
        m.state = state
        _inflight(m)

    return forge


def _creating_unwanted(m: ResponseLifecycle) -> None:
    m.state = ResponseState.CREATING
    _inflight(m, CreateState.UNWANTED)


def _creating_with_id(m: ResponseLifecycle) -> None:
    m.state = ResponseState.CREATING
    _inflight(m, CreateState.RESENT)
    m.response_id = "resp_1"


def _cancelling_unwanted(m: ResponseLifecycle) -> None:
    m.state = ResponseState.CANCELLING
    _inflight(m, CreateState.UNWANTED)


def _cancelling_dropped(m: ResponseLifecycle) -> None:
    m.state = ResponseState.CANCELLING
    m.response_id = "resp_1"
    m._retire("resp_1", "dropped")


IDLE, CR, A, CA, CL = (
    ResponseState.IDLE,
    ResponseState.CREATING,
    ResponseState.ACTIVE,
    ResponseState.CANCELLING,
    ResponseState.CLOSED,
)
CASES: dict[str, tuple[Callable[[ResponseLifecycle], None], list[str]]] = {
    "fresh": (_set(), []),
    "inflight_without_create": (_inflight_without_create, []),  # message checked below
    "create_without_inflight": (
        _set(state=CR, create_state=CreateState.SENT),
        ["create machine sent with inflight None"],
    ),
    "due_without_deadline": (
        _set(turn_state=TurnState.DUE),
        ["turn machine due with a wrong deadline"],
    ),
    "deadline_without_due": (
        _set(state=A, response_id="resp_1", _turn_deadline=3.0),
        ["turn machine none with a wrong deadline"],
    ),
    "due_with_deadline": (_set(turn_state=TurnState.DUE, _turn_deadline=3.0), []),
    "id_in_idle": (_set(response_id="resp_1"), ["response_id set outside a response"]),
    "id_after_close": (
        _set(state=CL, response_id="resp_1"),
        ["response_id set outside a response"],
    ),
    "create_in_idle": (_create_while(IDLE), ["create sent while idle"]),
    "create_after_close": (_create_while(CL), ["create sent while closed"]),
    "audio_count_in_idle": (_set(audio_deltas=1), ["stale per-response counters"]),
    "transcript_count_in_idle": (_set(transcript_deltas=1), ["stale per-response counters"]),
    "transcript_time_in_idle": (_set(_first_transcript_at=1.0), ["stale per-response counters"]),
    "retry_flag_in_idle": (_set(response_is_retry=True), ["stale response flags"]),
    "requests_in_idle": (_set(response_requests=(REQ,)), ["stale response flags"]),
    "held_text_in_idle": (_set(held_texts=["hi"]), ["held text left in idle"]),
    "held_text_after_close": (_set(state=CL, held_texts=["hi"]), []),
    "queued_in_idle": (_set(pending=[REQ]), ["queued requests left in idle"]),
    "queued_in_idle_while_turn_due": (
        _set(pending=[REQ], turn_state=TurnState.DUE, _turn_deadline=3.0),
        [],
    ),
    "queued_after_close": (_set(state=CL, pending=[REQ]), []),
    "turn_owed_in_idle": (_set(turn_state=TurnState.OWED), ["turn owed while the slot is free"]),
    "turn_owed_after_close": (
        _set(state=CL, turn_state=TurnState.OWED),
        ["a machine still open after close"],
    ),
    "recovery_after_close": (
        _set(state=CL, recovery_state=RecoveryState.RETRYING),
        ["a machine still open after close"],
    ),
    "recovery_in_idle": (_set(recovery_state=RecoveryState.RETRYING), []),
    "deadline_in_idle": (
        _set(_state_deadline=2.0),
        ["deadline armed outside creating/cancelling"],
    ),
    "deadline_after_close": (
        _set(state=CL, _state_deadline=2.0),
        ["deadline armed outside creating/cancelling"],
    ),
    "creating_with_no_create": (
        _set(state=CR),
        ["creating with create none"],
    ),
    "creating_with_unwanted_create": (_creating_unwanted, ["creating with create unwanted"]),
    "creating_sent": (_create_while(CR), []),
    "creating_with_id": (_creating_with_id, ["response id while creating"]),
    "active_without_id": (_set(state=A), ["active with no response"]),
    "active_unseen": (_set(state=A, _current_unseen=True), []),
    "cancelling_nothing": (_set(state=CA), ["cancelling nothing"]),
    "cancelling_unseen": (_set(state=CA, _current_unseen=True), []),
    "cancelling_unwanted_create": (_cancelling_unwanted, []),
    "cancelling_undropped": (
        _set(state=CA, response_id="resp_1"),
        ["cancelling a response whose audio is not dropped"],
    ),
    "cancelling_dropped": (_cancelling_dropped, []),
    "active_with_id": (_set(state=A, response_id="resp_1"), []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_invariants_names_exactly_the_broken_invariant(name: str) -> None:
    forge, problems = CASES[name]
    m = ResponseLifecycle(LifecycleConfig(), now=0.0)
    forge(m)
    if name == "inflight_without_create":
        problems = [f"create machine none with inflight {m.inflight}"]
    assert m.check_invariants() == problems
