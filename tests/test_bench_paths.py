"""Smoke test of the I/O-free path benchmark: both servers' reading loops run over the same
frames and every path produces a figure (no timing assertions: the benchmark prints figures)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest

from benchmarks.bench_paths import (
    INTERLEAVED,
    MARK_EVERY_MS,
    PATHS,
    count_report,
    counting,
    interleaved_report,
    measure,
    measure_interleaved,
    report,
    telemetry_report,
)

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: the benchmarks run for real (counted paths, telemetry on and off).
pytestmark = pytest.mark.slow


def test_every_path_runs_and_reports() -> None:
    # measure() itself checks that every frame was forwarded and every mark echo accounted.
    results = measure(frames=300, rounds=2)
    assert set(results) == set(PATHS)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in results.values())
    text = report(results, down_per_up=0.45)
    assert "caller audio up" in text and "mark echo" in text and "mix:" in text
    assert "mix:" in telemetry_report(results, down_per_up=0.45)


def test_interleaved_calls_each_forward_every_frame() -> None:
    """Five calls' loops stepped a frame at a time: measure_interleaved checks that each call
    forwarded all of its frames (up and down, bridge and relay)."""
    results = measure_interleaved(frames=250, rounds=2, calls=5)
    assert set(results) == set(INTERLEAVED)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in results.values())
    text = interleaved_report({5: results})
    assert text.splitlines()[-1].startswith("| 5 |")


def test_counted_paths_give_the_same_figures_every_run() -> None:
    """``--count``: bytecodes and calls per frame are exact, so two runs agree to the unit
    and a change to the per-frame path shows as a number, not as noise."""
    first = measure(200, 1, counting("opcode"))
    again = measure(200, 1, counting("opcode"))
    calls = measure(200, 1, counting("call"))
    assert first == again
    assert set(first) == set(PATHS) == set(calls)
    # The bridge does its own work on top of the same parsing and framing as the relay.
    assert first["down: bridge"][0] > first["down: relay"][0] > 0
    assert first["up: bridge"][0] > first["up: relay"][0] > 0
    text = count_report(first, calls)
    assert "assistant audio down" in text and "per echo" in text


def test_telemetry_on_costs_under_two_percent_per_frame_counted() -> None:
    """Telemetry on against off in the same run, in exact bytecodes: the per-frame paths make
    no metric call, so turning it on stays within 2% per frame up and down and for the mix
    (docs/observability.md).  The echoes' extra is the response's first echo, which records
    its time to first playback: once per response, not per echo."""
    frames = 1000
    counted = measure(frames, 1, counting("opcode"))
    for side in ("up", "down"):
        off, on = counted[f"{side}: bridge"][0], counted[f"{side}: bridge+telemetry"][0]
        assert off <= on <= off * 1.02, (side, off, on)
    echoes = frames * 20 // MARK_EVERY_MS
    off, on = counted["mark echo: bridge"][0], counted["mark echo: bridge+telemetry"][0]
    assert 0 < (on - off) * echoes < 2000, (off, on)
    text = telemetry_report(counted, down_per_up=0.45, unit="bytecodes")
    mix = float(text.splitlines()[-1].split("|")[4])
    assert 1.0 <= mix <= 1.02, text
