"""The core micro-benchmark's report (``bench_core``): its sections, each running its
measurements (``core_measure``) interleaved round-robin and printing a markdown table, the goals
with their verdicts, and the table and machine formatting they share.
"""

from __future__ import annotations

import gc
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import transitions

from benchmarks.core_measure import (
    CLOCK,
    Samples,
    calls_per_event,
    cycle_check,
    decode_round,
    gc_round,
    per_event_round,
    traced_bytes_per_object,
    traced_conversation_bytes,
)
from benchmarks.core_workload import (
    CFG,
    FRAMES,
    VARIANTS,
    Factory,
    mid_call,
    own_config,
    shared_config,
)
from benchmarks.dict_table import DictTableLifecycle, PlainCallState, StockTransitionsLifecycle
from realtime_fsm import ResponseLifecycle
from realtime_fsm.table import MACHINE

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


# ---------------------------------------------------------------------------------- sections

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
