"""Twilio's playback rules, as the fake caller applies them to what the bridge sends.

Twilio buffers the audio a bridge sends and plays it in real time (8 bytes of mu-law per ms); a
``mark`` comes back only once the audio sent before it has played; a ``clear`` throws the
buffered audio away and sends every pending mark back at once
(``/work/shared/reference/twilio-media-streams.md``).  :class:`TwilioPlayback` is that buffer
and its player, apart from the socket: the caller feeds it what it receives and sends the mark
echoes it asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ._support import settle
from ._twilio_records import BYTES_PER_MS, ClearRecord, HeardTag, MarkEcho, PlayedAudio
from .audio import TagScanner


class TwilioPlayback:
    """The playback buffer of one stream and its real-time player (:meth:`run`, a task).

    ``echo(name)`` sends a mark back to the bridge; ``notify()`` wakes whoever waits on the
    caller's records.  The lists (:attr:`played`, :attr:`marks_echoed`, :attr:`clears`,
    :attr:`tags_played`) are the caller's public records, shared, not copied."""

    def __init__(
        self,
        *,
        frame_ms: int,
        speed: float,
        record_audio: bool,
        echo: Callable[[str], None],
        notify: Callable[[], None],
    ) -> None:
        self._frame_ms = frame_ms
        self._speed = speed
        self._record_audio = record_audio
        self._echo = echo
        self._notify = notify
        # Audio pieces (bytearray) and mark names (str), in arrival order.
        self._queue: deque[bytearray | str] = deque()
        self._playing: bytes | None = None
        self._wake = asyncio.Event()
        # A ``clear`` sets ``_cut`` and wakes the player through ``_cut_waiter``.
        self._cut = False
        self._cut_waiter: asyncio.Future[None] | None = None
        self._played_scanner = TagScanner()
        #: Audio that finished playing, in order.
        self.played: list[PlayedAudio] = []
        #: Every mark sent back, in order.
        self.marks_echoed: list[MarkEcho] = []
        #: Every ``clear`` received.
        self.clears: list[ClearRecord] = []
        #: Audio tags in played audio.
        self.tags_played: list[HeardTag] = []

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of audio waiting to be played (including the piece playing now)."""
        queued = sum(len(x) for x in self._queue if isinstance(x, bytearray))
        return (queued + len(self._playing or b"")) / BYTES_PER_MS

    @property
    def is_playing(self) -> bool:
        return self._playing is not None or any(isinstance(x, bytearray) for x in self._queue)

    @property
    def pending_marks(self) -> list[str]:
        """Marks received but not echoed yet (waiting for their audio to play)."""
        return [x for x in self._queue if isinstance(x, str)]

    def add_audio(self, data: bytes) -> None:
        """Audio the bridge sent: played after what is buffered."""
        if data:
            self._queue.append(bytearray(data))
            self._wake.set()

    def add_mark(self, name: str) -> None:
        """A mark the bridge sent: echoed once the audio before it has played."""
        self._queue.append(name)
        self._wake.set()

    def clear(self, now: float) -> None:
        """A ``clear``: the buffer (and the piece playing) is thrown away, every pending mark
        echoed at once."""
        flushed = sum(len(x) for x in self._queue if isinstance(x, bytearray))
        flushed += len(self._playing or b"")
        marks = tuple(x for x in self._queue if isinstance(x, str))
        self._queue.clear()
        self._playing = None
        self._cut = True
        if self._cut_waiter is not None:
            settle(self._cut_waiter, None)
        self._played_scanner.reset()
        self.clears.append(ClearRecord(now, flushed, marks))
        for name in marks:
            self._echo_mark(name, cleared=True)

    def _echo_mark(self, name: str, *, cleared: bool) -> None:
        self._echo(name)
        self.marks_echoed.append(MarkEcho(time.monotonic(), name, cleared))
        self._notify()

    async def run(self) -> None:
        """Plays the buffer at 8 bytes/ms (scaled by ``speed``) in pieces of one frame.

        A piece counts as played when its last byte has played; a ``clear`` cuts the piece
        playing at that moment, which then counts as flushed.
        """
        loop = asyncio.get_running_loop()
        piece_bytes = self._frame_ms * BYTES_PER_MS
        clock = loop.time()
        while True:
            if not self._queue:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                clock = loop.time()  # an underrun: playback restarts when audio comes
            head = self._queue[0]
            if isinstance(head, str):
                self._queue.popleft()
                self._echo_mark(head, cleared=False)
                continue
            data = bytes(head[:piece_bytes])
            del head[:piece_bytes]
            if not head:
                self._queue.popleft()
            self._playing = data
            self._cut = False
            started = time.monotonic()
            # Piece after piece on one clock, as a real player's sample clock: restarting each
            # piece from when its timer fired would drop the timer's lateness (~5% here).
            clock += len(data) / BYTES_PER_MS / 1000 / self._speed
            # Wait until the piece has played or a clear cuts it (a timer and a future: cheaper
            # than wait_for, which wraps the wait in a task for every piece).
            waiter: asyncio.Future[None] = loop.create_future()
            self._cut_waiter = waiter
            timer = loop.call_at(clock, settle, waiter, None)
            try:
                await waiter
            finally:
                timer.cancel()
                self._cut_waiter = None
            if self._cut:  # cleared while playing: the piece was cut off
                clock = loop.time()
                continue
            self._playing = None
            ended = time.monotonic()
            if self._record_audio:
                self.played.append(PlayedAudio(started, ended, data))
            for tag in self._played_scanner.feed(data):
                self.tags_played.append(HeardTag(ended, tag))
            self._notify()
