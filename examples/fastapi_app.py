"""A FastAPI voice agent: the Twilio bridge mounted next to the app's own routes, one tool
(``lookup_order``) the model can call, a greeting made for each caller, and the call's events
read by the app.

    pip install -e '.[asgi,twilio]' fastapi uvicorn   # from a clone of realtime-fsm
    export OPENAI_API_KEY=sk-...  PUBLIC_URL=https://example.ngrok.app  TWILIO_AUTH_TOKEN=...
    uvicorn examples.fastapi_app:app --host 0.0.0.0 --port 8080 --ws-max-size 65536

Point the Twilio number's voice webhook (GET or POST) at ``$PUBLIC_URL/incoming-call``.
``TWILIO_AUTH_TOKEN`` turns on the ``X-Twilio-Signature`` checks of both routes;
``OPENAI_REALTIME_MODEL`` picks the model (default ``gpt-realtime-2.1``);
``REALTIME_PROVIDER=azure`` with ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_DEPLOYMENT``,
``AZURE_OPENAI_API_KEY`` and ``TRANSCRIPTION_MODEL`` (your transcription deployment) uses Azure
OpenAI (``realtime_fsm.server.ENV_SETTINGS`` lists them all); ``REALTIME_URL`` (or
``OPENAI_REALTIME_URL``) points the bridge at any compatible server, such as the simulator in
``realtime_fsm.testing``.  ``GREETING`` and ``INSTRUCTIONS`` set what the
agent says first and how it behaves.  ``--ws-max-size`` keeps uvicorn from reading a media
message larger than the bridge accepts (64 KiB; the routes refuse bigger ones anyway).

In production run it as ``python examples/fastapi_app.py`` (``HOST``, ``PORT``): uvicorn under
:class:`~realtime_fsm.asgi_drain.DrainingServer`, whose SIGTERM lets calls in progress finish
(plain ``uvicorn`` cuts them with 1012 before the lifespan shutdown runs; see
``docs/deploying.md``).  ``MAX_CALLS`` bounds the calls taken at once (``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from realtime_fsm import CallerTranscript, ToolCall, ToolResult, function_tool
from realtime_fsm.asgi import TwilioVoiceRoutes
from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, realtime_settings_from_env

GREETING = "Greet the caller briefly and ask how you can help."
INSTRUCTIONS = (
    "You are a friendly phone assistant for an online shop. Keep answers short. Use"
    " lookup_order when the caller asks about an order."
)
#: Your CRM: who calls from which number (the example's stand-in).
CUSTOMERS = {"+15550100": "Ada"}
#: Your order system (the example's stand-in).
ORDERS = {"42": "shipped on Monday, arriving Thursday", "7": "being packed"}
log = logging.getLogger("voice_agent")


@function_tool
async def lookup_order(order_id: str) -> dict[str, str]:
    """Look up the status of an order.

    Args:
        order_id: The order number, as the caller said it (digits only).
    """
    return {"order_id": order_id, "status": ORDERS.get(order_id, "not found")}


def stream_parameters(webhook: Mapping[str, str]) -> dict[str, str]:
    """From Twilio's webhook to the stream's ``<Parameter>``s: who is calling."""
    name = CUSTOMERS.get(webhook.get("From", ""))
    return {"name": name} if name else {}


def greeting(params: Mapping[str, str]) -> str:
    """The first thing the agent says, made for this caller."""
    name = params.get("name")
    if name:
        return f"Greet {name} by name, briefly, and ask how you can help."
    return GREETING


def config_from_env() -> ServerConfig:
    """The call's settings from the environment (``PUBLIC_URL`` is required: it is what TwiML
    sends Twilio to and what signatures are checked against)."""
    env = os.environ
    realtime = realtime_settings_from_env(env)
    if env.get("REALTIME_URL"):
        realtime["realtime_url"] = env["REALTIME_URL"]
    return ServerConfig(
        public_url=env["PUBLIC_URL"],
        **realtime,  # type: ignore[arg-type]
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        bridge=BridgeConfig(
            session=SessionConfig(
                instructions=env.get("INSTRUCTIONS", INSTRUCTIONS),
                transcription_model=env.get("TRANSCRIPTION_MODEL") or None,
            ),
            greeting=env.get("GREETING") or greeting,
            tools=(lookup_order,),
        ),
        trace_dir=env.get("TRACE_DIR") or None,
        stream_parameters=stream_parameters,
        max_calls=int(env["MAX_CALLS"]) if env.get("MAX_CALLS") else None,
    )


def create_app(config: ServerConfig) -> FastAPI:
    """The app: the voice routes, and a health check that counts calls."""
    reports: list[CallReport] = []
    started = [0]
    watchers: set[asyncio.Task[None]] = set()

    async def watch(bridge: CallBridge) -> None:
        """The call's events, as your app would use them (a dashboard, a CRM note)."""
        async for event in bridge.events():
            if isinstance(event, CallerTranscript) and event.final:
                log.info("caller said %d chars", len(event.text))
            elif isinstance(event, ToolCall):
                log.info("model called %s", event.name)
            elif isinstance(event, ToolResult):
                log.info("%s answered in %.2fs (ok=%s)", event.name, event.took, event.ok)

    def on_call(bridge: CallBridge) -> None:
        # Keep ``bridge`` to reach the live call: bridge.send_user_text("...") or
        # bridge.request_response(instructions="...") from your own routes.
        started[0] += 1
        task = asyncio.create_task(watch(bridge))
        watchers.add(task)
        task.add_done_callback(watchers.discard)

    voice = TwilioVoiceRoutes(config, on_call=on_call, reports=reports)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Under DrainingServer the drain is done by now; under another server this at least
        # stops new calls before the process goes.
        await voice.drain()

    app = FastAPI(title="voice agent", lifespan=lifespan)
    app.router.routes.extend(voice.routes)
    app.state.reports = reports
    app.state.voice = voice

    @app.get("/readyz")
    async def readyz() -> Any:
        """Takes new calls: 200, or 503 while draining or full (``voice.health_routes`` has
        this and a ``/healthz`` ready-made; this app keeps its own ``/healthz``)."""
        status, body = voice.readiness()
        return JSONResponse(body, status_code=status)

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


def main() -> None:
    """Serve ``app`` with uvicorn, drained on SIGTERM (``realtime_fsm.asgi_drain``)."""
    import uvicorn

    from realtime_fsm.asgi_drain import DrainingServer

    config = uvicorn.Config(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
        ws_max_size=65536,
    )
    asyncio.run(DrainingServer(config, app.state.voice).serve())


if __name__ == "__main__":
    main()
