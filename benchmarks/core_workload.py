"""The core micro-benchmark's workload (``bench_core``): the machines under test, the frames
and events they are fed, and the scripted calls (a conversation, every path, a live call).

Kept apart from the timing and the report so that every section measures the same events:
the frames are a GA server's, parsed once by ``parse_server_event`` as the bridge parses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from benchmarks.dict_table import DictTableLifecycle, StockTransitionsLifecycle
from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    AudioDelta,
    ConnectionClosed,
    LifecycleConfig,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    ServerError,
    SpeechStarted,
    Tick,
    TranscriptDelta,
    UserText,
)
from realtime_fsm.openai_realtime import parse_server_event

Machine = ResponseLifecycle
Factory = Callable[[int], object]
VARIANTS: dict[str, type[ResponseLifecycle]] = {
    "transitions": ResponseLifecycle,
    "stock transitions": StockTransitionsLifecycle,
    "dict table": DictTableLifecycle,
}
CFG = LifecycleConfig()
ACTIVE = ResponseState.ACTIVE
CANCELLING = ResponseState.CANCELLING
CREATING = ResponseState.CREATING
IDLE = ResponseState.IDLE

# ------------------------------------------------------------------------------------ frames

CONVERSATION = "conv_CD8kOv1QrStUvWxYzAbCd"
RID_1 = "resp_CD8kPq2XbW4mYJ0nZ1aB3"
RID_2 = "resp_CD8kTu7YcD1eF2gH3iJ4k"
ITEM_1 = "item_CD8kPqAbCdEfGhIjKlMnO"
ITEM_2 = "item_CD8kTuPqRsTuVwXyZaBcD"


def _response(rid: str, event_id: str, status: str, item: str, transcript: str) -> dict[str, Any]:
    """A GA ``realtime.response`` object as the server sends it for a telephony session."""
    body: dict[str, Any] = {
        "object": "realtime.response",
        "id": rid,
        "status": status,
        "status_details": None,
        "output": [],
        "conversation_id": CONVERSATION,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "usage": None,
        "metadata": {META_EVENT_ID: event_id, META_REASON: "app"},
    }
    if status == "in_progress":
        return body
    body["output"] = [
        {
            "id": item,
            "type": "message",
            "status": "completed" if status == "completed" else "incomplete",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": transcript}],
        }
    ]
    if status == "cancelled":
        body["status_details"] = {"type": "cancelled", "reason": "turn_detected"}
    body["usage"] = {
        "total_tokens": 1123,
        "input_tokens": 876,
        "output_tokens": 247,
        "input_token_details": {
            "text_tokens": 612,
            "audio_tokens": 264,
            "image_tokens": 0,
            "cached_tokens": 576,
            "cached_tokens_details": {"text_tokens": 512, "audio_tokens": 64, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 52, "audio_tokens": 195},
    }
    return body


def frame(kind: str, rid: str, event_id: str, status: str = "in_progress", item: str = "") -> str:
    transcript = (
        "Sure! Your appointment is confirmed for Tuesday at three thirty in the afternoon."
        " Is there anything else I can help you with today?"
    )
    if status == "cancelled":
        transcript = "Sure! Your appointment is confirmed for"
    return json.dumps(
        {
            "type": kind,
            "event_id": "event_CD8kR0sTuVwXyZaBcDeFg",
            "response": _response(rid, event_id, status, item, transcript),
        }
    )


#: The frames of the benchmark's two responses; the machines see the events parsed from them.
FRAMES: dict[str, str] = {
    "created_1": frame("response.created", RID_1, "rtfsm_create_1"),
    "done_1": frame("response.done", RID_1, "rtfsm_create_1", "completed", ITEM_1),
    "created_2": frame("response.created", RID_2, "rtfsm_create_2"),
    "done_2": frame("response.done", RID_2, "rtfsm_create_2", "cancelled", ITEM_2),
}


def _parsed(name: str) -> Any:
    return parse_server_event(FRAMES[name])


CREATED_1: ResponseCreated = _parsed("created_1")
DONE_1: ResponseDone = _parsed("done_1")
CREATED_2: ResponseCreated = _parsed("created_2")
DONE_2: ResponseDone = _parsed("done_2")
REQUEST = RequestResponse(reason="app")
SPEECH = SpeechStarted(item_id="item_user_1", audio_start_ms=1200)
AUDIO_EVENT = AudioDelta(response_id=RID_1, item_id=ITEM_1, byte_count=160)
AUDIO_PER_RESPONSE = 20  # 20 deltas of 160 bytes: 400 ms of G.711
LATE_AUDIO = 5

# ------------------------------------------------------------------------------------- calls


def shared_config(cls: type[Any]) -> Factory:
    """New calls sharing one ``LifecycleConfig`` (the per-call state only)."""
    return lambda _i: cls(CFG)


def own_config(cls: type[Any]) -> Factory:
    """New calls each with their own ``LifecycleConfig`` naming the call (as a bridge does)."""
    return lambda i: cls(LifecycleConfig(call_id=f"CA{i:032x}"))


def conversation(m: Machine, responses: int, tag: int, *, barge_in_every: int = 3) -> Machine:
    """Drive one machine through ``responses`` responses with unique ids (as a real call gets),
    audio on one item each, every ``barge_in_every``-th interrupted by the caller."""
    now = m._now + 1.0
    for k in range(responses):
        rid = f"resp_{tag:06d}x{k:04d}AbCdEfGhIjK"
        item = f"item_{tag:06d}x{k:04d}AbCdEfGhIj"
        m.handle(REQUEST, now)
        created = ResponseCreated(
            response_id=rid,
            metadata={META_EVENT_ID: f"rtfsm_create_{m._seq}", META_REASON: "app"},
            output_modalities=("audio",),
        )
        m.handle(created, now + 0.1)
        for _ in range(5):
            m.audio_delta(rid, item, 800, now + 0.2)
        m.playback_progress(item, 300)
        if k % barge_in_every == barge_in_every - 1:
            m.handle(SPEECH, now + 0.3)
            m.handle(ResponseDone(response_id=rid, status="cancelled"), now + 0.4)
        else:
            m.handle(ResponseDone(response_id=rid), now + 0.4)
            m.playback_progress(item, 500)
        now += 1.0
    return m


def full_scenario(m: Machine) -> Machine:
    """Every path a call takes, including the rejected ones (MachineError inside transitions)."""
    m.handle(REQUEST, 1.0)
    m.handle(CREATED_1, 1.1)
    m.transcript_delta(RID_1, 1.15)
    for _ in range(3):
        m.audio_delta(RID_1, ITEM_1, 160, 1.2)
    m.handle(TranscriptDelta(response_id=RID_1), 1.25)
    m.playback_progress(ITEM_1, 20)
    m.handle(UserText(text="actually, make it Wednesday"), 1.3)
    m.audio_delta(RID_1, ITEM_1, 160, 1.35)
    m.handle(DONE_1, 1.4)
    m.handle(DONE_1, 1.45)
    m.handle(CREATED_1, 1.5)
    m.handle(CREATED_2, 1.6)
    m.handle(ServerError(code="conversation_already_has_active_response", message="x"), 1.7)
    m.handle(Tick(), 30.0)
    m.handle(Tick(), 60.0)
    m.handle(ConnectionClosed(reason="hangup"), 61.0)
    return m


def mid_call(cls: type[Machine]) -> Factory:
    """A live call: one finished response, the second one playing."""

    def make(i: int) -> object:
        m = cls(CFG, now=0.0)
        conversation(m, 1, i)
        m.handle(REQUEST, 5.0)
        m.handle(
            ResponseCreated(
                response_id=f"resp_{i:06d}live",
                metadata={META_EVENT_ID: "rtfsm_create_2"},
            ),
            5.1,
        )
        m.audio_delta(f"resp_{i:06d}live", f"item_{i:06d}live", 800, 5.2)
        return m

    return make
