"""Playback tracking: :class:`PlaybackTracker`, and the :class:`MarkName` it mints.

The tracker answers the question the lifecycle's truncate depends on: how much of each assistant
audio item has the caller *heard*?  Twilio echoes a mark when the audio before it finished
playing, but also when a ``clear`` flushed it, with nothing in the echo to tell the two apart.
So every mark name carries a playback generation, bumped on each ``clear``: an echo from an
older generation is audio that was thrown away, never audio that was played.  Stateful, unlike
the rest of the adapter; :meth:`PlaybackTracker.audio_sent` and
:meth:`PlaybackTracker.mark_received` are per-frame paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from .. import events as ev
from ..errors import LocalProtocolError
from .messages import MULAW_BYTES_PER_MS

log = logging.getLogger("realtime_fsm.twilio_media")


@attrs.frozen
class MarkName:
    """A mark name this tracker minted, decoded: ``g{generation}:{seq}:{end_ms}:{item_id}``.

    The item id goes last so an id containing ``:`` still round-trips."""

    generation: int
    seq: int
    end_ms: int
    item_id: str

    def __str__(self) -> str:
        return f"g{self.generation}:{self.seq}:{self.end_ms}:{self.item_id}"

    @classmethod
    def parse(cls, name: str) -> MarkName | None:
        """The decoded name, or ``None`` for a name this tracker did not mint."""
        parts = name.split(":", 3)
        if len(parts) != 4:
            return None
        gen, seq, end_ms, item_id = parts
        if not (gen[:1] == "g" and _digits(gen[1:]) and _digits(seq) and _digits(end_ms)):
            return None
        if not item_id:
            return None
        return cls(int(gen[1:]), int(seq), int(end_ms), item_id)


def _digits(text: str) -> bool:
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


#: Per-item byte and ms counters kept for this many most recent items.
_ITEMS_MAX: Final = 64

#: The least audio (ms) between two looks :meth:`PlaybackTracker._witness` asks for beyond the
#: marks, and how many it asks for per echo: extra full paths of ``audio_sent``, bounded.
_LOOK_MIN_MS: Final = 20
_LOOKS_PER_ECHO: Final = 8


def check_mark_every_ms(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a mark interval :class:`PlaybackTracker` takes
    (a non-negative ``int``; 0: a mark after every ``media``).  Public so that a configuration
    holding one (``BridgeConfig.mark_every_ms``) refuses it when it is built, not per call."""
    if type(value) is not int or value < 0:
        raise ValueError(f"mark_every_ms must be a non-negative int, got {value!r}")


