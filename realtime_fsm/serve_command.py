"""``realtime-fsm serve``: the built-in Twilio bridge server, from an installed package.

    export OPENAI_API_KEY=sk-...  TWILIO_AUTH_TOKEN=...
    realtime-fsm serve --host 0.0.0.0 --port 8080 --public-url https://voice.example.com

Serves ``/incoming-call`` (TwiML), ``/media-stream`` (the call), ``/healthz`` and ``/readyz``
on one port (:func:`realtime_fsm.server.start_server`).  SIGTERM (or Ctrl-C) drains: readiness
goes false, new calls are refused so that Twilio fails over, calls in progress go on until they
end or ``--drain-timeout`` passes (then they end with 1001), and the process exits 0; a second
signal ends the calls at once.  ``--workers N`` runs N such processes on the same port
(``SO_REUSEPORT``) under a parent that restarts a worker that exits and drains them all on
SIGTERM (:mod:`realtime_fsm.workers`).  ``docs/deploying.md`` has the Docker and Kubernetes
setup.  ``examples/twilio_bridge.py`` is the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, Final

import attrs

from .bridge import BridgeConfig
from .config import LifecycleConfig
from .drain import DEFAULT_DRAIN_TIMEOUT, WHEN_UNAVAILABLE, CallTracker, serve_until_drained
from .malloc_tuning import tune_malloc_for_sockets
from .openai_realtime import Dialect, SessionConfig
from .openai_realtime.models import DEFAULT_REALTIME_MODEL
from .server import (
    API_KEY_ENV,
    ENV_SETTINGS,
    ServerConfig,
    realtime_settings_from_env,
    start_server,
)
from .telemetry import Telemetry
from .trace import MAX_TRACE_BYTES

log = logging.getLogger("realtime_fsm.serve")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _seconds_or_never(text: str) -> float | None:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value or None


def _megabytes(text: str) -> int:
    return max(1, round(_seconds(text) * 1024 * 1024))


#: ``BridgeConfig`` fields each set by a flag of the same name (``--max-reconnects``), with
#: the class's own default: the field, the least value the flag takes, its help.
_RECONNECT_FIELDS: Final = (
    ("reconnect_attempts", 1, "connection attempts per lost OpenAI session before the call ends"),
    ("max_reconnects", 0, "OpenAI sessions one call may replace (0: a lost session ends the call)"),
    ("history_max_items", 0, "conversation items restored on a new session (0: none)"),
    ("history_max_chars", 0, "characters of conversation restored on a new session (0: none)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of the server: the call's settings, then how the process runs."""
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default %(default)s)",
    )
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default %(default)s)")
    p.add_argument(
        "--public-url",
        default=os.environ.get("PUBLIC_URL"),
        help="https://your-public-host, for TwiML and signatures (env PUBLIC_URL)",
    )
    env_of = {field: name for name, field in ENV_SETTINGS.items()}
    # Defaults are None: the environment (read in build_config) fills what no flag sets.
    p.add_argument(
        "--provider",
        choices=["openai", "azure"],
        default=None,
        help=f"Realtime provider (env {env_of['provider']}; default openai)",
    )
    p.add_argument(
        "--model",
        default=None,
        help=(
            f"Realtime model (env {env_of['model']}; default {DEFAULT_REALTIME_MODEL}); a"
            " deprecated one is logged once with its shutdown date"
        ),
    )
    p.add_argument(
        "--realtime-url",
        default=None,
        help=f"whole Realtime WebSocket URL, used as written (env {env_of['realtime_url']})",
    )
    p.add_argument(
        "--azure-endpoint",
        default=None,
        help=(
            "Azure resource endpoint, https://<resource>.openai.azure.com"
            f" (env {env_of['azure_endpoint']})"
        ),
    )
    p.add_argument(
        "--azure-deployment",
        default=None,
        help=f"Azure deployment name (env {env_of['azure_deployment']}; default: --model)",
    )
    p.add_argument(
        "--api-version",
        default=None,
        help=(
            f"Azure preview API version (env {env_of['api_version']}); unset: the GA"
            " /openai/v1/realtime form"
        ),
    )
    p.add_argument(
        "--transcription-model",
        default=None,
        help="input transcription model (Azure: your transcription deployment's name)",
    )
    p.add_argument(
        "--reasoning-effort",
        choices=["minimal", "low", "medium", "high", "xhigh"],
        default=None,
        help="reasoning models (gpt-realtime-2.1...) only; not sent to others",
    )
    p.add_argument(
        "--dialect",
        choices=["ga", "beta"],
        default="ga",
        help="the Realtime API's event names: ga (current) or beta (older servers)",
    )
    p.add_argument("--voice", default=None, help="the assistant's voice, e.g. alloy")
    p.add_argument("--instructions", default=None, help="what the assistant is told to be and do")
    p.add_argument(
        "--turn-detection",
        choices=["server_vad", "semantic_vad", "none"],
        default="server_vad",
        help="how OpenAI tells that the caller finished speaking (default %(default)s; none:"
        " only a key press ends a turn, see --commit-on-dtmf)",
    )
    p.add_argument(
        "--create-response",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="OpenAI answers each finished turn by itself (default on)",
    )
    p.add_argument(
        "--interrupt-response",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="OpenAI stops its answer by itself when the caller starts speaking (default on)",
    )
    p.add_argument("--greeting", default=None, help="instructions for a first response")
    p.add_argument(
        "--commit-on-dtmf",
        choices=list("0123456789*#"),
        default=None,
        metavar="KEY",
        help=(
            "push-to-talk: this keypad key ends the caller's spoken turn (needs"
            " --turn-detection none)"
        ),
    )
    p.add_argument(
        "--no-audio-timeout",
        type=float,
        default=3.0,
        help="seconds an answer may stream words without sound before it is stopped and"
        " asked for again (default %(default)s)",
    )
    p.add_argument(
        "--watchdog-cooldown",
        type=float,
        default=12.0,
        help="seconds after a watchdog fire before the watchdog may fire again (default"
        " %(default)s)",
    )
    p.add_argument(
        "--accept-text-messages",
        action="store_true",
        help='accept {"event":"text","text":...} from the media socket (simulators only)',
    )
    p.add_argument(
        "--log-caller-content",
        action="store_true",
        help=(
            "log what callers say and type and their custom parameters in clear (default:"
            " redacted to a length and a hash; personal data)"
        ),
    )
    p.add_argument(
        "--trace-dir",
        default=None,
        help="write one JSONL trace per call here (check with: realtime-fsm replay FILE)",
    )
    p.add_argument(
        "--trace-max-mb",
        dest="max_trace_bytes",
        metavar="MB",
        type=_megabytes,
        default=MAX_TRACE_BYTES,  # bytes already: argparse converts only string defaults
        help="a trace file stops growing at this size (MiB); the call goes on",
    )
    defaults = attrs.fields_dict(BridgeConfig)
    for field, minimum, helptext in _RECONNECT_FIELDS:
        p.add_argument(
            "--" + field.replace("_", "-"),
            type=_count(minimum),
            metavar="N",
            default=defaults[field].default,
            help=helptext,
        )
    p.add_argument(
        "--rotate-after",
        type=_seconds_or_never,
        metavar="S",
        default=defaults["rotate_after"].default,
        help=(
            "replace the OpenAI session this many seconds after it opened, at a quiet moment,"
            " before the server's 60-minute cap (0: never; the cap then ends it, and the call"
            " reconnects)"
        ),
    )
    p.add_argument(
        "--mark-every-ms",
        type=_count(0),
        default=defaults["mark_every_ms"].default,
        help=(
            "at most one Twilio mark per this many ms of audio (0: one per media message); "
            "barge-in truncation estimates playback between marks, so sparse marks stay exact"
        ),
    )
    _add_process_arguments(p)


