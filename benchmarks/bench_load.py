"""Bridge load benchmark (issue 5, items 2-4): N concurrent calls through the example bridge and
through a bare relay, each server in its own fresh process, the simulator and the callers in
another (``benchmarks/loadgen.py``), loopback only.

    python -m benchmarks.bench_load --ns 10,50,100,150,200 --duration 30 \\
        --plot docs/load.png --markdown docs/load.md

For each N, the bridge (``examples/twilio_bridge.py``) and then the relay (``benchmarks/relay.py``)
serve N calls at real-time pace; the tables give the server's CPU per call-minute, the latency of
media frames in each direction, the barge-in reaction (bridge only), and the load generator's own
CPU.  A row whose load generator used 90% of a core or more is marked: there, the load generator
(not the server) may be what limits the figures.  The bridge/relay ratios come from the same run.
``--profile DIR`` runs each server under cProfile and writes ``DIR/<server>-<N>.prof``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("bridge", "relay")
LOADGEN_LIMIT = 0.9  # share of a core above which the load generator may be the bottleneck
P99_LIMIT_MS = 5.0
GREETING = "Greet the caller briefly."


def server_command(
    kind: str,
    port: int,
    sim_port: int,
    profile: Path | None,
    root: Path,
    extra: tuple[str, ...] = (),
) -> list[str]:
    bridge = root / "examples/twilio_bridge.py"
    script = str(bridge if kind == "bridge" else ROOT / "benchmarks/relay.py")
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "benchmarks.profile_server", str(profile)]
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


def run_one(
    kind: str,
    calls: int,
    duration: float,
    warmup: float,
    profile_dir: Path | None,
    root: Path = ROOT,
    bridge_args: tuple[str, ...] = (),
    loadgen_loop: str = "asyncio",
) -> dict[str, Any]:
    port, sim_port = free_port(), free_port()
    profile = profile_dir / f"{kind}-{calls}.prof" if profile_dir is not None else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        server_command(
            kind, port, sim_port, profile, root, bridge_args if kind == "bridge" else ()
        ),
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(root), str(ROOT)]))},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        loadgen = subprocess.run(
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
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + warmup + calls / 10 + 120,
            check=False,
        )
    finally:
        server.terminate()
        try:
            _out, server_err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _out, server_err = server.communicate()
    if loadgen.returncode != 0 or not loadgen.stdout.strip():
        raise RuntimeError(
            f"loadgen for {kind} N={calls} failed:\n{loadgen.stderr[-3000:]}\n"
            f"server:\n{(server_err or '')[-3000:]}"
        )
    result: dict[str, Any] = json.loads(loadgen.stdout.strip().splitlines()[-1])
    result["server"] = kind
    frames = result["up_frames"] + result["down_frames"]
    result["server_cpu_us_per_frame"] = result["server_cpu_s"] * 1e6 / frames if frames else None
    result["server_log_lines"] = len([x for x in (server_err or "").splitlines() if x.strip()])
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the repeats of a (server, N): the median of every numeric figure, the
    rest (server errors, notes) from the first repeat; the repeats themselves are kept."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if type(value) in (int, float):
            values = [r[key] for r in runs if type(r.get(key)) in (int, float)]
            middle = statistics.median(values)
            # Counts stay counts: of an even number of rounds, the lower middle one.
            row[key] = statistics.median_low(values) if type(value) is int else middle
    row["repeats"] = len(runs)
    row["runs"] = runs
    return row


def paired_ratios(bridge: dict[str, Any], relay: dict[str, Any], key: str) -> list[float]:
    """bridge/relay for ``key`` in each round (the two servers' runs of one round ran back to
    back), so a slow minute of the machine weighs on both sides of the same ratio."""
    out = []
    for b, r in zip(bridge.get("runs", [bridge]), relay.get("runs", [relay]), strict=True):
        if b.get(key) is not None and r.get(key):
            out.append(b[key] / r[key])
    return out


# ----------------------------------------------------------------------------- reporting


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _limited(r: dict[str, Any]) -> bool:
    return bool(r["loadgen_core_share"] >= LOADGEN_LIMIT)


def _ok(r: dict[str, Any]) -> bool:
    up, down = r["up_p99_ms"], r["down_p99_ms"]
    return up is not None and down is not None and up <= P99_LIMIT_MS and down <= P99_LIMIT_MS


def largest_ok(rows: list[dict[str, Any]]) -> int | None:
    """The largest N whose p99 stays within the limit both ways (and every smaller N too)."""
    best = None
    for r in sorted(rows, key=lambda r: r["calls"]):
        if not _ok(r):
            break
        best = r["calls"]
    return best


def server_table(rows: list[dict[str, Any]], kind: str) -> list[str]:
    barge = kind == "bridge"
    head = (
        "| N | CPU s / call-min | CPU us / media frame | server core |"
        " up p50 / p99 ms | down p50 / p99 ms |"
    )
    sep = "|---:|---:|---:|---:|---:|---:|"
    if barge:
        head += " barge-in p50 / p99 ms (n) |"
        sep += "---:|"
    head += " loadgen core | frames up / down | notes |"
    sep += "---:|---:|---|"
    lines = [head, sep]
    for r in rows:
        notes = []
        if _limited(r):
            notes.append("**loadgen-limited**")
        if r["closed_early"]:
            notes.append(f"{r['closed_early']} calls ended early")
        if r["sim_errors"]:
            notes.append(f"server errors {r['sim_errors']}")
        if r["up_frames"] < 0.98 * r["expected_up_frames"]:
            notes.append(f"up frames {r['up_frames'] / r['expected_up_frames']:.0%} of expected")
        line = (
            f"| {r['calls']} | {_f(r['server_cpu_per_call_min'], 3)} |"
            f" {_f(r['server_cpu_us_per_frame'], 1)} | {r['server_core_share']:.0%} |"
            f" {_f(r['up_p50_ms'])} / {_f(r['up_p99_ms'])} |"
            f" {_f(r['down_p50_ms'])} / {_f(r['down_p99_ms'])} |"
        )
        if barge:
            line += f" {_f(r['barge_p50_ms'])} / {_f(r['barge_p99_ms'])} ({r['barge_ins']}) |"
        line += (
            f" {r['loadgen_core_share']:.0%} | {r['up_frames']} / {r['down_frames']} |"
            f" {', '.join(notes)} |"
        )
        lines.append(line)
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def ratio_table(bridge: list[dict[str, Any]], relay: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | CPU / call-min | CPU / media frame | up p50 | up p99 | down p50 | down p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_n = {r["calls"]: r for r in relay}
    for b in bridge:
        r = by_n.get(b["calls"])
        if r is None:
            continue
        cells = []
        for key in (
            "server_cpu_per_call_min",
            "server_cpu_us_per_frame",
            "up_p50_ms",
            "up_p99_ms",
            "down_p50_ms",
            "down_p99_ms",
        ):
            cells.append(_paired(b, r, key))
        lines.append(f"| {b['calls']} | " + " | ".join(cells) + " |")
    return lines


def _paired(b: dict[str, Any], r: dict[str, Any], key: str) -> str:
    """The median of the per-round ratios, with their range when there were several rounds."""
    ratios = paired_ratios(b, r, key)
    if not ratios:
        return "-"
    text = f"{statistics.median(ratios):.2f}x"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}-{max(ratios):.2f})"
    return text


def median_ratio(b: dict[str, Any], r: dict[str, Any], key: str) -> float | None:
    ratios = paired_ratios(b, r, key)
    return statistics.median(ratios) if ratios else None


def goals_table(bridge: list[dict[str, Any]], relay: list[dict[str, Any]]) -> list[str]:
    lines = ["| goal | measured | verdict |", "|---|---:|---:|"]

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    by_n = {r["calls"]: r for r in relay}
    pairs = [(b, by_n[b["calls"]]) for b in bridge if b["calls"] in by_n]
    cpu = [median_ratio(b, r, "server_cpu_per_call_min") for b, r in pairs]
    worst = max((x for x in cpu if x is not None), default=None)
    lines.append(
        f"| bridge CPU per call-minute <= 1.10x the relay (worst N) | {_f(worst)}x |"
        f" {verdict(None if worst is None else worst <= 1.10)} |"
    )
    per_frame = [median_ratio(b, r, "server_cpu_us_per_frame") for b, r in pairs]
    worst_frame = max((x for x in per_frame if x is not None), default=None)
    lines.append(
        f"| (same work) bridge CPU per media frame <= 1.10x the relay (worst N) |"
        f" {_f(worst_frame)}x | {verdict(None if worst_frame is None else worst_frame <= 1.10)} |"
    )
    at150 = next((b for b in bridge if b["calls"] == 150), None)
    if at150 is not None:
        for way in ("up", "down"):
            v = at150[f"{way}_p99_ms"]
            lines.append(
                f"| p99 added latency <= 5 ms {way} at N = 150 | {_f(v)} ms |"
                f" {verdict(None if v is None else v <= P99_LIMIT_MS)} |"
            )
        v = at150["barge_p99_ms"]
        lines.append(
            f"| barge-in reaction p99 <= 5 ms at N = 150 | {_f(v)} ms |"
            f" {verdict(None if v is None else v <= P99_LIMIT_MS)} |"
        )
    nb, nr = largest_ok(bridge), largest_ok(relay)
    ratio = None if nb is None or not nr else nb / nr
    lines.append(
        f"| largest N at p99 <= 5 ms >= 0.9x the relay's | bridge {nb}, relay {nr} |"
        f" {verdict(None if ratio is None else ratio >= 0.9)} |"
    )
    return lines


def machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"`nproc` = {os.cpu_count()}, CPU `{model}`, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()} ({platform.machine()}); load average {load}"
    )


def markdown(
    bridge: list[dict[str, Any]],
    relay: list[dict[str, Any]],
    command: str,
    machine_before: str,
    plot: str | None,
) -> str:
    out = [
        f"Command: `{command}`",
        "",
        f"Machine at the start: {machine_before}; at the end: load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + ".",
        "",
        *_repeats_note(bridge + relay),
        "#### Example bridge (`examples/twilio_bridge.py`)",
        "",
        *server_table(bridge, "bridge"),
        "",
        "#### Bare relay (`benchmarks/relay.py`)",
        "",
        *server_table(relay, "relay"),
        "",
        "#### Bridge / relay",
        "",
        *ratio_table(bridge, relay),
        "",
        f"Largest N with p99 <= {P99_LIMIT_MS:g} ms both ways: bridge {largest_ok(bridge)},"
        f" relay {largest_ok(relay)}.",
        "",
        "#### Goals",
        "",
        *goals_table(bridge, relay),
    ]
    if plot:
        out += ["", f"![CPU per call-minute and p99 latency against N]({Path(plot).name})"]
    return "\n".join(out) + "\n"


def _repeats_note(rows: list[dict[str, Any]]) -> list[str]:
    rounds = max((r.get("repeats", 1) for r in rows), default=1)
    if rounds <= 1:
        return []
    return [
        f"Each server ran {rounds} rounds per N, back to back with the other server and"
        " alternating which went first; every figure below is the median of its rounds, and"
        " every ratio the median of the per-round ratios (their range in brackets).",
        "",
    ]


def write_plot(bridge: list[dict[str, Any]], relay: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for rows, kind, color in ((bridge, "bridge", "tab:blue"), (relay, "relay", "tab:orange")):
        ns = [r["calls"] for r in rows]
        ax1.plot(ns, [r["server_cpu_per_call_min"] for r in rows], "o-", color=color, label=kind)
        for way, style in (("up", "o-"), ("down", "s--")):
            ax2.plot(
                ns,
                [r[f"{way}_p99_ms"] for r in rows],
                style,
                color=color,
                label=f"{kind} {way}",
            )
    ax1.set_xlabel("concurrent calls N")
    ax1.set_ylabel("server CPU seconds per call-minute")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.axhline(P99_LIMIT_MS, color="grey", linestyle=":", label="5 ms")
    ax2.set_xlabel("concurrent calls N")
    ax2.set_ylabel("p99 frame latency (ms)")
    ax2.set_yscale("log")
    ax2.legend(fontsize="small")
    ax2.grid(alpha=0.3)
    fig.suptitle("realtime-fsm: example bridge vs bare relay (loopback, real-time pace)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        "--loadgen-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the load generator's event loop; auto: uvloop if installed (the 'bench' extra)",
    )
    p.add_argument(
        "--server-root",
        default=str(ROOT),
        help="import the servers' realtime_fsm (and the example) from this tree",
    )
    args = p.parse_args(argv)
    ns = [int(x) for x in args.ns.split(",") if x.strip()]
    kinds = [k for k in args.servers.split(",") if k]
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_load " + " ".join(argv if argv else sys.argv[1:])
    loadgen_loop = args.loadgen_loop
    if loadgen_loop == "auto":
        loadgen_loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    before = f"{machine()}; load generator on {loadgen_loop}, servers on asyncio"
    print(f"# {before}", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in SERVERS}
    for n in ns:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for round_ in range(args.repeat):
            # Alternate who goes first, so a drift of the machine does not favour one server.
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                t = time.monotonic()
                r = run_one(
                    kind,
                    n,
                    args.duration,
                    args.warmup,
                    profile_dir,
                    Path(args.server_root),
                    tuple(shlex.split(args.bridge_args)),
                    loadgen_loop,
                )
                runs[kind].append(r)
                print(
                    f"# {kind:6s} N={n:4d} round {round_ + 1}/{args.repeat}:"
                    f" cpu/call-min {r['server_cpu_per_call_min']:.3f} s"
                    f" ({_f(r['server_cpu_us_per_frame'], 1)} us/frame),"
                    f" up p99 {_f(r['up_p99_ms'])} ms, down p99 {_f(r['down_p99_ms'])} ms,"
                    f" barge p99 {_f(r['barge_p99_ms'])} ms,"
                    f" loadgen {r['loadgen_core_share']:.0%} ({time.monotonic() - t:.0f} s)",
                    file=sys.stderr,
                )
        for kind in kinds:
            results[kind].append(combine(runs[kind]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        write_plot(results["bridge"], results["relay"], args.plot)
    text = markdown(results["bridge"], results["relay"], command, before, args.plot)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
