"""The guards the tables name, in table order.  A guard only reads: the event being handled,
the time, the machines' states and the ledgers."""

from __future__ import annotations

import re
from typing import Final

from .. import events as ev
from ..commands import META_EVENT_ID
from ..table import ACTIVE, C_NONE, DUE, IDLE, IN_FLIGHT, SENT, T_NONE, UNWANTED
from .fields import LifecycleFields

#: Server error codes with a fixed meaning for the slot.
BUSY_CODE: Final = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE_CODE: Final = "response_cancel_not_active"
_BUSY_PREFIX: Final = "conversation already has an active response"
_CANCEL_NOT_ACTIVE_PREFIX: Final = "cancellation failed"
_RESP_ID: Final = re.compile(r"\b(resp_[A-Za-z0-9_-]+)")


class LifecycleGuards(LifecycleFields):
    __slots__ = ()

    # ------------------------------------------------------------------- requests and turns

    def is_oob_request(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.RequestResponse)
        return event.out_of_band

    def turn_owed(self) -> bool:
        """The server's VAD is to answer a committed turn: a create of ours would race it."""
        return self.turn_state is not T_NONE

    def server_creates(self) -> bool:
        """The session's turn detection creates a response for each committed user turn."""
        return self._server_creates

    def has_pending(self) -> bool:
        return bool(self.pending)

    def commit_of_idle_timeout(self) -> bool:
        """The commit of the silence the server's idle timeout just committed (same item)."""
        event = self._ev
        assert isinstance(event, ev.UserTurnCommitted)
        pending = self._idle_timeout_item
        return pending is not None and event.item_id == pending

    # ----------------------------------------------------------------------- response.created

    def is_oob_created(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        return event.out_of_band

    def is_retired_response(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        return event.response_id in self._retired

    def is_given_up_create(self) -> bool:
        """``response.created`` of a create we stopped waiting for (timeout) or that was
        rejected (busy): its requests went elsewhere, so nobody wants this response."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        return event.metadata.get(META_EVENT_ID) in self._given_up

    def is_current_response(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        return event.response_id == self.response_id

    def current_unseen(self) -> bool:
        return self._current_unseen

    def current_unnamed(self) -> bool:
        """The response being stopped is known only from a busy error in the old wording,
        which names no id: its first response.created names it."""
        return self.response_id is None and self._current_unseen

    def is_our_inflight(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        inflight = self.inflight
        return inflight is not None and event.metadata.get(META_EVENT_ID) == inflight.event_id

    def create_unwanted(self) -> bool:
        return self.create_state is UNWANTED

    # -------------------------------------------------------------------------- response.done

    def is_oob_done(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        return event.response_id in self.oob_responses

    def is_current_done(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        rid = event.response_id
        if rid == self.response_id:
            return True
        # A busy response known only from an error without its id: its done is the next
        # unknown one, or that of a response we abandoned at its cancel timeout (one slot: a
        # response we abandoned that ends now was still the one holding it).
        return (
            self.response_id is None
            and self._current_unseen
            and (self._is_unknown(rid) or self._retired.why(rid) == "abandoned")
        )

    def is_abandoned_done(self) -> bool:
        """The done of a response we stopped waiting for at its cancel timeout."""
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        return self._retired.why(event.response_id) == "abandoned"

    def create_idle(self) -> bool:
        """No create of ours on the wire."""
        return self.create_state is C_NONE

    def create_in_flight(self) -> bool:
        """Our create is on the wire and still wanted."""
        return self.create_state in IN_FLIGHT

    # ------------------------------------------------------------------------------ barge-in

    def caller_hearing_audio(self) -> bool:
        """Audio the caller has been sent is still playing (from the playback ledger)."""
        bpm = self._cfg.audio_bytes_per_ms
        return any(played * bpm < received for received, played in self._play.values())

    def server_interrupts(self) -> bool:
        """The session's turn detection cancels the response itself on speech."""
        return self._server_interrupts

    # -------------------------------------------------------------------------------- errors

    def error_answers_given_up(self) -> bool:
        """The answer to a create we already gave up on.  Without an echoed event_id (older
        servers) a busy error is still known to be one: the server answers creates in the order
        they were sent, and those given up are older than the one in flight."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        owed = self._given_up.get(event.event_id) if event.event_id is not None else None
        if owed:
            return True
        return event.event_id is None and self.error_is_busy() and any(self._given_up.values())

    def error_is_busy(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ServerError)
        return event.code == BUSY_CODE or event.message.lower().startswith(_BUSY_PREFIX)

    def error_for_our_create(self) -> bool:
        """An error naming our create in flight, or naming nothing: a busy error without an
        event id is about our create whatever the state (it usually lands in ``active``, right
        after the server-created response that won the race)."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        inflight = self.inflight
        return inflight is not None and event.event_id in (None, inflight.event_id)

    def busy_names_retired(self) -> bool:
        """The busy error names a response we stopped tracking (abandoned at its cancel timeout,
        or dropped): it is still alive, so it must be cancelled again and waited for."""
        rid = self._busy_holder()
        return rid is not None and rid in self._retired

    def awaiting_created(self) -> bool:
        """``cancelling`` with no response: an interrupted create of ours is still unanswered."""
        return self.response_id is None

    def busy_names_unseen(self) -> bool:
        """The busy error names the blocking response, and it is none we know of."""
        rid = self._busy_holder()
        return rid is not None and self._is_unknown(rid)

    def error_names_our_create(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ServerError)
        inflight = self.inflight
        return inflight is not None and event.event_id == inflight.event_id

    def error_cancel_not_active(self) -> bool:
        event = self._ev
        assert isinstance(event, ev.ServerError)
        return event.code == CANCEL_NOT_ACTIVE_CODE or event.message.lower().startswith(
            _CANCEL_NOT_ACTIVE_PREFIX
        )

    def _busy_holder(self) -> str | None:
        """The response a busy error's message names (``... in progress: resp_...``)."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        match = _RESP_ID.search(event.message)
        return match.group(1) if match else None

    # -------------------------------------------------------------------------------- clock

    def watchdog_due(self) -> bool:
        silent_at = self._silent_since()
        return silent_at is not None and self._now >= silent_at and self.watchdog_cooled()

    def watchdog_in_cooldown(self) -> bool:
        """Silent, but the last fire is too recent (``watchdog_due`` is tried first)."""
        silent_at = self._silent_since()
        return silent_at is not None and self._now >= silent_at

    def function_call_open(self) -> bool:
        """A ``function_call`` item of the response is being generated: no timer cancels it
        (a cancel would cut the call off, and a cut-off call is never run)."""
        return self._open_calls > 0

    def thinking(self) -> bool:
        """No output item of the response is open: before its first item or between two, the
        silence of a reasoning model thinking (no event marks it)."""
        return not self._open_items

    def thought_too_long(self) -> bool:
        """Silent past the thinking allowance (``stall_timeout`` x the effort's scale)."""
        return self._now >= self._last_activity + self._think_limit

    def stalled(self) -> bool:
        return self._now >= self._last_activity + self._cfg.stall_timeout

    def deadline_passed(self) -> bool:
        """The ``creating``/``cancelling`` deadline set on entering the state has passed."""
        return self._state_deadline is not None and self._now >= self._state_deadline

    def create_first_attempt(self) -> bool:
        return self.create_state is SENT

    def turn_overdue(self) -> bool:
        until = self._turn_deadline
        return self.turn_state is DUE and until is not None and self._now >= until

    def _silent_since(self) -> float | None:
        """When the current response counts as silent (the watchdog's deadline), or ``None``
        while the watchdog is not armed for it: no transcript yet, audio seen, already skipped,
        a response that is not meant to speak, or the watchdog's own retry."""
        first = self._first_transcript_at
        if (
            first is None
            or self.audio_deltas
            or self._watchdog_skipped
            or not self.response_expects_audio
            or self.response_is_retry
        ):
            return None
        return first + self._cfg.no_audio_timeout

    # ------------------------------------------------------------------------------ session

    def session_created(self) -> bool:
        """``session.created``, the server's first event on a connection (not the
        ``session.updated`` answering our update)."""
        event = self._ev
        assert isinstance(event, ev.SessionConfigured)
        return not event.updated

    # ------------------------------------------------------------------ the other machines

    def slot_idle(self) -> bool:
        return self.state is IDLE

    def done_is_retry(self) -> bool:
        return self.response_is_retry

    def silent_completion(self) -> bool:
        """The current response ended on its own (not one we were stopping) with transcript and
        no audio: the caller heard nothing, however short it was."""
        if self.audio_deltas or not self.transcript_deltas:  # most responses: audio, or none
            return False
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        return (
            self.state is ACTIVE
            and event.status in ("completed", "incomplete")
            and self.response_expects_audio
            and not self.response_is_retry
            and not self._watchdog_skipped
        )

    def watchdog_cooled(self) -> bool:
        last = self.watchdog_last_fire
        return last is None or self._now >= last + self._cfg.watchdog_cooldown

    def given_up_create_is_retry(self) -> bool:
        inflight = self.inflight
        return inflight is not None and inflight.is_retry


__all__ = ["BUSY_CODE", "CANCEL_NOT_ACTIVE_CODE", "LifecycleGuards"]
