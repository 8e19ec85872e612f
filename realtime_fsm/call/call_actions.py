"""The call machine's guards and actions, and the glue between the call and its response machine.

The rows are in :data:`realtime_fsm.table.CALL_TRANSITIONS`; the names there are the methods
here.  Guards only read; actions never re-test the state their row chose.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from transitions.core import MachineError

from .. import events as ev
from ..commands import (
    ClearPlayback,
    Command,
    DropResponseAudio,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendUserText,
)
from ..errors import CallNotActive
from ..lifecycle import USER_TEXT_REASON, Handover, ResponseLifecycle
from ..logsafe import safe
from ..openai_realtime import dumps, is_client_command
from ..table import (
    ACTIVE,
    AWAITING_START,
    CALL_ENGINE,
    CALL_TRANSITIONS,
    CREATING,
    ENDED,
    ENDING,
    READY_TO_SWITCH,
    RECONNECTING,
    ROTATING,
    RUNNING,
    CallState,
    ResponseState,
)
from ..twilio_media import clear_message
from . import app_events as ae
from .config import BridgeConfig
from .fields import FATAL_HANDSHAKE_STATUSES, SHORT_SESSION_S, log
from .handover import carried_requests, merged, split_first
from .observations import Observations
from .texts import UrgentFrame

_CALL_TRIGGERS = {name: event.trigger for name, event in CALL_ENGINE.events.items()}
_CALL_DEFINED = frozenset(
    (source, row["trigger"]) for row in CALL_TRANSITIONS for source in row["source"]
)


class CallActions(Observations):
    """Guards and actions of the call machine; the response machine's command executor."""

    # ---------------------------------------------------------------- driving the machine

    def _fire_call(self, trigger: str) -> bool:
        source = self.call_state
        if (source, trigger) not in _CALL_DEFINED:
            return False
        try:
            done = _CALL_TRIGGERS[trigger](self)
        except MachineError:  # pragma: no cover - _CALL_DEFINED mirrors the table
            done = False
        if done and self.call_state is not source:
            log.info(
                "call=%s call transition=%s %s->%s%s",
                self.call_label,
                trigger,
                source.value,
                self.call_state.value,
                f" reason={self._reason!r}" if self._reason else "",
            )
        return done

    # -------------------------------------------------------------------------- guards

    def can_reconnect(self) -> bool:
        return self.can_reconnect_sessions

    def reconnects_exhausted(self) -> bool:
        return self.report.reconnects >= self.config.max_reconnects

    def connect_refused(self) -> bool:
        return self._failed_status in FATAL_HANDSHAKE_STATUSES

    def attempts_exhausted(self) -> bool:
        return self._unproven_attempts >= self.config.reconnect_attempts

    # -------------------------------------------------------------------------- actions

    def note_end(self) -> None:
        reason = self._reason or "ended"
        self.end_reason = reason
        self.close_code = 1008 if reason.startswith("bad") else 1000
        self.connect_delay = None

    def end_reconnects_exhausted(self) -> None:
        self._reason = (
            f"openai session lost ({self._reason}) after {self.report.reconnects} reconnects"
        )
        self.note_end()

    def end_attempts_exhausted(self) -> None:
        attempts = self._unproven_attempts
        log.error("call=%s openai reconnect failed after %d attempts", self.call_label, attempts)
        self._reason = f"openai reconnect failed after {attempts} attempts"
        self.note_end()

    def hand_over(self) -> None:
        """The session is lost: close its machine, keep what the next session must get."""
        reason = self._reason
        self._lost_at = self._now
        handover = self.take_estate(reason)
        if handover.state is ACTIVE or handover.state is CREATING:
            # Half an answer must not go on playing over its retelling by the new session.  (A
            # finished answer the caller is still hearing plays out: nothing replaces it.)
            self.out_twilio.append(clear_message(self.stream_sid))
            self.tracker.clear()
            self._awaiting_play.clear()
        self.note_retired_audio()
        log.warning(
            "call=%s openai session lost (%s): %s (%d held text(s), %d request(s))",
            self.call_label,
            safe(reason),
            "switching to the ready next session"
            if self.call_state is READY_TO_SWITCH
            else "reconnecting",
            self.custody.held_count,
            len(self._held_requests),
        )
        if self.emit_events:
            self.events.append(ae.SessionLost(reason, at=self._now))

    def take_estate(self, reason: str) -> Handover:
        """Close the current session's machine and keep, for the next session, what it held:
        requests (queued, in flight, a cut-off answer's), held and unwritten texts; whatever
        was per session (tool calls, partial transcripts) is dropped.  A lost session and a
        rotated one hand over the same way."""
        machine = self.machine
        assert machine is not None
        handover = machine.hand_over(reason, self._now)
        requests, lost = carried_requests(
            handover,
            unconfirmed_commits=len(self._commits),
            turn_item=self._turn_item,
            transcribed=self._transcribed,
        )
        self._commits.clear()
        if lost:
            self.report.turns_lost += lost
            log.warning(
                "call=%s %d caller turn(s) lost with the session before their words were"
                " known: not answered",
                self.call_label,
                lost,
            )
        if requests:
            log.info(
                "call=%s request(s) %s carried over to the next session",
                self.call_label,
                ",".join(r.reason for r in requests),
            )
        self._stats_before = merged(self._stats_before, handover.stats)
        self.custody.take_back(handover.held_texts)
        self._held_requests[0:0] = requests
        self._partials.clear()
        self._open_calls.clear()  # call ids are per session: the next one knows none
        self._answered_calls.clear()
        self._tool_rounds.clear()
        self._round_unconfirmed.clear()
        self._round_wants_response.clear()
        self._rounds_closed.clear()
        self._follow_up_queued = False
        self._caller_speaking = False  # the next session's VAD starts from silence
        return handover

    def note_retired_audio(self) -> None:
        """Audio of the replaced session still plays at Twilio: remember it, so that a barge-in
        the next session's machine does not clear is cleared by the call (``barge_in_seen``)."""
        tracker = self.tracker
        self._retired_audio = tracker.generation if tracker.playing else None

    def plan_reconnect(self) -> None:
        """The first attempt goes at once, unless sessions keep dying young."""
        if self._lost_at - self._session_started_at < SHORT_SESSION_S:
            self._short_sessions += 1
        else:
            self._short_sessions = 0
        delay = 0.0
        # An unproven session is a failed attempt: the retry backoff covers it already.
        if self._short_sessions and not self._unproven_attempts:
            cfg = self.config
            delay = cfg.reconnect_base_delay * 2.0 ** min(self._short_sessions - 1, 30)
            delay = min(cfg.reconnect_max_delay, delay)
            if delay > 0:
                log.info(
                    "call=%s session lived %.1fs (%d short in a row): reconnecting in %.2fs",
                    self.call_label,
                    self._lost_at - self._session_started_at,
                    self._short_sessions,
                    delay,
                )
        if self._unproven_attempts:
            delay = self._retry_delay()
        self.connect_delay = delay

    def plan_retry(self) -> None:
        self.connect_delay = self._retry_delay()

    def _retry_delay(self) -> float:
        cfg = self.config
        attempts = self._unproven_attempts
        if not attempts:
            return 0.0
        return min(cfg.reconnect_max_delay, cfg.reconnect_base_delay * 2.0 ** (attempts - 1))

    def restore_session(self) -> None:
        """A fresh machine on the new socket: config, history, held text, then requests."""
        self.connect_delay = None
        self._session_started_at = self._now
        if self._uncommitted is not None:
            self._uncommitted.clear()  # the lost buffer's audio is gone; the new one is empty
        self.input_audio_resent = False
        items, delivered = self.restore(update=True)
        self.generation += 1
        took = self._now - self._lost_at
        self.report.reconnects += 1
        self.report.reconnect_times.append(took)
        log.info(
            "call=%s openai session replaced in %.3fs: %d history item(s) restored,"
            " %d held text(s) delivered",
            self.call_label,
            took,
            items,
            delivered,
        )
        if self.emit_events:
            self.events.append(ae.SessionRestored(took, items, delivered, at=self._now))

    def restore(
        self, *, update: bool, update_replaces: BridgeConfig | None = None
    ) -> tuple[int, int]:
        """Give the new session a fresh machine and what the call kept: ``session.update``
        (when ``update``; ``update_replaces``: the settings the session already has, which
        stay if it is refused), the conversation history, held text, then the carried
        requests.  Returns the history items and the texts delivered.  The session's age
        counts from ``_session_started_at``, set by the caller."""
        self._turn_item = None  # item ids are per session
        self._transcribed.clear()
        self._media_out_at_session = self.report.media_out
        self._rotation_failures = 0
        after = self.config.rotate_after
        self._rotate_at = (
            self._session_started_at + after
            if after is not None and self.can_reconnect_sessions
            else None
        )
        previous = self.machine
        self.machine = machine = self._new_machine()
        self.tracker.follow(machine.playback)
        held = self.custody.pop_held()
        delivered = len(held)
        # The restore must fit the driver's queue with room to spare: the oldest history goes.
        room = max(0, self.config.max_queue - delivered - 16)
        items = self.history.items()[-room:] if room else ()
        if update:
            self.send_session_update(before=update_replaces)
        codec = self.codec
        for item in items:
            # A replay of what the lost session already had: its own event_id kind, so a trace
            # checker can tell it from a fresh delivery.
            event_id = self.mint_id("history", series="restore")
            self.out_openai.append(
                dumps(codec.message_item(item.role, item.text, event_id=event_id))
            )
        for text in held:
            command = SendUserText(self.mint_id("restore"), text.text, text.source)
            self.out_openai.append(
                self.custody.frame(codec.render_json(command), text.text, text.source)
            )
        requests: list[Any] = self._held_requests
        self._held_requests = []
        if delivered:
            requests.append(ev.RequestResponse(reason=USER_TEXT_REASON))
        first, queued = split_first(requests)
        # One response for the restored state, as the machine coalesces its own queue: a text
        # queued with its response.create on the lost socket comes back as a held text *and*
        # a carried request, and each alone would ask for an answer.
        last_fire = previous.watchdog_last_fire if previous is not None else None
        self.execute(
            machine.resume(self._now, first=first, queued=queued, watchdog_last_fire=last_fire)
        )
        return len(items), delivered

    def finish(self) -> None:
        """Both sockets are closed: settle the report.  Texts never written go back."""
        if self._admitted and self.admission is not None:
            self._admitted = False
            self.admission.leave()
        reason = self.end_reason or self._reason or "ended"
        self.end_reason = reason
        report = self.report
        report.end_reason = reason
        self._return(self.custody.give_back_in_flight())
        machine = self.machine
        if machine is not None:
            stats: dict[str, int] = {}
            # A machine handed over with a lost session is closed, its counters merged then.
            if machine.state is not ResponseState.CLOSED:
                try:
                    self.execute(machine.handle(ev.ConnectionClosed(reason), self._now))
                except Exception:  # the report must be settled whatever the machine says
                    log.exception("call=%s closing the response machine failed", self.call_label)
                stats = machine.stats
            report.lifecycle_stats = merged(self._stats_before, stats)
        # A session lost and not replaced: what waited for the next one goes back to the app.
        if self._held_requests:
            self._given_up(
                RequestGivenUp(
                    reason=f"closed:{reason}",
                    request_reasons=tuple(r.reason for r in self._held_requests),
                )
            )
            self._held_requests = []
        held = self.custody.give_back_held()
        if held:
            log.warning(
                "call=%s %d user text(s) held for a new session handed back undelivered",
                self.call_label,
                len(held),
            )
            self._return(held)
        report.undelivered_texts = list(self.custody.returned)
        report.user_texts_sent = self.custody.sent
        log.info(
            "call=%s ended: %s (media in=%d out=%d, undelivered texts=%d, reconnects=%d)",
            self.call_label,
            safe(reason),
            report.media_in,
            report.media_out,
            len(report.undelivered_texts),
            report.reconnects,
        )
        if self.emit_events:
            self.events.append(ae.CallEnded(reason, report, at=self._now))

    # ------------------------------------------------------------------------ the machine

    def _new_machine(self) -> ResponseLifecycle:
        expected = self.config.session.expected_session()
        lifecycle_cfg = attrs.evolve(
            self.config.lifecycle,
            call_id=self.call_label,
            server_creates_response=expected.create_response,
            server_interrupts_response=expected.interrupt_response,
            reasoning_effort=expected.reasoning_effort or self.config.lifecycle.reasoning_effort,
        )
        return ResponseLifecycle(lifecycle_cfg, now=self._now)

    def send_session_update(self, before: BridgeConfig | None = None) -> None:
        """The session's config, with an event id of its own: an ``error`` naming it means the
        server refused the whole update.  ``before``: the settings a mid-call update replaces
        (they stay if it is refused); ``None``: the session's first update (refused, the
        session runs on the server's defaults)."""
        event_id = self.mint_id("session")
        if before is None:
            self._pending_updates.clear()  # a new session: the old one's answers never come
        self._pending_updates.append((event_id, before))
        update = self.codec.session_update(self.config.effective_session(), event_id=event_id)
        self.out_openai.append(json.dumps(update))

    def mint_id(self, kind: str, series: str | None = None) -> str:
        """``<prefix>_<kind>_<n>``, ``n`` counted per call in its ``series`` (the kind by
        default): ``history`` (replayed history) and ``restore`` (held text delivered for the
        first time) share one; ``session``, ``commit`` and ``tool`` have their own."""
        key = kind if series is None else series
        n = self._id_seq.get(key, 0) + 1
        self._id_seq[key] = n
        return f"{self.config.lifecycle.event_id_prefix}_{kind}_{n}"

    def handle_event(self, event: ev.Event) -> None:
        """Feed the response machine (or, with no session up, hold what the next one needs)."""
        machine = self.machine
        state = self.call_state
        if state is not RUNNING and state is not ROTATING and state is not READY_TO_SWITCH:
            if state is RECONNECTING:
                self._hold(event)
            # Ending or ended: the call has decided; a late key press or server event changes
            # nothing (the application's calls are refused before they get here).
            return
        assert machine is not None
        now = self._now
        kind = type(event)
        barge_in = kind is ev.SpeechStarted or kind is ev.UserText
        if barge_in and self.config.estimate_playback:
            # A barge-in truncates at what the caller heard: bring that up to now first.
            progress = self.tracker.estimate(now)
            if progress is not None:
                machine.playback_progress(progress.item_id, progress.played_ms)
        self.execute(machine.handle(event, now), event)
        if barge_in and self._retired_audio is not None:
            self._fire_call("barge_in_seen")

    def _hold(self, event: ev.Event) -> None:
        """No session: keep user text and requests for the next one (bounded), drop ticks."""
        if isinstance(event, ev.UserText):
            if self.custody.held_count >= self.config.max_queue:
                log.warning("call=%s too much text held while reconnecting", self.call_label)
                self._return(self.custody.give_back((event.text,)))
            else:
                self.custody.hold(event)
        elif isinstance(event, ev.RequestResponse):
            if len(self._held_requests) < self.config.max_queue:
                self._held_requests.append(event)
            else:
                self._given_up(
                    RequestGivenUp(reason="reconnecting: too many", request_reasons=(event.reason,))
                )

    def execute(self, commands: list[Command], event: object = None) -> None:
        codec = self.codec
        out = self.out_openai
        for command in commands:
            if is_client_command(command):
                if type(command) is SendUserText:
                    frame = self.custody.frame(
                        codec.render_json(command), command.text, command.source
                    )
                    out.append(frame)
                else:
                    out.append(codec.render_json(command))
                if self.emit_events:
                    self._observe_command(command)
            elif isinstance(command, ClearPlayback):
                self.out_twilio.append(UrgentFrame(clear_message(self.stream_sid)))
                self.tracker.clear()
                self._awaiting_play.clear()
                if self.emit_events and command.reason == "barge_in":
                    source = "text" if type(event) is ev.UserText else "speech"
                    machine = self.machine
                    rid = machine.response_id if machine is not None else None
                    self.events.append(ae.BargeIn(source, rid, at=self._now))
            elif isinstance(command, DropResponseAudio):
                pass  # the machine filters that response's deltas from now on
            elif isinstance(command, RequestGivenUp):
                self._given_up(command)
                log.warning(
                    "call=%s response request given up: %s (%s)",
                    self.call_label,
                    command.reason,
                    ",".join(command.request_reasons),
                )
            elif isinstance(command, ReturnUndeliveredText):
                self._return(self.custody.give_back(command.texts))
        if self.emit_events:
            self._note_watchdog()  # a fire first: it is why the response is being cancelled
            self._note_cancelling()

    def _note_watchdog(self) -> None:
        machine = self.machine
        if machine is None:
            return
        stats = machine.stats
        seen = (stats.get("watchdog_fires", 0), stats.get("watchdog_suppressed", 0))
        if seen != self._watchdog_seen:
            fired = self._watchdog_seen[0]
            self._watchdog_seen = seen
            outcome = "retried" if seen[0] > fired else "suppressed"
            self.events.append(ae.WatchdogFired(machine.response_id, outcome, at=self._now))

    def _return(self, texts: tuple[str, ...]) -> None:
        if texts:
            self.returned_texts.append(texts)

    # ------------------------------------------------------------------------- bad input

    def count_bad(self, side: str, kind: str) -> None:
        key = f"{side}:{kind}"
        bad = self.report.bad_frames
        bad[key] = bad.get(key, 0) + 1
        if sum(bad.values()) > self.config.max_bad_frames:
            self.end(f"bad input: too many malformed frames from {side}", self._now)

    def end(self, reason: str, now: float) -> None:
        """End the call with ``reason`` (the first reason wins)."""
        self._advance(now)
        self._reason = reason
        self._fire_call("end")

    def _check_active(self) -> None:
        state = self.call_state
        if state is AWAITING_START:
            raise CallNotActive("the call has not started (no telephony start yet)")
        if state is ENDING or state is ENDED:
            raise CallNotActive(f"the call has ended ({self.end_reason or 'ended'})")

    def _advance(self, now: float) -> None:
        if now > self._now:
            self._now = now

    @property
    def state(self) -> CallState:
        return self.call_state
