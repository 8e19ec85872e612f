"""Health, readiness and the graceful drain of one server process.

Shared by the built-in server (:func:`realtime_fsm.server.start_server`) and the ASGI routes
(:class:`realtime_fsm.asgi.TwilioVoiceRoutes`): a :class:`CallTracker` holds the process's
:class:`~realtime_fsm.admission.Admission` and its live calls, answers ``/healthz`` (the process
is alive: its event loop answers) and ``/readyz`` (it takes new calls: not draining, under
``max_calls``), and drains:

1. readiness goes false at once, and no new call is admitted (the webhook is refused so that
   Twilio fails over; a stream whose call was admitted, here or by another worker, is still
   served; see :mod:`realtime_fsm.admission`);
2. calls in progress go on until they end, and places held for admitted webhooks until their
   streams have come and ended (or the hold expired);
3. at the drain deadline, calls still in progress are ended: report reason
   ``"server draining"``, close code 1001 ("going away") to Twilio and to OpenAI;
4. the caller (the ``serve`` command, an app's lifespan) then stops listening and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .admission import Admission
from .bounded import bounded, wait_event
from .bridge import CallBridge
from .logsafe import safe
from .table import ENDED
from .webserver import HttpHandler, HttpRequest, HttpResponse

log = logging.getLogger("realtime_fsm.drain")

#: Liveness: answers 200 while the process's event loop runs.
HEALTH_PATH = "/healthz"
#: Readiness: 200 while new calls are taken, 503 when draining or full (JSON either way).
READY_PATH = "/readyz"
#: Seconds calls in progress get to end by themselves once a drain begins (``--drain-timeout``).
DEFAULT_DRAIN_TIMEOUT = 30.0
#: After the deadline: how long the calls told to go away get to close their sockets.  Each
#: close is bounded (``CallBridge`` gives each socket 3 s), so this is only a backstop.
CLOSE_GRACE = 10.0
#: How often a drain looks whether it is done (the admission's holds expire with time).
_POLL = 0.05

#: What a refused webhook answers (``ServerConfig.when_unavailable``): ``fail-over``, HTTP 503,
#: which makes Twilio request the number's fallback URL; ``busy``, TwiML ``<Reject
#: reason="busy"/>``, a busy tone and no fail-over (for a number without a fallback URL,
#: whose callers would otherwise hear Twilio's "application error" message).
WHEN_UNAVAILABLE = ("fail-over", "busy")
#: ``Retry-After`` on a refused webhook (seconds): for proxies and load balancers; Twilio's
#: own retries are set on the webhook URL (connection overrides), not by this header.
RETRY_AFTER_S = 5


def unavailable(when_unavailable: str, reason: str) -> HttpResponse:
    """The webhook's answer when no call is taken (``reason``: the admission's refusal):
    HTTP 503 with ``Retry-After``, or ``<Reject reason="busy"/>`` (``when_unavailable``)."""
    if when_unavailable == "busy":
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<Response><Reject reason="busy" /></Response>\n'
        )
        return HttpResponse(200, body, "text/xml; charset=utf-8")
    return HttpResponse(
        503, f"unavailable: {reason}\n".encode(), headers=(("Retry-After", str(RETRY_AFTER_S)),)
    )


def admit_webhook(
    when_unavailable: str, admission: Admission | None, webhook: Mapping[str, str]
) -> HttpResponse | None:
    """Admit a signed webhook's call (holding its place), or the answer that refuses it:
    the one capacity decision both servers make, after the signature check (an unsigned
    request neither holds a place nor learns the server's state)."""
    if admission is None:
        return None
    call = webhook.get("CallSid", "")
    reason = admission.admit_webhook(call, time.time())
    if reason is None:
        return None
    log.warning(
        "call=%s webhook refused: %s; answering %s",
        safe(call or "-", 64),
        reason,
        "busy" if when_unavailable == "busy" else "503 (Twilio fails over)",
    )
    return unavailable(when_unavailable, reason)


@attrs.frozen
class DrainReport:
    """How a drain went: calls in progress when it began, calls ended by the deadline (the
    rest ended by themselves), calls still not closed after :data:`CLOSE_GRACE`, seconds."""

    calls_at_start: int
    cut_at_deadline: int
    not_closed: int
    seconds: float


class CallTracker:
    """One process's calls: what ``/healthz`` and ``/readyz`` answer, and the drain.

    ``worker``: a name for this process in the answers (the ``serve`` command's workers are
    ``0``, ``1``, ...); by default its pid."""

    def __init__(self, admission: Admission, *, worker: str | None = None) -> None:
        self.admission = admission
        self.worker = worker if worker is not None else str(os.getpid())
        #: Every call this process runs (the bridge knows when it ended); weak, so a finished
        #: call is not kept for the tracker's sake.
        self._bridges: weakref.WeakSet[CallBridge] = weakref.WeakSet()
        self._drain: asyncio.Task[DrainReport] | None = None
        #: Set to end the calls now, without waiting for the deadline (a second signal).
        self._cut_now = asyncio.Event()

    # ------------------------------------------------------------------------- the calls

    def watching(
        self, on_bridge: Callable[[CallBridge], object] | None = None
    ) -> Callable[[CallBridge], None]:
        """An ``on_bridge`` hook that tracks each call, then calls ``on_bridge``."""

        def watch(bridge: CallBridge) -> None:
            self._bridges.add(bridge)
            if on_bridge is not None:
                on_bridge(bridge)

        return watch

    def live(self) -> list[CallBridge]:
        """The calls not closed yet (started or waiting for their ``start``)."""
        return [b for b in self._bridges if b.session.call_state is not ENDED]

    def idle(self) -> bool:
        """Nothing left to wait for: no call open, no place held for an admitted webhook."""
        return self.admission.idle(time.time()) and not self.live()

    @property
    def draining(self) -> bool:
        return self.admission.draining

    # ---------------------------------------------------------------------- the answers

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 while the process serves at all, draining or not."""
        return 200, {"status": "alive", "worker": self.worker, "pid": os.getpid()}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 200 when a new call would be admitted, else 503; the admission's
        figures and this worker's name either way."""
        figures = self.admission.snapshot(time.time())
        body = {"worker": self.worker, "pid": os.getpid(), **figures}
        return (200 if figures["ready"] else 503), body

    def http_routes(self) -> dict[str, HttpHandler]:
        """``/healthz`` and ``/readyz`` for :class:`realtime_fsm.webserver.Routes`."""

        def handler(answer: Callable[[], tuple[int, dict[str, Any]]]) -> HttpHandler:
            async def respond(request: HttpRequest) -> HttpResponse:
                if request.method not in ("GET", "HEAD"):
                    return HttpResponse(405, b"method not allowed\n")
                status, body = answer()
                data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
                return HttpResponse(status, data, "application/json")

            return respond

        return {HEALTH_PATH: handler(self.health), READY_PATH: handler(self.readiness)}

    # ------------------------------------------------------------------------- the drain

    def drain(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> asyncio.Task[DrainReport]:
        """Begin draining (readiness false now) and return the task that finishes it; calling
        again returns the same task.  Its result says how it went."""
        if self._drain is None:
            self.admission.drain()
            self._drain = asyncio.get_running_loop().create_task(
                self._run_drain(timeout), name="realtime_fsm drain"
            )
        return self._drain

    def cut_now(self) -> None:
        """End the calls still in progress now rather than at the deadline (a second SIGTERM
        or Ctrl-C: whoever sends it does not want to wait)."""
        self._cut_now.set()

    async def _run_drain(self, timeout: float) -> DrainReport:
        started = time.monotonic()
        at_start = len(self.live())
        log.info(
            "worker=%s draining: %d calls in progress, %d admitted calls on the way;"
            " deadline in %.0f s",
            self.worker,
            at_start,
            self.admission.held(time.time()),
            timeout,
        )
        deadline = started + timeout
        while not self.idle() and not self._cut_now.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await wait_event(self._cut_now, min(_POLL, remaining))
        cut = self.live()
        for bridge in cut:
            bridge.go_away()
        if cut:
            log.warning(
                "worker=%s drain deadline: ending %d calls in progress (1001 going away)",
                self.worker,
                len(cut),
            )
        grace_end = time.monotonic() + CLOSE_GRACE
        while self.live() and time.monotonic() < grace_end:
            await asyncio.sleep(_POLL)
        report = DrainReport(at_start, len(cut), len(self.live()), time.monotonic() - started)
        log.info(
            "worker=%s drained in %.1f s: %d calls at start, %d ended at the deadline",
            self.worker,
            report.seconds,
            report.calls_at_start,
            report.cut_at_deadline,
        )
        return report


async def serve_until_drained(
    server: asyncio.Server,
    tracker: CallTracker,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    *,
    watch_parent: int | None = None,
) -> DrainReport:
    """Serve until SIGTERM or SIGINT, drain, stop listening: the life of a ``serve`` process.

    The listening socket stays open while draining, so that the stream of a call admitted
    just before the signal still reaches this process (and ``/readyz`` answers 503, rather
    than nothing, to a load balancer).  A second signal ends the calls still in progress at
    once.  ``watch_parent``: a worker's parent pid; if the parent dies, the worker drains
    too rather than live on unsupervised."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()

    def on_signal() -> None:
        if signalled.is_set():
            log.warning("worker=%s second signal: ending calls now", tracker.worker)
            tracker.cut_now()
        signalled.set()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
    try:
        while not signalled.is_set():
            await wait_event(signalled, 1.0)
            if watch_parent is not None and os.getppid() != watch_parent:
                log.warning("worker=%s parent %d gone: draining", tracker.worker, watch_parent)
                signalled.set()
        report = await tracker.drain(drain_timeout)
    finally:
        server.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
    with contextlib.suppress(asyncio.TimeoutError):
        await bounded(server.wait_closed(), CLOSE_GRACE)
    return report
