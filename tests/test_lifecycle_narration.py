"""What the core says and does, step by step, pinned in a golden file that a reviewer reads.

The equivalence test proves the three engines agree and that every row is reached; it cannot see
an action that does the wrong thing the same way in all three (they share the actions).  The
promises tests see what breaks a promise; they cannot see a log line that lost its tag, a
counter that counts the wrong thing, a truncate at the wrong millisecond or a clear with the
wrong reason, all of which users depend on (they grep the tags, alert on the counters, and the
drivers act on every field of every command).

So this test replays every scenario of the equivalence test (which together fire every row of
every machine) and the whole calls of ``narration_calls.py``, then each probe after each of
them, and writes down for each step: the time, the event, the commands out (or the error
raised), every log line under ``realtime_fsm``, the four machines' states, the next deadline and
the playback ledger; after a scenario, the counters, the whole field state and the invariant
check.  It runs twice: on the
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
from narration_calls import FULL_CALLS
from test_dict_table_equivalence import (
    PROBES,
    SCENARIOS,
    Ids,
    Step,
    outcome,
    resolve,
    snapshot,
    step_time,
    timed,
)

from realtime_fsm import (
    LifecycleConfig,
    RequestResponse,
    ResponseLifecycle,
    ServerError,
    UserText,
)
from realtime_fsm.engine import FrozenTableMachine
from realtime_fsm.lifecycle.machine import _firer
from realtime_fsm.table import MACHINES, fired_triggers, machine_kwargs

GOLDEN = Path(__file__).parent / "golden" / "lifecycle_narration.txt"


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
    """Replay ``steps`` on a fresh machine; narrate the steps from index ``settle_from`` on.
    Caller content is logged in clear: a redacted text's hash is salted per process, so it
    would differ on every run."""
    m = cls(LifecycleConfig(log_caller_content=True), now=0.0)
    ids = Ids()
    now = 0.0
    for index, (dt, step) in enumerate(timed(steps)):
        now = step_time(now, dt, step, m)
        lines.lines.clear()
        kind, result = outcome(_resolve(step, m, now, ids), m)
        if step[0] == "back_in_time":
            now += 1.0
        ids.note(result)
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
