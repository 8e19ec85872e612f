"""Core micro-benchmark (issue 5, item 1): the ``transitions`` runtime against a dict table.

Run: ``python benchmarks/bench_core.py`` (about 30 s; ``--quick`` for a smoke run,
``--profile`` to add a cProfile of one control cycle per engine).  Results and their reading:
``docs/performance.md``.

Two machines with the same code except the engine (``benchmarks/dict_table.py``) are fed the
same event sequences in the same process, interleaved round-robin with a rotating order.  Times
are the thread's CPU time (robust to other jobs on a shared VM); the median of the rounds is
reported with the min-max of the rounds in brackets.  The ratios are the result, the absolute
microseconds depend on the machine.  Sections:

1. per-event cost of control events (create, created, barge-in cancel, done, a rejected stale
   ``response.done`` and an ignored duplicate ``response.created``) and of audio deltas;
2. the cost of decoding a typical ``response.created``/``response.done`` frame
   (``parse_server_event``, which includes ``json.loads``) next to the cost of feeding the
   resulting event to the machine;
3. memory per conversation (tracemalloc over 10,000 machines; a plain object with the same
   fields as the yardstick) and construction time;
4. reference cycles: dropped machines must be freed by reference counting alone;
5. a full ``gc.collect()`` with 10,000 live calls;
6. the goals of issue 5 that concern the core, each marked PASS or FAIL.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import transitions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dict_table import DictTableLifecycle, PlainCallState, StockTransitionsLifecycle
from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    AudioDelta,
    Command,
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
from realtime_fsm.table import MACHINE

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

# ------------------------------------------------------------------------------ measurement

#: CPU time of this thread: time the process spends waiting for a core (other jobs on a shared
#: 2-core VM) is not counted, so the figures are CPU cost, not wall time under contention.
CLOCK = time.thread_time


class Samples:
    """Per-round values of named measurements; the median is the reported figure."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}

    def add(self, variant: str, label: str, value: float) -> None:
        self.values.setdefault((variant, label), []).append(value)

    def median(self, variant: str, label: str) -> float:
        return statistics.median(self.values[(variant, label)])

    def spread(self, variant: str, label: str) -> tuple[float, float]:
        values = self.values[(variant, label)]
        return min(values), max(values)


def per_event_round(variant: str, cls: type[Machine], n: int, samples: Samples) -> None:
    """One round: ``n`` fresh machines, two responses each, every phase timed over all of them.

    Every machine gets the same events at the same times (event ids are minted per machine, so
    ``rtfsm_create_1`` matches each machine's first create)."""
    pc = CLOCK
    ms = [cls(CFG, now=0.0) for _ in range(n)]
    us = 1e6 / n
    audio_us = 1e6 / (n * AUDIO_PER_RESPONSE)
    audio_range = range(AUDIO_PER_RESPONSE)

    t0 = pc()
    for m in ms:
        m.handle(REQUEST, 1.0)
    t1 = pc()
    samples.add(variant, "create", (t1 - t0) * us)

    t0 = pc()
    for m in ms:
        m.handle(CREATED_1, 1.1)
    t1 = pc()
    samples.add(variant, "created", (t1 - t0) * us)

    t0 = pc()
    for m in ms:
        delta = m.audio_delta
        for _ in audio_range:
            delta(RID_1, ITEM_1, 160, 1.2)
    t1 = pc()
    samples.add(variant, "audio", (t1 - t0) * audio_us)

    t0 = pc()
    for m in ms:
        handle = m.handle
        for _ in audio_range:
            handle(AUDIO_EVENT, 1.3)
    t1 = pc()
    samples.add(variant, "audio_handle", (t1 - t0) * audio_us)

    t0 = pc()
    for m in ms:
        m.handle(DONE_1, 1.5)
    t1 = pc()
    samples.add(variant, "done_completed", (t1 - t0) * us)

    # Second response, interrupted by the caller while part of its audio has been heard.
    for m in ms:
        m.handle(REQUEST, 2.0)
        m.handle(CREATED_2, 2.1)
        for _ in audio_range:
            m.audio_delta(RID_2, ITEM_2, 160, 2.2)
        m.playback_progress(ITEM_2, 120)

    t0 = pc()
    for m in ms:
        m.handle(SPEECH, 2.3)
    t1 = pc()
    samples.add(variant, "barge_in", (t1 - t0) * us)

    t0 = pc()
    for m in ms:
        for _ in range(LATE_AUDIO):
            m.audio_delta(RID_2, ITEM_2, 160, 2.4)
    t1 = pc()
    samples.add(variant, "late_audio", (t1 - t0) * 1e6 / (n * LATE_AUDIO))

    t0 = pc()
    for m in ms:
        m.handle(DONE_2, 2.5)
    t1 = pc()
    samples.add(variant, "done_cancelled", (t1 - t0) * us)

    t0 = pc()
    for m in ms:
        m.handle(DONE_2, 2.6)
    t1 = pc()
    samples.add(variant, "stale_done", (t1 - t0) * us)

    t0 = pc()
    for m in ms:
        m.handle(CREATED_2, 2.7)
    t1 = pc()
    samples.add(variant, "stale_created", (t1 - t0) * us)

    first = ms[0]
    assert first.state is IDLE and first.stats == {
        "dropped_audio_deltas": LATE_AUDIO,
        "stale_done": 1,
        "stale_created": 1,
    }, (variant, first.state, first.stats)


