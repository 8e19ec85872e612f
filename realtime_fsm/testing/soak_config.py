"""What a fault soak runs: how many calls, how fast, which faults can be drawn, which timeouts.

Shared by the soak's calls (:mod:`realtime_fsm.testing.soak_call`) and its report
(:mod:`realtime_fsm.testing.soak_report`); :mod:`realtime_fsm.testing.soak` runs it.
"""

from __future__ import annotations

from typing import Final

import attrs

from ..config import LifecycleConfig

HOST: Final = "127.0.0.1"
BUSY: Final = "conversation_already_has_active_response"
#: Every fault a call can draw.  ``socket_drop`` and ``hangup`` end the call early by design.
#: ``rotate`` is no fault of the server's: the call's OpenAI session is replaced mid-call (a
#: short ``rotate_after``, and a simulator session cap a little later, as the real 60 minutes).
FAULTS: Final = (
    "dropped_done",
    "duplicated",
    "late",
    "slow_cancel",
    "deltas_after_cancel",
    "silent",
    "stall",
    "ignore_create",
    "bad_outcome",
    "server_error",
    "socket_drop",
    "hangup",
    "rotate",
)

#: Lifecycle timeouts shortened so every recovery path runs many times in a short soak.
SOAK_LIFECYCLE: Final = LifecycleConfig(
    create_timeout=1.0,
    cancel_timeout=1.0,
    no_audio_timeout=0.3,
    watchdog_cooldown=2.0,
    stall_timeout=1.5,
)
#: The longest scripted answer, in ms of audio.
MAX_REPLY_MS: Final = 3000


@attrs.frozen
class SoakConfig:
    """How many calls, how many at once, how fast, and the seed everything is drawn from."""

    calls: int = 1000
    concurrency: int = 32
    seed: int = 1
    #: Simulator pace: audio and timers of the fake server run this much faster than real time.
    realtime_factor: float = 10.0
    #: The fake caller's clock (media cadence, playback, speech) runs this much faster.
    caller_speed: float = 2.0
    #: Share of calls whose session lets the server's VAD create and cancel responses.
    server_creates_share: float = 0.5
    #: Probability that a call has any faults at all (the rest are well-behaved controls).
    fault_share: float = 0.85
    lifecycle: LifecycleConfig = attrs.field(factory=lambda: SOAK_LIFECYCLE)
    #: Hard bound on one call, script and teardown included; a call over it is a violation.
    call_timeout: float = 60.0
    #: Extra seconds (event-loop lag on a loaded machine) on top of the lifecycle timeouts when
    #: waiting for a call to be back to idle after its script.
    idle_slack: float = 5.0

    @property
    def idle_timeout(self) -> float:
        """The longest legitimate recovery after a script ends: a create timeout, a stalled
        response, a cancel timeout, then a watchdog retry doing it all once more."""
        lc = self.lifecycle
        once = lc.create_timeout + lc.stall_timeout + lc.cancel_timeout + lc.no_audio_timeout
        return 2 * once + MAX_REPLY_MS / 1000 / self.realtime_factor + self.idle_slack
