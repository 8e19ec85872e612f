"""Machine instructions per message of each whole server under load, counted by cachegrind.

    python -m benchmarks.bench_instructions --calls 10 --scripts matched,realistic

CPU seconds on a shared VM move 10-30% between rounds, as much as the difference being
measured (``docs/performance.md``).  Instructions do not: this runs the same load as
``bench_load`` (a server process; the simulator and the callers in another, real-time pace,
loopback) with the server under ``valgrind --tool=cachegrind --cache-sim=no``, which counts
every user-space instruction the process executes: the interpreter, ``json``, ``websockets``'
C speedups, the event loop, allocation.  Not counted: the kernel's side of the syscalls
(``bench_load`` reports system time) and what an instruction costs (cache misses, the host's
contention): this is the work, not the time.

Each server runs twice, with a short and a long steady window; everything else (start-up,
imports, connecting the calls, the warm-up, hanging up) is the same in both runs, so the
difference of the two counts over the difference of their messages is the steady state's
cost per message, and over the difference of their call-minutes its cost per call-minute.

The server runs about 30 times slower under valgrind, so a handful of calls keeps it as busy
as a hundred or more do natively (the table gives its share of a core; past 90% it may not
keep pace, and the figures then describe a server falling behind).  Needs ``valgrind``
(``apt-get install valgrind``); the tests use only the parsing and the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from benchmarks.bench_load import pin_cpus, resolve_loadgen_loop, server_tokens
from benchmarks.load_report import machine
from benchmarks.load_runs import ROOT, run_one
from benchmarks.loadgen import SCRIPTS

#: Past this share of its core under valgrind the server may not have kept pace.
KEEP_PACE_LIMIT = 0.9


@attrs.frozen
class Profile:
    """One cachegrind output file: the process's total instructions and their split by
    function (by name: a function's lines inlined from headers are filed under the header, and
    belong to it all the same)."""

    total: int
    by_function: Counter[str]


def read_cachegrind(path: Path) -> Profile:
    """Parse a cachegrind output file (``--cache-sim=no``: one event, ``Ir``).

    The format: ``fl=`` names a source file, ``fn=`` a function in it, and each following
    line starting with a digit is ``<line> <Ir> ...``; ``summary:`` is the total."""
    by_function: Counter[str] = Counter()
    events: list[str] = []
    function = ""
    total: int | None = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("fn="):
            function = line[3:].strip()
        elif line[:1].isdigit():
            fields = line.split()
            if len(fields) >= 2 and function:
                by_function[function] += int(fields[1])
        elif line.startswith("summary:"):
            total = int(line.split()[1])
    if not events or events[0] != "Ir":
        raise ValueError(f"{path}: not a cachegrind file counting Ir (events: {events})")
    if total is None:
        raise ValueError(f"{path}: no summary line (did the process exit cleanly?)")
    return Profile(total, by_function)


@attrs.frozen
class SteadyCost:
    """What the steady state cost, from a short and a long run of the same load."""

    instructions: int  # the long run's minus the short run's
    messages: int  # messages in the steady window, long minus short
    call_minutes: float
    by_function: dict[str, float]  # instructions per message

    @property
    def per_message(self) -> float:
        return self.instructions / self.messages

    @property
    def per_call_minute(self) -> float:
        return self.instructions / self.call_minutes


def steady_cost(
    short: Profile, long: Profile, short_run: dict[str, Any], long_run: dict[str, Any]
) -> SteadyCost:
    """The difference of two runs that differ only in the length of their steady window.

    ``*_run``: ``load_runs.run_one``'s results (``server_messages``, ``window_s``,
    ``calls``)."""
    messages = int(long_run["server_messages"]) - int(short_run["server_messages"])
    seconds = float(long_run["window_s"]) - float(short_run["window_s"])
    instructions = long.total - short.total
    if messages <= 0 or seconds <= 0 or instructions <= 0:
        raise ValueError(
            "the long run must carry more messages, last longer and execute more instructions"
            f" than the short one (messages {messages:+d}, seconds {seconds:+.1f},"
            f" instructions {instructions:+d})"
        )
    delta = Counter(long.by_function)
    delta.subtract(short.by_function)
    return SteadyCost(
        instructions=instructions,
        messages=messages,
        call_minutes=int(long_run["calls"]) * seconds / 60.0,
        by_function={name: count / messages for name, count in delta.items()},
    )


def function_rows(
    bridge: SteadyCost, relay: SteadyCost, top: int
) -> list[tuple[str, float, float]]:
    """The functions whose instructions per message differ most between the two servers."""
    names = set(bridge.by_function) | set(relay.by_function)
    rows = [(n, bridge.by_function.get(n, 0.0), relay.by_function.get(n, 0.0)) for n in names]
    rows.sort(key=lambda r: (-abs(r[1] - r[2]), r[0]))
    return rows[:top]


def valgrind_wrapper(out: Path) -> tuple[str, ...]:
    return (
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out}",
    )


def measure(
    token: str,
    calls: int,
    script: str,
    windows: tuple[float, float],
    warmup: float,
    out_dir: Path,
    loadgen_loop: str,
    pin: tuple[int, int] | None,
) -> dict[str, Any]:
    """Both runs of one server (``bridge``, ``relay`` or ``bridge@DIR``) for one script."""
    kind, _, root = token.partition("@")
    runs = []
    name = token.replace("/", "_").replace("@", "-")
    for seconds in windows:
        out = out_dir / f"{name}-{script}-{calls}-{seconds:g}s.cachegrind"
        result = run_one(
            kind,
            calls,
            seconds,
            warmup,
            None,
            Path(root).resolve() if root else ROOT,
            (),
            loadgen_loop,
            None,
            pin,
            script,
            valgrind_wrapper(out),
        )
        runs.append((read_cachegrind(out), result))
        print(
            f"# {token} {script} N={calls} {seconds:g} s: {runs[-1][0].total:,} instructions,"
            f" {result['server_messages']} messages, server core {result['server_core_share']:.0%}",
            file=sys.stderr,
        )
    (short, short_run), (long, long_run) = runs
    cost = steady_cost(short, long, short_run, long_run)
    return {
        "server": token,
        "script": script,
        "calls": calls,
        "cost": cost,
        "core_share": max(r["server_core_share"] for _, r in runs),
        "violations": sum(r["violations"] for _, r in runs),
        # What the difference was made from, for the record.
        "runs": [
            {
                "window_s": r["window_s"],
                "server_messages": r["server_messages"],
                "instructions": profile.total,
                "server_core_share": r["server_core_share"],
            }
            for profile, r in runs
        ],
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b else "-"


def markdown(results: list[dict[str, Any]], top: int, command: str, where: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {where}",
        "",
        "| script | server | instructions / message | instructions / call-minute"
        " | messages / call-minute | server core under valgrind | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cost: SteadyCost = r["cost"]
        notes = []
        if r["core_share"] >= KEEP_PACE_LIMIT:
            notes.append("may not have kept pace: use fewer --calls")
        if r["violations"]:
            notes.append(f"{r['violations']} caller violations")
        lines.append(
            f"| {r['script']} | {r['server']} | {cost.per_message:,.0f}"
            f" | {cost.per_call_minute / 1e6:,.1f} M | {cost.messages / cost.call_minutes:,.0f}"
            f" | {r['core_share']:.0%} | {'; '.join(notes)} |"
        )
    for script in dict.fromkeys(r["script"] for r in results):
        by_server = {r["server"]: r["cost"] for r in results if r["script"] == script}
        relay = by_server.get("relay")
        if relay is None:
            continue
        for server, cost in by_server.items():
            if server == "relay":
                continue
            lines += [
                "",
                f"**{script}: {server} / relay**: {_ratio(cost.per_message, relay.per_message)}"
                f" per message, {_ratio(cost.per_call_minute, relay.per_call_minute)} per"
                f" call-minute ({cost.per_message - relay.per_message:+,.0f} instructions per"
                " message).",
                "",
                f"| function | {server} / message | relay / message | difference |",
                "|---|---:|---:|---:|",
            ]
            for name, b, rr in function_rows(cost, relay, top):
                lines.append(f"| `{name}` | {b:,.0f} | {rr:,.0f} | {b - rr:+,.0f} |")
    return "\n".join(lines) + "\n"


def _as_json(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        cost: SteadyCost = r["cost"]
        out.append(
            {
                **{k: v for k, v in r.items() if k != "cost"},
                "instructions": cost.instructions,
                "messages": cost.messages,
                "call_minutes": cost.call_minutes,
                "per_message": cost.per_message,
                "per_call_minute": cost.per_call_minute,
                "by_function_per_message": dict(
                    sorted(cost.by_function.items(), key=lambda kv: -abs(kv[1]))[:200]
                ),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=10, help="concurrent calls (default 10)")
    p.add_argument("--short", type=float, default=10.0, help="the short run's window (s)")
    p.add_argument("--long", type=float, default=40.0, help="the long run's window (s)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--scripts", default="matched,realistic", help=f"any of {', '.join(SCRIPTS)}")
    p.add_argument("--servers", default="bridge,relay", help="bridge, relay, bridge@DIR")
    p.add_argument("--top", type=int, default=20, help="functions listed per comparison")
    p.add_argument("--out-dir", default=None, help="keep the cachegrind files here")
    p.add_argument("--markdown", default=None, help="write the markdown block to this file")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--pin", choices=("auto", "off"), default="auto", help="as bench_load's")
    args = p.parse_args(argv)
    scripts = [s for s in args.scripts.split(",") if s]
    servers = server_tokens(p, args.servers)
    for script in scripts:
        if script not in SCRIPTS:
            p.error(f"--scripts: {script!r} is not one of {', '.join(SCRIPTS)}")
    if not 0 < args.short < args.long:
        p.error("--short must be positive and shorter than --long")
    if args.calls < 1:
        p.error("--calls must be at least 1")
    if shutil.which("valgrind") is None:
        print(
            "bench_instructions needs valgrind on PATH (apt-get install valgrind)", file=sys.stderr
        )
        return 2
    loop = resolve_loadgen_loop("auto")
    pin = pin_cpus(args.pin)
    command = "python -m benchmarks.bench_instructions " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        out_dir = Path(args.out_dir) if args.out_dir else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = [
            measure(
                token,
                args.calls,
                script,
                (args.short, args.long),
                args.warmup,
                out_dir,
                loop,
                pin,
            )
            for script in scripts
            for token in servers
        ]
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    where = f"{machine()}; load generator on {loop}; {version.strip()} cachegrind, instructions"
    text = markdown(results, args.top, command, where)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(_as_json(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
