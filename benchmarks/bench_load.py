"""Bridge load benchmark (issue 5, items 2-4): N concurrent calls through the example bridge and
through a bare relay, each server in its own fresh process, the simulator and the callers in
another (``benchmarks/loadgen.py``), loopback only.

    python -m benchmarks.bench_load --ns 10,50,100,150,200 --duration 15 --repeat 4 \\
        --plot docs/load.png --markdown docs/load.md

For each N and round, the bridge (``examples/twilio_bridge.py``) and the relay
(``benchmarks/relay.py``) serve N calls at real-time pace, back to back; the tables give the
server's CPU per call-minute, per media frame and per message, the latency of media frames in
each direction, the barge-in reaction (bridge only), and the load generator's own CPU and
lateness.  A row whose load generator used 90% of a core or more is marked: there, the load
generator (not the server) may be what limits the figures.  The bridge/relay ratios are paired
by round; medians and the least-disturbed (lowest) rounds are both reported.

``--pin auto`` (default) gives the server and the load generator a CPU each; ``--servers
bridge@DIR`` adds another tree's bridge to the same rounds; ``--profile DIR`` runs each server
under cProfile (``DIR/<server>-<N>.prof``); ``--loop-stats DIR`` under ``loop_stats.py``
(event-loop iterations and garbage collections, cut to the steady window).

This module is the command line; one run (the processes, ports and loop figures) is in
``load_runs.py``, the rows, tables, goals and plot in ``load_report.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.load_report import combine, machine, markdown, num, variants_table, write_plot
from benchmarks.load_runs import ROOT, run_one
from benchmarks.loadgen import SCRIPTS

SERVERS = ("bridge", "relay")


def server_tokens(p: argparse.ArgumentParser, value: str) -> list[str]:
    """``--servers``: ``bridge``, ``relay``, or either as ``kind@DIR`` (another tree's)."""
    tokens = [k for k in value.split(",") if k]
    for token in tokens:
        if token.split("@", 1)[0] not in SERVERS:
            p.error(f"--servers: {token!r} is not bridge, relay, bridge@DIR or relay@DIR")
    return tokens


def resolve_loadgen_loop(choice: str) -> str:
    """``auto``: uvloop when installed (the 'bench' extra), else asyncio's own loop."""
    if choice != "auto":
        return choice
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def pin_cpus(mode: str) -> tuple[int, int] | None:
    """``--pin auto``: with two or more CPUs, (server's, load generator's); else None."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-1], cpus[0]) if mode == "auto" and len(cpus) >= 2 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ns", default="10,50,100,150,200", help="comma-separated call counts")
    p.add_argument("--duration", type=float, default=30.0, help="steady window per run (s)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--servers", default="bridge,relay")
    p.add_argument(
        "--bridge-args",
        default="",
        help="extra options for the example bridge, e.g. '--mark-every-ms 1000'",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per N (bridge and relay back to back, alternating order); medians reported",
    )
    p.add_argument("--plot", default=None, help="write a PNG (needs the 'bench' extra)")
    p.add_argument("--markdown", default=None, help="write the markdown block to this file")
    p.add_argument("--json", default=None, help="write the raw results to this file")
    p.add_argument("--profile", default=None, help="directory for cProfile output per run")
    p.add_argument(
        "--loop-stats",
        default=None,
        help="directory for the servers' event-loop iteration figures per run (loop_stats.py)",
    )
    p.add_argument(
        "--loadgen-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the load generator's event loop; auto: uvloop if installed (the 'bench' extra)",
    )
    p.add_argument(
        "--script",
        choices=SCRIPTS,
        default="realistic",
        help="the callers' script: realistic (the goals' one) or matched (only what a bare relay"
        " handles like the bridge: the same audio both ways, so the ratio is the bridge's cost)",
    )
    p.add_argument(
        "--pin",
        choices=("auto", "off"),
        default="auto",
        help="auto: with 2 or more CPUs, the server on the last and the load generator on the"
        " first (neither competes with the other for a core, nor migrates); off: the scheduler"
        " places them",
    )
    p.add_argument(
        "--server-root",
        default=str(ROOT),
        help="import the servers' realtime_fsm (and the example) from this tree",
    )
    args = p.parse_args(argv)
    ns = [int(x) for x in args.ns.split(",") if x.strip()]
    kinds = server_tokens(p, args.servers)
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    loop_stats_dir = Path(args.loop_stats) if args.loop_stats else None
    if loop_stats_dir is not None:
        if profile_dir is not None:
            p.error("--profile and --loop-stats measure different things: pick one")
        loop_stats_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_load " + " ".join(argv if argv else sys.argv[1:])
    loadgen_loop = resolve_loadgen_loop(args.loadgen_loop)
    pin = pin_cpus(args.pin)
    before = f"{machine()}; load generator on {loadgen_loop}, servers on asyncio"
    if pin is not None:
        before += f"; server pinned to CPU {pin[0]}, load generator to CPU {pin[1]}"
    before += f"; {args.script} script"
    print(f"# {before}", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in (*SERVERS, *kinds)}
    for n in ns:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for round_ in range(args.repeat):
            # Rotate who goes first, so a drift of the machine does not favour one server (with
            # more than two servers, use a number of rounds that is a multiple of their count).
            shift = round_ % len(kinds)
            for token in kinds[shift:] + kinds[:shift]:
                kind, _, root = token.partition("@")
                t = time.monotonic()
                r = run_one(
                    kind,
                    n,
                    args.duration,
                    args.warmup,
                    profile_dir,
                    Path(root or args.server_root).resolve(),
                    tuple(shlex.split(args.bridge_args)),
                    loadgen_loop,
                    loop_stats_dir,
                    pin,
                    args.script,
                )
                runs[token].append(r)
                print(
                    f"# {token:6s} N={n:4d} round {round_ + 1}/{args.repeat}:"
                    f" cpu/call-min {r['server_cpu_per_call_min']:.3f} s"
                    f" ({num(r['server_cpu_us_per_frame'], 1)} us/frame,"
                    f" {num(r.get('server_cpu_us_per_message'), 1)} us/message,"
                    f" user/system {num(r.get('server_user_s'))}/{num(r.get('server_sys_s'))} s),"
                    f" up p99 {num(r['up_p99_ms'])} ms, down p99 {num(r['down_p99_ms'])} ms,"
                    f" barge p99 {num(r['barge_p99_ms'])} ms,"
                    f" loadgen {r['loadgen_core_share']:.0%}"
                    f" (its loop late p99 {num(r.get('loadgen_lag_p99_ms'))} ms);"
                    f" server per message: faults {num(r.get('server_minflt_per_message'), 3)},"
                    f" switches {num(r.get('server_ctx_voluntary_per_message'), 3)} voluntary,"
                    f" {num(r.get('server_ctx_involuntary_per_message'), 3)} involuntary;"
                    f" steal on its CPU {num(r.get('server_cpu_steal_s'))} s"
                    f" (the load generator's {num(r.get('loadgen_cpu_steal_s'))} s)"
                    f" ({time.monotonic() - t:.0f} s)",
                    file=sys.stderr,
                )
                if r.get("loop_iterations"):  # none in the window: nothing to print
                    gc = r["loop_gc"]
                    print(
                        f"#   loop in the window: busy {r['loop_busy_share']:.0%},"
                        f" {r['loop_iterations']} iterations,"
                        f" mean {num(r['loop_mean_busy_ms'], 3)} ms,"
                        f" 99% of busy time in iterations < {num(r['loop_wait99_ms'])} ms,"
                        f" in iterations >= 2 / 5 ms:"
                        f" {r['loop_busy_share_over_ms']['2']:.2%} / "
                        f"{r['loop_busy_share_over_ms']['5']:.2%},"
                        f" longest {num(r['loop_longest_ms'], 1)} ms,"
                        f" preempted {r['loop_preempted']:.1%} of busy time,"
                        f" {num(r['loop_ready_per_iteration'], 2)} sockets ready per iteration;"
                        " gc per generation (count, longest ms): "
                        + ", ".join(f"{g['count']} {g['max_ms']:.1f}" for g in gc.values()),
                        file=sys.stderr,
                    )
        for kind in kinds:
            results[kind].append(combine(runs[kind]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if not results["bridge"] or not results["relay"]:
        text = variants_table(results, kinds)  # no bridge-relay pair to judge the goals on
        if args.markdown:
            Path(args.markdown).write_text(text)
        print(text)
        return 0
    if args.plot:
        write_plot(results["bridge"], results["relay"], args.plot)
    text = markdown(results["bridge"], results["relay"], command, before, args.plot)
    if len(kinds) > 2:
        text += "\n" + variants_table(results, kinds)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
