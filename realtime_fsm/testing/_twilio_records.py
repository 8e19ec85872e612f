"""What a fake Twilio caller records: audio received and played, marks echoed, clears, tags.

Re-exported by :mod:`realtime_fsm.testing.fake_twilio` and :mod:`realtime_fsm.testing`.
"""

from __future__ import annotations

import attrs

from .audio import AudioTag

#: mu-law, 8 kHz, mono.
BYTES_PER_MS = 8


@attrs.frozen
class ReceivedMedia:
    """An outbound ``media`` message from the bridge, as received (before playback)."""

    at: float
    payload: bytes


@attrs.frozen
class PlayedAudio:
    """A piece of audio that was played to the end (a piece cut by ``clear`` is not here)."""

    started_at: float
    ended_at: float
    data: bytes


@attrs.frozen
class MarkEcho:
    """A ``mark`` sent back to the bridge: ``cleared`` = because of a ``clear``, not played."""

    at: float
    name: str
    cleared: bool


@attrs.frozen
class ClearRecord:
    """A ``clear`` from the bridge: audio thrown away and marks released by it."""

    at: float
    flushed_bytes: int
    marks_released: tuple[str, ...]

    @property
    def flushed_ms(self) -> float:
        return self.flushed_bytes / BYTES_PER_MS


@attrs.frozen
class HeardTag:
    """An audio tag (see :mod:`realtime_fsm.testing.audio`) found in received or played audio."""

    at: float
    tag: AudioTag
