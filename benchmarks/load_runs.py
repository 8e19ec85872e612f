"""One run of the bridge load benchmark (``bench_load``): a server process (the example bridge
or the bare relay) and the load generator's process (``loadgen.py``), each on a loopback port
of its own and optionally pinned to a CPU, and the server's event-loop figures cut to the
steady window.

Kept apart from the report so that ``bench_instructions`` runs the same processes under
valgrind, and the smoke tests run one for real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.loop_stats import read_iterations

ROOT = Path(__file__).resolve().parent.parent
GREETING = "Greet the caller briefly."


def server_command(
    kind: str,
    port: int,
    sim_port: int,
    profile: Path | None,
    root: Path,
    extra: tuple[str, ...] = (),
    loop_stats: Path | None = None,
    wrapper: tuple[str, ...] = (),
) -> list[str]:
    """The server's command line; ``wrapper`` goes before the interpreter (``valgrind ...``
    for ``bench_instructions``: it runs the program in the same process, so the pid the load
    generator reads the CPU of is still the server's)."""
    bridge = root / "examples/twilio_bridge.py"
    script = str(bridge if kind == "bridge" else ROOT / "benchmarks/relay.py")
    cmd = [*wrapper, sys.executable]
    if profile is not None:
        cmd += ["-m", "benchmarks.profile_server", str(profile)]
    elif loop_stats is not None:
        # By path: with --server-root, ``benchmarks`` may resolve to the other tree's.
        cmd += [str(ROOT / "benchmarks/loop_stats.py"), str(loop_stats)]
    cmd += [
        script,
        "--port",
        str(port),
        "--public-url",
        f"http://127.0.0.1:{port}",
        "--realtime-url",
        f"ws://127.0.0.1:{sim_port}/v1/realtime",
        "--accept-text-messages",
        "--greeting",
        GREETING,
        "--log-level",
        "WARNING",
        *extra,
    ]
    return cmd


_PORTS_GIVEN: set[int] = set()
_PORTS_LOCK = threading.Lock()
_PORT_RNG = random.Random()
PORT_ATTEMPTS = 3
#: Lower case: asyncio's ``create_server`` lowers the strerror in its message.
ADDRESS_IN_USE = os.strerror(errno.EADDRINUSE).lower()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port for a server to bind a moment later.

    A port from ``bind(0)`` is free only until someone else takes it: the load generator's
    hundreds of client connections draw their local ports from the same ephemeral range, and
    the smoke test starts two runs at once.  So ports are picked below that range when there
    is room (no ``connect`` or ``bind(0)`` hands those out) and never twice in this process.
    """
    low = _ephemeral_low()
    with _PORTS_LOCK:
        for _ in range(200):
            if low > 12000:
                port = _PORT_RNG.randrange(10000, low)
            else:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = int(s.getsockname()[1])
            if port in _PORTS_GIVEN:
                continue
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _PORTS_GIVEN.add(port)
            return port
    raise RuntimeError("no free loopback port found")


class PortTaken(RuntimeError):
    """A server of the run could not bind its port: taken between the pick and the bind."""


def run_one(
    kind: str,
    calls: int,
    duration: float,
    warmup: float,
    profile_dir: Path | None,
    root: Path = ROOT,
    bridge_args: tuple[str, ...] = (),
    loadgen_loop: str = "asyncio",
    loop_stats_dir: Path | None = None,
    pin: tuple[int, int] | None = None,
    script: str = "realistic",
    wrapper: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One run: a server process and the load generator's, each pinned to a CPU of its own
    when ``pin`` is ``(server_cpu, loadgen_cpu)``; tried again on fresh ports if a port was
    taken before its server bound it.  ``wrapper``: see :func:`server_command`."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return _run_once(
                kind,
                calls,
                duration,
                warmup,
                profile_dir,
                root,
                bridge_args,
                loadgen_loop,
                loop_stats_dir,
                pin,
                script,
                wrapper,
            )
        except PortTaken as exc:
            if attempt == PORT_ATTEMPTS:
                raise
            print(f"[{kind} N={calls}] {exc}: again on fresh ports", file=sys.stderr)
    raise AssertionError("unreachable")


def _run_once(
    kind: str,
    calls: int,
    duration: float,
    warmup: float,
    profile_dir: Path | None,
    root: Path,
    bridge_args: tuple[str, ...],
    loadgen_loop: str,
    loop_stats_dir: Path | None,
    pin: tuple[int, int] | None,
    script: str,
    wrapper: tuple[str, ...],
) -> dict[str, Any]:
    port, sim_port = free_port(), free_port()
    profile = profile_dir / f"{kind}-{calls}.prof" if profile_dir is not None else None
    loop_stats = None
    if loop_stats_dir is not None:
        loop_stats = loop_stats_dir / f"{kind}-{calls}-{time.monotonic_ns()}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = _spawn(
        None if pin is None else pin[0],
        server_command(
            kind,
            port,
            sim_port,
            profile,
            root,
            bridge_args if kind == "bridge" else (),
            loop_stats,
            wrapper,
        ),
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(root), str(ROOT)]))},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        loadgen = _run(
            None if pin is None else pin[1],
            [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "--calls",
                str(calls),
                "--url",
                f"ws://127.0.0.1:{port}/media-stream",
                "--sim-port",
                str(sim_port),
                "--server-pid",
                str(server.pid),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--loop",
                loadgen_loop,
                "--script",
                script,
            ],
            timeout=duration + warmup + calls / 10 + 120,
            cwd=ROOT,
            env=env,
        )
    finally:
        server.terminate()
        try:
            _out, server_err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _out, server_err = server.communicate()
    if loadgen.returncode != 0 or not loadgen.stdout.strip():
        message = (
            f"loadgen for {kind} N={calls} failed:\n{loadgen.stderr[-3000:]}\n"
            f"server:\n{(server_err or '')[-3000:]}"
        )
        taken = [
            line.strip()
            for line in f"{loadgen.stderr}\n{server_err}".splitlines()
            if ADDRESS_IN_USE in line.lower()
        ]
        if taken:
            # The one line for the retry's notice; both processes' output as its cause, so
            # that a last attempt's failure still shows everything.
            raise PortTaken(taken[-1]) from RuntimeError(message)
        raise RuntimeError(message)
    result: dict[str, Any] = json.loads(loadgen.stdout.strip().splitlines()[-1])
    result["server"] = kind
    frames = result["up_frames"] + result["down_frames"]
    result["server_cpu_us_per_frame"] = result["server_cpu_s"] * 1e6 / frames if frames else None
    result["server_log_lines"] = len([x for x in (server_err or "").splitlines() if x.strip()])
    if loop_stats is not None and loop_stats.exists():
        lo, hi = result["window_monotonic"]
        result.update(loop_figures(loop_stats, (lo, hi)))
    return result


def _spawn(cpu: int | None, cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``cmd``, then pin it to ``cpu`` by its pid (a ``preexec_fn`` is not safe with
    threads, and the smoke test starts runs from two)."""
    proc: subprocess.Popen[str] = subprocess.Popen(cmd, **kwargs)
    if cpu is not None:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(proc.pid, {cpu})
    return proc


