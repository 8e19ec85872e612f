"""Run a server script with its event loop's iterations recorded, for the load benchmark.

    python -m benchmarks.loop_stats OUT examples/twilio_bridge.py --port ... ...

A media frame that reaches a busy server waits for the rest of the loop iteration under way,
then for the callbacks ahead of it in the next one: what the server adds to its latency is the
length of the iterations it meets.  This wraps the loop's selector and records, per iteration,
when it ended, the wall time and the thread CPU time between one ``select`` returning and the
next being entered (the work), the time spent in ``select`` before it (the wait) and how many
sockets were ready; and every garbage collection (``gc.callbacks``), since a full collection
is one long iteration.  An iteration whose wall time is well above its CPU time was
preempted: the process wanted a core and did not get one.

The time stamps are ``time.monotonic()``, the system-wide clock the load generator's window
is given in, so ``bench_load`` keeps the iterations of the steady window only (call set-up
and hang-ups are busy moments that are not what is measured).  Written when the script
returns (both servers stop cleanly on SIGTERM): ``OUT`` (JSON: the garbage collections and
the name of the iterations file) and ``OUT.iterations`` (doubles, :data:`FIELDS` per
iteration)."""

from __future__ import annotations

import asyncio
import gc
import json
import runpy
import selectors
import sys
import time
from array import array
from pathlib import Path
from typing import Any

#: What is recorded per iteration, in this order.
FIELDS = ("end", "busy_wall", "busy_cpu", "select_wall", "ready")


class _Recorder:
    def __init__(self) -> None:
        self.iterations = array("d")
        #: ``(monotonic time at its end, generation, seconds)`` per garbage collection.
        self.collections: list[tuple[float, int, float]] = []
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.monotonic()
            return
        now = time.monotonic()
        self.collections.append((now, int(info["generation"]), now - self._gc_started))

    def write(self, out: Path) -> None:
        data = out.with_name(out.name + ".iterations")
        with data.open("wb") as f:
            self.iterations.tofile(f)
        summary = {"fields": FIELDS, "iterations_file": data.name, "gc": self.collections}
        out.write_text(json.dumps(summary) + "\n")


class _MeasuredSelector(selectors.DefaultSelector):
    """The default selector, timing the work done between two ``select`` calls."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self._record = recorder.iterations.extend
        self._left_wall: float | None = None
        self._left_cpu = 0.0
        self._waited = 0.0
        self._ready = 0

    def select(self, timeout: float | None = None) -> list[Any]:
        wall, cpu = time.monotonic(), time.thread_time()
        if self._left_wall is not None:
            busy, busy_cpu = wall - self._left_wall, cpu - self._left_cpu
            self._record((wall, busy, busy_cpu, self._waited, self._ready))
        ready: list[Any] = super().select(timeout)
        self._left_wall, self._left_cpu = time.monotonic(), time.thread_time()
        self._waited = self._left_wall - wall
        self._ready = len(ready)
        return ready


class _Policy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(_MeasuredSelector(self._recorder))


def read_iterations(out: Path) -> tuple[list[tuple[float, ...]], list[tuple[float, int, float]]]:
    """The iterations (tuples of :data:`FIELDS`) and garbage collections that ``main`` wrote."""
    summary = json.loads(out.read_text())
    values = array("d")
    values.frombytes((out.parent / summary["iterations_file"]).read_bytes())
    n = len(FIELDS)
    rows = [tuple(values[i : i + n]) for i in range(0, len(values), n)]
    return rows, [(float(t), int(g), float(s)) for t, g, s in summary["gc"]]


def main() -> int:
    out, script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    recorder = _Recorder()
    asyncio.set_event_loop_policy(_Policy(recorder))
    gc.callbacks.append(recorder.on_gc)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        recorder.write(Path(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
