"""The rules a call trace is checked against: their names, what each means, and a violation.

The checker (:mod:`realtime_fsm.replay`) reports a :class:`Violation` per break of a rule; the
command line (``realtime-fsm replay --help``) and the timeline page (:mod:`realtime_fsm.timeline`)
explain each rule with :data:`RULE_MEANINGS`, in words for someone who has not read the checker.
``docs/traces.md`` has the same table with the exact conditions.
"""

from __future__ import annotations

from typing import Final

import attrs

#: The error OpenAI answers a ``response.create`` with while another answer is in progress.
BUSY_CODE: Final = "conversation_already_has_active_response"

#: Each rule, and what breaking it means, in plain words.
RULE_MEANINGS: Final[dict[str, str]] = {
    "create_while_active": "asked OpenAI for a new answer while the previous one was still"
    " going and had not been stopped",
    "create_while_pending": "asked OpenAI for a new answer while an earlier request had no"
    " reply yet",
    "create_races_server_response": "asked for an answer to a turn (or an idle timeout) that"
    " OpenAI was already answering by itself",
    "busy_error": f"OpenAI refused a request ({BUSY_CODE}: an answer was in progress) and no"
    " unavoidable race on the wire explains it",
    "cancel_without_active": "tried to stop an answer that had already finished or never existed",
    "user_text_lost": "a typed message or key press never reached OpenAI and was not reported"
    " undelivered either",
    "user_text_duplicated": "a typed message or key press reached OpenAI more than once",
    "watchdog_in_cooldown": "the no-audio watchdog stopped a silent answer again before its"
    " cooldown had passed",
    "response_left_hanging": "an answer was neither finished nor stopped, although it had"
    " shown no progress for the stall timeout",
    "create_never_answered": "a request for an answer got no reply within the create timeout"
    " and was never given up",
}
#: The rules' names, in the order the documentation lists them.
RULES: Final = tuple(RULE_MEANINGS)
#: Seconds of tolerance on every timeout comparison (decision to socket).
DEFAULT_SLACK: Final = 0.25
#: Seconds within which a frame read and a frame sent count as having crossed on the loop.
DEFAULT_CROSSING: Final = 0.05


@attrs.frozen
class Violation:
    """One break of a rule, at the trace line that shows it."""

    line: int
    rule: str
    message: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}: {self.rule}: {self.message}"
