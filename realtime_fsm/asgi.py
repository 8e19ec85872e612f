"""The Twilio bridge as Starlette routes, to mount in your own FastAPI or Starlette app.

``realtime_fsm.server`` runs the bridge on a port of its own.  Most applications already have a
web app (auth, dashboards, health checks) and want the voice agent inside it::

    voice = TwilioVoiceRoutes(ServerConfig(public_url="https://example.ngrok.app"))
    app = FastAPI()
    app.router.routes.extend(voice.routes)      # Starlette: Starlette(routes=voice.routes)

The routes do what the built-in server does: ``/incoming-call`` answers the same TwiML,
``/media-stream`` checks the upgrade's ``X-Twilio-Signature`` and runs one
:class:`~realtime_fsm.bridge.CallBridge` per call through :func:`realtime_fsm.server.bridge_call`
(OpenAI socket, reconnects, traces), so a call behaves the same on either driver.

Why a driver rather than ten lines of glue: the bridge ends a call normally when the telephony
socket raises ``ConnectionError`` (or ``OSError``, ``EOFError``), but Starlette reports a
hang-up as ``WebSocketDisconnect`` (and a receive after it as ``RuntimeError``), which the
bridge does not know, so hand-written glue turns every hang-up into "internal error" with a
traceback.  :class:`StarletteSocket` translates them into :class:`TelephonyDisconnected`.

Needs Starlette, the ``asgi`` extra: ``pip install 'starlette>=0.37'`` in the app's environment
(or ``pip install -e '.[asgi]'`` from a clone of realtime-fsm).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

try:
    from starlette.datastructures import MultiDict
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import BaseRoute, Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
except ImportError as exc:  # pragma: no cover - exercised by a test that hides starlette
    raise ImportError(
        "realtime_fsm.asgi needs Starlette: pip install 'starlette>=0.37' (the 'asgi' extra)"
    ) from exc

from .bridge import CallBridge, CallReport, MessageSocket
from .drain import HEALTH_PATH, READY_PATH, CallTracker, DrainReport, admit_webhook
from .logsafe import safe
from .prestart import PreStartLimits
from .server import (
    ServerConfig,
    SignatureValidator,
    bridge_call,
    signature_refusal,
    signature_validator,
    signed_url,
)
from .webserver import MAX_BODY_BYTES

__all__ = ["StarletteSocket", "TelephonyDisconnected", "TwilioVoiceRoutes"]

log = logging.getLogger("realtime_fsm.asgi")

#: Close code for a message over the size limit (RFC 6455: "message too big").
CLOSE_TOO_BIG = 1009
#: Close code for a connection dropped without a close frame (never sent on the wire).
CLOSE_ABNORMAL = 1006
_TWIML_TYPE = "text/xml; charset=utf-8"
_FORM_TYPE = "application/x-www-form-urlencoded"


class TelephonyDisconnected(ConnectionError):
    """The telephony WebSocket is gone: the peer hung up, dropped, or we closed it.

    A ``ConnectionError``, so :class:`~realtime_fsm.bridge.CallBridge` ends the call as a
    normal hang-up (``telephony closed``).  ``code`` is the close code when one is known
    (1006: the connection dropped without a close frame)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"telephony websocket closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class _Peer:
    """What :class:`CallBridge` reads off a socket to name the caller in its log lines
    before Twilio's ``start`` names the call (``socket.request.client``)."""

    def __init__(self, client: str) -> None:
        self.client = client


def _client(conn: Request | WebSocket) -> str:
    client = conn.client
    return f"{client.host}:{client.port}" if client is not None else "-"


