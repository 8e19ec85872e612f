"""Smoke test of the bridge load benchmark: two calls for a moment through each server.

No timing assertions (the benchmark prints figures); this only proves that one run of the
orchestrator, the load generator and both servers produces figures for both servers."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_load import markdown, run_one


def test_two_calls_through_bridge_and_relay() -> None:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_one, kind, 2, 1.5, 0.5, None) for kind in ("bridge", "relay")]
        bridge, relay = (f.result(timeout=120) for f in futures)
    for result in (bridge, relay):
        assert result["calls"] == 2
        assert result["closed_early"] == 0
        assert result["violations"] == 0
        assert result["up_frames"] > 0  # stamped caller frames reached the simulator
        assert result["down_frames"] > 0  # the greeting's stamped audio reached the callers
        assert result["up_p99_ms"] is not None and result["down_p99_ms"] is not None
        assert result["server_cpu_s"] >= 0 and result["loadgen_cpu_s"] > 0
    text = markdown([bridge], [relay], "test", "test machine", None)
    assert "#### Example bridge" in text and "#### Bare relay" in text
    assert "| 2 |" in text
