"""The README's demo script must keep working and keep printing the seed's flow lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_seed_scenarios_script_prints_the_flow_lines() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_scenarios.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The script logs caller content (the switch on): the seed's line shows the typed text.
    assert "[TEXT_BARGE_IN] detected -> text='שלום'" in result.stdout, result.stdout
    out = result.stdout
    assert (
        "[TEXT_BARGE_IN] Flow complete: detected -> cancel -> twilio_clear -> response.done"
        " -> response.create" in out
    )
    assert "[NO_AUDIO_WATCHDOG] FIRED! resp=resp_abc123 transcript_deltas=3 audio_deltas=0" in out
    assert "[NO_AUDIO_WATCHDOG] Recovery result: success" in out
    assert "scenario 1: ok; scenario 2: ok" in out