class StarletteSocket:
    """A Starlette :class:`~starlette.websockets.WebSocket` as the bridge's ``MessageSocket``.

    * ``recv`` returns a text (or binary) message; every way the peer can leave (a close frame,
      a dropped connection, a receive after that) raises :class:`TelephonyDisconnected`.
    * A message over ``max_message`` is not handed on: the socket is closed with 1009 and
      :class:`TelephonyDisconnected` raised.  The ASGI server has read that message already,
      so also bound it there (uvicorn ``ws_max_size``) to keep a flood out of memory.
    * ``send`` after the peer left raises :class:`TelephonyDisconnected` too.
    * ``close`` is idempotent and never raises: the bridge closes both sides on every way a
      call ends, often after the peer is already gone.

    The socket must be accepted; one reader and one writer at a time (the bridge's use)."""

    def __init__(self, websocket: WebSocket, *, max_message: int) -> None:
        self.websocket = websocket
        self.max_message = max_message
        self.request = _Peer(_client(websocket))
        self._gone: TelephonyDisconnected | None = None

    @property
    def closed(self) -> bool:
        return self._gone is not None

    @property
    def close_code(self) -> int | None:
        return self._gone.code if self._gone is not None else None

    def _left(self, code: int | None, reason: str = "") -> TelephonyDisconnected:
        if self._gone is None:
            self._gone = TelephonyDisconnected(code, reason)
        return self._gone

    def _state_error(self, exc: RuntimeError) -> TelephonyDisconnected:
        """Starlette raises ``RuntimeError`` (``WebSocketDisconnected`` in 1.x) for a socket
        used after a disconnect or close; anything else is a bug and is re-raised."""
        ws = self.websocket
        if WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state):
            return self._left(CLOSE_ABNORMAL, "used after close")
        raise exc

    async def recv(self) -> str | bytes:
        if self._gone is not None:
            raise self._gone
        try:
            message = await self.websocket.receive()
        except OSError:
            raise self._left(CLOSE_ABNORMAL) from None
        except RuntimeError as exc:
            raise self._state_error(exc) from None
        if message["type"] == "websocket.disconnect":
            raise self._left(message.get("code", 1000), message.get("reason") or "")
        data: str | bytes | None = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is None:  # not an ASGI shape we know: treat as the end, not as a bug of ours
            raise self._left(CLOSE_ABNORMAL, "malformed ASGI message")
        if self._too_big(data):
            log.warning(
                "closing media stream from %s: a message over %d bytes",
                self.request.client,
                self.max_message,
            )
            await self.close(CLOSE_TOO_BIG, "message too big")
            raise self._left(CLOSE_TOO_BIG, "message too big")
        return data

    def _too_big(self, data: str | bytes) -> bool:
        limit = self.max_message
        if len(data) > limit:
            return True
        # UTF-8 takes at most 4 bytes a character: only a long text needs encoding to tell.
        return isinstance(data, str) and len(data) * 4 > limit and len(data.encode()) > limit

    async def send(self, message: str) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            await self.websocket.send_text(message)
        except WebSocketDisconnect as exc:  # Starlette's name for an OSError from the server
            raise self._left(exc.code, exc.reason) from None
        except OSError:
            raise self._left(CLOSE_ABNORMAL) from None
        except RuntimeError as exc:
            raise self._state_error(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        ws = self.websocket
        gone = self._gone is not None
        self._left(code, reason)
        if gone or WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state):
            return
        try:
            await ws.close(code, reason[:120])
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("close of media stream from %s: %r", self.request.client, exc)


