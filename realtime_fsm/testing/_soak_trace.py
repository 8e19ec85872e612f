"""A soak call's busy errors judged on the bridge's own clock, from the call's trace.

The simulator knows when it sent and read each frame, not when the bridge did.  On a loaded
event loop the bridge reads a ``response.created`` (or a ``response.done``) long after the
simulator sent it, and its machine, which can only time the server by its own clock, gives the
create up at ``create_timeout`` (resends it, or drops an interrupted one) or the cancel at
``cancel_timeout`` while the answer is on its way.  Its next create then finds the slot taken:
the documented race of an answer later than the timeout (``docs/design.md``, "Promises").  Only
the trace, recorded at the bridge's sockets (:mod:`realtime_fsm.trace`), shows that, and the
replay checker (:mod:`realtime_fsm.replay`) judges each busy error by it: the create was sent
after the client had given up what held the slot, or crossed that response's
``response.created`` on the wire.  A create the client sent too early (while an earlier one was
unanswered and not yet given up, while a response was active, or racing the server's VAD
answer) leaves its busy error unexplained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .. import replay

#: The checker's rules about a create sent into a slot the client should have known was taken.
_CREATE_RULES: Final = (
    "create_while_active",
    "create_while_pending",
    "create_races_server_response",
)


def busy_errors_on_the_wire(path: Path) -> dict[str, bool] | None:
    """Each busy error of the trace at ``path``, by its server ``event_id``: whether the replay
    checker accepts it (no violation at the error, nor at the create it answers).  ``None``
    when there is no readable trace; an error past a truncated recording is not listed."""
    try:
        violations, _warnings = replay.check_file(path)
        with open(path, encoding="utf-8") as handle:
            records = list(replay.read_trace(handle))
    except (OSError, UnicodeDecodeError, replay.TraceFormatError):
        return None
    flagged = {(v.line, v.rule) for v in violations}
    creates: dict[str, int] = {}
    verdicts: dict[str, bool] = {}
    for number, record in records:
        if isinstance(record, str) or record.get("side") != "openai":
            continue
        frame = record.get("frame")
        if not isinstance(frame, dict):
            continue
        kind = frame.get("type")
        if record.get("dir") == "out" and kind == "response.create":
            event_id = frame.get("event_id")
            if isinstance(event_id, str):
                creates[event_id] = number
        elif record.get("dir") == "in" and kind == "error":
            error = frame.get("error")
            server_id = frame.get("event_id")
            if not isinstance(error, dict) or not isinstance(server_id, str):
                continue
            if error.get("code") != replay.BUSY_CODE:
                continue
            create = creates.get(str(error.get("event_id")))
            early = create is not None and any((create, rule) in flagged for rule in _CREATE_RULES)
            verdicts[server_id] = (number, "busy_error") not in flagged and not early
    return verdicts


__all__ = ["busy_errors_on_the_wire"]
