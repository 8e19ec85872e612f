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

This module is the command line; the workload is in ``core_workload.py``, the measurements in
``core_measure.py``, the sections and their tables in ``core_report.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.core_measure import check_same_commands, profile_cycle
from benchmarks.core_report import (
    load,
    machine_info,
    section_cycles,
    section_events,
    section_gc,
    section_goals,
    section_memory,
)
from benchmarks.dict_table import DictTableLifecycle, StockTransitionsLifecycle
from realtime_fsm import ResponseLifecycle


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