class PlaybackTracker:
    """How much of each assistant audio item the caller has heard, from Twilio mark echoes.

    After each ``media`` message, send a ``mark`` named by :meth:`audio_sent`; feed every echoed
    mark name to :meth:`mark_received`, which returns the ``PlaybackProgress`` to give the
    lifecycle (``ResponseLifecycle.playback_progress(item_id, played_ms)``); call :meth:`clear`
    when a Twilio ``clear`` is sent.  ``played_ms`` is absolute per item and rounded *up* to the
    ms, so a fully played item reads as fully heard; the lifecycle clamps the truncate point to
    the audio it received, so rounding up can never truncate past the end.

    Between echoes, :meth:`estimate` says how far playback has got since the last one, so that
    sparse marks (``mark_every_ms``) do not make barge-in truncation coarse.

    Marks that were pending at a ``clear`` come back from an older generation and count as
    ``marks_cleared``, never as played.  One echo that was already on its way when the ``clear``
    went out is misclassified the same way, under-counting by at most one chunk: the safe side.
    """

    __slots__ = (
        "_anchor",
        "_bytes_per_ms",
        "_call_id",
        "_generation",
        "_hot_item",
        "_hot_limit",
        "_last_mark",
        "_looks",
        "_mark_every_ms",
        "_max_pending",
        "_origin",
        "_pending",
        "_played",
        "_sent",
        "_seq",
        "_unmarked",
        "stats",
    )

    def __init__(
        self,
        *,
        bytes_per_ms: int = MULAW_BYTES_PER_MS,
        max_pending: int = 10_000,
        call_id: str = "-",
        mark_every_ms: int = 0,
    ) -> None:
        if type(bytes_per_ms) is not int or bytes_per_ms <= 0:
            raise ValueError(f"bytes_per_ms must be a positive int, got {bytes_per_ms!r}")
        if type(max_pending) is not int or max_pending <= 0:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        check_mark_every_ms(mark_every_ms)
        self._bytes_per_ms = bytes_per_ms
        self._max_pending = max_pending
        #: 0: a mark after every ``media``.  Otherwise at most one mark per this many ms of an
        #: item's audio, plus one for the rest (:meth:`flush_mark`): with small deltas, marks
        #: (sent, echoed, parsed) were half of the bridge's messages.
        self._mark_every_ms = mark_every_ms
        #: The item whose latest audio was sent without a mark yet, if any (its end is where
        #: ``_sent`` has it: only :meth:`audio_sent` moves that, and it resets this).
        self._unmarked: str | None = None
        #: The per-frame shortcut of :meth:`audio_sent`: more audio of this item, up to a total
        #: below ``_hot_limit`` bytes, needs no mark and changes nothing but its byte count.
        #: Armed by the full path, disarmed by anything that could move a mark's end.
        self._hot_item: str | None = None
        self._hot_limit = 0
        self._call_id = call_id
        self._generation = 0
        self._seq = 0
        #: Mark name -> (item_id, end_ms), oldest first; only the current generation.
        self._pending: dict[str, tuple[str, int]] = {}
        #: item_id -> bytes sent / ms confirmed played, current generation.
        self._sent: dict[str, int] = {}
        self._played: dict[str, int] = {}
        #: The last echo with a time: (item_id, end_ms, when, cap): the cap is the item's audio
        #: known to follow ``end_ms`` at Twilio without a gap, in ms (what was sent when the
        #: echo came back, raised by :meth:`_witness` while playback provably lags the sending).
        self._anchor: tuple[str, int, float, int] | None = None
        #: (item_id, t0): the item whose audio went through :meth:`audio_sent`'s full path last,
        #: and a time before which playback cannot have started it: at any later time ``t`` the
        #: caller has heard at most ``(t - t0) * 1000`` ms of it (see :meth:`_witness`).
        self._origin: tuple[str, float] | None = None
        #: Looks :meth:`_witness` may still ask for since the last echo (a cost bound only).
        self._looks = 0
        #: (item_id, end_ms) of the mark minted last in this generation.
        self._last_mark: tuple[str, int] | None = None
        #: Counters a bridge can export: marks played, cleared, foreign, ...
        self.stats: dict[str, int] = {}

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pending_marks(self) -> int:
        """Marks sent in this generation whose echo has not come back yet."""
        return len(self._pending)

    @property
    def playing(self) -> bool:
        """True while Twilio may still hold unplayed audio we sent (a mark is outstanding)."""
        return bool(self._pending)

    def sent_ms(self, item_id: str) -> int:
        """Audio of this item sent to Twilio in this generation, in whole ms (rounded up)."""
        return -(-self._total(item_id) // self._bytes_per_ms)

    def played_ms(self, item_id: str) -> int:
        """Audio of this item confirmed played in this generation, in ms."""
        return self._played.get(item_id, 0)

    def audio_sent(self, item_id: str, byte_count: int, now: float | None = None) -> str | None:
        """Record ``byte_count`` bytes of ``item_id`` sent to Twilio; return the name of the mark
        to send right after that ``media`` message (``None`` when ``mark_every_ms`` says not
        yet: then call :meth:`flush_mark` before anything else is sent).

        ``now`` (the clock given to :meth:`mark_received`, read before the ``media`` is
        written) lets :meth:`estimate` count audio sent after the last echo, when it provably
        reached Twilio before playback ran out; without it, that audio is not counted."""
        # Per frame, mostly this: the item playing, no mark due.  A byte total under the limit
        # is exactly what the full path would answer None for, with no other effect (see
        # ``_arm``), so it is skipped: this runs for every 20 ms of audio of every call.
        # ``now`` is not looked at here: :meth:`_witness` explains why the full path suffices.
        if item_id == self._hot_item and type(byte_count) is int and byte_count >= 0:
            sent = self._sent
            total = sent[item_id] + byte_count
            if total < self._hot_limit:
                sent[item_id] = total
                self._unmarked = item_id
                return None
        return self._audio_sent_full(item_id, byte_count, now)

    def _audio_sent_full(self, item_id: str, byte_count: int, now: float | None) -> str | None:
        if type(item_id) is not str or not item_id:
            raise LocalProtocolError(f"item_id must be a non-empty string, got {item_id!r}")
        if type(byte_count) is not int or byte_count < 0:
            raise LocalProtocolError(f"byte_count must be a non-negative int, got {byte_count!r}")
        total = self._add_bytes(item_id, byte_count)
        name = self._place_marks(item_id, total)
        self._witness(item_id, total - byte_count, total, now)
        return name

    def _witness(self, item_id: str, start: int, total: int, now: float | None) -> None:
        """A frame of ``item_id``, bytes ``start`` to ``total``, was sent at ``now``: take what
        that proves about playback, and raise the anchor's cap when it proves that the audio
        sent since the cap follows it at Twilio without a gap.  Full path only.

        Upper bound: Twilio cannot play a byte before it has it, so this frame's first byte
        plays no earlier than ``now``, and playback runs at most in real time: at any later
        ``t`` at most ``start_ms + (t - now) * 1000`` ms of the item were heard.  ``_origin``
        keeps the tightest such bound (``t0 = now - start_ms / 1000``, the latest), and starts
        over at a frame of another item, so that a bound never spans another item's audio.

        The lift: the anchor's cap ``K`` is audio that plays on from the echoed mark without a
        gap.  Each frame sent since ``K`` was set starts at or beyond ``K``.  If the bound says
        playback had not reached ``K`` by ``now``, it had not at any earlier send either, so
        none of those frames met an empty buffer: all the item's audio sent up to ``now``
        follows without a gap, and ``K`` rises to it.  Otherwise ``K`` stays (an underrun may
        have happened) and, as the bound only grows, stays until the next echo.  Checking only
        on the full path is sound for the frames the shortcut took in between: each was sent
        before this check's ``now`` and starts at or beyond ``K``, so this one check covers
        them all; a check missed only leaves ``K`` low, the early side.

        When to look again: the frames sent by the next check must not be able to reach ``K``
        first.  The check sees it, but once per ``mark_every_ms`` is too late when the proven
        lead is smaller (the first frame's echo: a few frames ahead).  So the shortcut is cut
        short at half the lead's worth of audio more: audio sent at least as fast as it plays
        keeps the chain (the lead stays or grows); slower, the check fails, as it must.  Not
        under ``_LOOK_MIN_MS`` of audio, at most ``_LOOKS_PER_ECHO`` times per echo (audio
        sent twice as fast as it plays grows the lead by half at each look: eight take two
        frames' lead past the default mark interval, where the marks' own checks suffice)."""
        if now is None:
            self._origin = None  # no time: no evidence, and an older bound may span this frame
            return
        bytes_per_ms = self._bytes_per_ms
        # Whole ms, up: the bound errs high, which only holds the cap back.
        t0 = now - -(-start // bytes_per_ms) / 1000
        origin = self._origin
        if origin is not None and origin[0] == item_id and origin[1] > t0:
            t0 = origin[1]
        self._origin = (item_id, t0)
        anchor = self._anchor
        if anchor is None or anchor[0] != item_id:
            return
        cap = anchor[3]
        # The epsilon absorbs float error on the side of holding the cap.
        lead = cap - (now - t0) * 1000 - 1e-6
        if lead <= 0:
            return
        sent_ms = -(-total // bytes_per_ms)
        if sent_ms > cap:
            self._anchor = (item_id, anchor[1], anchor[2], sent_ms)
            lead += sent_ms - cap
        if lead >= 2 * _LOOK_MIN_MS and self._looks and self._hot_item == item_id:
            look = total + int(lead / 2) * bytes_per_ms
            if look < self._hot_limit:
                self._hot_limit = look
                self._looks -= 1

    def _add_bytes(self, item_id: str, byte_count: int) -> int:
        """Count ``byte_count`` more bytes of ``item_id``; return its total in this generation."""
        sent = self._sent
        total = sent.get(item_id)
        if total is None:
            if len(sent) >= _ITEMS_MAX:
                oldest = next(iter(sent))
                del sent[oldest]
                self._played.pop(oldest, None)
                if self._last_mark is not None and self._last_mark[0] == oldest:
                    self._last_mark = None
            total = 0
        total += byte_count
        sent[item_id] = total
        return total

    def _place_marks(self, item_id: str, total: int) -> str | None:
        """The mark due now that ``total`` bytes of ``item_id`` were sent, if any."""
        end_ms = -(-total // self._bytes_per_ms)
        every = self._mark_every_ms
        if not every:
            return self._mint(item_id, end_ms)
        unmarked = self._unmarked
        if unmarked is not None and unmarked != item_id:
            self._count("marks_skipped_item_tail")  # flush_mark was not called
        played_to = self._marked_end(item_id)
        # An item's first audio gets a mark at once: its echo says when the item began to
        # play, which anchors :meth:`estimate` on it.  Without it, a barge-in before the item's
        # first regular mark came back would find it unheard (a response's second item after
        # a preamble, or after the model thought in silence) and delete what the caller heard.
        if end_ms - played_to < every and (played_to or not end_ms):
            self._unmarked = item_id
            self._arm(item_id, played_to)
            return None
        self._unmarked = None
        name = self._mint(item_id, end_ms)
        self._arm(item_id, end_ms)
        return name

    def _arm(self, item_id: str, marked_to: int) -> None:
        """Let the next frames of ``item_id`` take the shortcut while no mark is due: the full
        path answers None while ``ceil(total / bytes_per_ms) - marked_to < every``, that is
        while ``total <= (marked_to + every - 1) * bytes_per_ms`` (and, before the item's
        first mark, only while it has no audio at all)."""
        self._hot_item = item_id
        if not marked_to:  # no mark yet: the first byte of audio is the item's start mark
            self._hot_limit = 1
            return
        self._hot_limit = (marked_to + self._mark_every_ms - 1) * self._bytes_per_ms + 1

    def flush_mark(self) -> str | None:
        """The mark for audio sent since the last one, if any (``mark_every_ms`` only): send it
        when the item's audio ends or anything else is about to be sent, so that every item is
        heard to its end."""
        item_id = self._unmarked
        if item_id is None:
            return None
        self._unmarked = None
        return self._mint(item_id, -(-self._total(item_id) // self._bytes_per_ms))

    def _total(self, item_id: str) -> int:
        """Bytes of ``item_id`` sent in this generation."""
        return self._sent.get(item_id, 0)

    def _marked_end(self, item_id: str) -> int:
        """The end (ms) of the item's last mark still pending or played, 0 if none."""
        last = self._last_mark
        if last is not None and last[0] == item_id:
            return last[1]  # the per-frame case: the item whose mark was minted last
        for _name, (item, end_ms) in reversed(self._pending.items()):
            if item == item_id:
                return end_ms
        return self._played.get(item_id, 0)

    def _mint(self, item_id: str, end_ms: int) -> str:
        self._hot_item = None  # a new mark (or an evicted one) moves where marks end
        self._seq += 1
        name = f"g{self._generation}:{self._seq}:{end_ms}:{item_id}"
        pending = self._pending
        if len(pending) >= self._max_pending:
            del pending[next(iter(pending))]
            self._count("marks_evicted")
        pending[name] = (item_id, end_ms)
        self._last_mark = (item_id, end_ms)
        return name

    def mark_received(self, name: str, now: float | None = None) -> tuple[ev.PlaybackProgress, ...]:
        """Account for one echoed mark; return the playback progress it proves (often one
        entry, empty for a cleared, duplicate or foreign mark).

        Twilio plays in order, so an echo also proves every earlier pending mark played; their
        items are reported too, should an echo ever go missing.  With ``now`` (seconds, any
        monotonic clock) the echo also anchors :meth:`estimate`."""
        pending = self._pending
        if name not in pending:
            self._classify_stray(name)
            return ()
        self._hot_item = None  # marks leave ``_pending``: re-derive where they end
        progress: list[ev.PlaybackProgress] = []
        played = self._played
        while True:
            key, (item_id, end_ms) = next(iter(pending.items()))
            del pending[key]
            if end_ms > played.get(item_id, 0):
                played[item_id] = end_ms
                if progress and progress[-1].item_id == item_id:
                    progress.pop()
                progress.append(ev.PlaybackProgress(item_id=item_id, played_ms=end_ms))
            if key == name:
                if now is not None:
                    self._anchor = (item_id, end_ms, now, self.sent_ms(item_id))
                    self._looks = _LOOKS_PER_ECHO
                break
            self._count("marks_implied")
        self._count("marks_played")
        return tuple(progress)

    def estimate(self, now: float) -> ev.PlaybackProgress | None:
        """Where the caller's playback is *now*, between mark echoes: the last echoed mark plus
        the time since its echo came back (``now`` on the clock given to
        :meth:`mark_received`), or ``None`` when that proves nothing beyond the echoes.

        Twilio plays buffered audio continuously, so this is exact up to the echo's own delay,
        which makes it early, never late.  Two caps keep it on that side when playback was not
        continuous: the item's audio known to follow the echoed mark without a gap (what was
        sent when the echo came back, plus what was sent later while playback provably had
        not caught up with it: :meth:`audio_sent` with ``now``; audio sent after playback may
        have run out may have started late) and the item's next pending mark (not echoed, so
        not played).  Feed the result to the lifecycle's ``playback_progress`` right before a
        barge-in, so that the truncate point does not depend on how sparse the marks are."""
        anchor = self._anchor
        if anchor is None:
            return None
        item_id, end_ms, at, cap = anchor
        for pending_item, pending_end in self._pending.values():
            if pending_item == item_id:  # its echo is still due: not all of it was heard
                cap = min(cap, pending_end - 1)
                break
        # Whole ms, down (the early side); the epsilon only absorbs float error (7 ms = 6.99..).
        played = min(end_ms + int((now - at) * 1000 + 1e-6), cap)
        if played <= self._played.get(item_id, 0):
            return None
        return ev.PlaybackProgress(item_id=item_id, played_ms=played)

    def clear(self) -> None:
        """A Twilio ``clear`` was sent: start a new generation; what was pending was dropped."""
        dropped = len(self._pending)
        self._generation += 1
        self._unmarked = None
        self._hot_item = None
        self._anchor = None
        self._origin = None
        self._last_mark = None
        self._pending.clear()
        self._sent.clear()
        self._played.clear()
        if dropped:
            self.stats["marks_dropped_by_clear"] = (
                self.stats.get("marks_dropped_by_clear", 0) + dropped
            )
        log.debug(
            "call=%s playback cleared: generation=%d, %d pending mark(s) dropped",
            self._call_id,
            self._generation,
            dropped,
        )

    def _classify_stray(self, name: str) -> None:
        decoded = MarkName.parse(name)
        if decoded is None:
            self._count("marks_foreign")
        elif decoded.generation < self._generation:
            self._count("marks_cleared")
        else:
            self._count("marks_unknown")
            log.debug(
                "call=%s mark %r is not pending (duplicate or never sent); ignored",
                self._call_id,
                name,
            )

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1


class LedgerPlaybackTracker(PlaybackTracker):
    """A :class:`PlaybackTracker` that counts no bytes of its own: an item's audio so far is
    read from the response lifecycle's playback ledger (``ResponseLifecycle.playback``: per
    item, bytes received and ms heard), the one count of those bytes, kept by the machine that
    accepted them.  Call :meth:`audio_sent` only for a delta the machine has just counted
    (``audio_delta`` returned True), and :meth:`follow` the new machine's ledger when the
    machine is replaced (a new OpenAI session).

    Marks are placed as the base class places them; item byte totals are the ledger's, which
    a ``clear`` does not reset (audio of a cleared item never follows: its response was
    stopped), so mark ends stay absolute per item.  What stays the tracker's own is what only
    the marks know: the marks pending, and the ms each echo *confirmed* (the ledger's ms heard
    also take estimates between echoes)."""

    __slots__ = ("_ledger", "_unmarked_total")

    def __init__(self, ledger: Mapping[str, Sequence[int]], **options: Any) -> None:
        super().__init__(**options)
        self._ledger = ledger
        #: The total of the item marked last by :meth:`flush_mark`'s measure: the ledger may
        #: have dropped a fully heard item by the time its last mark is flushed.
        self._unmarked_total = 0

    def follow(self, ledger: Mapping[str, Sequence[int]]) -> None:
        """Read from this ledger from now on (a new machine, for a new session)."""
        self._ledger = ledger

    def audio_sent(self, item_id: str, byte_count: int, now: float | None = None) -> str | None:
        """The delta the machine just counted was sent; return the mark to send after it."""
        entry = self._ledger.get(item_id)
        if entry is None:  # not counted by the machine: a caller's mistake, refused below
            raise LocalProtocolError(f"item {item_id!r} is not in the playback ledger")
        total = entry[0]
        if item_id == self._hot_item and total < self._hot_limit:
            self._unmarked = item_id
            self._unmarked_total = total
            return None
        played = self._played
        if item_id not in played and len(played) >= _ITEMS_MAX:  # bounded, as the base's
            oldest = next(iter(played))
            del played[oldest]
            if self._last_mark is not None and self._last_mark[0] == oldest:
                self._last_mark = None
        name = self._place_marks(item_id, total)
        if type(byte_count) is int and 0 <= byte_count <= total:
            self._witness(item_id, total - byte_count, total, now)
        else:  # not the delta the machine counted: it proves nothing
            self._witness(item_id, 0, total, None)
        if self._unmarked == item_id:
            self._unmarked_total = total
        return name

    def _total(self, item_id: str) -> int:
        if item_id == self._unmarked:
            return self._unmarked_total
        entry = self._ledger.get(item_id)
        return entry[0] if entry is not None else 0
