"""The ``serve`` command's flags and the ``--workers`` parent's decisions, without processes:
the parent is driven with fake worker processes (the real ones: ``test_serve_process.py``)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from realtime_fsm import workers
from realtime_fsm.cli import main
from realtime_fsm.serve_command import build_config, parse_args
from realtime_fsm.workers import Supervisor, worker_command

PUBLIC_URL = "https://voice.example.com"


class FakeProcess:
    """A worker that exits with ``code`` after ``lives`` polls, or on SIGTERM with 0."""

    pids = 100

    def __init__(self, lives: int | None, code: int = 1) -> None:
        FakeProcess.pids += 1
        self.pid = FakeProcess.pids
        self.lives = lives
        self.code = code
        self.signals: list[int] = []
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.lives is not None:
            self.lives -= 1
            if self.lives <= 0:
                self.returncode = self.code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.returncode = 0

    def kill(self) -> None:
        self.returncode = -9

    def wait(self) -> int:
        return self.returncode if self.returncode is not None else -9


def test_worker_commands_carry_the_parents_flags_and_one_worker_each() -> None:
    command = worker_command(
        ["--public-url", PUBLIC_URL, "--workers", "4", "--port", "9000"], 2, 77
    )
    assert command[1:4] == ["-m", "realtime_fsm", "serve"]
    args = parse_args(command[4:])
    assert (args.workers, args.worker_index, args.parent_pid, args.port) == (1, 2, 77, 9000)


def test_serve_flags_map_onto_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    flags = ["--max-calls", "7", "--drain-timeout", "12.5", "--when-unavailable", "busy"]
    args = parse_args(["--public-url", PUBLIC_URL, *flags])
    config = build_config(args)
    assert (config.max_calls, config.drain_timeout, config.when_unavailable) == (7, 12.5, "busy")
    assert build_config(parse_args(["--public-url", PUBLIC_URL])).max_calls is None
    monkeypatch.setenv("PUBLIC_URL", PUBLIC_URL)
    assert parse_args([]).public_url == PUBLIC_URL
    for bad in (["--max-calls", "0"], ["--drain-timeout", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_serve_needs_a_public_url_and_workers_a_fixed_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2 and "--public-url" in capsys.readouterr().err
    assert main(["serve", "--public-url", PUBLIC_URL, "--port", "0", "--workers", "2"]) == 2


def supervise(supervisor: Supervisor, stop_after: float | None) -> int:
    if stop_after is not None:
        timer = threading.Timer(stop_after, supervisor.on_signal, (signal.SIGTERM, None))
        timer.start()
    return supervisor.run()


def test_a_worker_that_exits_is_replaced_and_a_signal_drains_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers, "MIN_UPTIME", 0.1)  # its exit after 0.3 s is not "at once"
    spawned: list[FakeProcess] = []

    def spawn(command: list[str]) -> FakeProcess:
        # The first worker exits by itself after a while (one drained on its own): replaced.
        process = FakeProcess(lives=3 if not spawned else None, code=0)
        spawned.append(process)
        return process

    supervisor = Supervisor(["--port", "9000"], 2, 30.0, parent_pid=1, spawn=spawn)  # type: ignore[arg-type]
    assert supervise(supervisor, stop_after=1.0) == 0
    assert len(spawned) == 3  # two workers, and the replacement
    assert spawned[0].signals == []  # it exited by itself
    assert all(p.signals == [signal.SIGTERM] for p in spawned[1:])


def test_a_worker_that_keeps_exiting_at_once_stops_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers, "MAX_BACKOFF", 0.01)
    spawned: list[FakeProcess] = []

    def spawn(command: list[str]) -> FakeProcess:
        index = int(command[command.index("--worker-index") + 1])
        process = FakeProcess(lives=1 if index == 1 else None, code=3)
        spawned.append(process)
        return process

    started = time.monotonic()
    supervisor = Supervisor([], 2, 30.0, parent_pid=1, spawn=spawn)  # type: ignore[arg-type]
    assert supervise(supervisor, stop_after=None) == 1
    assert time.monotonic() - started < 10
    crashed = [p for p in spawned if p.returncode == 3]
    assert len(crashed) == workers.MAX_QUICK_EXITS
    # The healthy worker was drained, not left running.
    assert [p.signals for p in spawned if p.returncode != 3] == [[signal.SIGTERM]]
