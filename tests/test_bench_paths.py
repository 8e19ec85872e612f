"""Smoke test of the I/O-free path benchmark: both servers' reading loops run over the same
frames and every path produces a figure (no timing assertions: the benchmark prints figures)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_paths import (
    INTERLEAVED,
    PATHS,
    interleaved_report,
    measure,
    measure_interleaved,
    report,
)


def test_every_path_runs_and_reports() -> None:
    # measure() itself checks that every frame was forwarded and every mark echo accounted.
    results = measure(frames=300, rounds=2)
    assert set(results) == set(PATHS)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in results.values())
    text = report(results, down_per_up=0.45)
    assert "caller audio up" in text and "mark echo" in text and "mix:" in text


def test_interleaved_calls_each_forward_every_frame() -> None:
    """Five calls' loops stepped a frame at a time: measure_interleaved checks that each call
    forwarded all of its frames (up and down, bridge and relay)."""
    results = measure_interleaved(frames=250, rounds=2, calls=5)
    assert set(results) == set(INTERLEAVED)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in results.values())
    text = interleaved_report({5: results})
    assert text.splitlines()[-1].startswith("| 5 |")
