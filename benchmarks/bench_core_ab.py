"""The core's per-frame and per-event cost against an earlier revision of itself, in one run.

Run: ``python -m benchmarks.bench_core_ab --base REV`` (about 20 s; ``--quick`` for a smoke
run).  ``REV`` is any git revision of this repository; its ``realtime_fsm`` package is extracted
into a temporary directory and imported beside the working tree's as ``realtime_fsm_base``, so
both machines run in the same process, on the same events (each built from its own package's
event classes), interleaved round by round with a rotating order.

Two measures per path:

* Python bytecodes executed (``sys.settrace`` with opcode events): exact and repeatable, the
  figure that says whether the code does more work;
* CPU time of the thread, median (min-max) of the rounds: what that work costs here.

The paths are the per-frame fast paths (an audio delta of the current response, an audio
transcript delta, a playback mark, a late audio delta of a cancelled response) and the control
events of two responses (create, created, done, barge-in, stale done and created, early tick).
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RID_1 = "resp_CD8kPq2XbW4mYJ0nZ1aB3"
RID_2 = "resp_CD8kTu7YcD1eF2gH3iJ4k"
ITEM_1 = "item_CD8kPqAbCdEfGhIjKlMnO"
ITEM_2 = "item_CD8kTuPqRsTuVwXyZaBcD"
FRAMES_PER_RESPONSE = 20  # 20 audio deltas of 160 bytes: 400 ms of G.711
#: The paths measured, in the order printed; per-frame ones first.
PATHS = (
    "audio_delta",
    "transcript_delta",
    "playback_mark",
    "late_audio",
    "create",
    "created",
    "done_completed",
    "barge_in",
    "done_cancelled",
    "stale_done",
    "stale_created",
    "early_tick",
)
PER_FRAME = PATHS[:4]


def extract(revision: str, into: Path) -> ModuleType:
    """The ``realtime_fsm`` package of ``revision``, imported as ``realtime_fsm_base``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "realtime_fsm"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "realtime_fsm").rename(into / "realtime_fsm_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("realtime_fsm_base")


class Side:
    """One package's machine class and the events of the script, built from that package."""

    def __init__(self, pkg: ModuleType) -> None:
        self.cls: Any = pkg.ResponseLifecycle
        self.cfg = pkg.LifecycleConfig()
        meta = pkg.META_EVENT_ID
        self.request = pkg.RequestResponse(reason="app")
        self.created_1 = pkg.ResponseCreated(RID_1, metadata={meta: "rtfsm_create_1"})
        self.done_1 = pkg.ResponseDone(RID_1, status="completed")
        self.created_2 = pkg.ResponseCreated(RID_2, metadata={meta: "rtfsm_create_2"})
        self.done_2 = pkg.ResponseDone(RID_2, status="cancelled")
        self.speech = pkg.SpeechStarted(item_id="item_user_1", audio_start_ms=1200)
        self.tick = pkg.Tick()

    def script(self, m: Any) -> dict[str, Callable[[], object]]:
        """Each path as a closure over one machine, to be run in order."""
        frames = range(FRAMES_PER_RESPONSE)

        def audio() -> None:
            for _ in frames:
                m.audio_delta(RID_1, ITEM_1, 160, 1.2)

        def transcript() -> None:
            for _ in frames:
                m.transcript_delta(RID_1, 1.25)

        def marks() -> None:
            for k in range(1, FRAMES_PER_RESPONSE + 1):
                m.playback_progress(ITEM_1, 20 * k)

        def second_response() -> None:
            m.handle(self.request, 2.0)
            m.handle(self.created_2, 2.1)
            for _ in frames:
                m.audio_delta(RID_2, ITEM_2, 160, 2.2)
            m.playback_progress(ITEM_2, 120)

        def late() -> None:
            for _ in frames:
                m.audio_delta(RID_2, ITEM_2, 160, 2.4)

        return {
            "create": lambda: m.handle(self.request, 1.0),
            "created": lambda: m.handle(self.created_1, 1.1),
            "audio_delta": audio,
            "transcript_delta": transcript,
            "playback_mark": marks,
            "early_tick": lambda: m.handle(self.tick, 1.3),
            "done_completed": lambda: m.handle(self.done_1, 1.5),
            "-second_response": second_response,
            "barge_in": lambda: m.handle(self.speech, 2.3),
            "late_audio": late,
            "done_cancelled": lambda: m.handle(self.done_2, 2.5),
            "stale_done": lambda: m.handle(self.done_2, 2.6),
            "stale_created": lambda: m.handle(self.created_2, 2.7),
        }


def per_call(path: str) -> int:
    return FRAMES_PER_RESPONSE if path in PER_FRAME else 1


def count_bytecodes(side: Side) -> dict[str, float]:
    """Bytecodes per frame or event, each path counted once on a fresh machine (after one
    unrecorded run, so a process's one-time work is not counted)."""
    side.script(side.cls(side.cfg, now=0.0))  # warm
    for step in side.script(side.cls(side.cfg, now=0.0)).values():
        step()
    counts: dict[str, float] = {}
    m = side.cls(side.cfg, now=0.0)
    for path, step in side.script(m).items():
        n = 0

        def trace(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal n
            if event == "call":
                frame.f_trace_opcodes = True
            elif event == "opcode":
                n += 1
            return trace

        sys.settrace(trace)
        try:
            step()
        finally:
            sys.settrace(None)
        if not path.startswith("-"):
            counts[path] = n / per_call(path)
    return counts


def time_round(side: Side, machines: int) -> dict[str, float]:
    """CPU µs per frame or event, each path over ``machines`` fresh machines."""
    ms = [side.cls(side.cfg, now=0.0) for _ in range(machines)]
    scripts = [side.script(m) for m in ms]
    out: dict[str, float] = {}
    clock = time.thread_time
    for path in scripts[0]:
        steps = [s[path] for s in scripts]
        t0 = clock()
        for step in steps:
            step()
        took = clock() - t0
        if not path.startswith("-"):
            out[path] = took * 1e6 / (machines * per_call(path))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--machines", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of 200")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.machines = 3, 200
    import logging

    logging.getLogger("realtime_fsm").setLevel(logging.WARNING)
    logging.getLogger("realtime_fsm_base").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        base_pkg = extract(args.base, Path(tmp))
        import realtime_fsm

        sides = {"base": Side(base_pkg), "new": Side(realtime_fsm)}
        counts = {name: count_bytecodes(side) for name, side in sides.items()}
        times: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
        order = list(sides)
        for r in range(args.rounds):
            for name in order[r % 2 :] + order[: r % 2]:
                for path, us in time_round(sides[name], args.machines).items():
                    times[name].setdefault(path, []).append(us)
    print(f"base = {args.base}, new = the working tree; {args.rounds} rounds x {args.machines}")
    print("\n| path | bytecodes base | new | new/base | CPU µs base | new | new/base |")
    print("|---|---|---|---|---|---|---|")
    for path in PATHS:
        cb, cn = counts["base"][path], counts["new"][path]
        tb = statistics.median(times["base"][path])
        tn = statistics.median(times["new"][path])
        unit = " (per frame)" if path in PER_FRAME else ""
        print(
            f"| {path}{unit} | {cb:.1f} | {cn:.1f} | {cn / cb:.3f}x"
            f" | {tb:.3f} | {tn:.3f} | {tn / tb:.3f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