def decode_round(n: int, samples: Samples) -> None:
    pc = CLOCK
    loads = json.loads
    for name in ("created_1", "done_1", "done_2"):
        text = FRAMES[name]
        t0 = pc()
        for _ in range(n):
            loads(text)
        t1 = pc()
        samples.add("decode", f"loads_{name}", (t1 - t0) * 1e6 / n)
        t0 = pc()
        for _ in range(n):
            parse_server_event(text)
        t1 = pc()
        samples.add("decode", f"parse_{name}", (t1 - t0) * 1e6 / n)


def check_same_commands() -> None:
    """Both variants emit the same commands and reach the same states on the benchmark script."""
    runs: list[list[tuple[ResponseState, list[Command]]]] = []
    for cls in VARIANTS.values():
        m = cls(CFG, now=0.0)
        log: list[tuple[ResponseState, list[Command]]] = []
        script: list[tuple[Any, float]] = [
            (REQUEST, 1.0),
            (CREATED_1, 1.1),
            (DONE_1, 1.5),
            (REQUEST, 2.0),
            (CREATED_2, 2.1),
            (SPEECH, 2.3),
            (DONE_2, 2.5),
            (DONE_2, 2.6),
            (CREATED_2, 2.7),
        ]
        for event, now in script:
            if event is SPEECH:
                for _ in range(AUDIO_PER_RESPONSE):
                    m.audio_delta(RID_2, ITEM_2, 160, 2.2)
                m.playback_progress(ITEM_2, 120)
            commands = m.handle(event, now)
            log.append((m.state, commands))
        runs.append(log)
    assert all(run == runs[0] for run in runs), "the machines disagree on the benchmark script"
    states = [state for state, _ in runs[0]]
    assert states == [CREATING, ACTIVE, IDLE, CREATING, ACTIVE, CANCELLING, IDLE, IDLE, IDLE]


def calls_per_event(cls: type[Machine], n: int = 300) -> float:
    """Python function calls per control event (request, created, done), from cProfile."""
    ms = [cls(CFG, now=0.0) for _ in range(n)]
    profiler = cProfile.Profile()
    profiler.enable()
    for m in ms:
        m.handle(REQUEST, 1.0)
        m.handle(CREATED_1, 1.1)
        m.handle(DONE_1, 1.5)
    profiler.disable()
    stats = pstats.Stats(profiler)
    return float(stats.total_calls) / (3 * n)  # type: ignore[attr-defined]


