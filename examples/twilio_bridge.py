"""Bridge a real Twilio number to the OpenAI Realtime API, with realtime-fsm in the middle.

    export OPENAI_API_KEY=sk-...
    python examples/twilio_bridge.py --host 0.0.0.0 --port 8080 \\
        --public-url https://example.ngrok.app --greeting "Greet the caller briefly."

Point the Twilio number's voice webhook (GET or POST) at ``https://<public host>/incoming-call``.
Set ``TWILIO_AUTH_TOKEN`` to refuse webhooks and media streams without a valid
``X-Twilio-Signature`` (needs ``pip install 'realtime-fsm[twilio]'``).  ``--model`` (or
``OPENAI_REALTIME_MODEL``) picks the Realtime model (default ``gpt-realtime-2.1``).
``--provider azure`` with ``--azure-endpoint`` and ``--azure-deployment`` (or
``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_DEPLOYMENT``; the key from
``AZURE_OPENAI_API_KEY``) uses Azure OpenAI instead.  ``--realtime-url`` (or
``OPENAI_REALTIME_URL``) points the bridge at any compatible server, such as the simulator in
``realtime_fsm.testing``.
Any client that speaks the Media Streams protocol can connect to ``/media-stream``: no Twilio
account is needed to try it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
from collections.abc import Callable
from typing import Final

import attrs

from realtime_fsm.bridge import BridgeConfig
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.malloc_tuning import tune_malloc_for_sockets
from realtime_fsm.openai_realtime import Dialect, SessionConfig
from realtime_fsm.openai_realtime.models import DEFAULT_REALTIME_MODEL
from realtime_fsm.server import (
    API_KEY_ENV,
    ENV_SETTINGS,
    ServerConfig,
    realtime_settings_from_env,
    start_server,
)
from realtime_fsm.trace import MAX_TRACE_BYTES
from realtime_fsm.webserver import serve_until_signalled


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _megabytes(text: str) -> int:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return max(1, round(value * 1024 * 1024))


#: ``BridgeConfig`` fields each set by a flag of the same name (``--max-reconnects``), with
#: the class's own default: the field, the least value the flag takes, its help.
_RECONNECT_FIELDS: Final = (
    ("reconnect_attempts", 1, "connection attempts per lost OpenAI session before the call ends"),
    ("max_reconnects", 0, "OpenAI sessions one call may replace (0: a lost session ends the call)"),
    ("history_max_items", 0, "conversation items restored on a new session (0: none)"),
    ("history_max_chars", 0, "characters of conversation restored on a new session (0: none)"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", required=True, help="https://your-public-host (for TwiML)")
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
    p.add_argument("--dialect", choices=["ga", "beta"], default="ga")
    p.add_argument("--voice", default=None)
    p.add_argument("--instructions", default=None)
    p.add_argument(
        "--turn-detection", choices=["server_vad", "semantic_vad", "none"], default="server_vad"
    )
    p.add_argument("--create-response", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--interrupt-response", action=argparse.BooleanOptionalAction, default=True)
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
    p.add_argument("--no-audio-timeout", type=float, default=3.0)
    p.add_argument("--watchdog-cooldown", type=float, default=12.0)
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
        "--mark-every-ms",
        type=_count(0),
        default=defaults["mark_every_ms"].default,
        help=(
            "at most one Twilio mark per this many ms of audio (0: one per media message); "
            "barge-in truncation estimates playback between marks, so sparse marks stay exact"
        ),
    )
    p.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep socket read buffers off mmap (glibc; see realtime_fsm.malloc_tuning)",
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.commit_on_dtmf is not None and args.turn_detection != "none":
        p.error("--commit-on-dtmf needs --turn-detection none")
    return args


def build_config(args: argparse.Namespace) -> ServerConfig:
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
    )


async def serve_forever(config: ServerConfig, host: str, port: int) -> None:
    await serve_until_signalled(await start_server(config, host, port))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = build_config(args)
    if args.tune_malloc and not tune_malloc_for_sockets():
        logging.getLogger("realtime_fsm").info("malloc not tuned: not glibc, or glibc refused")
    if not config.api_key and config.realtime_url is None and config.azure_ad_token is None:
        key_name = API_KEY_ENV[config.provider]
        logging.getLogger("realtime_fsm").warning("%s is not set", key_name)
    asyncio.run(serve_forever(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
