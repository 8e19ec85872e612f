"""The slot machine's actions that stop what plays or generates: the caller's barge-in (by
speech or typed text, which is held), and the timers that cancel (the no-audio watchdog, the
stall timer) or give up on a cancel.  In table order within each group."""

from __future__ import annotations

import logging

from .. import events as ev
from ..commands import ClearPlayback, SendItemDelete, SendTruncate, SendUserText
from ..logsafe import caller_text, safe
from .guards import LifecycleGuards
from .ledgers import USER_TEXT_REASON, cut_plan

log = logging.getLogger("realtime_fsm.lifecycle")


class StoppingActions(LifecycleGuards):
    __slots__ = ()

    # ------------------------------------------------------------------------------ barge-in

    def interrupt_playback(self) -> None:
        """The caller still hears audio of a response that is over or being stopped: playback
        outlives generation."""
        self._interrupt(
            "[BARGE_IN]" if isinstance(self._ev, ev.SpeechStarted) else "[TEXT_BARGE_IN]"
        )

    def deliver_text(self) -> None:
        """Idle: the server may take the text now, followed by a (coalesced) response."""
        event = self._ev
        assert isinstance(event, ev.UserText)
        self._emit(SendUserText(event_id=self._mint("item"), text=event.text, source=event.source))
        self._count("texts_delivered")
        self.pending.append(ev.RequestResponse(reason=USER_TEXT_REASON))

    def barge_in_before_created(self) -> None:
        """Our create has no response yet: the cancel waits for its ``response.created``."""
        tag = self._barge_in_detected()
        inflight = self.inflight
        assert inflight is not None
        self._flow_step("cancel")
        log.info(
            "call=%s %s cancel deferred -> response.create %s not yet answered;"
            " it is cancelled by id when created",
            self._call(),
            tag,
            inflight.event_id,
        )
        self._interrupt(tag)

    def hold_text(self) -> None:
        event = self._ev
        assert isinstance(event, ev.UserText)
        self.held_texts.append(event)
        self._count("texts_held")
        log.info(
            "call=%s [TEXT_BARGE_IN] Pending text stored (%d held) -> waiting for response.done",
            self._call(),
            len(self.held_texts),
        )

    def barge_in(self) -> None:
        """Stop the response we (not the server) must stop: cancel, clear, truncate, drop.  A
        response known only from an unparsable busy error has no id: the id-less cancel stops
        the default conversation's response, which is it."""
        tag = self._barge_in_detected()
        call = self._call()
        rid = self.response_id
        log.info("call=%s %s cancel -> response_id=%s", call, tag, safe(rid))
        self._send_cancel(rid)
        self._flow_step("cancel")
        log.info("call=%s %s cancel sent", call, tag)
        self._interrupt(tag, live=True)
        if rid is not None:
            self._drop(rid)
            log.info("call=%s %s TX flushed (late audio of %s dropped)", call, tag, safe(rid))

    def barge_in_server_cancels(self) -> None:
        """Server VAD with ``interrupt_response``: it cancels; we only stop what plays."""
        rid = self.response_id
        log.info(
            "call=%s [BARGE_IN] detected -> speech; server cancels %s (interrupt_response)",
            self._call(),
            safe(rid),
        )
        self._interrupt("[BARGE_IN]", live=True)
        if rid is not None:
            self._drop(rid)

    def _barge_in_detected(self) -> str:
        event = self._ev
        if isinstance(event, ev.UserText):
            self._flow = ["detected"]
            log.info(
                "call=%s [TEXT_BARGE_IN] detected -> text=%s while AI active (state=%s)",
                self._call(),
                caller_text(event.text, self._cfg.log_caller_content, 80),
                self.state.value,
            )
            return "[TEXT_BARGE_IN]"
        log.info(
            "call=%s [BARGE_IN] detected -> speech while AI %s", self._call(), self.state.value
        )
        return "[BARGE_IN]"

    def _interrupt(self, tag: str, *, live: bool = False) -> None:
        """Clear what plays, and cut from the conversation what the caller did not hear.
        ``live``: a response is being stopped: the item it is still adding audio to (if any) is
        cut at what reached us, and its items the caller heard nothing of, now or later, are
        deleted at its done (``_start_cut``)."""
        self._emit(ClearPlayback(reason="barge_in"))
        self._flow_step("twilio_clear")
        call = self._call()
        log.info("call=%s %s twilio_clear sent", call, tag)
        play = self._play
        bpm = self._cfg.audio_bytes_per_ms
        live_item = self._open_audio_item() if live else None
        rid = self.response_id
        if live and rid is not None:
            self._start_cut(rid)
        for item_id, end_ms in cut_plan(play, bpm, live_item):
            received_ms = play[item_id][0] // bpm
            if end_ms > 0:
                event_id = self._mint("truncate")
                self._emit(
                    SendTruncate(
                        event_id=event_id,
                        item_id=item_id,
                        audio_end_ms=end_ms,
                        received_ms=received_ms,
                    )
                )
                log.info(
                    "call=%s %s truncate item=%s audio_end_ms=%d (received %d ms)",
                    call,
                    tag,
                    safe(item_id),
                    end_ms,
                    received_ms,
                )
            else:
                self._emit(
                    SendItemDelete(
                        event_id=self._mint("delete"), item_id=item_id, received_ms=received_ms
                    )
                )
                log.info("call=%s %s delete unheard item=%s", call, tag, safe(item_id))
        play.clear()

    # -------------------------------------------------------------------------------- clock

    def cancel_silent(self) -> None:
        """The no-audio watchdog fires: cancel the silent response; the retry is asked for at
        its ``response.done`` (the recovery machine)."""
        rid = self.response_id
        call = self._call()
        self.watchdog_last_fire = self._now
        self._count("watchdog_fires")
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] FIRED! resp=%s transcript_deltas=%d audio_deltas=%d",
            call,
            safe(rid),
            self.transcript_deltas,
            self.audio_deltas,
        )
        log.info("call=%s [NO_AUDIO_WATCHDOG] Step 1: Cancelling silent response", call)
        self._send_cancel(rid)
        if rid is not None:
            self._drop(rid)
        log.info("call=%s [NO_AUDIO_WATCHDOG] cancel sent", call)
        log.info(
            "call=%s [NO_AUDIO_WATCHDOG] Cooldown started (%gs)", call, self._cfg.watchdog_cooldown
        )

    def suppress_watchdog(self) -> None:
        self._watchdog_skipped = True
        self._count("watchdog_suppressed")
        log.warning(
            "call=%s [NO_AUDIO_WATCHDOG] silent response %s not retried: inside the %gs cooldown",
            self._call(),
            safe(self.response_id),
            self._cfg.watchdog_cooldown,
        )

    def cancel_stalled(self) -> None:
        rid = self.response_id
        self._count("stalled_responses")
        log.warning(
            "call=%s [STALL] response %s showed no activity for %gs; cancelling",
            self._call(),
            safe(rid),
            self._cfg.stall_timeout,
        )
        self._send_cancel(rid)
        if rid is not None:
            self._drop(rid)

    def cancel_thinking_stall(self) -> None:
        """No output item open and no sign of life for the thinking allowance (``stall_timeout``
        scaled by the reasoning effort): past any thinking, the response is hung."""
        rid = self.response_id
        self._count("stalled_responses")
        log.warning(
            "call=%s [STALL] response %s had no output item open and no sign of life for %gs"
            " (the thinking allowance); cancelling",
            self._call(),
            safe(rid),
            self._think_limit,
        )
        self._send_cancel(rid)
        if rid is not None:
            self._drop(rid)

    def abandon_cancel(self) -> None:
        """The server never confirmed the cancel: stop waiting, treat the response as gone (a
        busy error naming it later proves it alive, and it is cancelled again)."""
        rid = self.response_id
        self._count("cancel_timeouts")
        if rid is not None:
            self._retire(rid, "abandoned")
        self._flow_step("timeout")
        log.warning(
            "call=%s response.done of %s not seen within %gs; giving up on it",
            self._call(),
            safe(rid),
            self._cfg.cancel_timeout,
        )


__all__ = ["StoppingActions"]