def _run(
    cpu: int | None, cmd: list[str], *, timeout: float, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=...)``, pinned."""
    proc = _spawn(cpu, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


#: Upper edges of the iteration-length bins in the loop figures, in ms (the last bin is open).
LOOP_EDGES_MS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def loop_figures(path: Path, window: tuple[float, float]) -> dict[str, Any]:
    """The server's event loop over the steady window, from what ``loop_stats.py`` recorded.

    ``loop_wait99_ms``: the iteration length that 99% of the busy time stays under, i.e. how
    long the iteration under way can be when a frame arrives at a random busy moment;
    ``loop_busy_share_over_ms``: the share of the busy time in iterations of at least each
    :data:`LOOP_EDGES_MS`; ``loop_preempted``: the share of the busy wall time spent without
    a core; ``loop_gc``: the garbage collections per generation, their total and longest."""
    iterations, collections = read_iterations(path)
    lo, hi = window
    rows = [r for r in iterations if lo <= r[0] <= hi]
    busy = sum(r[1] for r in rows)
    busy_cpu = sum(r[2] for r in rows)
    waited = sum(r[3] for r in rows)
    lengths = sorted(r[1] for r in rows)
    wait99 = None
    seen = 0.0
    for length in lengths:
        seen += length
        if seen >= 0.99 * busy:
            wait99 = length * 1e3
            break
    over = {
        f"{edge:g}": sum(x for x in lengths if x * 1e3 >= edge) / busy if busy else None
        for edge in LOOP_EDGES_MS
    }
    gc_in = [c for c in collections if lo <= c[0] <= hi]
    gc = {
        str(g): {
            "count": sum(1 for c in gc_in if c[1] == g),
            "total_ms": sum(c[2] for c in gc_in if c[1] == g) * 1e3,
            "max_ms": max((c[2] * 1e3 for c in gc_in if c[1] == g), default=0.0),
        }
        for g in (0, 1, 2)
    }
    preempted = sum(r[1] - r[2] for r in rows if r[1] - r[2] >= 1e-3)
    return {
        "loop_iterations": len(rows),
        "loop_busy_share": busy / (busy + waited) if busy + waited else None,
        "loop_busy_cpu_s": busy_cpu,
        "loop_mean_busy_ms": busy * 1e3 / len(rows) if rows else None,
        "loop_wait99_ms": wait99,
        "loop_longest_ms": lengths[-1] * 1e3 if lengths else None,
        "loop_busy_share_over_ms": over,
        "loop_preempted": preempted / busy if busy else None,
        "loop_ready_per_iteration": sum(r[4] for r in rows) / len(rows) if rows else None,
        "loop_gc": gc,
    }