class TwilioVoiceRoutes:
    """``/incoming-call`` (TwiML) and ``/media-stream`` (the call) as Starlette routes.

    ``prefix``: where the two routes live in your app; by default the path of
    ``config.public_url``, because that is where TwiML tells Twilio to connect and what Twilio
    signs (``https://host/voice`` serves ``/voice/incoming-call``).  Pass ``prefix=""`` when a
    proxy strips the public path.  Signatures are always checked against the configured public
    URL, never one rebuilt from (proxied) request headers.

    ``on_call`` sees each :class:`CallBridge` before it runs (to keep it for
    ``send_user_text`` / ``request_response``, or count live calls); an exception in it is
    logged and the call is served anyway.  Finished calls' reports are appended to
    ``reports``.  ``connect`` opens the OpenAI socket (first session and reconnects) instead of
    :func:`~realtime_fsm.server.connect_realtime`.

    Raises ``RuntimeError`` at construction when ``config.twilio_auth_token`` is set and the
    ``twilio`` package is missing: a configured token must not mean unchecked endpoints."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        on_call: Callable[[CallBridge], object] | None = None,
        reports: list[CallReport] | None = None,
        connect: Callable[[], Awaitable[MessageSocket]] | None = None,
        prefix: str | None = None,
    ) -> None:
        self.config = config
        self.on_call = on_call
        self.reports = reports
        self.connect = connect
        #: Streams waiting for Twilio's ``start`` (see ``ServerConfig.max_pre_start``).
        self.limits = PreStartLimits(config.max_pre_start, config.max_pre_start_per_client)
        if prefix is None:
            prefix = urlsplit(config.public_url).path
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        token = config.twilio_auth_token
        self._validator: SignatureValidator | None = signature_validator(token) if token else None
        #: What Twilio requests and signs: the configured public URLs (no query string).
        self.webhook_url = config.public_url.rstrip("/") + "/incoming-call"
        self.stream_url = config.stream_url
        #: Per-call stream credentials (with a token; see ``ServerConfig.stream_credentials``):
        #: minted by the webhook, checked at ``start``; any worker with the token verifies.
        self.credentials = config.credentials()
        #: This process's calls: capacity (``ServerConfig.max_calls``), health, the drain.
        self.tracker = CallTracker(config.admission())

    @property
    def routes(self) -> list[BaseRoute]:
        """``GET|POST {prefix}/incoming-call`` and the ``{prefix}/media-stream`` WebSocket:
        for ``app.router.routes.extend(...)`` (FastAPI or Starlette) or ``routes=``."""
        return [
            Route(
                f"{self.prefix}/incoming-call",
                self.incoming_call,
                methods=["GET", "POST"],
                name="realtime_fsm_incoming_call",
            ),
            WebSocketRoute(
                f"{self.prefix}/media-stream", self.media_stream, name="realtime_fsm_media_stream"
            ),
            *self.metrics_routes,
        ]

    @property
    def metrics_routes(self) -> list[BaseRoute]:
        """``GET {metrics_path}`` (Prometheus text) when ``config.telemetry`` serves one (its
        path as given, not under ``prefix``); included in :attr:`routes`."""
        telemetry = self.config.telemetry
        if telemetry is None or not telemetry.metrics_path:
            return []
        return [
            Route(
                telemetry.metrics_path, self.metrics, methods=["GET"], name="realtime_fsm_metrics"
            )
        ]

    async def metrics(self, request: Request) -> Response:
        """A Prometheus scrape of ``config.telemetry`` (501 without ``prometheus_client``)."""
        telemetry = self.config.telemetry
        assert telemetry is not None
        status, body, content_type = telemetry.exposition()
        return Response(body, status_code=status, headers={"content-type": content_type})

    # ---------------------------------------------------------------- health and the drain

    @property
    def health_routes(self) -> list[BaseRoute]:
        """``GET /healthz`` (alive) and ``GET /readyz`` (takes new calls: not draining, under
        ``config.max_calls``; 503 otherwise), JSON: for the app's routes, at the root (not
        under ``prefix``: probes are the deployment's, not Twilio's).  Not in :attr:`routes`,
        so an app that has its own health checks can fold :meth:`readiness` into them."""
        return [
            Route(HEALTH_PATH, self._health, methods=["GET"], name="realtime_fsm_healthz"),
            Route(READY_PATH, self._ready, methods=["GET"], name="realtime_fsm_readyz"),
        ]

    async def _health(self, request: Request) -> Response:
        status, body = self.tracker.health()
        return JSONResponse(body, status_code=status)

    async def _ready(self, request: Request) -> Response:
        status, body = self.tracker.readiness()
        return JSONResponse(body, status_code=status)

    def readiness(self) -> tuple[int, dict[str, object]]:
        """What ``/readyz`` answers: 200 or 503, and the figures (calls, places held, ...)."""
        return self.tracker.readiness()

    async def drain(self, timeout: float | None = None) -> DrainReport:
        """Drain: readiness false and new calls refused at once, calls in progress go on
        until they end or ``timeout`` (default ``config.drain_timeout``) passes, then end with
        1001 ("going away").  Call it from the app's shutdown (the lifespan), which uvicorn
        runs on SIGTERM after it stopped accepting connections::

            @asynccontextmanager
            async def lifespan(app):
                yield
                await voice.drain()

        Calling it again waits for the same drain."""
        return await self.tracker.drain(self.config.drain_timeout if timeout is None else timeout)

    # ------------------------------------------------------------------------- the webhook

    async def incoming_call(self, request: Request) -> Response:
        """Answer Twilio's voice webhook with ``<Connect><Stream>`` to the media route."""
        body = b""
        if request.method == "POST":
            try:
                body = await _read_body(request, MAX_BODY_BYTES)
            except _BodyTooLarge:
                log.warning("refusing webhook from %s: body too large", _client(request))
                return PlainTextResponse("body too large\n", status_code=413)
        form: MultiDict = MultiDict()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and content_type == _FORM_TYPE:
            form = MultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if self._validator is not None:
            url = signed_url(self.webhook_url, request.url.query)
            signature = request.headers.get("x-twilio-signature", "")
            reason = signature_refusal(self._validator, signature, url, form)
            if reason is not None:
                log.warning("refusing webhook from %s: %s", _client(request), safe(reason))
                return PlainTextResponse(f"forbidden: {reason}\n", status_code=403)
        webhook = {**dict(request.query_params), **dict(form)}
        refused = admit_webhook(self.config.when_unavailable, self.tracker.admission, webhook)
        if refused is not None:
            return Response(
                refused.body,
                status_code=refused.status,
                headers=dict(refused.headers),
                media_type=refused.content_type,
            )
        call = webhook.get("CallSid") or "-"
        log.info("call=%s incoming call; streaming to %s", safe(call, 64), self.stream_url)
        body = self.config.stream_twiml(webhook, self.credentials)
        return Response(body, media_type=_TWIML_TYPE)

    # ------------------------------------------------------------------------ the call

    async def media_stream(self, websocket: WebSocket) -> None:
        """One call: check the upgrade, accept, bridge until either side ends.

        Nothing the caller does raises out of here: a hang-up at any point ends the call
        normally, an unreachable OpenAI server closes the caller with 1011 and one log line."""
        if self._validator is not None:
            reason = self._refusal(websocket)
            if reason is not None:
                log.warning("refusing media stream from %s: %s", _client(websocket), safe(reason))
                await _refuse(websocket, reason)
                return
        try:
            await websocket.accept()
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            log.info("media stream from %s gone before accept: %r", _client(websocket), exc)
            return
        sock = StarletteSocket(websocket, max_message=self.config.bridge.max_twilio_message)
        try:
            await bridge_call(
                self.config,
                sock,
                self.reports,
                self.tracker.watching(self._guarded_on_call()),
                connect=self.connect,
                limits=self.limits,
                credentials=self.credentials,
                admission=self.tracker.admission,
            )
        finally:
            await sock.close()

    def _refusal(self, websocket: WebSocket) -> str | None:
        """Why the upgrade is refused (as ``server.signature_gate`` decides), or None."""
        if websocket.url.query:
            return "query string on the stream URL"
        assert self._validator is not None
        signature = websocket.headers.get("x-twilio-signature", "")
        return signature_refusal(self._validator, signature, self.stream_url, {})

    def _guarded_on_call(self) -> Callable[[CallBridge], None] | None:
        on_call = self.on_call
        if on_call is None:
            return None

        def guarded(bridge: CallBridge) -> None:
            try:
                on_call(bridge)
            except Exception:  # the app's bug: logged, and the caller is still served
                log.exception("on_call callback failed; serving the call anyway")

        return guarded


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes (``_BodyTooLarge`` past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse(websocket: WebSocket, reason: str) -> None:
    """Refuse an upgrade with HTTP 403 (and the reason) where the server supports ASGI's
    WebSocket denial response, else with a close before accept (which servers answer 403)."""
    try:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(
                PlainTextResponse(f"forbidden: {reason}\n", status_code=403)
            )
        else:
            await websocket.close(1008, reason)
    except (WebSocketDisconnect, OSError, RuntimeError) as exc:
        log.debug("refusal of %s not delivered: %r", _client(websocket), exc)
