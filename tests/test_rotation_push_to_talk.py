"""Push-to-talk across a switch of session, sans-IO.

Without turn detection the caller's turn is whatever the session's input buffer holds when the
application commits.  The buffer belongs to one session, so a switch (a rotation, or a lost
session replaced by a ready next one) carries the audio forwarded since the last commit to the
new session, after its restore and before any later audio, bounded by
``BridgeConfig.rotate_carry_audio`` (the newest kept, the rest counted).
"""

from __future__ import annotations

import base64
import json

import attrs
import pytest
from test_call_session import (
    STREAM,
    oa_committed,
    oa_created,
    oa_done,
    oa_input_transcript,
    oa_session,
)
from test_rotation import CONFIG, Rotating

from realtime_fsm.call import BridgeConfig
from realtime_fsm.call.uncommitted import CARRY_CHUNK_BYTES, UncommittedAudio
from realtime_fsm.table import CallState

PTT = attrs.evolve(CONFIG, session=attrs.evolve(CONFIG.session, turn_detection=None))


def audio(n: int) -> bytes:
    """Frame ``n``'s 20 ms of mu-law: its bytes say which frame it is."""
    return bytes([n % 256]) * 160


def tw_audio(n: int) -> str:
    payload = base64.b64encode(audio(n)).decode()
    media = {"track": "inbound", "chunk": str(n), "timestamp": str(20 * n), "payload": payload}
    return json.dumps({"event": "media", "media": media, "streamSid": STREAM})


def appended(events: list[dict[str, object]]) -> bytes:
    return b"".join(
        base64.b64decode(str(e["audio"]))
        for e in events
        if e["type"] == "input_audio_buffer.append"
    )


def speak(c: Rotating, frames: range) -> None:
    for n in frames:
        out = c.tw(tw_audio(n))
        assert out is not None and json.loads(out)["type"] == "input_audio_buffer.append"


def test_a_turn_spanning_a_rotation_reaches_the_new_session_whole() -> None:
    c = Rotating(PTT).start()
    c.oa(oa_session("session.updated"))
    speak(c, range(1, 4))
    c.s.commit_user_turn(c.t)  # an earlier turn: its audio stays with the old session
    c.drain()
    (commit,) = [e for e in c.sent if e["type"] == "input_audio_buffer.commit"]
    c.oa(oa_committed("u1"))
    c.oa(oa_input_transcript("u1", "first turn"))
    c.oa(oa_created("resp_1"))  # the answer to the committed turn
    c.oa(oa_done("resp_1"))
    speak(c, range(4, 9))  # the caller presses to talk: not committed yet
    mark = len(c.sent)
    c.ready()  # quiet (push-to-talk: the server sees no speech): the switch
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1
    new = c.since(mark)
    # After the restore, the turn so far; nothing of the committed turn before it.
    assert appended(new) == b"".join(audio(n) for n in range(4, 9))
    assert c.types(new)[-1] == "input_audio_buffer.append"
    assert c.s.input_audio_resent
    # The caller goes on and commits on the new session: the turn is whole there.
    speak(c, range(9, 11))
    c.s.commit_user_turn(c.t)
    c.drain()
    assert c.types(c.since(mark))[-1] == "input_audio_buffer.commit"
    assert c.s.report.push_to_talk_audio_dropped == 0
    assert commit["event_id"] != c.sent[-1]["event_id"]


def test_past_the_limit_the_newest_is_carried_and_the_rest_counted() -> None:
    # 0.1 s: five 20 ms frames.
    c = Rotating(attrs.evolve(PTT, rotate_carry_audio=0.1)).start()
    c.oa(oa_session("session.updated"))
    speak(c, range(1, 13))
    mark = len(c.sent)
    c.ready()
    assert c.s.generation == 1
    assert appended(c.since(mark)) == b"".join(audio(n) for n in range(8, 13))
    assert c.s.report.push_to_talk_audio_dropped == 7
    # Counted once: a later switch carries what is still uncommitted, and counts only new drops.
    speak(c, range(13, 15))
    mark = len(c.sent)
    c.ready()
    assert c.s.generation == 2
    assert appended(c.since(mark)) == b"".join(audio(n) for n in range(10, 15))
    assert c.s.report.push_to_talk_audio_dropped == 9


def test_a_lost_session_replaced_by_the_ready_one_carries_the_turn_too() -> None:
    c = Rotating(PTT).start()
    c.oa(oa_session("session.updated"))
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")  # generating: not quiet
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    speak(c, range(1, 6))
    mark = len(c.sent)
    c.s.openai_lost("openai closed", c.t, audio_dropped=2)
    c.drain()
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1
    new = c.since(mark)
    assert appended(new) == b"".join(audio(n) for n in range(1, 6))
    # The audio queued for the lost socket is in it: the driver drops that, nothing counted.
    assert c.s.input_audio_resent and c.s.report.media_dropped == 0


def test_a_reconnect_starts_the_record_afresh() -> None:
    """A reconnected session's buffer is empty (the lost one's audio went with it): the next
    switch carries only what was forwarded to the new session."""
    c = Rotating(PTT).start()
    c.oa(oa_session("session.updated"))
    speak(c, range(1, 4))
    c.s.openai_lost("openai closed", c.t)
    c.s.session_opened(c.t)
    c.drain()
    c.oa(oa_session("session.updated"))
    speak(c, range(4, 6))
    mark = len(c.sent)
    c.ready()
    assert c.s.generation == 2
    assert appended(c.since(mark)) == audio(4) + audio(5)


@pytest.mark.parametrize(
    "config",
    [CONFIG, attrs.evolve(PTT, rotate_carry_audio=0.0), attrs.evolve(PTT, rotate_after=None)],
    ids=["server VAD", "rotate_carry_audio=0", "no rotation"],
)
def test_nothing_is_kept_when_no_switch_needs_it(config: BridgeConfig) -> None:
    c = Rotating(config).start()
    speak(c, range(1, 4))
    assert c.s._uncommitted is None
    if config.rotate_after is not None:
        mark = len(c.sent)
        c.ready()
        assert c.s.generation == 1
        assert appended(c.since(mark)) == b"" and not c.s.input_audio_resent


def test_turning_turn_detection_off_mid_call_starts_keeping_audio() -> None:
    c = Rotating().start()
    assert c.s._uncommitted is None
    c.s.update_session(c.t, session=attrs.evolve(CONFIG.session, turn_detection=None))
    c.drain()
    speak(c, range(1, 3))
    assert c.s._uncommitted is not None and len(c.s._uncommitted.frames) == 2
    c.s.update_session(c.t, session=CONFIG.session)
    assert c.s._uncommitted is None


def test_the_carry_is_recut_into_one_second_appends() -> None:
    record = UncommittedAudio(10.0)
    for n in range(120):  # 2.4 s
        record.add(base64.b64encode(audio(n)).decode())
    payloads = record.payloads()
    chunks = [base64.b64decode(p) for p in payloads]
    assert [len(chunk) for chunk in chunks] == [CARRY_CHUNK_BYTES] * 2 + [3200]
    assert b"".join(chunks) == b"".join(audio(n) for n in range(120))
    assert record.dropped == 0
    record.clear()
    assert record.payloads() == [] and record.size == 0
