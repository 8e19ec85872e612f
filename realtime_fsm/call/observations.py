"""What the call notes only to tell an observer: the times and details that application events
carry beyond what the machines need (when a response was asked for, when its first audio went
out and was first heard, what a truncate cut).

Kept while ``emit_events`` is on (a driver turns it on when the application listens or
telemetry is attached); with it off, nothing here runs on a per-frame path but one truthiness
test per mark echo.  No guard reads any of it: it cannot change a transition.
"""

from __future__ import annotations

from typing import Final, TypeVar

from ..commands import (
    Command,
    RequestGivenUp,
    SendItemDelete,
    SendResponseCreate,
    SendTruncate,
)
from ..events import PlaybackProgress
from ..table import CANCELLING
from . import app_events as ae
from .fields import MAX_PARTIALS, CallFields

#: Audio items remembered with their response, so that a truncate of an answer that already
#: ended (still playing when the caller barged in) is still tied to its response.
MAX_ITEMS: Final = 64


V = TypeVar("V")


def _put(table: dict[str, V], key: str, value: V, limit: int) -> None:
    """``table[key] = value``, the oldest entry dropped past ``limit`` (insertion order)."""
    if key not in table and len(table) >= limit:
        del table[next(iter(table))]
    table[key] = value


class Observations(CallFields):
    """Notes for application events and telemetry; see the module's docstring."""

    def _observe_command(self, command: Command) -> None:
        """A client command handed to the driver: note or tell what an observer wants of it."""
        kind = type(command)
        now = self._now
        if kind is SendResponseCreate:
            assert isinstance(command, SendResponseCreate)
            _put(self._asked_at, command.event_id, now, MAX_PARTIALS)
        elif kind is SendTruncate or kind is SendItemDelete:
            assert isinstance(command, (SendTruncate, SendItemDelete))
            end = command.audio_end_ms if isinstance(command, SendTruncate) else 0
            response = self._item_response.get(command.item_id)
            self.events.append(
                ae.AudioTruncated(
                    command.item_id,
                    end,
                    max(0, command.received_ms - end),
                    response,
                    at=now,
                )
            )

    def _note_cancelling(self) -> None:
        """Tell the response machine's entry into ``cancelling`` once (a barge-in, the
        watchdog, a response nobody asked for: by our ``response.cancel`` or the server's own
        interruption)."""
        machine = self.machine
        if machine is not None and machine.state is CANCELLING:
            if not self._cancel_told:
                self._cancel_told = True
                self.events.append(ae.ResponseCancelling(machine.response_id, at=self._now))
        else:
            self._cancel_told = False

    def _requested_at(self, ours: bool, event_id: str | None) -> float | None:
        """When the response now created was asked for (see ``ResponseStarted``)."""
        if ours:
            return self._asked_at.pop(event_id, None) if event_id is not None else None
        turn, self._turn_at = self._turn_at, None
        return turn

    def _first_audio_of(self, response_id: str, item: str, now: float) -> None:
        """Audio of a response's item was handed out for the first time."""
        _put(self._item_response, item, response_id, MAX_ITEMS)
        if response_id not in self._first_audio:
            _put(self._first_audio, response_id, now, MAX_PARTIALS)
            _put(self._awaiting_play, item, (response_id, now), MAX_PARTIALS)

    def _first_audio_at(self, response_id: str) -> float | None:
        return self._first_audio.pop(response_id, None)

    def _playback_started(self, progress: tuple[PlaybackProgress, ...], now: float) -> bool:
        """A mark echo proved playback: a response's first item heard is told once.  Dated
        back by the ms the echo confirms (Twilio plays its buffer continuously), never before
        the audio went out.  True when an event was added."""
        told = False
        for step in progress:
            entry = self._awaiting_play.pop(step.item_id, None)
            if entry is not None:
                response_id, sent_at = entry
                at = max(sent_at, now - step.played_ms / 1000)
                self.events.append(ae.PlaybackStarted(response_id, step.item_id, at=at))
                told = True
        return told

    def _given_up(self, command: RequestGivenUp) -> None:
        """A request that will not be served: into the report, and told."""
        self.report.given_up.append(command)
        if self.emit_events:
            self.events.append(
                ae.ResponseRequestGivenUp(command.reason, command.request_reasons, at=self._now)
            )
