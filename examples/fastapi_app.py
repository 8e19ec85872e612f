"""A FastAPI voice agent: the Twilio bridge mounted next to the app's own routes.

    pip install 'realtime-fsm[asgi,twilio]' fastapi uvicorn
    export OPENAI_API_KEY=sk-...  PUBLIC_URL=https://example.ngrok.app  TWILIO_AUTH_TOKEN=...
    uvicorn examples.fastapi_app:app --host 0.0.0.0 --port 8080 --ws-max-size 65536

Point the Twilio number's voice webhook (GET or POST) at ``$PUBLIC_URL/incoming-call``.
``TWILIO_AUTH_TOKEN`` turns on the ``X-Twilio-Signature`` checks of both routes;
``REALTIME_URL`` (or ``OPENAI_REALTIME_URL``) points the bridge at any compatible server, such
as the simulator in ``realtime_fsm.testing``.  ``GREETING`` and ``INSTRUCTIONS`` set what the
agent says first and how it behaves.  ``--ws-max-size`` keeps uvicorn from reading a media
message larger than the bridge accepts (64 KiB; the routes refuse bigger ones anyway).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI

from realtime_fsm.asgi import TwilioVoiceRoutes
from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import DEFAULT_REALTIME_URL, ServerConfig

GREETING = "Greet the caller briefly and ask how you can help."
INSTRUCTIONS = "You are a friendly phone assistant. Keep answers short."


def config_from_env() -> ServerConfig:
    """The call's settings from the environment (``PUBLIC_URL`` is required: it is what TwiML
    sends Twilio to and what signatures are checked against)."""
    env = os.environ
    realtime_url = env.get("REALTIME_URL") or env.get("OPENAI_REALTIME_URL")
    return ServerConfig(
        public_url=env["PUBLIC_URL"],
        realtime_url=realtime_url or DEFAULT_REALTIME_URL,
        api_key=env.get("OPENAI_API_KEY", ""),
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        bridge=BridgeConfig(
            session=SessionConfig(instructions=env.get("INSTRUCTIONS", INSTRUCTIONS)),
            greeting=env.get("GREETING", GREETING),
        ),
        trace_dir=env.get("TRACE_DIR") or None,
    )


def create_app(config: ServerConfig) -> FastAPI:
    """The app: the voice routes, and a health check that counts calls."""
    reports: list[CallReport] = []
    started = [0]

    def on_call(bridge: CallBridge) -> None:
        # Keep ``bridge`` to reach the live call: bridge.send_user_text("...") or
        # bridge.request_response(instructions="...") from your own routes.
        started[0] += 1

    voice = TwilioVoiceRoutes(config, on_call=on_call, reports=reports)
    app = FastAPI(title="voice agent")
    app.router.routes.extend(voice.routes)
    app.state.reports = reports

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "calls_started": started[0],
            "calls_finished": len(reports),
            "last_end_reason": reports[-1].end_reason if reports else None,
        }

    return app


# uvicorn configures only its own loggers: show the calls' (``realtime_fsm.*``) too.
logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
app = create_app(config_from_env())
