"""Settings of one response-lifecycle machine.

Defaults are for telephony (G.711 mu-law at 8 kHz, 8 bytes per ms) and for the timings the
seed design note was written against (a 12 s watchdog cooldown).
"""

from __future__ import annotations

from typing import Any

import attrs

from .logsafe import safe


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a number")
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


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
    create_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Waiting for ``response.done`` of a cancelled response: stop waiting after this.
    cancel_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: A response with audio-transcript deltas but no audio for this long is silent.
    no_audio_timeout: float = attrs.field(default=3.0, validator=_positive)
    #: Minimum time between two no-audio watchdog fires, so recovery can never loop.
    watchdog_cooldown: float = attrs.field(default=12.0, validator=_positive)
    #: An active response with no sign of life (no delta, no item event) for this long is hung:
    #: it is cancelled, so a lost ``response.done`` can never hold the slot forever.
    stall_timeout: float = attrs.field(default=20.0, validator=_positive)
    #: A caller turn the server's VAD committed while the slot was busy: once the slot frees,
    #: how long to wait for the server's own answer (it creates at once, or never: "may fail to
    #: create a response if the model is already responding") before answering it ourselves.
    server_turn_grace: float = attrs.field(default=1.0, validator=_positive)
    #: Output audio bytes per millisecond: 8 for G.711 (pcmu/pcma), 48 for 24 kHz PCM16.
    audio_bytes_per_ms: int = attrs.field(default=8, validator=_positive)
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
