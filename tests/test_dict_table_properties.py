"""The runtime engine, stock ``transitions`` and the dict table under hypothesis: random,
deliberately messy event sequences give identical commands and state after every step.  The
harness (``run_both``) is test_dict_table_equivalence's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dict_table_equivalence import BUSY_CODE, ITEMS, RIDS, Step, run_both

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime_fsm import (
    LifecycleConfig,
)

# ------------------------------------------------------------------------------ strategies

#: 0 = the current response (most often), 1..4 = the small pool, 5 = a never-seen id.
_rid = st.sampled_from([0, 0, 0, 0, len(RIDS) + 1, len(RIDS) + 1, 1, 2, 3, 4])
#: 0 = the create in flight (most often), 1 = none, 2.. = any create seen so far.
_eid = st.sampled_from([0, 0, 0, 1, 2, 3, 4])
_item = st.integers(0, len(ITEMS) - 1)
_STEPS: dict[str, st.SearchStrategy[Step]] = {
    "request": st.tuples(
        st.just("request"),
        st.sampled_from([None, None, "be brief", "be long"]),
        st.sampled_from([False, False, False, True]),
    ),
    "user_text": st.tuples(st.just("user_text"), st.sampled_from(["hi", "stop", "book it"])),
    "turn": st.one_of(st.tuples(st.just("turn")), st.tuples(st.just("turn"), st.just("item_idle"))),
    "idle_timeout": st.tuples(st.just("idle_timeout")),
    "session": st.tuples(
        st.just("session"),
        st.sampled_from([None, "server_vad"]),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.sampled_from([None, None, "low", "xhigh"]),
    ),
    "speech_started": st.tuples(st.just("speech_started")),
    "speech_stopped": st.tuples(st.just("speech_stopped")),
    "created": st.tuples(
        st.just("created"),
        _rid,
        _eid,
        st.sampled_from([False, False, False, False, True]),
        st.sampled_from([(), (), ("audio",), ("text",)]),
    ),
    "done": st.tuples(
        st.just("done"), _rid, st.sampled_from(["completed", "cancelled", "incomplete", "failed"])
    ),
    "error": st.tuples(
        st.just("error"),
        st.sampled_from(
            [BUSY_CODE, BUSY_CODE, "busy_no_id", "response_cancel_not_active", "invalid_value"]
        ),
        _eid,
        _rid,
    ),
    "audio": st.tuples(
        st.just("audio"), _rid, _item, st.sampled_from([0, 160, 800]), st.booleans()
    ),
    "transcript": st.tuples(st.just("transcript"), _rid, st.booleans()),
    "touch": st.tuples(st.just("touch"), _rid),
    "item_added": st.tuples(
        st.just("item_added"), _rid, _item, st.sampled_from(["message", "function_call"])
    ),
    "item_done": st.tuples(st.just("item_done"), _rid, _item),
    "playback": st.tuples(
        st.just("playback"), _item, st.sampled_from([0, 10, 20, 100, 1000]), st.booleans()
    ),
    "tick": st.tuples(st.just("tick"), st.sampled_from([True, True, False])),
    "close": st.tuples(st.just("close")),
    "back_in_time": st.tuples(st.just("back_in_time")),
}
#: How often each kind of step is drawn, so whole response cycles happen in one example.
_WEIGHTS = {
    "request": 4,
    "user_text": 2,
    "turn": 1,
    "idle_timeout": 1,
    "session": 1,
    "speech_started": 2,
    "speech_stopped": 1,
    "created": 5,
    "done": 4,
    "error": 3,
    "audio": 4,
    "transcript": 3,
    "touch": 1,
    "item_added": 2,
    "item_done": 2,
    "playback": 2,
    "tick": 3,
    "close": 1,
    "back_in_time": 1,
}
STEP: st.SearchStrategy[Step] = st.sampled_from(
    [kind for kind, weight in _WEIGHTS.items() for _ in range(weight)]
).flatmap(_STEPS.__getitem__)
DT = st.sampled_from([0.0, 0.01, 0.3, 1.0, 3.5, 6.0, 13.0])
CONFIG = st.builds(
    LifecycleConfig,
    create_timeout=st.sampled_from([1.0, 5.0]),
    cancel_timeout=st.sampled_from([1.0, 5.0]),
    no_audio_timeout=st.sampled_from([0.5, 3.0]),
    watchdog_cooldown=st.sampled_from([2.0, 12.0]),
    stall_timeout=st.sampled_from([4.0, 20.0]),
    reasoning_effort=st.sampled_from([None, "high"]),
    server_creates_response=st.booleans(),
    server_interrupts_response=st.booleans(),
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIG, steps=st.lists(st.tuples(DT, STEP), min_size=30, max_size=100))
def test_dict_table_and_transitions_agree(
    config: LifecycleConfig, steps: list[tuple[float, Step]]
) -> None:
    run_both(config, steps)
