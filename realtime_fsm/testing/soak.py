"""Fault soak: many simulated calls through the example bridge's server, with random faults.

Each call is a :class:`~realtime_fsm.testing.FakeTwilioCaller` dialling the server that
``examples/twilio_bridge.py`` runs (:func:`realtime_fsm.server.start_server`), bridged to a
:class:`~realtime_fsm.testing.FakeRealtimeServer`.  Every call gets its own simulator and its
own listener of that server, so each protocol error, user item and response is attributed to
exactly one call (and the simulator's records are freed with it); a few dozen calls run at once
in one process and one event loop, as they would in production.

Each call draws (from one seed) a turn-taking mode, a script (speech, typed text, DTMF, waits,
barge-ins) and a mix of fault knobs: dropped ``response.done``, duplicated and late events,
slow cancel acknowledgements, silent and stalled responses, swallowed creates, injected server
errors, socket drops and callers hanging up mid-response.  What the soak checks, per call:

* protocol errors the simulator's rules produced, by code: no
  ``conversation_already_has_active_response`` except one answering a create that raced a
  response the server's VAD had created, on a call that then recovered, one probing a cancel
  the server acknowledges after ``cancel_timeout``, or one the call's trace (recorded at the
  bridge's sockets, judged by :mod:`realtime_fsm.replay`) shows the bridge could not avoid: its
  create went out after it had given up, on its own clock, what held the slot;
* every typed text and DTMF key reaches the model exactly once, or is reported undelivered in
  the :class:`~realtime_fsm.bridge.CallReport` (never both, never neither); a text the bridge
  sent on a socket that died before the server read it is a lost text;
* once its script ends, the call is back to ``idle`` (nothing pending) within the lifecycle
  timeouts;
* no no-audio watchdog fire inside the cooldown of the previous one;
* no crashed task (``internal error`` end reason, an exception reaching the event loop's
  handler, an error logged by the bridge) and nothing the bridge sent that Twilio would reject.

Until the bridge reconnects after an OpenAI socket drop, a call whose socket was dropped ends
(``openai closed``): that is counted as an expected outcome, and its texts must still be
delivered once or reported undelivered.

Not imported by :mod:`realtime_fsm.testing` itself, which imports nothing else of this package;
run it with ``realtime-fsm soak`` or :func:`run_soak`.  Its parts: what a soak runs
(:mod:`~realtime_fsm.testing.soak_config`), one call (:mod:`~realtime_fsm.testing.soak_call`),
what it saw and the report (:mod:`~realtime_fsm.testing.soak_report`); this module runs the
calls.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .soak_call import LogWatch, SoakCall, watch_logs
from .soak_config import BUSY, FAULTS, HOST, SOAK_LIFECYCLE, SoakConfig
from .soak_report import CallOutcome, SoakResult

__all__ = [
    "BUSY",
    "FAULTS",
    "HOST",
    "SOAK_LIFECYCLE",
    "CallOutcome",
    "LogWatch",
    "SoakConfig",
    "SoakResult",
    "run_soak",
]


async def run_soak(
    config: SoakConfig | None = None, *, progress: Callable[[int, int], None] | None = None
) -> SoakResult:
    """Run ``config.calls`` calls, ``config.concurrency`` at a time; never raises for a call."""
    cfg = config or SoakConfig()
    loop = asyncio.get_running_loop()
    loop_exceptions: list[str] = []
    previous = loop.get_exception_handler()

    def on_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        loop_exceptions.append(f"{context.get('message')}: {exc!r}"[:300])

    loop.set_exception_handler(on_exception)
    outcomes: list[CallOutcome] = []
    started = time.monotonic()
    next_index = 0
    traces = tempfile.TemporaryDirectory(prefix="rtfsm-soak-")
    with watch_logs() as watch, traces:

        async def worker() -> None:
            nonlocal next_index
            while next_index < cfg.calls:
                index = next_index
                next_index += 1
                call = SoakCall(cfg, index, watch, Path(traces.name))
                try:
                    outcome = await asyncio.wait_for(call.run(), cfg.call_timeout)
                except asyncio.TimeoutError:
                    outcome = call.outcome
                    outcome.crash = f"call did not finish within {cfg.call_timeout:g} s"
                except Exception as exc:  # a soak reports; it never stops at the first failure
                    outcome = call.outcome
                    outcome.crash = f"{type(exc).__name__}: {exc}"[:300]
                outcomes.append(outcome)
                if progress is not None:
                    progress(len(outcomes), cfg.calls)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, cfg.concurrency))))
        finally:
            loop.set_exception_handler(previous)
    outcomes.sort(key=lambda o: o.index)
    return SoakResult(cfg, outcomes, time.monotonic() - started, loop_exceptions, watch.errors)
