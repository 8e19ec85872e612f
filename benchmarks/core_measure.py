"""The core micro-benchmark's measurements (``bench_core``): per-event CPU time, decoding,
Python calls per event, tracemalloc bytes, reference cycles and full collections.

Each function measures one thing on the workload of ``core_workload`` and returns or records
the figure; the report (``core_report``) interleaves them and prints the tables.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
import tracemalloc
from typing import Any

from benchmarks.core_workload import (
    ACTIVE,
    AUDIO_EVENT,
    AUDIO_PER_RESPONSE,
    CANCELLING,
    CFG,
    CREATED_1,
    CREATED_2,
    CREATING,
    DONE_1,
    DONE_2,
    FRAMES,
    IDLE,
    ITEM_1,
    ITEM_2,
    LATE_AUDIO,
    REQUEST,
    RID_1,
    RID_2,
    SPEECH,
    VARIANTS,
    Factory,
    Machine,
    conversation,
    full_scenario,
    shared_config,
)
from benchmarks.dict_table import PlainCallState
from realtime_fsm import Command, ResponseState
from realtime_fsm.openai_realtime import parse_server_event

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
