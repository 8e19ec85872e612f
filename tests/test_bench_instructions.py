"""The instruction-count benchmark: its parsing of cachegrind files and its arithmetic, and,
where valgrind is installed, one real (tiny) run of the relay under it."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_instructions
from benchmarks.bench_instructions import (
    Profile,
    markdown,
    measure,
    read_cachegrind,
    steady_cost,
)
from benchmarks.load_runs import server_command

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: the benchmark runs for real (servers under valgrind when present).
pytestmark = pytest.mark.slow

CACHEGRIND = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
cmd: /usr/bin/python examples/twilio_bridge.py --port 1
events: Ir
fl=./Python/ceval.c
fn=_PyEval_EvalFrameDefault
10 {eval}
11 5
fl=./Modules/_json.c
fn=scanstring_unicode
0 {scan}
fl=./Include/internal/pycore_frame.h
fn=_PyEval_EvalFrameDefault
20 3
fl=???
fn=???
0 7
summary: {total}
"""


def _write(tmp_path: Path, name: str, eval_: int, scan: int) -> Path:
    path = tmp_path / name
    total = eval_ + 5 + scan + 3 + 7
    path.write_text(CACHEGRIND.format(eval=eval_, scan=scan, total=total))
    return path


def test_reads_totals_and_functions(tmp_path: Path) -> None:
    profile = read_cachegrind(_write(tmp_path, "a", 100, 40))
    assert profile.total == 155
    # The eval loop's lines inlined from a header count for the eval loop.
    assert profile.by_function == Counter(
        {"_PyEval_EvalFrameDefault": 108, "scanstring_unicode": 40, "???": 7}
    )
    assert sum(profile.by_function.values()) == profile.total


def test_refuses_files_it_cannot_read(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_text(CACHEGRIND.split("summary")[0].format(eval=1, scan=1))
    with pytest.raises(ValueError, match="no summary"):
        read_cachegrind(cut)
    other = tmp_path / "other"
    other.write_text("events: Dr Dw\nsummary: 1 2\n")
    with pytest.raises(ValueError, match="counting Ir"):
        read_cachegrind(other)


def _run(messages: int, seconds: float, calls: int = 10) -> dict[str, object]:
    return {"server_messages": messages, "window_s": seconds, "calls": calls}


def test_steady_cost_is_the_difference_of_the_two_runs() -> None:
    short = Profile(1_000_000, Counter({"a": 600_000, "b": 400_000}))
    long = Profile(4_000_000, Counter({"a": 2_100_000, "b": 1_900_000}))
    cost = steady_cost(short, long, _run(1_000, 10.0), _run(4_000, 40.0))
    # 3,000,000 instructions for 3,000 more messages and 10 calls x 30 s more.
    assert cost.per_message == 1_000
    assert cost.per_call_minute == 3_000_000 / 5.0
    assert cost.by_function == {"a": 500.0, "b": 500.0}
    with pytest.raises(ValueError, match="more messages"):
        steady_cost(short, long, _run(4_000, 10.0), _run(4_000, 40.0))
    with pytest.raises(ValueError, match="more messages"):
        steady_cost(long, short, _run(1_000, 10.0), _run(4_000, 40.0))


def test_markdown_gives_the_ratios_and_the_functions_that_differ() -> None:
    relay = steady_cost(
        Profile(0, Counter()),
        Profile(1_000_000, Counter({"eval": 600_000, "json": 400_000})),
        _run(0, 0.0),
        _run(1_000, 60.0, calls=1),
    )
    bridge = steady_cost(
        Profile(0, Counter()),
        Profile(1_210_000, Counter({"eval": 800_000, "json": 410_000})),
        _run(0, 0.0),
        _run(1_100, 60.0, calls=1),
    )
    results = [
        {
            "server": "bridge",
            "script": "realistic",
            "cost": bridge,
            "core_share": 0.95,
            "violations": 0,
        },
        {
            "server": "relay",
            "script": "realistic",
            "cost": relay,
            "core_share": 0.4,
            "violations": 0,
        },
    ]
    text = markdown(results, top=5, command="cmd", where="here")
    assert "**realistic: bridge / relay**: 1.100x per message, 1.210x per call-minute" in text
    assert "may not have kept pace" in text  # the bridge's 95% of a core
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `eval` |") and rows[0].endswith("| +127 |")


def test_the_wrapper_goes_before_the_interpreter() -> None:
    cmd = server_command("relay", 1, 2, None, Path("."), wrapper=("valgrind", "--tool=x"))
    assert cmd[:3] == ["valgrind", "--tool=x", sys.executable]


def test_without_valgrind_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_instructions.shutil, "which", lambda name: None)
    assert bench_instructions.main(["--calls", "1"]) == 2


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_a_real_run_counts_the_relays_steady_state(tmp_path: Path) -> None:
    result = measure("relay", 1, "matched", (1.0, 3.0), 0.5, tmp_path, "asyncio", None)
    cost = result["cost"]
    # One call: 50 frames a second up, the AI's audio down; every one costs thousands of
    # instructions of parsing and framing, and the interpreter runs most of them.
    assert cost.messages > 60
    assert 5_000 < cost.per_message < 5_000_000
    top = max(cost.by_function, key=cost.by_function.__getitem__)
    assert top == "_PyEval_EvalFrameDefault"
