"""Drive the core through the seed's two scenarios and print the log lines users grep for.

Run it with ``python examples/seed_scenarios.py``.  No network, no account: the script plays
the OpenAI Realtime server's part by hand, feeding the machine the events a real server would
send and executing nothing but printing the commands it gets back.

Scenario 1: the caller types while the AI is talking (TEXT_BARGE_IN).
Scenario 2: the server streams a transcript but no audio (NO_AUDIO_WATCHDOG).
"""

from __future__ import annotations

import logging
import sys

from realtime_fsm import (
    META_EVENT_ID,
    Command,
    LifecycleConfig,
    PlaybackProgress,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    SendResponseCreate,
    Tick,
    UserText,
)


def show(commands: list[Command]) -> list[Command]:
    for command in commands:
        print(f"    -> {command!r}")
    return commands


def created_for(commands: list[Command], response_id: str) -> ResponseCreated:
    """What the server answers to the ``response.create`` among ``commands``."""
    create = next(c for c in commands if isinstance(c, SendResponseCreate))
    return ResponseCreated(response_id=response_id, metadata={META_EVENT_ID: create.event_id})


def scenario_text_barge_in() -> bool:
    print("\n=== Scenario 1: user types while the AI is speaking ===")
    m = ResponseLifecycle(LifecycleConfig(call_id="demo-1", log_caller_content=True), now=0.0)
    cmds = show(m.handle(RequestResponse(reason="greeting"), now=0.0))
    show(m.handle(created_for(cmds, "resp_abc123"), now=0.1))
    for i in range(10):  # 10 x 20 ms of mu-law reach the caller, 120 ms of it is heard
        m.audio_delta("resp_abc123", "item_a1", 160, now=0.2 + i * 0.02)
    show(m.handle(PlaybackProgress(item_id="item_a1", played_ms=120), now=0.5))
    show(m.handle(UserText("שלום"), now=0.6))
    late = m.audio_delta("resp_abc123", "item_a1", 160, now=0.61)
    print(f"    late audio of the cancelled response forwarded? {late}")
    cmds = show(m.handle(ResponseDone("resp_abc123", status="cancelled"), now=0.7))
    show(m.handle(created_for(cmds, "resp_def456"), now=0.8))
    return m.state.value == "active" and m.stats.get("texts_delivered") == 1


def scenario_silent_response() -> bool:
    print("\n=== Scenario 2: transcript but no audio ===")
    cfg = LifecycleConfig(call_id="demo-2", no_audio_timeout=2.0)
    m = ResponseLifecycle(cfg, now=0.0)
    cmds = show(m.handle(RequestResponse(reason="greeting"), now=0.0))
    show(m.handle(created_for(cmds, "resp_abc123"), now=0.1))
    for i in range(3):
        m.transcript_delta("resp_abc123", now=0.2 + i * 0.1)
    deadline = m.next_deadline
    print(f"    next deadline: t={deadline}")
    assert deadline is not None
    show(m.handle(Tick(), now=deadline))
    cmds = show(m.handle(ResponseDone("resp_abc123", status="cancelled"), now=2.5))
    show(m.handle(created_for(cmds, "resp_retry1"), now=2.6))
    m.audio_delta("resp_retry1", "item_r1", 160, now=2.7)
    show(m.handle(ResponseDone("resp_retry1", status="completed"), now=3.0))
    return m.stats.get("watchdog_fires") == 1 and m.state.value == "idle"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    ok1 = scenario_text_barge_in()
    ok2 = scenario_silent_response()
    print(f"\nscenario 1: {'ok' if ok1 else 'FAILED'}; scenario 2: {'ok' if ok2 else 'FAILED'}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