def profile_cycle(cls: type[Machine], n: int, top: int) -> None:
    ms = [cls(CFG, now=0.0) for _ in range(n)]
    profiler = cProfile.Profile()
    profiler.enable()
    for m in ms:
        m.handle(REQUEST, 1.0)
        m.handle(CREATED_1, 1.1)
        m.handle(SPEECH, 1.2)
        m.handle(DONE_1, 1.5)
        m.handle(DONE_1, 1.6)
    profiler.disable()
    print(f"\n#### cProfile, {cls.__name__}: {n} x (create, created, barge-in, done, stale done)\n")
    print("```")
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(top)
    print("```")


# ----------------------------------------------------------------------------- memory, gc


def traced_bytes_per_object(factory: Factory, n: int) -> float:
    """tracemalloc: bytes still allocated per object after building ``n`` of them."""
    holder: list[object] = [None] * n
    factory(n)  # warm-up: first-call caches are not per-object state
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        holder[i] = factory(i)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del holder
    return used / n


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


def traced_conversation_bytes(cls: type[Machine], n: int, responses: int) -> float:
    """tracemalloc: bytes a machine holds after ``responses`` responses (events and commands
    created on the way are freed; what stays is the machine's state)."""
    ms: list[Machine] = [cls(CFG, now=0.0) for _ in range(n)]
    conversation(cls(CFG), 2, 0)  # warm-up
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i, m in enumerate(ms):
        conversation(m, responses, i)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n + traced_bytes_per_object(shared_config(cls), 2000)


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


def cycle_check(cls: type[Any], n: int) -> dict[str, object]:
    """With the collector off: do ``n`` dropped machines go away by reference counting alone,
    and is there any cyclic garbage at all afterwards?"""

    def live() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is cls)

    gc.collect()
    gc.disable()
    try:
        before = live()
        if cls is PlainCallState:
            objs: list[Any] = [cls(CFG) for _ in range(n)]
        else:
            objs = [full_scenario(cls(CFG, now=0.0)) for _ in range(n)]
        # A list item is referenced by the list, the loop variable and getrefcount's argument.
        extra_refs = max(sys.getrefcount(o) for o in objs) - 3
        alive = live() - before
        del objs
        left = live() - before
        garbage = gc.collect()
    finally:
        gc.enable()
    return {"alive": alive, "extra_refs": extra_refs, "left": left, "garbage": garbage}


def gc_round(label: str, factory: Factory | None, n: int, samples: Samples) -> None:
    calls = [factory(i) for i in range(n)] if factory is not None else []
    gc.collect()
    times = []
    for _ in range(5):
        t0 = CLOCK()
        gc.collect()
        times.append(CLOCK() - t0)
    samples.add("gc", label, statistics.median(times) * 1e3)
    del calls


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


# ---------------------------------------------------------------------------------- output


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def cell(samples: Samples, variant: str, label: str, digits: int = 2) -> str:
    lo, hi = samples.spread(variant, label)
    return f"{fmt(samples.median(variant, label), digits)} ({fmt(lo, digits)}-{fmt(hi, digits)})"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    head = list(header)
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()}, CPU: {cpu}, Python {platform.python_version()}"
        f" ({platform.machine()}), transitions {transitions.__version__}"
    )


# ------------------------------------------------------------------------------------ main

EVENT_ROWS = [
    ("create", "create: `RequestResponse` (idle -> creating, sends `response.create`)"),
    ("created", "created: our `response.created` (creating -> active)"),
    ("barge_in", "barge-in: `SpeechStarted` (active -> cancelling: cancel, clear, truncate)"),
    ("done_completed", "done: `response.done` completed (active -> idle)"),
    ("done_cancelled", "done: `response.done` cancelled (cancelling -> idle)"),
    ("stale_done", "rejected: stale `response.done` in idle (no row: `MachineError`)"),
    ("stale_created", "stale: duplicate `response.created` in idle (guarded row, ignored)"),
]
AUDIO_ROWS = [
    ("audio", "audio delta, fast path `audio_delta()` (current response)"),
    ("audio_handle", "audio delta via `handle(AudioDelta)`"),
    ("late_audio", "late audio delta of the cancelled response (dropped, slow path)"),
]


