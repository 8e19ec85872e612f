"""Settings of one response-lifecycle machine.

Defaults are for telephony (G.711 mu-law at 8 kHz, 8 bytes per ms) and for the timings the
seed design note was written against (a 12 s watchdog cooldown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from .logsafe import safe
from .validators import positive, positive_int

#: How many times ``stall_timeout`` a reasoning model may think in silence (before its first
#: output item, or between two), per ``reasoning.effort``.  No event marks the thinking
#: (``openai-realtime.md`` §10.3 item 4): a response that thinks is indistinguishable on the
#: wire from a hung one until its next item, and "higher reasoning effort can increase
#: latency" (the gpt-realtime-2.1 model page).  The factors are ours, not OpenAI's: generous,
#: because cancelling a response that was about to speak is worse than waiting for a hung one
#: (a lost ``response.done`` is rare, and a caller's barge-in or the next response frees the
#: slot anyway).  An effort not listed here (a newer one) gets the largest factor.
THINKING_SCALE: Final[Mapping[str, float]] = {
    "minimal": 1.0,
    "low": 1.5,
    "medium": 2.0,
    "high": 3.0,
    "xhigh": 4.0,
}


def thinking_scale(effort: str | None) -> float:
    """The factor of :data:`THINKING_SCALE` for ``effort``; 1 without reasoning (``None``)."""
    if effort is None:
        return 1.0
    return THINKING_SCALE.get(effort, max(THINKING_SCALE.values()))


def _effort(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in THINKING_SCALE:
        raise ValueError(
            f"{attribute.name} must be one of {tuple(THINKING_SCALE)} or None, got {value!r}"
        )


def _log_id(value: object) -> object:
    """A ``call_id`` string made safe for log lines; anything else is left to the validator."""
    return safe(value, 64) if isinstance(value, str) else value


@attrs.frozen
class LifecycleConfig:
    """Timeouts are in seconds of the driver's monotonic clock.

    ``server_creates_response`` / ``server_interrupts_response`` are the *assumed* turn-detection
    flags until a :class:`~realtime_fsm.events.SessionConfigured` says otherwise.  The defaults are
    the conservative pair: the client cancels on barge-in (at worst a benign
    ``response_cancel_not_active``) and the client asks for a response on a committed turn.
    """

    #: ``response.create`` sent but neither ``response.created`` nor an error: give up after this.
    create_timeout: float = attrs.field(default=5.0, validator=positive)
    #: Waiting for ``response.done`` of a cancelled response: stop waiting after this.
    cancel_timeout: float = attrs.field(default=5.0, validator=positive)
    #: A response with audio-transcript deltas but no audio for this long is silent.
    no_audio_timeout: float = attrs.field(default=3.0, validator=positive)
    #: Minimum time between two no-audio watchdog fires, so recovery can never loop.
    watchdog_cooldown: float = attrs.field(default=12.0, validator=positive)
    #: An active response with no sign of life (no delta, no item event) for this long is hung:
    #: it is cancelled, so a lost ``response.done`` can never hold the slot forever.  While it
    #: has no output item open (a reasoning model thinking, before its first item or between
    #: two) the limit is this times :data:`THINKING_SCALE` of :attr:`reasoning_effort`; while a
    #: ``function_call`` item is open there is none (the call is being generated).
    stall_timeout: float = attrs.field(default=20.0, validator=positive)
    #: The session's ``reasoning.effort`` assumed until a
    #: :class:`~realtime_fsm.events.SessionConfigured` states one; ``None``: no reasoning model.
    reasoning_effort: str | None = attrs.field(default=None, validator=_effort)
    #: A caller turn the server's VAD committed while the slot was busy: once the slot frees,
    #: how long to wait for the server's own answer (it creates at once, or never: "may fail to
    #: create a response if the model is already responding") before answering it ourselves.
    server_turn_grace: float = attrs.field(default=1.0, validator=positive)
    #: Output audio bytes per millisecond: 8 for G.711 (pcmu/pcma), 48 for 24 kHz PCM16.
    audio_bytes_per_ms: int = attrs.field(default=8, validator=positive_int)
    server_creates_response: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    server_interrupts_response: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    #: Prefix of every client ``event_id`` this machine mints; put a call id here to make ids
    #: unique across calls in server-side logs.
    event_id_prefix: str = attrs.field(default="rtfsm", validator=attrs.validators.instance_of(str))
    #: Shown in every log line, so one call's lines can be grepped out of a busy process.  Often
    #: a Twilio ``CallSid`` (untrusted): stored made :func:`~realtime_fsm.logsafe.safe` once
    #: here, so no log line has to escape it again.
    call_id: str = attrs.field(
        default="-", converter=_log_id, validator=attrs.validators.instance_of(str)
    )
    #: Log what the caller said or typed (transcripts, typed text, DTMF as text, custom
    #: parameters) in clear.  Off by default: such lines show ``<redacted len=.. sha=..>``, since
    #: a log is kept longer and read by more people than a call's content should be.  The one
    #: switch for the whole call: the call layer reads it from ``BridgeConfig.lifecycle``.
    log_caller_content: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
