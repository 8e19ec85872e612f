"""A fake Twilio caller's settings and script (:class:`FakeCallerConfig`, :data:`ScriptStep`).

Re-exported by :mod:`realtime_fsm.testing.fake_twilio` and :mod:`realtime_fsm.testing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ..validators import positive


@attrs.frozen
class Speak:
    """At ``at_s`` (caller seconds after ``start``), speak for ``duration_s``."""

    at_s: float
    duration_s: float


@attrs.frozen
class TypeText:
    """At ``at_s``, type ``text`` (see the module docstring: needs an opt-in channel)."""

    at_s: float
    text: str


@attrs.frozen
class SendDtmf:
    """At ``at_s``, press ``digit`` (a Twilio ``dtmf`` message)."""

    at_s: float
    digit: str


@attrs.frozen
class HangUp:
    """At ``at_s``, send ``stop`` and close the socket."""

    at_s: float


ScriptStep = Speak | TypeText | SendDtmf | HangUp


def _steps(value: Iterable[ScriptStep]) -> tuple[ScriptStep, ...]:
    return tuple(value)


@attrs.frozen
class FakeCallerConfig:
    """Settings of a :class:`FakeTwilioCaller`."""

    #: ``start.customParameters`` (the TwiML ``<Parameter>`` pairs).
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict)
    #: Ids; generated Twilio-style (``MZ``/``CA``/``AC`` + 32 hex digits) when None.
    stream_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    #: Audio per inbound ``media`` message (Twilio sends 20 ms = 160 bytes).
    frame_ms: int = attrs.field(default=20, validator=positive)
    #: Clock multiplier for media cadence, playback and script times (1.0 = real time).
    speed: float = attrs.field(default=1.0, validator=positive)
    #: Peak level of the speech tone (fraction of full scale).
    speech_level: float = 0.3
    #: ``media.timestamp`` of the first frame (real streams start at a few tens of ms).
    first_timestamp_ms: int = 0
    #: Twilio always sends ``connected`` first; turn off to test a bridge's tolerance.
    send_connected: bool = True
    protocol_version: str = "1.0.0"
    #: Opt-in non-Twilio side channel for typed text: the ``event`` name to use (e.g. "text").
    text_event: str | None = None
    #: Extra HTTP headers on the websocket upgrade.
    extra_headers: Mapping[str, str] = attrs.field(factory=dict)
    #: If set, send ``X-Twilio-Signature`` computed with this token over ``signature_url``
    #: (default: the URL connected to).
    auth_token: str | None = None
    signature_url: str | None = None
    #: Steps run after ``start``, by time.
    script: tuple[ScriptStep, ...] = attrs.field(default=(), converter=_steps)
    seed: int | None = None
    #: Write a :func:`~realtime_fsm.testing.audio.make_time_stamp` with this source id and the
    #: time of sending over the start of every inbound frame (inaudible: silence stays silence
    #: and speech stays speech), to measure the latency of the path to the Realtime server.
    stamp_source: int | None = None
    #: Keep the audio received and played (:attr:`FakeTwilioCaller.media_received`,
    #: :attr:`~FakeTwilioCaller.played`).  Off for long runs with many calls; the tags heard
    #: and every other record are kept either way.
    record_audio: bool = True
