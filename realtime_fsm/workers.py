"""``realtime-fsm serve --workers N``: N server processes on one port, under one parent.

Each worker is a whole ``realtime-fsm serve`` process with its own event loop, binding the
port with ``SO_REUSEPORT``: the kernel spreads new connections over the workers (by a hash of
the connection's addresses and ports), so a call's webhook and its media stream may reach
different workers.  Nothing in a call needs another worker's memory: the stream's credential
(:mod:`realtime_fsm.credentials`) is verified by any worker with the same Twilio auth token, and
a stream that proves its webhook was admitted is served wherever it lands.  Capacity
(``--max-calls``) and ``/readyz`` are per worker.

The parent binds nothing and serves nothing; it:

* starts the workers (each in a session of its own, so a terminal's Ctrl-C reaches only the
  parent, which then drains them in order);
* restarts a worker that exits while the parent is not stopping (a worker drained by a
  SIGTERM of its own, or one that crashed), after a back-off when it keeps exiting at once;
  gives up (drains the others, exits 1) when a worker exits at once too many times in a row;
* on SIGTERM or SIGINT sends SIGTERM to every worker, which drains (``--drain-timeout``), and
  exits 0 once all exited 0; a second signal is forwarded too (the workers end their calls at
  once); a worker still alive well past its drain deadline is killed.

A worker whose parent is gone drains by itself (it watches its parent's pid).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from .drain import CLOSE_GRACE

log = logging.getLogger("realtime_fsm.workers")

#: A worker that exits sooner than this after it started "exited at once" (a port taken, a bad
#: flag): it is restarted after a back-off, and :data:`MAX_QUICK_EXITS` in a row stop all.
MIN_UPTIME = 5.0
MAX_QUICK_EXITS = 5
MAX_BACKOFF = 30.0
#: Seconds, beyond the drain deadline and its close grace, before a worker is killed.
KILL_MARGIN = 15.0
_TICK = 0.1


def worker_command(argv: Sequence[str], index: int, parent: int) -> list[str]:
    """The command line of worker ``index``: the parent's own flags, one worker, its index and
    the parent's pid (later flags win in ``argparse``)."""
    return [
        sys.executable,
        "-m",
        "realtime_fsm",
        "serve",
        *argv,
        "--workers",
        "1",
        "--worker-index",
        str(index),
        "--parent-pid",
        str(parent),
    ]


class _Slot:
    """One worker place: the process in it now, since when, and its quick exits in a row."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_exits = 0
        self.restart_at = 0.0


class Supervisor:
    """Starts, watches and drains ``workers`` worker processes (see the module's doc)."""

    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        drain_timeout: float,
        *,
        parent_pid: int,
        spawn: Callable[[list[str]], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.drain_timeout = drain_timeout
        self.parent_pid = parent_pid
        self.spawn = spawn or (lambda cmd: subprocess.Popen(cmd, start_new_session=True))
        self.slots = [_Slot(i) for i in range(workers)]
        #: Signals received: the first stops (drains every worker), each one is forwarded.
        self.signals = 0
        self._forwarded = 0
        self.failed = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def run(self) -> int:
        """Supervise until a signal (or a worker that cannot start); the exit status."""
        for slot in self.slots:
            self._start(slot)
        while not self.signals and not self.failed:
            self._watch()
            time.sleep(_TICK)
        return self._stop()

    def _start(self, slot: _Slot) -> None:
        cmd = worker_command(self.argv, slot.index, self.parent_pid)
        slot.process = self.spawn(cmd)
        slot.started = time.monotonic()
        log.info("worker=%d pid=%d started", slot.index, slot.process.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is None:
                if now >= slot.restart_at:
                    self._start(slot)
                continue
            code = process.poll()
            if code is None:
                continue
            uptime = now - slot.started
            slot.process = None
            slot.quick_exits = slot.quick_exits + 1 if uptime < MIN_UPTIME else 0
            if slot.quick_exits >= MAX_QUICK_EXITS:
                log.error(
                    "worker=%d exited with %d %d times in a row within %.0f s of starting;"
                    " stopping",
                    slot.index,
                    code,
                    slot.quick_exits,
                    MIN_UPTIME,
                )
                self.failed = True
                return
            delay = min(MAX_BACKOFF, 2.0 ** (slot.quick_exits - 1)) if slot.quick_exits else 0
            slot.restart_at = now + delay
            log.warning(
                "worker=%d pid=%d exited with %d after %.1f s; restarting%s",
                slot.index,
                process.pid,
                code,
                uptime,
                f" in {delay:.0f} s" if delay else "",
            )

    def _forward(self) -> None:
        while self._forwarded < max(1, self.signals):
            self._forwarded += 1
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.send_signal(signal.SIGTERM)

    def _stop(self) -> int:
        live = [s for s in self.slots if s.process is not None]
        log.info("stopping: draining %d workers", len(live))
        self._forward()
        deadline = time.monotonic() + self.drain_timeout + CLOSE_GRACE + KILL_MARGIN
        codes: dict[int, int] = {}
        while True:
            self._forward()  # a later signal: the workers end their calls now
            for slot in live:
                assert slot.process is not None
                code = slot.process.poll()
                if code is not None and slot.index not in codes:
                    codes[slot.index] = code
                    log.info("worker=%d pid=%d exited with %d", slot.index, slot.process.pid, code)
            if len(codes) == len(live):
                break
            if time.monotonic() >= deadline:
                for slot in live:
                    if slot.index not in codes and slot.process is not None:
                        log.error("worker=%d pid=%d did not drain: killed", *_ids(slot))
                        slot.process.kill()
                        codes[slot.index] = slot.process.wait()
                break
            time.sleep(_TICK)
        ok = not self.failed and all(code == 0 for code in codes.values())
        log.info("all workers stopped%s", "" if ok else " (not all cleanly)")
        return 0 if ok else 1


def _ids(slot: _Slot) -> tuple[int, int]:
    return slot.index, slot.process.pid if slot.process is not None else -1


#: Linux (5.14 and later): whether a closing listener's queued connections move to another
#: socket of its ``SO_REUSEPORT`` group instead of being reset.
_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def _check_migrate_req() -> None:
    """Warn when a worker that stops listening may reset connections queued for it: a
    connection the kernel gave a worker in the instant it closes its socket (the end of its
    drain) is reset unless ``net.ipv4.tcp_migrate_req`` is 1 (``docs/deploying.md``)."""
    try:
        with open(_MIGRATE_REQ) as f:
            value = f.read().strip()
    except OSError:
        return
    if value == "0":
        log.warning(
            "net.ipv4.tcp_migrate_req is 0: a connection arriving in the instant a worker"
            " stops listening is reset rather than handed to another worker; set it to 1"
        )


def run_workers(argv: Sequence[str], args: argparse.Namespace) -> int:
    """The ``--workers`` parent: ``argv`` are the ``serve`` flags as given."""
    import os

    if args.port == 0:
        log.error("--workers needs a fixed --port: with port 0 each worker would get its own")
        return 2
    _check_migrate_req()
    supervisor = Supervisor(argv, args.workers, args.drain_timeout, parent_pid=os.getpid())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.on_signal)
    log.info("starting %d workers on %s:%d (SO_REUSEPORT)", args.workers, args.host, args.port)
    return supervisor.run()
