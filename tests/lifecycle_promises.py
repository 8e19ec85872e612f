"""The world's promises: the checks :class:`~lifecycle_world.World` runs after every step and at
the end of a call (see ``lifecycle_world.py`` for the list), and the books they read.  A mixin of
``World``, split from it so that neither module nor class grows past the size limits."""

from __future__ import annotations

from collections import Counter

import attrs
from lifecycle_profiles import (
    CLOSED,
    IDLE,
)
from reference_server import ServerEvent

from realtime_fsm import (
    AudioDelta,
    ClearPlayback,
    Command,
    ResponseCreated,
    ResponseDone,
    SendItemDelete,
    SendTruncate,
    ServerError,
    Tick,
    TranscriptDelta,
)


@attrs.frozen
class _SendContext:
    """What the machine knew when it sent a create or a user text."""

    known_active: frozenset[str]
    stopped: frozenset[str]
    abandoned: frozenset[str]


class WorldPromises:
    """The checks of :class:`~lifecycle_world.World` (which holds every attribute they read)."""

    def _unheard(self) -> dict[str, int]:
        """Items the caller is still hearing (forwarded, not cleared, not fully played): ms."""
        bpm = self.cfg.audio_bytes_per_ms
        return {
            item: self.played.get(item, 0)
            for item, nbytes in self.forwarded.items()
            if item not in self.cleared and self.played.get(item, 0) * bpm < nbytes
        }

    def _check_cut(self, commands: list[Command]) -> None:
        """A clear cuts what the caller did not hear: each item with unheard audio is truncated
        at the ms actually played (clamped to what was received) or, if none was, deleted; the
        item still being generated is cut at what was received even when all of it was heard."""
        truncated = {c.item_id: c.audio_end_ms for c in commands if isinstance(c, SendTruncate)}
        deleted = {c.item_id for c in commands if isinstance(c, SendItemDelete)}
        if not any(isinstance(c, ClearPlayback) for c in commands):
            if truncated:
                self._fail(f"truncate without a clear: {commands}")
            for item in deleted:
                # At the done of a response stopped unheard (a barge-in, a cancel of a response
                # nobody may hear): only an item none of whose audio reached the caller.
                if item in self.forwarded or self.item_response.get(item) not in self.dropped:
                    self._fail(f"delete of {item} without a clear: {commands}")
            return
        bpm = self.cfg.audio_bytes_per_ms
        unheard = self._unheard()
        want = {item: min(played, self.forwarded[item] // bpm) for item, played in unheard.items()}
        extra = set(truncated) | deleted
        for item in extra - set(want):
            # Only the live item may be cut although heard in full: at what was received.
            received_ms = self.forwarded.get(item, 0) // bpm
            if item in self.cleared or truncated.get(item, 0) != received_ms:
                self._fail(f"cut {item} at {truncated.get(item)} though it was heard in full")
            want[item] = received_ms
        want_truncated = {item: ms for item, ms in want.items() if ms > 0}
        want_deleted = {item for item, ms in want.items() if ms == 0}
        if truncated != want_truncated or deleted != want_deleted:
            self._fail(
                f"cut {truncated} / deleted {deleted}, expected {want_truncated} / {want_deleted}"
            )

    def _being_cancelled(self) -> set[str]:
        return set(self.server.pending_cancels())

    def _unavoidable(self, event_id: str | None, blocking: str | None) -> bool:
        """The machine could not have known ``blocking`` was generating when it sent this: it had
        not been told (no response.created, no busy error) and never asked for it (server VAD,
        idle timeout, or a create it had stopped waiting for); or it had given up waiting for
        that response's cancel acknowledgement (the documented price of a server slower than
        ``cancel_timeout``)."""
        if event_id is None:
            return False
        ctx = self.contexts[event_id]
        if blocking is None:
            return False
        if blocking in ctx.abandoned:
            return True
        resp = self.server.responses[blocking]
        not_told = blocking not in ctx.known_active
        not_asked = resp.origin != "client" or resp.create_event_id in ctx.stopped
        return not_told and not_asked

    def _check_audio(self, event: AudioDelta) -> None:
        resp = self.server.responses[event.response_id]
        if event.response_id in self.dropped:
            self._fail(f"audio of dropped response {event.response_id} forwarded")
        if resp.create_event_id in self.interrupted_creates:
            self._fail(f"audio of {resp.id}, interrupted before it was created, forwarded")
        if resp.create_event_id in self.given_up_creates | self.stopped_creates:
            self._fail(f"audio of {resp.id} forwarded, but its create was given up")
        if event.response_id in self.abandoned:
            self._fail(f"audio of {resp.id} forwarded, but its cancel was abandoned")
        if not resp.out_of_band:
            self.forwarded[event.item_id] = self.forwarded.get(event.item_id, 0) + event.byte_count

    def _snapshot(self) -> tuple[object, ...]:
        m = self.m
        inflight = m.inflight
        return (
            m.state,
            m.create_state,
            m.turn_state,
            m.recovery_state,
            m.response_id,
            None if inflight is None else (inflight.event_id, inflight.requests),
            tuple(m.pending),
            tuple(m.held_texts),
            m.audio_deltas,
            m.transcript_deltas,
            m.response_is_retry,
            m.response_expects_audio,
            frozenset(m.oob_responses),
            m.watchdog_last_fire,
            m.next_deadline,
            m.caller_hearing,
        )

    def settle_silent(self) -> None:
        """The server goes quiet: no event reaches the machine while its timers run out.

        Within its timeouts the machine must be back in ``idle`` with nothing left to do: at
        most one stall (or watchdog) cancel and one cancel timeout, one wait for a server VAD
        answer and the create it then sends, and two create timeouts (the create and its one
        retry) per request group it still holds."""
        m = self.m
        cfg = self.cfg
        self.trace.append("settle_silent")
        groups = len(m.pending) + (1 if m.inflight else 0) + (1 if m.held_texts else 0) + 2
        bound = cfg.stall_timeout + cfg.cancel_timeout + (2 * groups + 1) * cfg.create_timeout
        start = self.now
        for _ in range(8 * groups + 8):
            deadline = m.next_deadline
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self._handle(Tick())
            self.check()
        if m.state is not IDLE or m.next_deadline is not None:
            self._fail(f"silent server: machine stuck in {m.state.value}")
        if self.now - start > bound:
            self._fail(f"silent server: idle only after {self.now - start}s > {bound}s")

    def quiesce(self) -> None:
        """Deliver everything and let the server finish: the machine must end idle, every
        request served or legitimately given up, every caller turn answered."""
        if self.closed:
            return
        self.trace.append("quiesce")
        m = self.m
        server = self.server
        for _ in range(10_000):
            moved = True
            if self.c2s:
                self.send()
            elif server.outbox:
                self.receive()
            elif server.streaming():
                self.stream()
            elif server.speaking:
                self.speech_stopped()
            elif server.withheld():
                self.release_created()
            elif server.pending_cancels():
                self.ack_cancel()
            elif m.next_deadline is not None:
                # Waiting for what will not come: a lost acknowledgement, a swallowed create,
                # a VAD answer the server skipped.  Let the timer run out.
                self.tick()
            else:
                moved = False
            if not moved:
                break
            self.check()
        else:  # pragma: no cover - the system always quiesces
            self._fail("no quiescence after 10000 steps")
        if m.state is not IDLE or m.pending or m.held_texts or m.inflight is not None:
            self._fail(f"all delivered, server idle, but machine is {m.state.value}")
        open_requests = [r for r, status in self.requests.items() if status == "open"]
        if open_requests:
            self._fail(f"requests never served: {open_requests}")
        if server.default is not None:
            self._fail(f"server still generating {server.default.id}")
        self._check_caller_answered()

    def _check_caller_answered(self) -> None:
        """Promise 3 for the caller: the last thing the caller said (a committed turn or a
        typed text, as the server received it) is answered by a default response that started
        after it and completed; or by one the machine cancelled as hung (stall); or the app was
        told, after the caller's input, that what it asked for is given up (timeout after the
        retry, a refusal, or a barge-in: speech that reaches us after a text was sent)."""
        books = self.answer_books()
        if books is None or books[0] or books[1]:
            return
        self._fail("the caller's last input was never answered")

    def answer_books(self) -> tuple[bool, bool] | None:
        """For the caller's last input (in the order the server received them): whether a
        response that started after it completed (or was cancelled as hung), and whether a
        give-up was reported after it was sent.  ``None``: the caller said nothing yet."""
        server = self.server
        inputs = [(turn.seq, at) for turn, at in zip(server.turns, self.turn_at, strict=True)]
        inputs += [
            (seq, self.text_sent_at[text])
            for seq, text in zip(server.user_text_seqs, server.user_texts, strict=True)
        ]
        if not inputs:
            return None
        last, sent_at = max(inputs)
        answered = any(
            not resp.out_of_band
            and resp.started_seq > last
            and (resp.status == "completed" or resp.id in self.stalled)
            for resp in server.responses.values()
        )
        return answered, any(at >= sent_at for at in self.reported_at)

    def check(self) -> None:
        m = self.m
        cfg = self.cfg
        problems = m.check_invariants()
        if problems:
            self._fail(f"check_invariants: {problems}")
        deadline = m.next_deadline
        if m.state in (IDLE, CLOSED) and m.response_id is not None:
            self._fail(f"stale state in {m.state.value}")
        if m.state is CLOSED and deadline is not None:
            self._fail("closed with a deadline")
        # A busy machine always has a timer, never further away than its longest timeout.
        longest = max(cfg.stall_timeout, cfg.create_timeout, cfg.cancel_timeout)
        if m.state not in (IDLE, CLOSED) and deadline is None:
            self._fail(f"{m.state.value} without a deadline")
        if deadline is not None and deadline - self.now > longest + 1e-6:
            self._fail(f"{m.state.value} with deadline {deadline} at {self.now}")
        self._check_quiet()
        # User texts: exactly once, in order, or handed back.
        held = [t.text for t in m.held_texts]
        if self.closed:
            if held or self.sent_texts + self.returned_texts != self.typed:
                self._fail(
                    f"texts: typed {self.typed}, sent {self.sent_texts},"
                    f" returned {self.returned_texts}, held {held}"
                )
        elif self.sent_texts + held != self.typed:
            self._fail(f"texts: typed {self.typed}, sent {self.sent_texts}, held {held}")
        seen = self.server.user_texts
        if seen != self.sent_texts[: len(seen)]:
            self._fail(f"server got texts {seen}, client sent {self.sent_texts}")
        # Requests: each app request is in exactly one place.
        places = Counter(r.reason for r in m.pending)
        if m.inflight is not None:
            places.update(r.reason for r in m.inflight.requests)
        for reason, status in self.requests.items():
            expected = 1 if status == "open" else 0
            if places[reason] != expected:
                self._fail(f"request {reason} ({status}) held {places[reason]} times")
        # Watchdog: at most one retry per fire (a retry's create resent after a timeout may
        # get a second response, but that one is cancelled unheard, as given up).
        stopped = self.stopped_creates | self.given_up_creates
        retries = sum(
            1
            for rid, resp in self.server.responses.items()
            if self._is_retry_response(rid) and resp.create_event_id not in stopped
        )
        if retries > len(self.fires):
            self._fail(f"{retries} retry responses for {len(self.fires)} watchdog fires")

    def _check_quiet(self) -> None:
        """Promise 5: the server's slot is free and nothing is in flight either way, so the
        machine can learn nothing more: busy, it must be on a timer due within one timeout of
        the moment things went quiet; idle, it owes nothing (unless it waits, on its timer,
        for the answer the server's VAD owes to a committed turn)."""
        m = self.m
        server = self.server
        quiet = (
            self.open
            and server.default is None
            and not server.withheld()
            and not server.outbox
            and not self.c2s
        )
        if not quiet:
            self.quiet_since = None
            return
        if self.quiet_since is None:
            self.quiet_since = self.now
        if m.state is IDLE:
            waiting = m.next_deadline is not None
            if m.held_texts or (m.pending and not waiting):
                self._fail("all delivered, server idle, but the machine holds work")
            if not waiting and any(status == "open" for status in self.requests.values()):
                self._fail(f"all delivered, server idle, requests open: {self.requests}")
            return
        bound = self.quiet_since + max(self.cfg.create_timeout, self.cfg.cancel_timeout)
        deadline = m.next_deadline
        if deadline is None or deadline > bound + 1e-6:
            self._fail(
                f"{m.state.value} with the server idle since {self.quiet_since}"
                f" and nothing in flight, next deadline {deadline}"
            )


def _describe(event: ServerEvent) -> str:
    if isinstance(event, (ResponseCreated, ResponseDone, AudioDelta, TranscriptDelta)):
        extra = ""
        if isinstance(event, ResponseDone):
            extra = f",{event.status}"
        elif isinstance(event, ResponseCreated) and event.out_of_band:
            extra = ",oob"
        return f"{type(event).__name__}:{event.response_id}{extra}"
    if isinstance(event, ServerError):
        return f"error:{event.code}:{event.event_id}"
    return type(event).__name__
