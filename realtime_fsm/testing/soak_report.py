"""What a fault soak saw: each call's outcome, the whole run's result, and the report printed.

:class:`CallOutcome` is filled in by one soak call (:mod:`realtime_fsm.testing.soak_call`) and
says which of the soak's checks it broke; :class:`SoakResult` gathers them and formats the
report ``realtime-fsm soak`` prints.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Final

import attrs

from .soak_config import BUSY, SoakConfig

#: Ends of a call that a fault knob explains: the OpenAI socket was dropped (until the bridge
#: reconnects), or the caller hung up.
DROP_ENDS: Final = frozenset({"openai closed"})
CLEAN_ENDS: Final = frozenset({"telephony stop", "telephony closed"})
#: ``response_cancel_not_active``: a stop request that crossed the answer's own end.
CANCEL_NOT_ACTIVE: Final = "response_cancel_not_active"
#: Errors of the simulator's rules that a correct bridge still meets (races on the wire), with
#: what they mean; any other code is something OpenAI would reject, a violation.
#: ``conversation_already_has_active_response`` is judged one by one (:class:`CallOutcome`).
EXPLAINED_ERRORS: Final[dict[str, str]] = {
    BUSY: "OpenAI refused a request for a new answer because another answer was still in progress.",
    CANCEL_NOT_ACTIVE: "the bridge asked OpenAI to stop an answer that had just ended on its own"
    " (the stop request and the answer's end crossed on the wire, or OpenAI's own turn detection"
    " had stopped it first). Harmless and expected whenever a caller interrupts as an answer"
    " ends; OpenAI documents it as benign.",
}
#: What an error injected on purpose (a fault knob) is for.
INJECTED_ERRORS: Final[dict[str, str]] = {
    "server_error": "injected on purpose (the server_error fault): OpenAI reporting a failure"
    " of its own, which the bridge must survive.",
    "session_expired": "the simulator's session cap (the rotate fault, as the real 60 minutes)"
    " ended a session the bridge had not replaced yet (the call ended or had no quiet moment"
    " first); the bridge reconnects, as it must.",
}


@attrs.define
class CallOutcome:
    """What the soak saw on one call."""

    index: int
    call_sid: str
    server_creates: bool
    faults: tuple[str, ...]
    end_reason: str = ""
    texts_typed: int = 0
    texts_delivered: int = 0
    texts_undelivered: int = 0
    #: Texts typed after the bridge had already lost its OpenAI socket (never accepted).
    texts_into_dead_call: int = 0
    lost_texts: list[str] = attrs.field(factory=list)
    duplicated_texts: list[str] = attrs.field(factory=list)
    #: Seconds from the end of the script until the machine was idle; None if not measured.
    idle_after_s: float | None = None
    not_idle: str | None = None
    hung_up_mid_response: bool = False
    socket_dropped: bool = False
    protocol_errors: Counter[str] = attrs.field(factory=Counter)
    #: Errors injected on purpose by a fault knob, by code (not in ``protocol_errors``).
    injected_error_codes: Counter[str] = attrs.field(factory=Counter)
    busy_races: int = 0
    busy_probes: int = 0
    #: Busy answers to a create the bridge sent after it had given up, at a timeout on its own
    #: clock, what held the slot (the trace shows it): a loaded loop reads answers late.
    busy_late: int = 0
    busy_errors: int = 0
    injected_errors: int = 0
    watchdog_fires: int = 0
    watchdog_in_cooldown: int = 0
    given_up: int = 0
    crash: str | None = None
    caller_violations: list[str] = attrs.field(factory=list)
    responses: int = 0
    audio_chunks_heard: int = 0
    #: OpenAI sessions (simulator connections) the call used: more than one after a reconnect.
    sessions: int = 0
    #: Sessions the bridge replaced before the cap (``rotate`` calls), from its report.
    rotations: int = 0

    def violations(self) -> list[str]:
        found: list[str] = []
        if self.lost_texts:
            found.append(f"lost texts {self.lost_texts}")
        if self.duplicated_texts:
            found.append(f"duplicated texts {self.duplicated_texts}")
        if self.not_idle is not None:
            found.append(f"not back to idle: {self.not_idle}")
        if self.busy_errors:
            found.append(f"{self.busy_errors} {BUSY} not explained by a server-VAD race")
        for code, count in sorted(self.protocol_errors.items()):
            if code not in EXPLAINED_ERRORS:
                found.append(f"{count} {code} errors: OpenAI would reject what the bridge sent")
        if self.watchdog_in_cooldown:
            found.append(f"{self.watchdog_in_cooldown} watchdog fires inside the cooldown")
        if self.crash is not None:
            found.append(f"crash: {self.crash}")
        if self.caller_violations:
            found.append(f"telephony protocol violations {self.caller_violations[:3]}")
        expected = set(CLEAN_ENDS) | (DROP_ENDS if self.socket_dropped else set())
        if self.end_reason not in expected:
            found.append(f"unexpected end {self.end_reason!r}")
        return found


@attrs.define
class SoakResult:
    """All calls' outcomes plus what no single call owns (loop exceptions, wall time)."""

    config: SoakConfig
    outcomes: list[CallOutcome]
    wall_s: float
    loop_exceptions: list[str] = attrs.field(factory=list)
    errors_logged: list[str] = attrs.field(factory=list)

    @property
    def violations(self) -> list[str]:
        found = [f"call {o.call_sid}: {v}" for o in self.outcomes for v in o.violations()]
        found += [f"event loop exception: {e}" for e in self.loop_exceptions]
        found += [f"error logged: {e}" for e in self.errors_logged]
        missing = self.config.calls - len(self.outcomes)
        if missing:
            found.append(f"{missing} calls did not report")
        return found

    @property
    def ok(self) -> bool:
        return not self.violations

    def headline(self) -> str:
        """PASS or FAIL in one line, then what every error code counted means and whether the
        injected faults explain it: the first thing to read in the report."""
        outs = self.outcomes
        violations = self.violations
        faulty = sum(1 for o in outs if o.faults)
        if violations:
            first = (
                f"FAIL: {len(violations)} problem{'s' if len(violations) != 1 else ''} in"
                f" {len(outs)} simulated calls ({faulty} with injected faults): "
                + "; ".join(self._problem_kinds())
                + ". Each is listed under 'violations' at the end."
            )
        else:
            first = (
                f"PASS: {len(outs)} simulated calls ({faulty} with injected faults), every check"
                " held: no typed text lost or sent twice, every call back to idle, no crash."
            )
        errors: Counter[str] = Counter()
        injected: Counter[str] = Counter()
        for o in outs:
            errors.update(o.protocol_errors)
            injected.update(o.injected_error_codes)
        lines = [first]
        if errors or injected:
            lines.append("Errors OpenAI (the simulator) answered, and what they mean:")
        for code, count in errors.most_common():
            lines += _bullet(f"{code} x{count}: {self._meaning(code)}")
        for code, count in injected.most_common():
            meaning = INJECTED_ERRORS.get(code, "injected on purpose by a fault knob.")
            lines += _bullet(f"{code} x{count}: {meaning}")
        return "\n".join(lines)

    def _problem_kinds(self) -> list[str]:
        """The violations counted by kind, in words."""
        outs = self.outcomes
        kinds = [
            (sum(len(o.lost_texts) for o in outs), "typed texts or keys lost"),
            (sum(len(o.duplicated_texts) for o in outs), "typed texts or keys sent twice"),
            (sum(o.not_idle is not None for o in outs), "calls not back to idle in time"),
            (sum(o.busy_errors for o in outs), "refusals (active response) nothing explains"),
            (sum(o.watchdog_in_cooldown for o in outs), "watchdog fires inside its cooldown"),
            (sum(o.crash is not None for o in outs), "calls crashed"),
            (sum(bool(o.caller_violations) for o in outs), "calls with messages Twilio rejects"),
            (
                sum(
                    n
                    for o in outs
                    for c, n in o.protocol_errors.items()
                    if c not in EXPLAINED_ERRORS
                ),
                "requests OpenAI rejects",
            ),
            (len(self.loop_exceptions), "exceptions reaching the event loop"),
            (len(self.errors_logged), "errors logged by the bridge"),
            (max(0, self.config.calls - len(outs)), "calls that never reported"),
        ]
        found = [f"{what}: {count}" for count, what in kinds if count]
        ends = sum(
            o.end_reason not in (CLEAN_ENDS | (DROP_ENDS if o.socket_dropped else set()))
            for o in outs
        )
        if ends:
            found.append(f"calls ended unexpectedly: {ends}")
        return found

    def _meaning(self, code: str) -> str:
        outs = self.outcomes
        if code == BUSY:
            races = sum(o.busy_races for o in outs)
            probes = sum(o.busy_probes for o in outs)
            late = sum(o.busy_late for o in outs)
            unexplained = sum(o.busy_errors for o in outs)
            explained = (
                f"{probes} came after a stop request that the simulator acknowledged later than"
                " the bridge waits for it (the slow_cancel fault: the bridge asks again to find"
                f" out), {races} crossed an answer that OpenAI's own turn detection had just"
                f" started, and {late} were asked for after the bridge, on its own clock, had"
                " given up what held the slot (a busy machine reads answers late; the call's"
                " trace shows it)."
            )
            if not unexplained:
                return f"{EXPLAINED_ERRORS[BUSY]} Expected under the injected faults: {explained}"
            return (
                f"{EXPLAINED_ERRORS[BUSY]} NOT expected for {unexplained} of them: no injected"
                f" fault or race explains those. Of the others, {explained}"
            )
        meaning = EXPLAINED_ERRORS.get(code)
        if meaning is not None:
            return meaning
        return (
            "NOT expected: OpenAI rejects what the bridge sent (no injected fault makes a"
            " correct bridge send it); a bug to look into."
        )

    def format(self) -> str:
        outs = self.outcomes
        errors: Counter[str] = Counter()
        for o in outs:
            errors.update(o.protocol_errors)
        fault_counts: Counter[str] = Counter(f for o in outs for f in o.faults)
        ends: Counter[str] = Counter(o.end_reason for o in outs)
        idle = sorted(o.idle_after_s for o in outs if o.idle_after_s is not None)
        cfg = self.config
        lines = [
            self.headline(),
            "",
            f"soak: {len(outs)} calls, {cfg.concurrency} at a time, seed {cfg.seed}, simulator"
            f" x{cfg.realtime_factor:g}, caller x{cfg.caller_speed:g}, {self.wall_s:.1f} s wall",
            f"  modes: {sum(o.server_creates for o in outs)} server-VAD creates,"
            f" {sum(not o.server_creates for o in outs)} app creates;"
            f" {sum(1 for o in outs if o.faults)} with faults",
            "  faults drawn: " + ", ".join(f"{k}={v}" for k, v in sorted(fault_counts.items())),
            "  responses: "
            f"{sum(o.responses for o in outs)}, audio chunks heard:"
            f" {sum(o.audio_chunks_heard for o in outs)}, watchdog fires:"
            f" {sum(o.watchdog_fires for o in outs)}, requests given up:"
            f" {sum(o.given_up for o in outs)}, injected errors:"
            f" {sum(o.injected_errors for o in outs)}",
            "  end reasons: " + ", ".join(f"{k!r}={v}" for k, v in ends.most_common()),
            "  protocol errors by code: "
            + (", ".join(f"{k}={v}" for k, v in errors.most_common()) or "none"),
            f"    {BUSY}: {sum(o.busy_errors for o in outs)} unexplained,"
            f" {sum(o.busy_races for o in outs)} server-VAD races (recovered),"
            f" {sum(o.busy_probes for o in outs)} probes of a cancel acknowledged after"
            f" cancel_timeout, {sum(o.busy_late for o in outs)} after the bridge's own timeout"
            " (its trace)",
            f"  user texts: {sum(o.texts_typed for o in outs)} typed,"
            f" {sum(o.texts_delivered for o in outs)} delivered once,"
            f" {sum(o.texts_undelivered for o in outs)} reported undelivered,"
            f" {sum(o.texts_into_dead_call for o in outs)} typed into an already dead call;"
            f" lost {sum(len(o.lost_texts) for o in outs)},"
            f" duplicated {sum(len(o.duplicated_texts) for o in outs)}",
            f"  calls not back to idle within {cfg.idle_timeout:.1f} s after their script"
            " (time with no OpenAI session not counted):"
            f" {sum(o.not_idle is not None for o in outs)}"
            + (
                f" (measured {len(idle)}: median {idle[len(idle) // 2]:.2f} s,"
                f" max {idle[-1]:.2f} s)"
                if idle
                else ""
            ),
            f"  hung up mid-response: {sum(o.hung_up_mid_response for o in outs)},"
            f" OpenAI sockets dropped: {sum(o.socket_dropped for o in outs)} calls, sessions"
            f" replaced: {sum(max(0, o.sessions - 1) for o in outs)} (rotated before the cap:"
            f" {sum(o.rotations for o in outs)}, in {sum('rotate' in o.faults for o in outs)}"
            f" rotating calls), calls ended by a drop:"
            f" {sum(o.socket_dropped and o.end_reason in DROP_ENDS for o in outs)}",
            f"  watchdog fires inside a cooldown: {sum(o.watchdog_in_cooldown for o in outs)}",
            f"  crashed tasks: {sum(o.crash is not None for o in outs)}, event-loop exceptions:"
            f" {len(self.loop_exceptions)}, errors logged: {len(self.errors_logged)},"
            f" telephony violations: {sum(len(o.caller_violations) for o in outs)}",
        ]
        violations = self.violations
        lines.append(f"  violations: {len(violations)}" + (":" if violations else ""))
        lines += [f"    {v}" for v in violations[:30]]
        return "\n".join(lines)


def _bullet(text: str) -> list[str]:
    """One explanation, wrapped for a terminal."""
    return textwrap.wrap(text, 100, initial_indent="  - ", subsequent_indent="    ")
