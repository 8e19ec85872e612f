"""The Twilio Media Streams adapter's value types: the inbound messages and the audio format.

:class:`Connected`, :class:`Start` (with its :class:`MediaFormat`), :class:`Media`,
:class:`Dtmf`, :class:`Mark`, :class:`Stop` and :class:`UnknownMessage`, the
:data:`TwilioMessage` union of them, and the mu-law constants a passthrough bridge checks
against.  They are here, apart from the code, because
:mod:`~realtime_fsm.twilio_media.parsing`, the playback tracker and the bridge all depend on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

#: G.711 at 8 kHz: one byte per sample, so 8 bytes per millisecond (160 bytes = 20 ms).
MULAW_BYTES_PER_MS: Final = 8
#: The only audio format a mu-law passthrough bridge can accept.
MULAW_ENCODING: Final = "audio/x-mulaw"


# ----------------------------------------------------------------------------- inbound messages


def _frozen_params(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Connected:
    """The first message.  Its version has varied (``0.2.0`` in 2019, ``1.0.0`` documented), so
    it is kept as text and never checked."""

    protocol: str | None = None
    version: str | None = None


@attrs.frozen
class MediaFormat:
    """``start.mediaFormat``: Twilio documents ``audio/x-mulaw``, 8000 Hz, mono; compatible
    providers may differ, which a passthrough bridge must refuse rather than play as noise."""

    encoding: str
    sample_rate: int
    channels: int = 1

    @property
    def is_mulaw_8k_mono(self) -> bool:
        """True when payloads can go to an ``audio/pcmu`` session untouched."""
        return (
            self.encoding.lower() == MULAW_ENCODING
            and self.sample_rate == 8000
            and self.channels == 1
        )


@attrs.frozen
class Start:
    """``start``: the stream's identity and parameters.

    ``stream_sid`` is opaque and goes on every outbound message.  ``custom_parameters`` are the
    ``<Parameter>`` pairs of the TwiML, the only way to pass per-call data (the stream URL can
    carry no query string)."""

    stream_sid: str
    call_sid: str | None = None
    account_sid: str | None = None
    tracks: tuple[str, ...] = ()
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_params)
    media_format: MediaFormat | None = None
    sequence_number: int | None = None


@attrs.frozen
class Media:
    """``media``: caller audio.  ``payload`` is Twilio's base64 string, untouched, to be passed
    to ``input_audio_buffer.append`` without decoding.  ``chunk`` (not ``sequence_number``, which
    also counts marks and DTMF) is what shows gaps; ``timestamp`` is ms since stream start."""

    payload: str
    track: str | None = None
    chunk: int | None = None
    timestamp: int | None = None
    stream_sid: str | None = None
    sequence_number: int | None = None


@attrs.frozen
class Dtmf:
    """``dtmf``: a key the caller pressed (bidirectional streams only)."""

    digit: str
    track: str | None = None
    stream_sid: str | None = None
    sequence_number: int | None = None


@attrs.frozen
class Mark:
    """``mark``: an echo of a mark we sent, meaning "played" *or* "cleared"; feed its name to
    :meth:`PlaybackTracker.mark_received`, which knows which."""

    name: str
    stream_sid: str | None = None
    sequence_number: int | None = None


@attrs.frozen
class Stop:
    """``stop``: the stream ended (call hung up, or the stream was stopped)."""

    account_sid: str | None = None
    call_sid: str | None = None
    stream_sid: str | None = None
    sequence_number: int | None = None


@attrs.frozen
class UnknownMessage:
    """A well-formed message with an ``event`` this adapter does not know: ignore it."""

    event: str


TwilioMessage = Connected | Start | Media | Dtmf | Mark | Stop | UnknownMessage