def _add_process_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-calls",
        type=_count(1),
        default=None,
        metavar="N",
        help="calls one process takes at once; past it webhooks are refused and /readyz is 503",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM, how long calls in progress may go on before they are ended",
    )
    p.add_argument(
        "--when-unavailable",
        choices=WHEN_UNAVAILABLE,
        default="fail-over",
        help=(
            "a webhook refused while full or draining answers HTTP 503, so Twilio requests the"
            " number's fallback URL (fail-over), or <Reject reason=busy> (busy)"
        ),
    )
    p.add_argument(
        "--metrics-path",
        default=None,
        metavar="PATH",
        help=(
            "serve Prometheus metrics here, e.g. /metrics (needs the prometheus extra; the"
            " realtime_fsm_calls_active gauge is what an autoscaler scales on); default: none"
        ),
    )
    p.add_argument(
        "--workers",
        type=_count(1),
        default=1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT), each with its own event loop",
    )
    # Set by the --workers parent for each child it starts; not for people.
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep socket read buffers off mmap (glibc; see realtime_fsm.malloc_tuning)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        help="DEBUG, INFO, WARNING or ERROR (default %(default)s)",
    )


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The checks that span flags; ``p.error`` (exit 2) on a bad combination."""
    if not args.public_url:
        p.error("--public-url (or PUBLIC_URL) is required: TwiML and signatures use it")
    if args.commit_on_dtmf is not None and args.turn_detection != "none":
        p.error("--commit-on-dtmf needs --turn-detection none")
    return args


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``realtime-fsm serve`` (and of ``examples/twilio_bridge.py``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(p)
    return check_args(p, p.parse_args(argv))


def build_config(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the flags and the environment (the provider's settings and
    key, ``TWILIO_AUTH_TOKEN``) say; a flag wins over the environment."""
    turn = None if args.turn_detection == "none" else args.turn_detection
    session = SessionConfig(
        instructions=args.instructions,
        voice=args.voice,
        transcription_model=args.transcription_model,
        reasoning_effort=args.reasoning_effort,
        turn_detection=turn,
        create_response=args.create_response,
        interrupt_response=args.interrupt_response,
    )
    bridge = BridgeConfig(
        session=session,
        dialect=Dialect(args.dialect),
        lifecycle=LifecycleConfig(
            no_audio_timeout=args.no_audio_timeout,
            watchdog_cooldown=args.watchdog_cooldown,
            log_caller_content=args.log_caller_content,
        ),
        greeting=args.greeting,
        commit_on_dtmf=args.commit_on_dtmf,
        accept_text_messages=args.accept_text_messages,
        mark_every_ms=args.mark_every_ms,
        rotate_after=args.rotate_after,
        **{field: getattr(args, field) for field, _, _ in _RECONNECT_FIELDS},
    )
    realtime: dict[str, str] = realtime_settings_from_env(os.environ)
    for field in ("provider", "model", "realtime_url", "azure_endpoint", "azure_deployment"):
        if getattr(args, field) is not None:  # a flag wins over the environment
            realtime[field] = getattr(args, field)
    if args.api_version is not None:
        realtime["api_version"] = args.api_version
    if args.provider is not None:  # the key of the provider the flag chose
        key = os.environ.get(API_KEY_ENV[args.provider], "")
        realtime.pop("api_key", None)
        if key:
            realtime["api_key"] = key
    return ServerConfig(
        public_url=args.public_url,
        **realtime,  # type: ignore[arg-type]
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        bridge=bridge,
        trace_dir=args.trace_dir,
        max_trace_bytes=args.max_trace_bytes,
        max_calls=args.max_calls,
        drain_timeout=args.drain_timeout,
        when_unavailable=args.when_unavailable,
        telemetry=_telemetry(args.metrics_path),
    )


