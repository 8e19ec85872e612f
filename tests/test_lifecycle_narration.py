"""What the core says and does, step by step, pinned in a golden file that a reviewer reads.

The equivalence test proves the three engines agree and that every row is reached; it cannot see
an action that does the wrong thing the same way in all three (they share the actions).  The
promises tests see what breaks a promise; they cannot see a log line that lost its tag, a
counter that counts the wrong thing, a truncate at the wrong millisecond or a clear with the
wrong reason, all of which users depend on (they grep the tags, alert on the counters, and the
drivers act on every field of every command).

So this test replays every scenario of the equivalence test (which together fire every row of
every machine) and the whole calls below, then each probe after each of them, and writes down
for each step: the time, the event, the commands out (or the error raised), every log line under
``realtime_fsm``, the four machines' states, the next deadline and the playback ledger; after a
scenario, the counters, the whole field state and the invariant check.  It runs twice: on the
engines built at import, and on engines built again from the tables at test time.  The result
must equal ``tests/golden/lifecycle_narration.txt``.

A deliberate change of behaviour or wording updates the file: run this test with
``RTFSM_UPDATE_GOLDEN=1`` and review the diff like code (``git diff tests/golden``).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from test_dict_table_equivalence import (
    PROBES,
    SCENARIOS,
    Ids,
    Step,
    outcome,
    resolve,
    snapshot,
    timed,
)

from realtime_fsm import (
    LifecycleConfig,
    RequestResponse,
    ResponseLifecycle,
    SendResponseCreate,
    ServerError,
    UserText,
)
from realtime_fsm.engine import FrozenTableMachine
from realtime_fsm.lifecycle.machine import _firer
from realtime_fsm.table import MACHINES, fired_triggers, machine_kwargs

GOLDEN = Path(__file__).parent / "golden" / "lifecycle_narration.txt"

_REQ: Step = ("request", None, False)
_OURS: Step = ("created", 5, 0, False, ())  # a new id answering the create in flight
_AUDIO_1: Step = ("audio", 0, 0, 800, False)  # 100 ms of item_1 for the current response
_AUDIO_2: Step = ("audio", 0, 1, 800, True)  # 100 ms of item_2
#: Whole conversations the row-reaching scenarios cut short: what a caller hears cut and how,
#: the watchdog's and the stall timer's narration, give-ups, out-of-band responses, close.
FULL_CALLS: dict[str, list[Step]] = {
    "text_barge_in_truncates_the_heard_item_and_deletes_the_unheard": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("playback", 0, 40, True),
        _AUDIO_2,
        ("user_text", "stop"),
        ("done", 0, "cancelled"),
        ("created", 5, 0, False, ()),
        ("done", 0, "completed"),
    ],
    "truncate_at_one_millisecond": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("playback", 0, 1, False),
        ("user_text", "stop"),
    ],
    "truncate_clamped_to_audio_received": [
        _REQ,
        _OURS,
        ("audio", 0, 0, 84, False),
        ("playback", 0, 500, False),
        ("user_text", "x"),
    ],
    "speech_barge_in_on_server_vad_response": [
        ("session", "server_vad", True, False),
        ("turn",),
        ("created", 5, 1, False, ()),
        _AUDIO_1,
        ("playback", 0, 30, True),
        ("speech_started",),
        ("speech_stopped",),
        ("done", 0, "cancelled"),
        ("turn",),
        ("wait", 1.5),
        ("tick", True),
    ],
    "server_interrupts_its_own_response": [
        ("session", "server_vad", True, True),
        ("turn",),
        ("created", 5, 1, False, ()),
        _AUDIO_1,
        ("playback", 0, 30, True),
        ("speech_started",),
        ("done", 0, "cancelled"),
    ],
    "watchdog_cancels_a_silent_response_and_retries_once": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("transcript", 0, False),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        _AUDIO_1,
        ("done", 0, "completed"),
    ],
    "watchdog_retry_silent_too": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "completed"),
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
    ],
    "short_silent_answer_retried_at_done": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "completed"),
        _OURS,
        _AUDIO_1,
        ("done", 0, "completed"),
    ],
    "silent_answer_in_cooldown_is_counted_only": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "completed"),
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "completed"),
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "completed"),
    ],
    "stall_timer_cancels_a_hung_response": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("wait", 21.0),
        ("tick", True),
        ("wait", 6.0),
        ("tick", True),
        ("done", 0, "cancelled"),
        ("wait", 1.0),
        ("done", 1, "cancelled"),
    ],
    "create_resent_then_given_up_then_answered_late": [
        _REQ,
        ("wait", 5.5),
        ("tick", True),
        ("wait", 5.5),
        ("tick", True),
        ("created", 5, 2, False, ()),
        ("created", 5, 3, False, ()),
        _REQ,
    ],
    "slow_cancel_ack_then_busy_naming_it": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("user_text", "a"),
        ("wait", 5.5),
        ("tick", True),
        ("user_text", "b"),
        ("error", "conversation_already_has_active_response", 0, 1),
        ("done", 1, "cancelled"),
        ("created", 5, 0, False, ()),
        ("done", 0, "completed"),
    ],
    "old_busy_wording_then_its_events": [
        _REQ,
        ("error", "busy_no_id", 1, 0),
        ("audio", 5, 0, 160, True),
        ("done", 0, "completed"),
        ("created", 5, 0, False, ()),
    ],
    "out_of_band_alongside_the_slot": [
        ("request", "summarise", True),
        _REQ,
        ("created", 5, 2, True, ("text",)),
        _OURS,
        ("done", 1, "completed"),
        ("done", 0, "completed"),
    ],
    "text_only_response_is_not_watched": [
        _REQ,
        ("created", 5, 0, False, ("text",)),
        ("transcript", 0, True),
        ("wait", 4.0),
        ("tick", True),
        ("done", 0, "completed"),
    ],
    "close_hands_back_held_text_and_gives_up": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("user_text", "wait"),
        _REQ,
        ("request", "be brief", False),
        ("close",),
    ],
    "watchdog_retry_rejected": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        ("error", "invalid_value", 0, 0),
    ],
    "watchdog_retry_times_out": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        ("wait", 5.5),
        ("tick", True),
        ("wait", 5.5),
        ("tick", True),
    ],
    "watchdog_retry_interrupted_by_the_caller": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        ("user_text", "hello?"),
        _OURS,
        ("done", 0, "cancelled"),
    ],
    "watchdog_retry_busy_then_served": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
        ("done", 0, "cancelled"),
        ("created", 5, 1, False, ()),
        ("error", "conversation_already_has_active_response", 0, 0),
        ("done", 0, "completed"),
        _OURS,
        _AUDIO_1,
        ("done", 0, "completed"),
    ],
    "busy_rejected_create_goes_back_to_the_head_of_the_queue": [
        _REQ,
        ("created", 5, 1, False, ()),
        ("request", "be brief", False),
        ("request", "be long", False),
        ("error", "conversation_already_has_active_response", 0, 0),
        ("done", 0, "completed"),
        _OURS,
        ("done", 0, "completed"),
        _OURS,
        ("done", 0, "completed"),
        _OURS,
        ("done", 0, "completed"),
    ],
    "turn_committed_while_busy_answered_by_us_after_grace": [
        ("session", "server_vad", True, False),
        _REQ,
        _OURS,
        _AUDIO_1,
        ("speech_started",),
        ("turn",),
        ("done", 0, "cancelled"),
        ("wait", 1.5),
        ("tick", True),
        _OURS,
        ("done", 0, "completed"),
    ],
    "fresh_machine": [],
    "fully_heard_item_is_not_cut_the_next_is": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("playback", 0, 100, True),
        _AUDIO_2,
        ("audio", 0, 2, 800, True),
        ("playback", 1, 30, True),
        ("user_text", "stop"),
    ],
    "failed_and_incomplete_responses_are_counted": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("done", 0, "failed"),
        _REQ,
        _OURS,
        _AUDIO_1,
        ("done", 0, "incomplete"),
    ],
    "old_busy_wording_learns_the_id_from_a_transcript": [
        _REQ,
        ("error", "busy_no_id", 1, 0),
        ("transcript", 5, False),
        ("transcript", 0, True),
        ("done", 0, "completed"),
        ("transcript", 2, False),
        ("transcript", 2, True),
    ],
    "late_and_out_of_band_audio": [
        _REQ,
        ("created", 1, 0, False, ()),
        _AUDIO_1,
        ("done", 0, "completed"),
        ("audio", 1, 0, 160, False),
        ("audio", 1, 0, 160, True),
        ("touch", 1),
        ("request", None, True),
        ("created", 2, 2, True, ()),
        ("audio", 2, 1, 160, False),
        ("transcript", 2, False),
        ("done", 2, "completed"),
        ("audio", 3, 0, 160, False),
    ],
    "heard_items_are_forgotten_at_once_unless_live": [
        _REQ,
        _OURS,
        ("audio", 0, 0, 400, False),
        ("audio", 0, 0, 400, False),
        _AUDIO_2,
        ("audio", 0, 2, 800, True),
        ("playback", 0, 60, True),
        ("playback", 1, 100, True),
        ("user_text", "stop"),
    ],
    "server_cancel_truncates_the_live_item_at_what_was_received": [
        ("session", "server_vad", True, True),
        ("turn",),
        ("created", 5, 1, False, ()),
        _AUDIO_1,
        ("playback", 0, 100, True),
        ("speech_started",),
        ("done", 0, "cancelled"),
    ],
    "after_the_response_only_unheard_audio_is_cut": [
        _REQ,
        _OURS,
        _AUDIO_1,
        _AUDIO_2,
        ("playback", 0, 50, True),
        ("playback", 1, 100, True),
        ("done", 0, "completed"),
        ("speech_started",),
    ],
    "speech_after_everything_was_heard_clears_nothing": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("playback", 0, 100, True),
        ("done", 0, "completed"),
        ("speech_started",),
    ],
    "texts_keep_their_source": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("text_from", "1", "dtmf"),
        ("done", 0, "cancelled"),
        _OURS,
        ("done", 0, "completed"),
        ("text_from", "2", "dtmf"),
    ],
    "cancel_not_active_recognised_by_its_message": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("user_text", "x"),
        ("raw_error", None, "Cancellation failed: no active response found", 1),
        ("done", 0, "cancelled"),
    ],
    "a_rejection_without_a_code": [_REQ, ("raw_error", None, "boom", 0)],
    "a_silent_incomplete_response_is_retried": [
        _REQ,
        _OURS,
        ("transcript", 0, True),
        ("done", 0, "incomplete"),
    ],
    "server_creates_only_with_turn_detection": [
        ("session", None, True, False),
        ("turn",),
        _OURS,
        ("done", 0, "completed"),
    ],
    "busy_without_an_id_while_a_known_response_plays": [
        _REQ,
        ("created", 5, 1, False, ()),
        ("error", "busy_no_id", 0, 0),
        ("done", 0, "completed"),
        _OURS,
    ],
    "an_error_without_an_event_id_answers_the_given_up_create": [
        _REQ,
        ("wait", 5.5),
        ("tick", True),
        ("wait", 5.5),
        ("tick", True),
        ("raw_error", "conversation_already_has_active_response", "busy", 1),
        _REQ,
    ],
    "the_abandoned_response_frees_an_unseen_holder_with_its_done": [
        _REQ,
        ("created", 1, 0, False, ()),
        _AUDIO_1,
        ("user_text", "a"),
        ("wait", 5.5),
        ("tick", True),
        ("error", "busy_no_id", 0, 0),
        ("done", 1, "cancelled"),
        _OURS,
    ],
    "long_texts_are_cut_where_logged_and_in_metadata": [
        ("request_for", "r" * 600, False),
        ("raw_error", None, "m" * 400, 1),
        ("text_from", "t" * 100, "typed"),
        ("request_for", "o" * 600, True),
    ],
    "an_audio_response_is_watched": [
        _REQ,
        ("created", 5, 0, False, ("audio",)),
        ("transcript", 0, True),
        ("wait", 3.5),
        ("tick", True),
    ],
    "an_interrupted_create_never_answered_is_remembered_as_owed": [
        _REQ,
        ("speech_started",),
        ("wait", 5.5),
        ("tick", True),
        ("raw_error", "conversation_already_has_active_response", "busy", 1),
        _REQ,
    ],
    "a_mark_after_the_response_ended_forgets_the_heard_item": [
        _REQ,
        _OURS,
        _AUDIO_1,
        ("done", 0, "completed"),
        ("playback", 0, 100, True),
    ],
    "rejected_create_is_reported": [
        _REQ,
        ("error", "invalid_value", 0, 0),
        _REQ,
        ("error", "busy_no_id", 0, 0),
    ],
}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name} {record.getMessage()}")


def _resolve(
    step: Step, m: ResponseLifecycle, now: float, ids: Ids
) -> Callable[[ResponseLifecycle], object]:
    """The equivalence test's steps, plus three only whole calls need: text from another source
    (``("text_from", text, source)``), a request for any reason (``("request_for", reason,
    out_of_band)``) and an error with any code and message (``("raw_error", code, message,
    event_id_choice)``)."""
    if step[0] == "text_from":
        event: object = UserText(text=step[1], source=step[2])
    elif step[0] == "request_for":
        event = RequestResponse(reason=step[1], out_of_band=step[2])
    elif step[0] == "raw_error":
        _, code, message, eid = step
        event = ServerError(code=code, message=message, event_id=ids.event_id(m, eid))
    else:
        return resolve(step, m, now, ids)
    return lambda x: x.handle(event, now)  # type: ignore[arg-type]


def _states(m: ResponseLifecycle) -> str:
    return (
        f"slot={m.state.value} create={m.create_state.value} turn={m.turn_state.value} "
        f"recovery={m.recovery_state.value} deadline={m.next_deadline} play={dict(m._play)}"
    )


def _narrate(
    cls: type[ResponseLifecycle],
    steps: list[Step],
    out: list[str],
    lines: _Lines,
    *,
    settle_from: int,
) -> None:
    """Replay ``steps`` on a fresh machine; narrate the steps from index ``settle_from`` on."""
    m = cls(LifecycleConfig(), now=0.0)
    ids = Ids()
    now = 0.0
    for index, (dt, step) in enumerate(timed(steps)):
        if step[0] == "tick" and step[1] and m.next_deadline is not None:
            now = max(now, m.next_deadline + dt)
        elif step[0] == "back_in_time":
            now -= 1.0
        else:
            now += dt
        lines.lines.clear()
        kind, result = outcome(_resolve(step, m, now, ids), m)
        if step[0] == "back_in_time":
            now += 1.0
        if isinstance(result, list):
            ids.creates.extend(c.event_id for c in result if isinstance(c, SendResponseCreate))
        if index < settle_from:
            continue
        out.append(f"  t={now:.2f} {step!r} -> {kind} {result!r}")
        out.extend(f"    log {line}" for line in lines.lines)
        out.append(f"    {_states(m)}")
    if settle_from == 0:
        out.append(f"  stats {sorted(m.stats.items())!r}")
        fields = snapshot(m)
        for name in sorted(fields):
            value = fields[name]
            shown = sorted(value) if isinstance(value, (set, frozenset)) else value
            out.append(f"  field {name}={shown!r}")


def narration(cls: type[ResponseLifecycle] = ResponseLifecycle) -> str:
    logger = logging.getLogger("realtime_fsm")
    lines = _Lines()
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    out: list[str] = []
    try:
        for name, steps in {**SCENARIOS, **FULL_CALLS}.items():
            out.append(f"scenario {name}")
            _narrate(cls, steps, out, lines, settle_from=0)
            for probe in PROBES:
                out.append(f"scenario {name} then probe {probe!r}")
                _narrate(cls, [*steps, probe], out, lines, settle_from=len(timed(steps)))
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return "\n".join(out) + "\n"


def _rebuilt() -> type[ResponseLifecycle]:
    """The machine on engines built now from the tables (not the ones built at import), with
    its ``machine.trigger`` methods made again too: the builders are checked by running."""
    triggers = {
        spec.name: {
            trigger: event.trigger
            for trigger, event in FrozenTableMachine(
                model=None, **machine_kwargs(spec)
            ).events.items()
        }
        for spec in MACHINES
    }
    namespace: dict[str, object] = {"__slots__": (), "_triggers": triggers}
    for name in fired_triggers():
        machine, _, trigger = name.partition(".")
        namespace[name] = _firer(machine, trigger)
    return type("RebuiltLifecycle", (ResponseLifecycle,), namespace)


@pytest.mark.parametrize("engines", ["shared", "rebuilt"])
def test_the_core_narrates_every_scenario_as_the_golden_file_says(engines: str) -> None:
    got = narration(ResponseLifecycle if engines == "shared" else _rebuilt())
    if os.environ.get("RTFSM_UPDATE_GOLDEN") and engines == "shared":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    want = GOLDEN.read_text()
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(), got.splitlines(), "golden", "now", n=3, lineterm=""
        )
        shown = "\n".join(list(diff)[:80])
        pytest.fail(
            "the core's narration changed; if that is intended, rerun with "
            f"RTFSM_UPDATE_GOLDEN=1 and review the diff:\n{shown}"
        )
