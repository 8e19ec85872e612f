"""Push-to-talk caller audio not yet committed: what a switch of session carries over.

Without turn detection the server's input buffer holds every frame appended since the last
``input_audio_buffer.commit``, and the caller's turn is whatever is in it when the application
commits (:meth:`CallSession.commit_user_turn`, ``commit_on_dtmf``).  That buffer belongs to one
session: when another takes over (a rotation, or a lost session replaced by a ready next one),
the commit would reach a buffer without the turn's beginning.  So the call keeps, per call and
bounded, the base64 payloads it forwarded since the last commit, and the new session gets them
again, before any later audio.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Final

#: One append of carried audio: a second of 8 kHz mu-law.  The carry is re-cut into appends of
#: this size, so that even a long one is a few frames on the driver's queue, not thousands.
CARRY_CHUNK_BYTES: Final = 8000


class UncommittedAudio:
    """The caller audio forwarded since the last push-to-talk commit, newest kept: past
    ``limit_s`` seconds of audio the oldest frames are let go (counted in :attr:`dropped`).
    A ledger: it has no state beyond its contents and no guard reads it."""

    __slots__ = ("dropped", "frames", "limit", "size")

    def __init__(self, limit_s: float) -> None:
        #: Bytes of 8 kHz mu-law in ``limit_s`` seconds, and in the frames kept.
        self.limit = round(limit_s * 8000)
        self.frames: deque[str] = deque()
        self.size = 0
        #: Frames let go since the last commit: the beginning a switch could not carry.
        self.dropped = 0

    def add(self, payload: str) -> None:
        """A frame forwarded to the current session (per caller frame: kept cheap).  The
        payload is checked base64 (a multiple of 4 characters) by the caller."""
        self.frames.append(payload)
        self.size += _decoded_size(payload)
        if self.size > self.limit:
            frames = self.frames
            while self.size > self.limit and frames:
                self.size -= _decoded_size(frames.popleft())
                self.dropped += 1

    def clear(self) -> None:
        """Committed: the server's buffer is empty again."""
        self.frames.clear()
        self.size = 0
        self.dropped = 0

    def payloads(self) -> list[str]:
        """What was kept, re-cut into base64 payloads of :data:`CARRY_CHUNK_BYTES` each (the
        last one shorter), in order."""
        if not self.frames:
            return []
        audio = b"".join(base64.b64decode(frame) for frame in self.frames)
        return [
            base64.b64encode(audio[at : at + CARRY_CHUNK_BYTES]).decode("ascii")
            for at in range(0, len(audio), CARRY_CHUNK_BYTES)
        ]


def _decoded_size(payload: str) -> int:
    """The bytes a base64 payload decodes to, without decoding it."""
    return (len(payload) >> 2) * 3 - (payload[-1] == "=") - (payload[-2] == "=")
