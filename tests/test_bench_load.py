"""Smoke test of the bridge load benchmark: two calls for a moment through each server.

No timing assertions (the benchmark prints figures); this only proves that one run of the
orchestrator, the load generator and both servers produces figures for both servers."""

from __future__ import annotations

import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.load_runs as load_runs
from benchmarks.load_report import best_rows, combine, markdown, paired_ratios, variants_table
from benchmarks.load_runs import PortTaken, free_port, run_one

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: the benchmark runs for real (server and load-generator processes).
pytestmark = pytest.mark.slow


def test_two_calls_through_bridge_and_relay(tmp_path: Path) -> None:
    """The bridge with its event loop measured (``--loop-stats``), both pinned (``--pin``)."""
    cpu = min(os.sched_getaffinity(0))
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                run_one,
                kind,
                2,
                1.5,
                0.5,
                None,
                loop_stats_dir=tmp_path if kind == "bridge" else None,
                pin=(cpu, cpu),
            )
            for kind in ("bridge", "relay")
        ]
        bridge, relay = (f.result(timeout=120) for f in futures)
    # Its loop, cut to the load generator's window (one system-wide monotonic clock).
    assert bridge["loop_iterations"] > 0 and 0 < bridge["loop_busy_share"] < 1
    assert 0 < bridge["loop_wait99_ms"] <= bridge["loop_longest_ms"]
    assert set(bridge["loop_gc"]) == {"0", "1", "2"}
    assert "loop_iterations" not in relay
    for result in (bridge, relay):
        # Every message counted at the other ends: at least the media both ways.
        assert result["server_messages"] >= result["up_frames"] + result["down_frames"]
        assert result["server_cpu_us_per_message"] is not None
        assert result["loadgen_lag_p99_ms"] is not None
        assert result["server_user_s"] + result["server_sys_s"] == pytest.approx(
            result["server_cpu_s"], abs=0.002
        )
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


def test_free_ports_are_never_handed_out_twice_and_avoid_the_ephemeral_range() -> None:
    """Client connections take local ports from the ephemeral range; a port picked there could
    be gone before its server binds it (the CI failure this guards: the simulator's port)."""
    low = load_runs._ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    if low > 12000:
        assert all(10000 <= port < low for port in ports)


def test_a_run_whose_port_is_taken_is_tried_again_on_fresh_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator's port is held by someone else: the load generator cannot bind it, and the
    run goes again on fresh ports instead of failing the benchmark."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real = load_runs.free_port
        picks = iter([real(), taken])  # the server's port, then the simulator's

        def pick() -> int:
            return next(picks, None) or real()

        monkeypatch.setattr(load_runs, "free_port", pick)
        result = run_one("relay", 1, 1.0, 0.3, None)
    assert result["calls"] == 1 and result["up_frames"] > 0


def test_a_port_taken_every_time_fails_after_the_last_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[str] = []

    def always_taken(kind: str, *_args: object) -> dict[str, object]:
        attempts.append(kind)
        raise PortTaken("address already in use")

    monkeypatch.setattr(load_runs, "_run_once", always_taken)
    with pytest.raises(PortTaken):
        run_one("relay", 1, 1.0, 0.3, None)
    assert attempts == ["relay"] * load_runs.PORT_ATTEMPTS


def fake_round(**figures: object) -> dict[str, object]:
    """One round's result as ``run_one`` gives it: these defaults, with ``figures`` set."""
    row: dict[str, object] = {
        "calls": 10,
        "server_cpu_per_call_min": 0.2,
        "server_cpu_us_per_frame": 20.0,
        "up_p50_ms": 1.0,
        "up_p99_ms": 2.0,
        "down_p50_ms": 1.0,
        "down_p99_ms": 2.0,
        "barge_p50_ms": 1.0,
        "barge_p99_ms": 3.0,
        "barge_ins": 4,
        "loadgen_core_share": 0.2,
        "server_core_share": 0.1,
        "up_frames": 1000,
        "expected_up_frames": 1000,
        "down_frames": 500,
        "closed_early": 0,
        "sim_errors": {},
    }
    row.update(figures)
    return row


def test_repeats_are_combined_by_median_and_ratios_paired_by_round() -> None:
    """``--repeat``: figures are medians of the rounds, ratios medians of per-round ratios."""

    def run(cpu: float, frames: int) -> dict[str, object]:
        return fake_round(
            server_cpu_per_call_min=cpu,
            server_cpu_us_per_frame=cpu * 100,
            up_frames=frames,
            expected_up_frames=frames,
            down_frames=frames // 2,
        )

    # Round 2 ran on a slow minute: both servers slower; the paired ratio does not move.
    bridge = combine([run(0.22, 1000), run(0.44, 1000), run(0.24, 1002)])
    relay = combine([run(0.20, 1000), run(0.40, 1000), run(0.20, 1000)])
    assert bridge["server_cpu_per_call_min"] == 0.24
    assert bridge["up_frames"] == 1000 and bridge["repeats"] == 3
    assert type(bridge["up_frames"]) is int
    assert paired_ratios(bridge, relay, "server_cpu_per_call_min") == [
        0.22 / 0.20,
        0.44 / 0.40,
        0.24 / 0.20,
    ]
    text = markdown([bridge], [relay], "test", "test machine", None)
    assert "1.10x (1.10-1.20)" in text  # the median of the paired ratios, then their range
    assert "median of its rounds" in text


