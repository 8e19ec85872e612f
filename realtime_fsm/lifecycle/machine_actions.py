"""The actions of the create, turn and recovery machines, in table order."""

from __future__ import annotations

import logging

from .. import events as ev
from ..commands import META_EVENT_ID, META_REASON, RequestGivenUp, SendResponseCreate
from ..logsafe import safe
from .ledgers import RETRY_REASON, USER_TEXT_REASON, USER_TURN_REASON, Inflight
from .slot_actions import SlotActions

log = logging.getLogger("realtime_fsm.lifecycle")


class MachineActions(SlotActions):
    __slots__ = ()

    # ---------------------------------------------------------------------- create machine

    def send_create(self) -> None:
        """Coalesce the queue head with every interchangeable request into one create."""
        head = self.pending[0]
        taken = [head]
        rest: list[ev.RequestResponse] = []
        for req in self.pending[1:]:
            if req.instructions is None or req.instructions == head.instructions:
                taken.append(req)
            else:
                rest.append(req)
        self.pending = rest
        inflight = Inflight(self._mint("create"), tuple(taken), self._now)
        self.inflight = inflight
        self._emit(self._render_create(inflight))
        reasons = inflight.reasons()
        if USER_TEXT_REASON in reasons and self._flow is not None:
            self._flow_step("response.create")
            log.info(
                "call=%s [TEXT_BARGE_IN] Flow complete: %s",
                self._call(),
                " -> ".join(self._flow),
            )
            self._flow = None
        if inflight.is_retry:
            log.info(
                "call=%s [NO_AUDIO_WATCHDOG] Step 3: Creating retry response (after response.done)"
                " event_id=%s",
                self._call(),
                inflight.event_id,
            )

    def _render_create(self, inflight: Inflight) -> SendResponseCreate:
        reason = "+".join(dict.fromkeys(inflight.reasons()))
        metadata: dict[str, str] = {}
        for req in inflight.requests:
            metadata.update(req.metadata)
        metadata[META_EVENT_ID] = inflight.event_id
        metadata[META_REASON] = reason[:512]
        return SendResponseCreate(
            event_id=inflight.event_id,
            reason=reason,
            instructions=inflight.requests[0].instructions,
            metadata=metadata,
        )

    def resend_create(self) -> None:
        """No answer within ``create_timeout``: the server swallowed the create, or is slow.
        Send it once more under a new event id; a late answer to the first is its own (a
        response to it is cancelled as given up)."""
        first = self.inflight
        assert first is not None
        self._remember_given_up(first.event_id, answer_owed=True)
        inflight = Inflight(self._mint("create"), first.requests, self._now)
        self.inflight = inflight
        self._emit(self._render_create(inflight))
        self._count("creates_resent")
        log.warning(
            "call=%s response.create %s got no answer within %gs; sent once more as %s",
            self._call(),
            first.event_id,
            self._cfg.create_timeout,
            inflight.event_id,
        )

    def give_up_timed_out(self) -> None:
        inflight = self.inflight
        assert inflight is not None
        self._remember_given_up(inflight.event_id, answer_owed=True)
        self._give_up(inflight, "create_timeout")

    def forget_unwanted(self) -> None:
        """An interrupted create never answered: its answer, if it comes, is nobody's."""
        inflight = self.inflight
        assert inflight is not None
        self._remember_given_up(inflight.event_id, answer_owed=True)
        self.inflight = None

    def drop_inflight(self) -> None:
        """Our create is answered (or the call is over): older given-up creates, answered in
        order before it, owe nothing more."""
        self.inflight = None
        self._settle_older()

    def requeue_rejected(self) -> None:
        """Our create lost the race for the slot: its requests go back to the head of the queue
        (none, if the caller interrupted it).  A response created for it anyway (a faulty
        server) is cancelled as given up, so no request is ever served twice."""
        inflight = self.inflight
        assert inflight is not None
        self.inflight = None
        self._settle_older()
        self._remember_given_up(inflight.event_id, answer_owed=False)
        self._count("create_rejected_busy")
        self.pending[0:0] = inflight.requests
        log.info(
            "call=%s create %s rejected (slot busy); re-queued %s until response.done",
            self._call(),
            inflight.event_id,
            ",".join(inflight.reasons()) or "nothing (interrupted)",
        )

    def give_up_rejected(self) -> None:
        event = self._ev
        inflight = self.inflight
        assert isinstance(event, ev.ServerError) and inflight is not None
        self._settle_older()
        self._remember_given_up(inflight.event_id, answer_owed=False)
        self._give_up(inflight, f"rejected:{event.code or 'error'}")

    def give_up_interrupted(self) -> None:
        """The caller barged in before our create was answered: what it asked for will not be
        served (its response is cancelled on creation), and the app hears so now."""
        inflight = self.inflight
        assert inflight is not None
        self._emit(
            RequestGivenUp(
                reason="interrupted",
                request_reasons=inflight.reasons(),
                event_id=inflight.event_id,
            )
        )
        self._count("requests_interrupted")
        log.info(
            "call=%s response.create %s (%s) interrupted before it was answered; given up,"
            " its response is cancelled when created",
            self._call(),
            inflight.event_id,
            ",".join(inflight.reasons()),
        )
        inflight.requests = ()

    def _give_up(self, inflight: Inflight, reason: str) -> None:
        self.inflight = None
        self._count("requests_given_up")
        self._emit(
            RequestGivenUp(
                reason=reason, request_reasons=inflight.reasons(), event_id=inflight.event_id
            )
        )
        log.warning(
            "call=%s response.create %s given up: %s", self._call(), inflight.event_id, reason
        )

    def _settle_older(self) -> None:
        given_up = self._given_up
        for key, owed in given_up.items():
            if owed:
                given_up[key] = False

    # ------------------------------------------------------------------------ turn machine

    def arm_turn_deadline(self) -> None:
        """Committed with the slot free: the server's response is as due as one of ours."""
        self._turn_deadline = self._now + self._cfg.create_timeout

    def arm_turn_grace(self) -> None:
        """The slot just freed: the server creates its answer now, or not at all."""
        self._turn_deadline = self._now + self._cfg.server_turn_grace

    def clear_turn_deadline(self) -> None:
        self._turn_deadline = None

    def answer_turn_ourselves(self) -> None:
        """The server created no response for the committed turn in time (its VAD "may fail to
        create a response if the model is already responding"): we ask for one."""
        self._count("server_response_overdue")
        self.pending.append(ev.RequestResponse(reason=USER_TURN_REASON))
        log.warning(
            "call=%s the server created no response for the committed turn; answering it",
            self._call(),
        )

    # -------------------------------------------------------------------- recovery machine

    def queue_retry(self) -> None:
        """The silent response is over: its retry goes first."""
        event = self._ev
        status = event.status if isinstance(event, ev.ResponseDone) else "timeout"
        call = self._call()
        log.info("call=%s [NO_AUDIO_WATCHDOG] Step 2: Clearing response flags", call)
        self.pending.insert(0, ev.RequestResponse(reason=RETRY_REASON))
        log.info("call=%s [NO_AUDIO_WATCHDOG] flags cleared (status=%s)", call, safe(status))

    def report_retry(self) -> None:
        result = "success" if self.audio_deltas else "no_audio"
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Recovery result: %s | fired -> cancel ->"
            " response.done -> retry -> %s -> cooldown_start (audio_deltas=%d)",
            self._call(),
            result,
            result,
            self.audio_deltas,
        )

    def fire_at_done(self) -> None:
        """A silent response that finished before the watchdog's deadline: nothing to cancel,
        the retry is asked for now."""
        self.watchdog_last_fire = self._now
        self._count("watchdog_fires")
        call = self._call()
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] FIRED! resp=%s transcript_deltas=%d audio_deltas=%d"
            " (finished silent)",
            call,
            safe(self.response_id),
            self.transcript_deltas,
            self.audio_deltas,
        )
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Cooldown started (%gs)", call, self._cfg.watchdog_cooldown
        )

    def suppress_at_done(self) -> None:
        self._count("watchdog_suppressed")
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] silent response %s finished; not retried: inside the"
            " %gs cooldown",
            self._call(),
            safe(self.response_id),
            self._cfg.watchdog_cooldown,
        )

    def report_retry_failed(self) -> None:
        event = self._ev
        if isinstance(event, ev.ServerError):
            why = "rejected"
        elif isinstance(event, ev.Tick):
            why = "create_timeout"
        else:
            why = "interrupted"
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Recovery result: failed | retry %s", self._call(), why
        )

    def report_recovery_closed(self) -> None:
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Recovery result: failed | connection closed", self._call()
        )


__all__ = ["MachineActions"]
