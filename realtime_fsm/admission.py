"""How many calls one server process takes, and whether it takes new ones.

A call reaches a server twice: Twilio's voice webhook (``/incoming-call``), then, a second or
two later, the media stream.  Capacity is decided once, at the webhook, because that is the
only moment Twilio can still fail the call over (an HTTP error sends it to the number's
fallback URL); once the webhook answered TwiML, the caller is connected to *this* service and a
refused stream would be a half-started call (silence, then a hang-up).  So:

* the webhook is **admitted** when the process is not draining and its calls in progress plus
  the places it holds for admitted webhooks are under ``max_calls``; an admitted webhook holds
  a place for its call (by ``CallSid``) until the stream starts or ``hold`` seconds pass;
* a stream's ``start`` takes the place held for its call.  A stream with no place here is
  still served when it **proves** a webhook admitted it (a valid per-call stream credential,
  :mod:`realtime_fsm.credentials`: with several workers or replicas, the webhook may have been
  answered by another one); otherwise it is refused while the process is draining or full;
* a process has drained when no call is in progress and no place is held (a webhook admitted
  just before the drain began still gets its stream served).

Pure: no clock of its own (wall time, Unix seconds, is passed in, as credentials expire in it),
no I/O.  One instance per server process, shared by its webhook and its calls.
"""

from __future__ import annotations

from typing import Any

import attrs

from .validators import positive, positive_int_or_none

#: The report's end reason of a call ended because its server drained past the deadline.
DRAIN_REASON = "server draining"
#: WebSocket close codes (RFC 6455, 7.4.1 and the IANA registry): a call ended by the drain
#: deadline is told the server is "going away" (1001); a stream not admitted is told to "try
#: again later" (1013), as a stream over the pre-start bounds is.
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013


@attrs.define(eq=False)
class Admission:
    """The process's call capacity: places held by admitted webhooks, calls in progress, and
    whether it is draining.  ``max_calls``: ``None`` for no bound.  ``hold``: seconds an
    admitted webhook's place waits for its stream (Twilio connects within a second or two; a
    call whose stream never comes gives its place back then)."""

    max_calls: int | None = attrs.field(default=None, validator=positive_int_or_none)
    hold: float = attrs.field(default=60.0, validator=positive)
    #: Set by :meth:`drain`: no new webhook is admitted, no unproven stream is served.
    draining: bool = attrs.field(default=False, init=False)
    #: Calls whose stream started here and has not ended.
    active: int = attrs.field(default=0, init=False)
    #: Counters since the process started (``/readyz`` shows them; none decides anything but
    #: what the guards above say): webhooks answered with a stream, calls started here,
    #: webhooks and streams refused, and streams served over the bound because they proved
    #: another worker admitted them.
    admitted: int = attrs.field(default=0, init=False)
    started: int = attrs.field(default=0, init=False)
    refused_webhooks: int = attrs.field(default=0, init=False)
    refused_streams: int = attrs.field(default=0, init=False)
    over_capacity: int = attrs.field(default=0, init=False)
    #: Places held for admitted webhooks: ``CallSid`` -> when the place is given back.
    _held: dict[str, float] = attrs.field(factory=dict, init=False)
    #: Webhooks without a ``CallSid`` (not Twilio's) still take a place, under a key of their
    #: own that no stream can claim; it is given back when it expires.
    _anonymous: int = attrs.field(default=0, init=False)

    # ------------------------------------------------------------------------- the webhook

    def admit_webhook(self, call_sid: str, now: float) -> str | None:
        """Admit the webhook of call ``call_sid`` at ``now`` and hold its place, or say why
        not (``"draining"``, ``"full: ..."``): then nothing is held and the caller should be
        told to go elsewhere."""
        refusal = self.webhook_refusal(now)
        if refusal is not None:
            self.refused_webhooks += 1
            return refusal
        if not call_sid:
            self._anonymous += 1
            call_sid = f"\n{self._anonymous}"  # a newline: never a Twilio CallSid
        self._held[call_sid] = now + self.hold
        self.admitted += 1
        return None

    def webhook_refusal(self, now: float) -> str | None:
        """Why a webhook arriving at ``now`` would be refused, or ``None``; reads only."""
        if self.draining:
            return "draining"
        limit = self.max_calls
        if limit is not None:
            taken = self.active + self.held(now)
            if taken >= limit:
                return f"full: {self.active} calls and {taken - self.active} on the way, of {limit}"
        return None

    # -------------------------------------------------------------------------- the stream

    def stream_refusal(self, call_sid: str, proven: bool, now: float) -> str | None:
        """Why the stream of ``call_sid`` starting at ``now`` is refused, or ``None`` to serve
        it; reads only (:meth:`enter` takes the place).  ``proven``: the stream carries a valid
        credential, so some webhook admitted it: always served, even over the bound."""
        if proven or self._holds(call_sid, now):
            return None
        return self.webhook_refusal(now)

    def enter(self, call_sid: str, now: float) -> None:
        """The stream of ``call_sid`` started and is served: it takes its held place (or a new
        one, counted as over capacity when that was past the bound or while draining)."""
        if not self._holds(call_sid, now) and self.webhook_refusal(now) is not None:
            self.over_capacity += 1
        self._held.pop(call_sid, None)
        self.active += 1
        self.started += 1

    def leave(self) -> None:
        """A call that :meth:`enter` counted has ended."""
        self.active = max(0, self.active - 1)

    def refused_stream(self) -> None:
        """Count a stream refused with :meth:`stream_refusal`'s reason."""
        self.refused_streams += 1

    # ----------------------------------------------------------------------------- drain

    def drain(self) -> None:
        """From now on no new call is admitted; calls in progress and held places go on."""
        self.draining = True

    def held(self, now: float) -> int:
        """Places held for admitted webhooks whose stream has not started, at ``now`` (the
        expired ones are given back first)."""
        held = self._held
        if held:
            for key in [key for key, until in held.items() if until <= now]:
                del held[key]
        return len(held)

    def ready(self, now: float) -> bool:
        """Whether a webhook arriving at ``now`` would be admitted (``/readyz``)."""
        return self.webhook_refusal(now) is None

    def idle(self, now: float) -> bool:
        """No call in progress and no place held: a draining process may exit."""
        return self.active == 0 and self.held(now) == 0

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures ``/readyz`` answers with (JSON-ready)."""
        return {
            "ready": self.ready(now),
            "draining": self.draining,
            "active_calls": self.active,
            "held": self.held(now),
            "max_calls": self.max_calls,
            "admitted": self.admitted,
            "calls_started": self.started,
            "refused_webhooks": self.refused_webhooks,
            "refused_streams": self.refused_streams,
            "over_capacity": self.over_capacity,
        }

    def _holds(self, call_sid: str, now: float) -> bool:
        until = self._held.get(call_sid) if call_sid else None
        return until is not None and until > now
