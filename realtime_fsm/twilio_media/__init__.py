"""Twilio Media Streams adapter: inbound messages parsed, outbound messages built, playback tracked.

Sans-IO: a driver reads a text frame from Twilio's WebSocket and calls :func:`parse_message`;
it writes what :func:`media_message`, :func:`mark_message` and :func:`clear_message` return.

Parsing is tolerant of what real sessions show and strict about shape.  Tolerant: stream sids
are opaque (``MZ...`` or a UUID), ``sequenceNumber``/``chunk``/``timestamp`` may be strings or
numbers, ``connected.version`` is any string, unknown fields are ignored and unknown ``event``
values come back as :class:`UnknownMessage`.  Strict: bad JSON, a non-object, a missing
``event``, or a message whose required parts are missing or of the wrong type raise
:class:`~realtime_fsm.errors.RemoteProtocolError`, so the driver can log and drop that one
message and keep the call.

:class:`PlaybackTracker` answers the question the lifecycle's truncate depends on: how much of
each assistant audio item has the caller *heard*?  Twilio echoes a mark when the audio before it
finished playing, but also when a ``clear`` flushed it, with nothing in the echo to tell the two
apart.  So every mark name carries a playback generation, bumped on each ``clear``: an echo from
an older generation is audio that was thrown away, never audio that was played.

The adapter is a package by what each part holds:

* :mod:`~realtime_fsm.twilio_media.messages`: the inbound message types and mu-law constants;
* :mod:`~realtime_fsm.twilio_media.parsing`: inbound parsing (:func:`parse_message`);
* :mod:`~realtime_fsm.twilio_media.rendering`: outbound ``media``, ``mark`` and ``clear``;
* :mod:`~realtime_fsm.twilio_media.playback`: :class:`PlaybackTracker` (and
  :class:`LedgerPlaybackTracker`, which reads byte totals from the lifecycle's ledger) and
  :class:`MarkName`.

Every public name is importable from here, as it was from the single module this replaced.
"""

from __future__ import annotations

from .messages import (
    MULAW_BYTES_PER_MS,
    MULAW_ENCODING,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioMessage,
    UnknownMessage,
)
from .parsing import DEFAULT_MAX_MESSAGE_SIZE, INBOUND_EVENTS, parse_message
from .playback import LedgerPlaybackTracker, MarkName, PlaybackTracker, check_mark_every_ms
from .playback import log as log
from .rendering import clear_message, mark_message, media_message

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "INBOUND_EVENTS",
    "MULAW_BYTES_PER_MS",
    "MULAW_ENCODING",
    "Connected",
    "Dtmf",
    "Mark",
    "MarkName",
    "Media",
    "MediaFormat",
    "LedgerPlaybackTracker",
    "PlaybackTracker",
    "Start",
    "Stop",
    "TwilioMessage",
    "UnknownMessage",
    "check_mark_every_ms",
    "clear_message",
    "mark_message",
    "media_message",
    "parse_message",
]
