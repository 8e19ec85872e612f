"""``realtime-fsm demo``: three calls told in plain words, each log line printed once.

Run as a user runs it (``python -m realtime_fsm demo``, a process of its own):

* without ``-v``, stdout tells the three calls (spoken barge-in, typed barge-in, silent answer)
  with no protocol names and no log lines, and the summary says OK for each;
* with ``-v``, the bridge's log goes to stderr, each record once (it used to be printed twice:
  the demo's own handler echoed the tagged lines and the root handler printed them again), and
  shows the typed text (the demo turns ``log_caller_content`` on: a simulated caller).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Words of the protocols and the log that mean nothing to someone new to the library.
JARGON = re.compile(
    r"response\.(create|cancel|done)|twilio_clear|\[(TEXT_BARGE_IN|BARGE_IN|NO_AUDIO_WATCHDOG)\]"
    r"|resp_|item_|transcript_deltas|state="
)


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "realtime_fsm", "demo", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_demo_tells_three_calls_in_plain_words() -> None:
    result = demo()
    out = result.stdout
    story, _, hint = out.partition("\nRun with -v")
    assert JARGON.search(story) is None, JARGON.search(story)
    for title in (
        "Call 1: the caller talks over the assistant",
        "Call 2: the caller types a message while the assistant speaks",
        "Call 3: OpenAI sends an answer with no sound",
    ):
        assert out.count(title) == 1, title
    flat = " ".join(story.split())  # the story is wrapped for the terminal
    assert "the caller starts talking over the assistant" in flat
    assert "The bridge tells OpenAI the caller heard only the first" in flat
    assert 'The caller types: "Sorry, can I ask something first?"' in flat
    assert "watchdog stops that answer and asks OpenAI for it again" in flat
    for call in ("Call 1", "Call 2", "Call 3"):
        assert re.search(rf"^  {call}, .*: OK ", out, re.MULTILINE), call
    assert "Finished in" in out and out.count(": OK") >= 4
    assert "[TEXT_BARGE_IN]" in hint  # where to look in a production log
    lines = [line for line in story.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), "a line printed twice"
    assert result.stderr == ""


@pytest.mark.slow
def test_demo_verbose_prints_each_log_line_once() -> None:
    result = demo("-v")
    out, err = result.stdout, result.stderr
    assert "[TEXT_BARGE_IN]" not in out and "INFO" not in out  # the story stays on stdout
    # Each of these happens once in the demo, so a second copy would be a double print.
    for once in (
        "[TEXT_BARGE_IN] Flow complete:",
        "[NO_AUDIO_WATCHDOG] FIRED!",
        "[NO_AUDIO_WATCHDOG] Recovery result: success",
        "[TEXT_BARGE_IN] detected -> text=",
    ):
        assert err.count(once) == 1, (once, err)
    # The demo's caller is simulated: its log shows what was typed.
    assert re.search(r"\[TEXT_BARGE_IN\] detected -> text='[^'<]+'", err), err
    assert "Call 1: the caller talks over the assistant" in out


@pytest.mark.slow
def test_demo_trace_dir_gives_traces_that_replay_clean(tmp_path: Path) -> None:
    """``demo --trace-dir`` is how the docs tell someone with no phone number or API key to
    get real traces: one per call, listed in call order, each clean under ``replay``, and one
    drawn with ``--html`` as the output suggests."""
    traces = tmp_path / "traces"
    out = demo("--trace-dir", str(traces)).stdout
    written = sorted(traces.glob("*.jsonl"))
    assert len(written) == 3, out
    listed = re.findall(r"^  Call (\d): (\S+\.jsonl)$", out, re.MULTILINE)
    assert [number for number, _ in listed] == ["1", "2", "3"], out
    assert sorted(Path(path) for _, path in listed) == written
    assert f"realtime-fsm replay {traces}/*.jsonl" in out
    page = tmp_path / "call.html"
    replay = subprocess.run(
        [sys.executable, "-m", "realtime_fsm", "replay", *map(str, written)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.count(": ok") == 3
    drawn = subprocess.run(
        [sys.executable, "-m", "realtime_fsm", "replay", listed[0][1], "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert drawn.returncode == 0, drawn.stderr
    words = " ".join(re.sub(r"<[^>]+>", " ", page.read_text()).split())
    assert "Barge-ins 1" in words  # call 1: the caller talks over the greeting