def test_the_cpu_goal_is_judged_at_equal_traffic_only() -> None:
    """With the realistic script the bridge answers what the relay drops (more messages), so
    the CPU row shows the figure and the traffic ratio, and no verdict; with the matched
    script it is PASS or FAIL."""

    def rows(script: str, cpu: float, messages: int) -> list[dict[str, object]]:
        return [combine([fake_round(script=script, server_cpu_per_call_min=cpu,
                                    server_messages=messages)])]  # fmt: skip

    realistic = markdown(
        rows("realistic", 0.24, 1180), rows("realistic", 0.20, 1000), "t", "m", None
    )
    assert (
        "| bridge CPU per call-minute <= 1.10x the relay (worst N) | 1.20x |"
        " judged with --script matched (here the bridge carries 1.18x the relay's messages) |"
    ) in realistic
    for cpu, verdict in ((0.21, "PASS"), (0.23, "FAIL")):
        matched = markdown(rows("matched", cpu, 1010), rows("matched", 0.20, 1000), "t", "m", None)
        assert (
            f"| bridge CPU per call-minute <= 1.10x the relay (worst N) | {cpu / 0.20:.2f}x |"
            f" {verdict} |"
        ) in matched


def test_the_load_generator_runs_on_uvloop_when_asked() -> None:
    pytest.importorskip("uvloop")  # the 'bench' extra; CI installs only 'dev'
    result = run_one("relay", 2, 1.0, 0.5, None, loadgen_loop="uvloop")
    assert result["loadgen_loop"] == "uvloop"
    assert result["closed_early"] == 0 and result["violations"] == 0
    assert result["up_frames"] > 0 and result["down_frames"] > 0


def test_least_disturbed_rounds_take_each_figure_at_its_lowest() -> None:
    def run(cpu: float, p99: float) -> dict[str, object]:
        return fake_round(
            calls=150,
            server_cpu_per_call_min=cpu,
            server_cpu_us_per_frame=cpu * 200,
            server_cpu_us_per_message=cpu * 100,
            up_p50_ms=0.5,
            up_p99_ms=p99,
            down_p99_ms=p99 + 1,
            barge_p99_ms=p99,
            loadgen_core_share=0.6,
            server_core_share=0.4,
        )

    # The bridge's quiet round had the higher p99 of its two: each figure is taken on its own.
    bridge = combine([run(0.30, 3.0), run(0.20, 8.0)])
    relay = combine([run(0.18, 2.0), run(0.25, 6.0)])
    (best_b,), (best_r,) = best_rows([bridge]), best_rows([relay])
    assert best_b["server_cpu_per_call_min"] == 0.20 and best_b["up_p99_ms"] == 3.0
    assert best_r["server_cpu_per_call_min"] == 0.18 and best_r["down_p99_ms"] == 3.0
    assert paired_ratios(best_b, best_r, "server_cpu_per_call_min") == [0.20 / 0.18]
    assert bridge["runs"][1]["up_p99_ms"] == 8.0  # the rows themselves are untouched
    text = markdown([bridge], [relay], "test", "test machine", None)
    assert "#### Least-disturbed rounds" in text
    assert "| 150 | 1.11x |" in text  # 0.20 / 0.18
    assert "bridge 150, relay 150" in text  # best p99s 3.0 / 4.0 ms on both sides
    table = variants_table({"bridge": [bridge], "relay": [relay]}, ["bridge", "relay"])
    assert "| bridge | 150 | 0.250 |" in table and "1.67x, 0.80x" in table


def test_the_matched_script_has_no_typed_text_and_no_silent_reply() -> None:
    """``--script matched``: only what a bare relay handles like the bridge."""
    from benchmarks.loadgen import (
        call_script,
        matched_reply_source,
        parse_args,
        reply_source,
    )
    from realtime_fsm.testing import ReplyContext, Speak, TypeText

    realistic = call_script(0.0, 30.0)
    matched = call_script(0.0, 30.0, typed=False)
    assert any(isinstance(step, TypeText) for step in realistic)
    assert all(isinstance(step, Speak) for step in matched)
    assert [s for s in realistic if isinstance(s, Speak)] == list(matched)

    def ctx(number: int) -> ReplyContext:
        return ReplyContext("resp_1", 0, number, "server_vad", False, "", None, None)

    assert any(reply_source(ctx(n)).faults is not None for n in range(1, 9))
    assert all(matched_reply_source(ctx(n)).faults is None for n in range(1, 9))
    args = ["--calls", "1", "--url", "ws://127.0.0.1:1/x", "--sim-port", "2", "--server-pid", "3"]
    assert parse_args(args).script == "realistic"
    assert parse_args([*args, "--script", "matched"]).script == "matched"