T, S, D = "transitions", "stock transitions", "dict table"
CLASSES: dict[str, type[Any]] = {**VARIANTS, "plain object": PlainCallState}
DECODE_ROWS = [
    ("created_1", "created", "`response.created`"),
    ("done_1", "done_completed", "`response.done` (completed)"),
    ("done_2", "done_cancelled", "`response.done` (cancelled)"),
]


def section_events(rounds: int, n: int) -> Samples:
    """Per-event cost and decoding, interleaved round-robin with a rotating order."""
    samples = Samples()
    jobs = [*VARIANTS, "decode"]
    for r in range(rounds):
        for k in range(len(jobs)):
            job = jobs[(r + k) % len(jobs)]
            gc.collect()
            if job == "decode":
                decode_round(n, samples)
            else:
                per_event_round(job, VARIANTS[job], n, samples)

    print("### Cost per event (us)\n")
    table(
        [
            "event",
            "transitions (runtime)",
            "stock transitions",
            "dict table",
            "runtime / table",
            "stock / table",
            "runtime engine overhead",
        ],
        [
            [
                text,
                cell(samples, T, key),
                cell(samples, S, key),
                cell(samples, D, key),
                f"{samples.median(T, key) / samples.median(D, key):.1f}x",
                f"{samples.median(S, key) / samples.median(D, key):.1f}x",
                fmt(samples.median(T, key) - samples.median(D, key)),
            ]
            for key, text in EVENT_ROWS + AUDIO_ROWS
        ],
    )
    calls = {name: calls_per_event(cls) for name, cls in VARIANTS.items()}
    print(
        "\nPython function calls per control event (create, created, done; cProfile): "
        + ", ".join(f"{name} {count:.0f}" for name, count in calls.items())
        + ".\n"
    )

    print("### Decoding the frame vs. handling the event (us)\n")
    rows = []
    for frame_name, key, text in DECODE_ROWS:
        parse = samples.median("decode", f"parse_{frame_name}")
        rows.append(
            [
                f"{text}, {len(FRAMES[frame_name])} B",
                cell(samples, "decode", f"loads_{frame_name}"),
                cell(samples, "decode", f"parse_{frame_name}"),
                fmt(samples.median(T, key)),
                f"{samples.median(T, key) / parse:.2f}x",
                f"{samples.median(T, key) / samples.median('decode', f'loads_{frame_name}'):.2f}x",
                fmt(samples.median(S, key)),
                f"{samples.median(S, key) / parse:.2f}x",
                fmt(samples.median(D, key)),
                f"{samples.median(D, key) / parse:.2f}x",
            ]
        )
    table(
        [
            "frame",
            "`json.loads`",
            "`parse_server_event` (incl. loads)",
            "handle, transitions (runtime)",
            "/ decode",
            "/ `json.loads` alone",
            "handle, stock transitions",
            "/ decode",
            "handle, dict table",
            "/ decode",
        ],
        rows,
    )
    return samples


