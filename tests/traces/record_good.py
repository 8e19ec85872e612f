"""Re-record the shipped ``good-*.jsonl`` traces from the real bridge and the simulator.

    python tests/traces/record_good.py

Runs end-to-end scenarios of ``tests/test_e2e.py`` (their own assertions included) with the
server's ``trace_dir`` set, checks that each trace replays clean, and writes it here with the
per-frame audio lines (Twilio ``media`` and ``mark`` both ways, ``input_audio_buffer.append``)
left out to keep the repository small.  Nothing the checker reads is removed: the OpenAI audio
deltas, which the watchdog rule counts, stay.  ``tests/test_trace.py`` replays full,
unfiltered traces of every scenario on each run.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_trace import E2E_CASES, record_e2e  # noqa: E402

from realtime_fsm.replay import check_file  # noqa: E402

#: Which scenarios are shipped, under which name.
SHIPPED = {
    "barge_in_storm-server_creates": "good-barge-in-storm.jsonl",
    "silent_response_watchdog": "good-silent-response-watchdog.jsonl",
    "server_quiet_after_create": "good-server-quiet-after-create.jsonl",
    "server_quiet_after_cancel": "good-server-quiet-after-cancel.jsonl",
    "cancel_acknowledged_after_timeout": "good-cancel-acknowledged-late.jsonl",
    "duplicated_and_late_events-app_creates": "good-duplicated-and-late-events.jsonl",
    "hang_up_after_typing": "good-hang-up-after-typing.jsonl",
}
AUDIO_ONLY = frozenset({"media", "mark", "input_audio_buffer.append"})


class _Caplog:
    """What the e2e tests use of pytest's ``caplog``."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = self.records.append  # type: ignore[method-assign]
        logging.getLogger().addHandler(handler)

    def set_level(self, level: int, logger: str | None = None) -> None:
        logging.getLogger(logger).setLevel(level)


def main() -> int:
    for case in E2E_CASES:
        target = SHIPPED.get(case.id)
        if target is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = record_e2e(case, Path(tmp), _Caplog())
            violations, _ = check_file(path)
            if violations:
                for v in violations:
                    print(v.format(str(path)))
                return 1
            kept: list[str] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                record: dict[str, Any] = json.loads(line)
                if record.get("type") not in AUDIO_ONLY:
                    kept.append(line)
        out = HERE / target
        out.write_text("\n".join(kept) + "\n", encoding="utf-8")
        violations, _ = check_file(out)
        print(f"{out.name}: {len(kept)} lines, {len(violations)} violations")
        if violations:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
