"""Run a server script with its event loop's iterations measured, for the load benchmark.

    python -m benchmarks.loop_stats OUT.json examples/twilio_bridge.py --port ... ...

A media frame that reaches a busy server waits for the rest of the loop iteration under way,
then for the callbacks ahead of it in the next one: its added latency is the length of the
iterations it meets.  This wraps the loop's selector and records, per iteration, the wall
time and the thread CPU time between one ``select`` returning and the next being entered (the
work), the time spent in ``select`` (the wait) and how many sockets were ready.  An iteration
whose wall time is well above its CPU time was preempted: the process wanted a core and did
not get one, which on a 2-core machine shared with the load generator is the other side of
the story.

Written as JSON when the script returns (both servers stop cleanly on SIGTERM): totals, and
histograms of the work per iteration on log-spaced bins, counted and weighted by time (the
share of the busy time spent in iterations at least that long, which is what a frame arriving
at a random moment meets)."""

from __future__ import annotations

import asyncio
import json
import runpy
import selectors
import sys
import time
from pathlib import Path
from typing import Any

#: Upper edges of the histogram bins, in ms (the last bin is open).
EDGES_MS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)


class _Stats:
    def __init__(self) -> None:
        self.iterations = 0
        self.busy_wall = 0.0
        self.busy_cpu = 0.0
        self.select_wall = 0.0
        self.ready = 0
        self.max_busy_ms = 0.0
        self.preempted = 0  # iterations whose wall time exceeded their CPU time by >= 1 ms
        self.preempted_s = 0.0
        n = len(EDGES_MS) + 1
        self.count = [0] * n
        self.wall_in_bin = [0.0] * n
        self.cpu_count = [0] * n

    def as_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "busy_wall_s": self.busy_wall,
            "busy_cpu_s": self.busy_cpu,
            "select_wall_s": self.select_wall,
            "ready_per_iteration": self.ready / self.iterations if self.iterations else None,
            "max_busy_ms": self.max_busy_ms,
            "preempted_iterations": self.preempted,
            "preempted_s": self.preempted_s,
            "edges_ms": list(EDGES_MS),
            "busy_wall_count": self.count,
            "busy_wall_s_in_bin": self.wall_in_bin,
            "busy_cpu_count": self.cpu_count,
        }


def _bin(ms: float) -> int:
    for i, edge in enumerate(EDGES_MS):
        if ms < edge:
            return i
    return len(EDGES_MS)


class _MeasuredSelector(selectors.DefaultSelector):
    """The default selector, timing the work done between two ``select`` calls."""

    def __init__(self, stats: _Stats) -> None:
        super().__init__()
        self._stats = stats
        self._left_wall: float | None = None
        self._left_cpu = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        wall, cpu = time.perf_counter(), time.thread_time()
        stats = self._stats
        if self._left_wall is not None:
            busy, busy_cpu = wall - self._left_wall, cpu - self._left_cpu
            stats.iterations += 1
            stats.busy_wall += busy
            stats.busy_cpu += busy_cpu
            ms = busy * 1e3
            stats.max_busy_ms = max(stats.max_busy_ms, ms)
            i = _bin(ms)
            stats.count[i] += 1
            stats.wall_in_bin[i] += busy
            stats.cpu_count[_bin(busy_cpu * 1e3)] += 1
            if busy - busy_cpu >= 1e-3:
                stats.preempted += 1
                stats.preempted_s += busy - busy_cpu
        ready: list[Any] = super().select(timeout)
        self._left_wall, self._left_cpu = time.perf_counter(), time.thread_time()
        stats.select_wall += self._left_wall - wall
        stats.ready += len(ready)
        return ready


class _Policy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, stats: _Stats) -> None:
        super().__init__()
        self._stats = stats

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(_MeasuredSelector(self._stats))


def main() -> int:
    out, script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    stats = _Stats()
    asyncio.set_event_loop_policy(_Policy(stats))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        Path(out).write_text(json.dumps(stats.as_dict(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
