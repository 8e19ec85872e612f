"""The Twilio bridge server: ``/incoming-call`` (TwiML) and ``/media-stream`` on one port.

``examples/twilio_bridge.py`` is the command line around :func:`start_server`; the demo and the
end-to-end tests start the very same server, pointed at the simulator instead of OpenAI.

Security: when a Twilio auth token is configured, both requests Twilio makes are signature
checked with the ``twilio`` package's ``RequestValidator``, always against the *configured*
public URLs (never ones rebuilt from proxied request headers): the webhook's
``X-Twilio-Signature`` over ``https://<public>/incoming-call`` plus its query string and form
fields, the WebSocket upgrade's over the ``wss://`` stream URL.  A bad or missing signature is
refused with HTTP 403 and one log line, before any TwiML or audio.  The API key (OpenAI's
``Authorization``, Azure's ``api-key`` header), an Entra ID token and the Twilio token are never
logged, and what a caller controls (a ``CallSid``, a path) is logged escaped
(:func:`~realtime_fsm.http_head.printable`), so it cannot forge a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

import attrs
from websockets.asyncio.client import connect

from .admission import Admission
from .bridge import BridgeConfig, CallBridge, CallReport, MessageSocket
from .call.fields import FATAL_HANDSHAKE_STATUSES
from .credentials import CREDENTIAL_PARAMETER, StreamCredentials
from .drain import DEFAULT_DRAIN_TIMEOUT, WHEN_UNAVAILABLE, CallTracker, admit_webhook
from .errors import UpstreamUnreachable
from .logsafe import safe
from .openai_realtime import Dialect
from .openai_realtime.endpoint import SECRET_HEADERS
from .openai_realtime.models import realtime_deprecation, transcription_deprecation
from .prestart import PreStartLimits
from .sockets import handshake_status
from .telemetry import Telemetry
from .trace import MAX_TRACE_BYTES, start_trace
from .upstream import API_KEY_ENV as API_KEY_ENV
from .upstream import DEFAULT_REALTIME_URL as DEFAULT_REALTIME_URL
from .upstream import ENV_SETTINGS as ENV_SETTINGS
from .upstream import RealtimeSettings
from .upstream import realtime_settings_from_env as realtime_settings_from_env
from .validators import positive, positive_int
from .webserver import (
    HttpHandler,
    HttpRequest,
    HttpResponse,
    Routes,
    WebSocket,
    WebSocketGate,
    serve,
)

log = logging.getLogger("realtime_fsm.server")


class _RedactAuthorization(logging.Filter):
    """At DEBUG, ``websockets`` logs every handshake header as ``("> %s: %s", name, value)``;
    the ``Authorization`` header (OpenAI's key, an Entra token) and Azure's ``api-key`` header
    of the Realtime connection carry secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        return True


#: The OpenAI connection's logger: under ``websockets.client``, so it is configured like it,
#: but the API key is redacted from the handshake it logs.
_openai_ws_log = logging.getLogger("websockets.client.realtime_fsm")
_openai_ws_log.addFilter(_RedactAuthorization())


class SignatureValidator(Protocol):
    def validate(self, uri: str, params: dict[str, str], signature: str) -> bool: ...


class _SignedParams(dict[str, str]):
    """Form fields for ``RequestValidator``: a dict of first values that also answers
    ``getall``, which the validator asks for so that every value of a repeated field is signed,
    as Twilio signs them."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for name, value in fields:
            self.setdefault(name, value)
            self._all.setdefault(name, []).append(value)

    def getall(self, name: str) -> list[str]:
        return self._all[name]


@attrs.frozen
class ServerConfig(RealtimeSettings):
    """Where to listen is given to :func:`start_server`; this is what to do with a call.

    Where sessions connect and how they authenticate (the model, OpenAI or Azure, the key)
    are the keyword-only fields of :class:`~realtime_fsm.upstream.RealtimeSettings`."""

    #: The public base URL Twilio reaches this server at (``https://example.ngrok.app``).
    public_url: str
    twilio_auth_token: str | None = attrs.field(default=None, repr=False)
    bridge: BridgeConfig = attrs.field(factory=BridgeConfig)
    #: Record one JSONL trace per call here (``docs/traces.md``); ``None``: no traces.
    trace_dir: str | Path | None = None
    #: A trace file stops growing at this size (the call goes on; the cut is noted in the file
    #: and logged once), so a runaway call cannot fill the disk.
    max_trace_bytes: int = attrs.field(default=MAX_TRACE_BYTES, validator=positive_int)
    #: The call's custom parameters, from the webhook's parameters (``From``, ``CallSid``, ...,
    #: as Twilio sent them): put in the TwiML as ``<Parameter>``s, they come back in the
    #: stream's ``start`` (``customParameters``), where ``BridgeConfig.greeting`` and the
    #: application see them.  The stream URL can carry no query string: this is the way to
    #: pass per-call data.  ``None``: none.
    stream_parameters: Callable[[Mapping[str, str]], Mapping[str, str]] | None = None
    #: Media streams waiting for Twilio's ``start`` at once, in total and from one address
    #: (``realtime_fsm.prestart``); more are closed with 1013.  Twilio sends many calls from
    #: few addresses: the per-address bound is for a flood, not for a burst of real calls.
    max_pre_start: int = attrs.field(default=200, validator=positive_int)
    max_pre_start_per_client: int = attrs.field(default=50, validator=positive_int)
    #: With a Twilio auth token: the signed webhook mints a per-call stream credential
    #: (``realtime_fsm.credentials``), and a stream whose ``start`` lacks a valid one for its
    #: call is closed with 1008 before any OpenAI session.  Turn off only when another
    #: application answers the webhook and does not put :meth:`StreamCredentials.mint`'s
    #: credential in its TwiML (the upgrade signature is then the only check).
    stream_credentials: bool = True
    #: Seconds a minted credential admits its stream (Twilio connects within a second or two).
    stream_credential_ttl: float = 60.0
    #: Spans and metrics of every call, and ``/metrics`` (``docs/observability.md``);
    #: ``None``: off, at no cost.
    telemetry: Telemetry | None = None
    #: Calls this process takes at once (``realtime_fsm.admission``), counted at the webhook:
    #: past it the webhook is refused (``when_unavailable``) and ``/readyz`` answers 503.
    #: ``None``: no bound.
    max_calls: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(positive_int)
    )
    #: Seconds an admitted webhook holds its place for its stream (Twilio connects within a
    #: second or two).  A drain waits for held places too, so that a call admitted just before
    #: it is served; with several workers the stream may be served by another one, and the
    #: place here is given back only when this passes: short, but well above Twilio's delay.
    admission_hold: float = attrs.field(default=10.0, validator=positive)
    #: Seconds calls in progress get to end by themselves once a drain begins (SIGTERM to the
    #: ``serve`` command, ``TwilioVoiceRoutes.drain``); then they end with 1001.
    drain_timeout: float = attrs.field(default=DEFAULT_DRAIN_TIMEOUT, validator=positive)
    #: How a webhook is refused when this process is full or draining: one of
    #: :data:`WHEN_UNAVAILABLE`.
    when_unavailable: str = attrs.field(
        default="fail-over", validator=attrs.validators.in_(WHEN_UNAVAILABLE)
    )

    def admission(self) -> Admission:
        """The call capacity these settings ask for (one per server process)."""
        return Admission(self.max_calls, hold=self.admission_hold)

    def credentials(self) -> StreamCredentials | None:
        """The per-call stream credentials these settings ask for (one per server process: it
        remembers which credentials were used), or ``None``."""
        token = self.twilio_auth_token
        if not token or not self.stream_credentials:
            return None
        return StreamCredentials.from_auth_token(token, self.stream_credential_ttl)

    def stream_twiml(
        self, webhook: Mapping[str, str], credentials: StreamCredentials | None
    ) -> bytes:
        """The webhook's answer: ``<Connect><Stream>`` with the call's parameters and, with
        ``credentials``, the credential minted for this call (``AccountSid`` and ``CallSid``
        of the signed webhook; the stream's ``start`` must name the same)."""
        params = dict(self.parameters_for(webhook))
        if CREDENTIAL_PARAMETER in params:
            log.warning("stream_parameters: %r is reserved, replaced", CREDENTIAL_PARAMETER)
            del params[CREDENTIAL_PARAMETER]
        if credentials is not None:
            params[CREDENTIAL_PARAMETER] = credentials.mint(
                webhook.get("AccountSid", ""), webhook.get("CallSid", ""), time.time()
            )
        return twiml(self.stream_url, params)

    def __attrs_post_init__(self) -> None:
        self.check_realtime()
        session = self.bridge.session
        # Azure deviation (its Realtime API reference): the transcription ``model`` must name
        # a deployment of the resource, so no default name can be right.
        azure = self.provider == "azure"
        if azure and session.input_transcription and session.transcription_model is None:
            raise ValueError(
                "Azure takes the input transcription model as a deployment name: set"
                " SessionConfig(transcription_model='<your transcription deployment>')"
                " or input_transcription=False"
            )

    def call_bridge(self) -> tuple[BridgeConfig, tuple[str, ...]]:
        """The :class:`BridgeConfig` each call runs with, and the session fields left out of
        it because :attr:`session_model` cannot take them
        (:meth:`~realtime_fsm.openai_realtime.SessionConfig.for_model`)."""
        session, dropped = self.bridge.session.for_model(self.session_model)
        if not dropped:
            return self.bridge, ()
        return attrs.evolve(self.bridge, session=session), dropped

    def model_warnings(self) -> list[str]:
        """What this config's models deserve a warning for: an announced shutdown (OpenAI
        only: for Azure the names are deployments, on Azure's own retirement schedule), and
        reasoning settings a non-reasoning model will not be sent."""
        warnings: list[str] = []
        model = self.session_model
        if self.provider == "openai":
            dialect = self.bridge.dialect
            names = (
                realtime_deprecation(model) if model is not None else None,
                transcription_deprecation(
                    self.bridge.session.transcription_model_for(dialect) or ""
                ),
            )
            warnings.extend(found.describe() for found in names if found is not None)
        _, dropped = self.call_bridge()
        if dropped:
            warnings.append(
                f"model {model!r} does not reason: {' and '.join(dropped)} not sent"
                " (only reasoning models such as gpt-realtime-2.1 take them)"
            )
        return warnings

    def parameters_for(self, webhook: Mapping[str, str]) -> Mapping[str, str]:
        """``stream_parameters`` applied to a webhook's parameters; a function that raises
        or returns something else is logged and gives none (the call still connects)."""
        make = self.stream_parameters
        if make is None:
            return {}
        try:
            params = make(webhook)
        except Exception:
            log.exception("stream_parameters failed: the stream gets no parameters")
            return {}
        if not isinstance(params, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            log.error("stream_parameters must return str -> str; the stream gets none")
            return {}
        return params

    @property
    def webhook_url(self) -> str:
        """The public URL of ``/incoming-call``, as Twilio requests and signs it."""
        return self.public_url.rstrip("/") + "/incoming-call"

    @property
    def stream_url(self) -> str:
        """The ``wss://`` URL put in the TwiML ``<Stream>`` (and that Twilio signs)."""
        parts = urlsplit(self.public_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/") + "/media-stream"
        return urlunsplit((scheme, parts.netloc, path, "", ""))


def twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> bytes:
    """``<Connect><Stream>`` to ``stream_url``, with ``parameters`` as ``<Parameter>``s."""
    inner = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)} />"
        for name, value in (parameters or {}).items()
    )
    stream = (
        f"<Stream url={quoteattr(stream_url)}>{inner}</Stream>"
        if inner
        else f"<Stream url={quoteattr(stream_url)} />"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Connect>{stream}</Connect></Response>\n"
    ).encode()


def signature_validator(token: str) -> SignatureValidator:
    """The ``twilio`` package's ``RequestValidator``; fails closed (``RuntimeError``) without
    the package, since a configured token must never mean an unchecked endpoint."""
    try:
        from twilio.request_validator import RequestValidator
    except ImportError as exc:  # fail closed: a token without a validator is a config error
        raise RuntimeError(
            "TWILIO_AUTH_TOKEN is set but the 'twilio' package is missing:"
            " pip install 'twilio>=9' (the 'twilio' extra)"
        ) from exc
    validator: SignatureValidator = RequestValidator(token)
    return validator


def signed_url(url: str, query: str) -> str:
    """The URL Twilio signed: the configured one plus the request's raw query string."""
    return f"{url}?{query}" if query else url


def signature_refusal(
    validator: SignatureValidator, signature: str, url: str, params: Any
) -> str | None:
    """Why a request's ``X-Twilio-Signature`` over ``url`` and ``params`` is refused, or
    ``None``: the one decision both servers make for the webhook and the media upgrade.
    ``params`` answers ``getall`` (a ``MultiDict``, :class:`_SignedParams`) when a form field
    may repeat: the validator then signs every value, as Twilio does."""
    if not signature:
        return "missing X-Twilio-Signature"
    if not validator.validate(url, params, signature):
        return "invalid X-Twilio-Signature"
    return None


def signature_gate(config: ServerConfig) -> WebSocketGate | None:
    """The upgrade check for ``/media-stream``, or ``None`` when no token is configured."""
    token = config.twilio_auth_token
    if not token:
        return None
    validator = signature_validator(token)
    expected_url = config.stream_url

    async def gate(request: HttpRequest) -> HttpResponse | None:
        signature = request.headers.get("x-twilio-signature", "")
        if "?" in request.target:
            reason: str | None = "query string on the stream URL"
        else:
            reason = signature_refusal(validator, signature, expected_url, {})
        if reason is None:
            return None
        log.warning("refusing media stream from %s: %s", request.client, reason)
        return HttpResponse(403, f"forbidden: {reason}\n".encode())

    return gate


def webhook_check(config: ServerConfig) -> Callable[[HttpRequest], str | None] | None:
    """The ``/incoming-call`` signature check, or ``None`` when no token is configured: it
    returns why a request is refused, or ``None`` to serve it.

    The same rules as :class:`~realtime_fsm.asgi.TwilioVoiceRoutes`: the signed URL is the
    configured webhook URL plus the request's raw query string (a GET carries its parameters
    there), and the signed parameters are the form fields of a form-encoded POST body, every
    value of a repeated field included."""
    token = config.twilio_auth_token
    if not token:
        return None
    validator = signature_validator(token)
    webhook_url = config.webhook_url

    def check(request: HttpRequest) -> str | None:
        return signature_refusal(
            validator,
            request.headers.get("x-twilio-signature", ""),
            signed_url(webhook_url, request.query_string),
            _SignedParams(request.form_fields()),
        )

    return check


async def _incoming_call(
    config: ServerConfig,
    request: HttpRequest,
    check: Callable[[HttpRequest], str | None] | None = None,
    credentials: StreamCredentials | None = None,
    admission: Admission | None = None,
) -> HttpResponse:
    if request.method not in ("GET", "POST"):
        return HttpResponse(405, b"method not allowed\n")
    if check is not None:
        reason = check(request)
        if reason is not None:
            log.warning("refusing webhook from %s: %s", request.client, reason)
            return HttpResponse(403, f"forbidden: {reason}\n".encode())
    webhook = {**request.query, **dict(request.form_fields()[::-1])}
    refused = admit_webhook(config.when_unavailable, admission, webhook)
    if refused is not None:
        return refused
    call = webhook.get("CallSid") or "-"
    log.info("call=%s incoming call; streaming to %s", safe(call, 64), config.stream_url)
    return HttpResponse(200, config.stream_twiml(webhook, credentials), "text/xml; charset=utf-8")


#: Warnings already logged by this process (:func:`log_model_warnings`): one per model.
_warned: set[str] = set()


def log_model_warnings(config: ServerConfig) -> None:
    """Log each of :meth:`ServerConfig.model_warnings` once per process: a server starting
    with a deprecated model says so at start-up, and not again for every call."""
    for warning in config.model_warnings():
        if warning not in _warned:
            _warned.add(warning)
            log.warning("%s", warning)


async def connect_realtime(config: ServerConfig) -> MessageSocket:
    """Open one OpenAI Realtime WebSocket: the call's first session and every reconnect (same
    URL, headers and limits; an Entra token function is asked again each time).  Raises
    whatever ``websockets.connect`` (or the token function) raises."""
    headers = await config.auth_headers()
    if config.bridge.dialect is Dialect.BETA:
        headers["OpenAI-Beta"] = "realtime=v1"
    sock: MessageSocket = await connect(
        config.connect_url,
        additional_headers=headers,
        max_size=config.bridge.max_openai_frame,
        open_timeout=10,
        compression=None,
        logger=_openai_ws_log,
    )
    return sock


async def bridge_call(
    config: ServerConfig,
    twilio_ws: MessageSocket,
    reports: list[CallReport] | None,
    on_bridge: Callable[[CallBridge], object] | None = None,
    *,
    connect: Callable[[], Awaitable[MessageSocket]] | None = None,
    limits: PreStartLimits | None = None,
    credentials: StreamCredentials | None = None,
    admission: Admission | None = None,
) -> None:
    """``limits``: the server's bounds on streams not started yet (a refused one is closed
    with 1013 and one log line, before anything else is done for it).  ``credentials``: the
    server's stream credentials (:meth:`ServerConfig.credentials`), checked at ``start``.
    ``admission``: the server's call capacity (:meth:`ServerConfig.admission`): a ``start``
    whose call it does not admit is closed with 1013, a served call holds a place in it.

    Serve one accepted media stream: run the bridge, which opens the OpenAI socket after
    Twilio's ``start`` (``connect``, by default :func:`connect_realtime`; reconnects too), and
    append its report.  Shared by
    this server and :mod:`realtime_fsm.asgi`, so both treat a call the same way."""
    client = getattr(getattr(twilio_ws, "request", None), "client", None)
    client = client if isinstance(client, str) else "-"
    if limits is not None:
        refused = limits.enter(client)
        if refused is not None:
            log.warning("refusing media stream from %s: %s", safe(client), refused)
            await twilio_ws.close(1013, "try again later")
            return
    released = limits is None

    def release() -> None:
        """The stream's place among those waiting for start: freed once, whatever happens."""
        nonlocal released
        if not released and limits is not None:
            released = True
            limits.leave(client)

    try:
        log_model_warnings(config)
        bridge_config, _ = config.call_bridge()
        trace = start_trace(
            config.trace_dir,
            bridge_config,
            secrets=(*config.secrets, config.twilio_auth_token),
            max_trace_bytes=config.max_trace_bytes,
        )

        async def open_openai() -> MessageSocket:
            """The one place an OpenAI socket is opened, for the first session and reconnects."""
            try:
                sock = await (connect() if connect is not None else connect_realtime(config))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never the exception's text: some clients put the URL (and so tokens in a query
                # string) into it.  The type and the host are enough to act on.
                host = urlsplit(config.connect_url).netloc
                if handshake_status(exc) in FATAL_HANDSHAKE_STATUSES:
                    what = f"the realtime server at {host} refused the credentials"
                else:
                    what = f"cannot reach the realtime server at {host}"
                unreachable = UpstreamUnreachable(f"{what}: {type(exc).__name__}")
                unreachable.response = getattr(exc, "response", None)  # type: ignore[attr-defined]
                raise unreachable from None
            if trace is not None:
                sock = trace.wrap(sock, "openai")
            return sock

        twilio_sock: MessageSocket = twilio_ws
        if trace is not None:
            twilio_sock = trace.wrap(twilio_ws, "twilio")
        # The OpenAI session opens once Twilio's ``start`` arrived: a stream that never starts
        # costs no paid session.  Unreachable, the call ends with 1011 and one log line.
        bridge = CallBridge(
            twilio_sock,
            None,
            bridge_config,
            reconnect=open_openai,
            on_start=release,
            credentials=credentials,
            admission=admission,
        )
        if config.telemetry is not None:
            config.telemetry.attach(bridge, model=config.session_model)
        if on_bridge is not None:
            on_bridge(bridge)
        try:
            report = await bridge.run()
        finally:
            if trace is not None:
                trace.finish(bridge.report)
        if reports is not None:
            reports.append(report)
    finally:
        release()


async def start_server(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    reports: list[CallReport] | None = None,
    on_bridge: Callable[[CallBridge], None] | None = None,
    tracker: CallTracker | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Start the bridge server; every finished call's report is appended to ``reports``.

    ``on_bridge`` sees each call's :class:`CallBridge` before it runs, so a soak or a
    dashboard can watch live calls (their machine state) rather than only finished reports.
    ``tracker``: the process's :class:`~realtime_fsm.drain.CallTracker` (``/healthz``,
    ``/readyz``, the drain), by default a new one over :meth:`ServerConfig.admission`.
    ``reuse_port``: bind with ``SO_REUSEPORT``, so that several worker processes share the
    port (the ``serve --workers`` command)."""

    log_model_warnings(config)
    check = webhook_check(config)
    credentials = config.credentials()
    if tracker is None:
        tracker = CallTracker(config.admission())
    admission = tracker.admission

    async def incoming(request: HttpRequest) -> HttpResponse:
        return await _incoming_call(config, request, check, credentials, admission)

    limits = PreStartLimits(config.max_pre_start, config.max_pre_start_per_client)
    watch = tracker.watching(on_bridge)

    async def media(ws: WebSocket) -> None:
        await bridge_call(
            config, ws, reports, watch, limits=limits, credentials=credentials, admission=admission
        )

    http: dict[str, HttpHandler] = {"/incoming-call": incoming}
    telemetry = config.telemetry
    if telemetry is not None and telemetry.metrics_path:
        http[telemetry.metrics_path] = telemetry.http_handler()
    routes = Routes(
        http={**http, **tracker.http_routes()},
        websocket={"/media-stream": media},
        gate=signature_gate(config),
        max_message_bytes=config.bridge.max_twilio_message,
    )
    server = await serve(routes, host, port, reuse_port=reuse_port)
    log.info(
        "listening on %s:%d; TwiML at /incoming-call streams to %s",
        host,
        server.sockets[0].getsockname()[1],
        config.stream_url,
    )
    return server
