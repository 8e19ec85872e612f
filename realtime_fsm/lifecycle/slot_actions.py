"""The slot machine's actions, in table order, and its ``on_enter`` cleanups.

An action never re-tests the state its row chose; it reads the event and the ledgers, appends
commands, and writes the slot's data.  The other machines are moved by the ``machine.trigger``
names in the rows, never from here.
"""

from __future__ import annotations

import logging

from .. import events as ev
from ..commands import (
    META_EVENT_ID,
    META_REASON,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendItemDelete,
    SendResponseCreate,
    SendUserText,
)
from ..config import thinking_scale
from ..logsafe import safe
from .ledgers import USER_TEXT_REASON, USER_TURN_REASON
from .stopping import StoppingActions

log = logging.getLogger("realtime_fsm.lifecycle")


def _expects_audio(event: ev.ResponseCreated) -> bool:
    modalities = event.output_modalities
    return not modalities or "audio" in modalities


class SlotActions(StoppingActions):
    __slots__ = ()

    # ------------------------------------------------------------------- requests and turns

    def send_oob_create(self) -> None:
        event = self._ev
        assert isinstance(event, ev.RequestResponse)
        event_id = self._mint("oob")
        metadata = dict(event.metadata)
        metadata[META_EVENT_ID] = event_id
        metadata[META_REASON] = event.reason[:512]
        self._emit(
            SendResponseCreate(
                event_id=event_id,
                reason=event.reason,
                instructions=event.instructions,
                metadata=metadata,
                out_of_band=True,
            )
        )

    def enqueue_request(self) -> None:
        event = self._ev
        assert isinstance(event, ev.RequestResponse)
        self.pending.append(event)

    def queue_request(self) -> None:
        """The slot is taken (or owed to the server's answer to a turn): the request waits."""
        self.enqueue_request()
        log.info(
            "call=%s request queued reason=%s state=%s (sent when the slot is free)",
            self._call(),
            self.pending[-1].reason,
            self.state.value,
        )

    def enqueue_turn(self) -> None:
        self.pending.append(ev.RequestResponse(reason=USER_TURN_REASON))

    # ----------------------------------------------------------------------- response.created

    def track_oob(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self.oob_responses.add(event.response_id)

    def ignore_stale(self) -> None:
        self._count("stale_created")
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        log.info(
            "call=%s ignored duplicate or late response.created response=%s",
            self._call(),
            safe(event.response_id),
        )

    def cancel_current_late(self) -> None:
        """The response a busy error named turns out to answer a create we gave up on: the app
        was told it will not be served, and the caller may have interrupted it.  Cancel it."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._given_up[event.metadata.get(META_EVENT_ID, "")] = False  # answered now
        self._count("late_responses_cancelled")
        self._cancel_unheard(event.response_id)
        log.info(
            "call=%s response %s (named by a busy error) answers given-up create %s;"
            " cancelled, audio dropped",
            self._call(),
            safe(event.response_id),
            safe(event.metadata.get(META_EVENT_ID)),
        )

    def cancel_late_response(self) -> None:
        """A create we gave up on was served after all.  The response holds the slot until its
        response.done, so track it, but cancel it by id and drop its audio: the request was
        reported given up or served elsewhere (and, if the caller barged in, must not be
        heard)."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._supersede_current()
        self._clear_response()
        self._given_up[event.metadata.get(META_EVENT_ID, "")] = False  # answered now
        rid = event.response_id
        self._adopt_id(rid)
        self._count("late_responses_cancelled")
        self._cancel_unheard(rid)
        log.info(
            "call=%s response %s created for given-up create %s; cancelled, audio dropped",
            self._call(),
            safe(rid),
            safe(event.metadata.get(META_EVENT_ID)),
        )

    def see_current(self) -> None:
        """The response a busy error named is created after all (its response.created was
        late): a server response that answers the turn the server's VAD owed, if any."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._current_unseen = False
        self.response_expects_audio = _expects_audio(event)
        log.info(
            "call=%s response.created of %s, known from a busy error",
            self._call(),
            safe(event.response_id),
        )

    def name_current(self) -> None:
        """The response we are stopping, known from a busy error without its id, is created
        late: now it has an id, and its audio stays dropped."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._current_unseen = False
        self._adopt_id(event.response_id)
        self._drop(event.response_id)

    def adopt_response(self) -> None:
        """``response.created`` for our in-flight create."""
        event = self._ev
        inflight = self.inflight
        assert isinstance(event, ev.ResponseCreated) and inflight is not None
        self._supersede_current()
        self._clear_response()
        self.response_id = event.response_id
        self.response_is_retry = inflight.is_retry
        self.response_requests = inflight.requests
        self.response_expects_audio = _expects_audio(event)
        self._last_activity = self._now
        if inflight.is_retry:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Retry response created - response=%s",
                self._call(),
                safe(event.response_id),
            )

    def cancel_adopted(self) -> None:
        """The caller interrupted the create before it was answered: cancel it by id now."""
        rid = self.response_id
        assert rid is not None
        self._cancel_unheard(rid)
        self._flow_step("cancel")
        log.info(
            "call=%s [BARGE_IN] deferred cancel sent on response.created response=%s",
            self._call(),
            safe(rid),
        )

    def adopt_server_response(self) -> None:
        """A response we did not ask for (server VAD, idle timeout)."""
        event = self._ev
        assert isinstance(event, ev.ResponseCreated)
        self._supersede_current()
        self._clear_response()
        self.response_id = event.response_id
        self.response_expects_audio = _expects_audio(event)
        self._last_activity = self._now
        self._count("server_created_responses")
        if self.inflight is not None:
            log.info(
                "call=%s server response %s took the slot while create %s is in flight;"
                " it will be re-queued if rejected",
                self._call(),
                safe(event.response_id),
                self.inflight.event_id,
            )

    def _supersede_current(self) -> None:
        """A new default response can only exist if the previous one ended: its done was lost."""
        previous = self.response_id
        if previous is not None:
            self._retire(previous, "superseded")
            self._count("lost_done")
            log.warning(
                "call=%s response.done of %s never arrived; a newer response replaced it",
                self._call(),
                safe(previous),
            )

    # -------------------------------------------------------------------------- response.done

    def untrack_oob(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        self.oob_responses.discard(event.response_id)
        self._retire(event.response_id, "done")

    def finish_response(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        self._retire(event.response_id, "done")
        if self._flow is not None:
            self._flow_step("response.done")
            log.info(
                "call=%s [TEXT_BARGE_IN] response.done -> creating response.create"
                " (status=%s, %d held text(s))",
                self._call(),
                safe(event.status),
                len(self.held_texts),
            )
        if event.status in ("failed", "incomplete"):
            self._count(f"responses_{event.status}")
        cut = self._cut_items
        if cut and event.response_id == self._cut_response:
            self._delete_unheard(cut)

    def _delete_unheard(self, cut: dict[str, bool]) -> None:
        """The stopped response is over: delete its items the caller heard nothing of (a
        truncate at 0 ms is rejected; an item left in place would hold words never heard)."""
        call = self._call()
        for item_id, unheard in cut.items():
            if unheard:
                self._emit(SendItemDelete(event_id=self._mint("delete"), item_id=item_id))
                self._count("unheard_items_deleted")
                log.info(
                    "call=%s delete unheard item=%s of stopped response %s",
                    call,
                    safe(item_id),
                    safe(self._cut_response),
                )
        self._cut_items = None

    def forget_response(self) -> None:
        """The response is over but the slot stays busy (an interrupted create of ours is still
        unanswered): nothing of it may linger (``idle`` and ``creating`` clear on entry)."""
        self._clear_response()

    def note_abandoned_done(self) -> None:
        """A response we abandoned has ended after all: it can no longer hold the slot (a
        busy error naming it, or an unnamed one, is not about it any more)."""
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        self._retire(event.response_id, "done")
        self._count("abandoned_done")
        log.info(
            "call=%s late response.done of abandoned response %s (status=%s)",
            self._call(),
            safe(event.response_id),
            safe(event.status),
        )

    def ignore_stale_done(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ResponseDone)
        self._count("stale_done")
        log.info(
            "call=%s ignored response.done response=%s status=%s (current=%s, state=%s)",
            self._call(),
            safe(event.response_id),
            safe(event.status),
            safe(self.response_id),
            self.state.value,
        )

    # -------------------------------------------------------------------------------- errors

    def settle_given_up(self) -> None:
        """The late answer to a create we gave up on: nothing waits for it any more."""
        event = self._ev
        assert isinstance(event, ev.ServerError)
        given_up = self._given_up
        key = event.event_id
        if key is None or key not in given_up:
            key = next(k for k, owed in given_up.items() if owed)
        given_up[key] = False
        self._count("given_up_answers")
        log.info(
            "call=%s late answer to given-up create %s: code=%s",
            self._call(),
            safe(key),
            safe(event.code),
        )

    def recancel_busy_response(self) -> None:
        """The response we stopped tracking is still alive: cancel it again, wait for it."""
        rid = self._busy_holder()
        assert rid is not None
        self._clear_response()
        self._adopt_id(rid)
        self._count("abandoned_response_still_active")
        self._send_cancel(rid)
        log.warning(
            "call=%s response %s outlived its cancel timeout; cancelling it again",
            self._call(),
            safe(rid),
        )

    def adopt_busy_response(self) -> None:
        """A response we never saw created holds the slot: track it until its done.  The old
        error wording names no id; then it is the next unknown response's done."""
        self._clear_response()
        rid = self._busy_holder()
        if rid is not None and self._is_unknown(rid):
            self.response_id = rid
        self._current_unseen = True
        self._last_activity = self._now

    def cancel_busy_response(self) -> None:
        """The response that beat our interrupted create is as interrupted as ours: the caller
        spoke or typed after it began.  Cancel it by id, drop its audio, wait for its done."""
        rid = self._busy_holder()
        assert rid is not None
        self._clear_response()
        self._adopt_id(rid)
        self._count("busy_response_cancelled")
        self._cancel_unheard(rid)
        log.info(
            "call=%s [BARGE_IN] response %s held the slot our interrupted create wanted;"
            " cancelled, audio dropped",
            self._call(),
            safe(rid),
        )

    def note_benign_error(self) -> None:
        self._count("benign_errors")
        log.info("call=%s benign server error: response_cancel_not_active", self._call())

    def note_error(self) -> None:
        event = self._ev
        assert isinstance(event, ev.ServerError)
        self._count("server_errors")
        log.warning(
            "call=%s server error code=%s event_id=%s message='%s'",
            self._call(),
            safe(event.code),
            safe(event.event_id),
            safe(event.message, 300),
        )

    # ----------------------------------------------------------------- settings and teardown

    def apply_session(self) -> None:
        event = self._ev
        assert isinstance(event, ev.SessionConfigured)
        vad = event.turn_detection is not None
        self._server_creates = vad and event.create_response
        self._server_interrupts = vad and event.interrupt_response
        if event.reasoning_effort is not None:
            self._think_limit = self._cfg.stall_timeout * thinking_scale(event.reasoning_effort)
        log.info(
            "call=%s session turn_detection=%s create_response=%s interrupt_response=%s"
            " reasoning_effort=%s thinking_allowance=%gs",
            self._call(),
            safe(event.turn_detection),
            self._server_creates,
            self._server_interrupts,
            safe(event.reasoning_effort),
            self._think_limit,
        )

    def note_idle_timeout(self) -> None:
        """The server's VAD idle timeout fired: it commits the silence and answers it itself."""
        event = self._ev
        assert isinstance(event, ev.IdleTimeoutTriggered)
        self._idle_timeout_item = event.item_id
        self._count("idle_timeouts")
        log.info(
            "call=%s [IDLE_TIMEOUT] no caller speech for %d ms (item=%s): the server creates"
            " the response; our requests wait for it",
            self._call(),
            event.audio_end_ms - event.audio_start_ms,
            safe(event.item_id),
        )

    def settle_idle_timeout(self) -> None:
        """The idle timeout's commit: already owed by the server, nothing of ours to ask."""
        self._idle_timeout_item = None
        log.info(
            "call=%s [IDLE_TIMEOUT] silence committed; the server's response is due", self._call()
        )

    def restart_create_clock(self) -> None:
        """``session.created``: our create went out before the server had a session (the
        socket was still opening), and its answer cannot come before this event.  Its wait, the
        ``creating`` deadline (or, interrupted, the ``cancelling`` one), counts from here: a
        slow connect must not use up ``create_timeout`` and make the machine give the create
        up, or resend it, while the server has barely read it."""
        inflight = self.inflight
        assert inflight is not None
        inflight.sent_at = max(inflight.sent_at, self._now)
        self._state_deadline = inflight.sent_at + self._cfg.create_timeout

    def close_out(self) -> None:
        """No ``response.done`` will ever come: give up what is queued or in flight (an
        interrupted create's requests were given up already) and hand back held text."""
        event = self._ev
        assert isinstance(event, ev.ConnectionClosed)
        requests: list[str] = []
        if self.inflight is not None:
            requests.extend(self.inflight.reasons())
        requests.extend(r.reason for r in self.pending)
        self.pending = []
        if requests:
            self._emit(
                RequestGivenUp(reason=f"closed:{event.reason}", request_reasons=tuple(requests))
            )
        if self.held_texts:
            self._emit(ReturnUndeliveredText(texts=tuple(t.text for t in self.held_texts)))
            log.warning(
                "call=%s connection closed with %d undelivered user text(s); handed back",
                self._call(),
                len(self.held_texts),
            )
            self.held_texts = []
        self._clear_response()
        self._state_deadline = None
        self._play.clear()
        self._flow = None
        self._idle_timeout_item = None

    # ---------------------------------------------------------------------- state entry hooks

    def enter_idle(self) -> None:
        """Rule 4: whatever path led here, nothing of the last response survives, and text held
        during it reaches the server now, followed by one response."""
        self._clear_response()
        self._state_deadline = None
        if self.held_texts:
            for text in self.held_texts:
                self._emit(
                    SendUserText(event_id=self._mint("item"), text=text.text, source=text.source)
                )
                self._count("texts_delivered")
            self.held_texts = []
            self.pending.insert(0, ev.RequestResponse(reason=USER_TEXT_REASON))

    def enter_creating(self) -> None:
        self._clear_response()
        inflight = self.inflight
        assert inflight is not None
        self._state_deadline = max(inflight.sent_at, self._now) + self._cfg.create_timeout

    def enter_cancelling(self) -> None:
        """The wait is for the done of the response we stop, from now; or, with no response,
        for the answer to our interrupted create, counted from when it was sent."""
        inflight = self.inflight
        if self.response_id is None and inflight is not None:
            due = inflight.sent_at + self._cfg.create_timeout
            self._state_deadline = max(due, self._now)
        else:
            self._state_deadline = self._now + self._cfg.cancel_timeout


__all__ = ["SlotActions"]