def _telemetry(metrics_path: str | None) -> Telemetry | None:
    """Prometheus metrics at ``metrics_path`` (no OpenTelemetry: a program that wants spans
    sets up an SDK and builds its own :class:`Telemetry`), or ``None``."""
    if not metrics_path:
        return None
    return Telemetry(opentelemetry=False, metrics_path=metrics_path)


async def serve_process(
    config: ServerConfig,
    host: str,
    port: int,
    *,
    worker: str | None = None,
    reuse_port: bool = False,
    parent_pid: int | None = None,
) -> int:
    """One server process: listen, serve until SIGTERM/SIGINT, drain, return 0."""
    tracker = CallTracker(config.admission(), worker=worker)
    server = await start_server(config, host, port, tracker=tracker, reuse_port=reuse_port)
    report = await serve_until_drained(
        server, tracker, config.drain_timeout, watch_parent=parent_pid
    )
    admission = tracker.admission
    log.info(
        "worker=%s exiting: served %d calls, refused %d webhooks and %d streams;"
        " drain: %d calls at the signal, %d ended at the deadline",
        tracker.worker,
        admission.started,
        admission.refused_webhooks,
        admission.refused_streams,
        report.calls_at_start,
        report.cut_at_deadline,
    )
    return 0


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run what ``args`` say: one server process, or (``--workers`` > 1) the parent of
    several; ``argv``: the flags as given, which the parent hands each worker."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    config = build_config(args)
    if args.workers > 1:
        from .workers import run_workers

        return run_workers(list(argv if argv is not None else sys.argv[1:]), args)
    if args.tune_malloc and not tune_malloc_for_sockets():
        log.info("malloc not tuned: not glibc, or glibc refused")
    if not config.api_key and config.realtime_url is None and config.azure_ad_token is None:
        log.warning("%s is not set", API_KEY_ENV[config.provider])
    worker = str(args.worker_index) if args.worker_index is not None else None
    return asyncio.run(
        serve_process(
            config,
            args.host,
            args.port,
            worker=worker,
            reuse_port=args.worker_index is not None,
            parent_pid=args.parent_pid,
        )
    )


SERVE_DESCRIPTION: Final = """\
Run the bridge server: Twilio calls it when your number rings (/incoming-call), streams the
call's audio to it (/media-stream), and it holds the conversation with the OpenAI Realtime API.
/healthz and /readyz answer health checks.  Point the number's voice webhook at
PUBLIC_URL/incoming-call.  The API key comes from OPENAI_API_KEY; with TWILIO_AUTH_TOKEN set,
Twilio's signatures are checked.

On SIGTERM (or Ctrl-C) it stops taking calls and lets the calls in progress finish (at most
--drain-timeout), then exits; a second signal ends them at once.  docs/deploying.md in the
source repository has the Docker and Kubernetes setup."""

SERVE_EPILOG: Final = """\
examples:
  export OPENAI_API_KEY=sk-...  TWILIO_AUTH_TOKEN=...
  realtime-fsm serve --host 0.0.0.0 --port 8080 --public-url https://voice.example.com
  realtime-fsm serve --public-url https://voice.example.com --workers 4 --trace-dir traces/"""


def add_serve_parser(sub: Any) -> None:
    """``realtime-fsm serve``: register the subcommand on the CLI's subparsers."""
    parser = sub.add_parser(
        "serve",
        help="run the bridge server that connects your Twilio number to OpenAI",
        description=SERVE_DESCRIPTION,
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)

    def command(args: argparse.Namespace) -> int:
        check_args(parser, args)
        return run(args, args.serve_argv)

    # ``serve_argv``: the flags after ``serve``, set by ``realtime_fsm.cli.main``.
    parser.set_defaults(func=command, serve_argv=None)