def section_memory(big: int, rounds: int, quick: bool) -> dict[str, dict[str, float]]:
    """tracemalloc bytes per call (fresh, own config, mid-call, steady state), construction."""
    print(f"\n### Memory per conversation (tracemalloc, {big:,} machines) and construction\n")
    mem = {name: traced_bytes_per_object(shared_config(cls), big) for name, cls in CLASSES.items()}
    own = {name: traced_bytes_per_object(own_config(cls), big) for name, cls in CLASSES.items()}
    conv_n, conv_k = (100, 10) if quick else (1000, 10)
    steady_n, steady_k = (20, 100) if quick else (200, 100)
    conv = {name: traced_conversation_bytes(cls, conv_n, conv_k) for name, cls in VARIANTS.items()}
    steady = {
        name: traced_conversation_bytes(cls, steady_n, steady_k) for name, cls in VARIANTS.items()
    }
    construct = Samples()
    names = list(CLASSES)
    for r in range(max(3, rounds // 2)):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            cls = CLASSES[name]
            gc.collect()
            t0 = CLOCK()
            objs = [cls(CFG) for _ in range(big)]
            construct.add(name, "construct", (CLOCK() - t0) * 1e6 / big)
            del objs
    plain = mem["plain object"]
    table(
        [
            "variant",
            "B/call, fresh (shared config)",
            "x plain",
            "B/call, fresh + own `LifecycleConfig`",
            f"B/call after {conv_k} responses",
            f"B/call after {steady_k} responses",
            "construct us",
        ],
        [
            [
                name,
                f"{mem[name]:.0f}",
                f"{mem[name] / plain:.2f}x",
                f"{own[name]:.0f}",
                f"{conv[name]:.0f}" if name in conv else "-",
                f"{steady[name]:.0f}" if name in steady else "-",
                cell(construct, name, "construct"),
            ]
            for name in CLASSES
        ],
    )
    print(
        f"\nAfter N responses: N responses with unique ids on {conv_n} (N={conv_k}) or"
        f" {steady_n} (N={steady_k}) machines (audio, marks, every third one barged in on);"
        " the bounded memories of finished response ids (64) and of playback items (16) are"
        f" full after {steady_k}."
    )
    return {"fresh": mem, "own": own, "conv": conv, "steady": steady}


def section_cycles() -> dict[str, dict[str, object]]:
    print("\n### Reference cycles (gc disabled; every path incl. rejected events)\n")
    cycles = {name: cycle_check(cls, 1000) for name, cls in CLASSES.items()}
    table(
        ["variant", "live after build", "extra refs", "left after del", "gc.collect() found"],
        [
            [name, str(c["alive"]), str(c["extra_refs"]), str(c["left"]), str(c["garbage"])]
            for name, c in cycles.items()
        ],
    )
    print(
        "\nextra refs: the most references any machine had besides the list holding it;"
        " left after del: instances still alive after the list is dropped (collector off);"
        " gc.collect() found: unreachable objects the collector then freed."
        f" `len(MACHINE.models)` = {len(MACHINE.models)} (no call is ever registered)."
    )
    return cycles


def section_gc(big: int, rounds: int) -> Samples:
    print(f"\n### Full `gc.collect()` with {big:,} live calls (ms, median of 5 per round)\n")
    gcs = Samples()
    jobs: list[tuple[str, Factory | None]] = [
        ("no calls", None),
        ("transitions", mid_call(ResponseLifecycle)),
        ("stock transitions", mid_call(StockTransitionsLifecycle)),
        ("dict table", mid_call(DictTableLifecycle)),
        ("plain object", shared_config(PlainCallState)),
    ]
    for r in range(rounds):
        for k in range(len(jobs)):
            label, factory = jobs[(r + k) % len(jobs)]
            gc_round(label, factory, big, gcs)
    floor = gcs.median("gc", "no calls")
    table(
        ["live calls", "full gc ms", "above the process floor"],
        [
            [label, cell(gcs, "gc", label), fmt(gcs.median("gc", label) - floor)]
            for label, _ in jobs
        ],
    )
    print(
        "\nThe machines are mid-call (one response finished, the next one playing); the plain"
        " objects are fresh."
    )
    return gcs


def section_goals(
    samples: Samples,
    mem: dict[str, dict[str, float]],
    cycles: dict[str, dict[str, object]],
    gcs: Samples,
    big: int,
) -> None:
    print("\n### Goals of issue 5 (core)\n")
    fresh, plain, steady = mem["fresh"][T], mem["fresh"]["plain object"], mem["steady"][T]
    no_cycles = all(c["left"] == 0 and c["garbage"] == 0 for c in cycles.values())
    gc_t, gc_d = gcs.median("gc", T), gcs.median("gc", D)
    audio_t, audio_d = samples.median(T, "audio"), samples.median(D, "audio")
    goals = [
        (
            "state per call <= 2x a plain object of the same fields",
            f"{fresh:.0f} B vs {plain:.0f} B = {fresh / plain:.2f}x",
            fresh <= 2 * plain,
        ),
        ("state per call < 2 KB (fresh)", f"{fresh:.0f} B", fresh < 2048),
        (
            "state per call < 2 KB after 100 responses (bounded memories full)",
            f"{steady:.0f} B",
            steady < 2048,
        ),
        (
            "no reference cycles (freed by refcount, nothing for gc)",
            ", ".join(f"{k}: left {c['left']}, gc {c['garbage']}" for k, c in cycles.items()),
            no_cycles,
        ),
        (
            f"full gc with {big:,} live calls <= 3x the dict table's",
            f"{gc_t:.2f} ms vs {gc_d:.2f} ms = {gc_t / gc_d:.2f}x",
            gc_t <= 3 * gc_d,
        ),
        (
            f"full gc with {big:,} live calls about 5 ms (the issue's estimate)",
            f"{gc_t:.2f} ms",
            gc_t <= 5.0,
        ),
        (
            "audio-delta handling <= 2x the dict table",
            f"{audio_t:.3f} us vs {audio_d:.3f} us = {audio_t / audio_d:.2f}x",
            audio_t <= 2 * audio_d,
        ),
    ]
    for frame_name, key, text in DECODE_ROWS:
        handle, parse = samples.median(T, key), samples.median("decode", f"parse_{frame_name}")
        goals.append(
            (
                f"control event through transitions <= decoding its JSON: {text}",
                f"{handle:.2f} us vs {parse:.2f} us = {handle / parse:.2f}x",
                handle <= parse,
            )
        )
        loads = samples.median("decode", f"loads_{frame_name}")
        goals.append(
            (
                f"(strict reading) ... <= `json.loads` of it alone: {text}",
                f"{handle:.2f} us vs {loads:.2f} us = {handle / loads:.2f}x",
                handle <= loads,
            )
        )
    table(["goal", "measured", "verdict"], [[g, m, verdict(ok)] for g, m, ok in goals])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=2000, help="machines per round")
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, small N")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each engine")
    args = parser.parse_args()
    # The lifecycle logs warnings on some paths of the cycle check (stall, abandoned cancel):
    # swallow them instead of printing (the level, hence the cost, is unchanged).
    logging.getLogger("realtime_fsm").addHandler(logging.NullHandler())
    rounds, n = (3, 300) if args.quick else (args.rounds, args.calls)
    big = 1000 if args.quick else 10_000
    started = time.perf_counter()

    print("## Core micro-benchmark\n")
    print(f"Machine: {machine_info()}\n")
    print(f"`{' '.join(['python', *sys.argv])}`: {rounds} interleaved rounds x {n} calls;")
    print("thread CPU time; median of the rounds, (min-max of the rounds) in brackets.")
    print(f"Load average at start: {load()}.\n")
    check_same_commands()
    samples = section_events(rounds, n)
    mem = section_memory(big, rounds, args.quick)
    cycles = section_cycles()
    gcs = section_gc(big, 3 if args.quick else 9)
    section_goals(samples, mem, cycles, gcs, big)
    print(f"\nTotal run time {time.perf_counter() - started:.0f} s; load average at end: {load()}.")
    if args.profile:
        profile_cycle(ResponseLifecycle, 2000, 15)
        profile_cycle(StockTransitionsLifecycle, 2000, 25)
        profile_cycle(DictTableLifecycle, 2000, 12)


if __name__ == "__main__":
    main()
