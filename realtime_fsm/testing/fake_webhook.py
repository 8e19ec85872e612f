"""Twilio's first step of a call, faked: the signed voice webhook and the TwiML it gets back.

A real call starts with Twilio POSTing the call's parameters to ``/incoming-call``, signed with
the account's auth token; the TwiML answer names the stream URL and the ``<Parameter>``s
(among them the server's per-call stream credential), which Twilio then hands back in the
stream's ``start``.  :func:`dial` does the same over HTTP, so a test drives a server exactly as
Twilio would, and :meth:`DialedCall.caller_config` gives the :class:`FakeTwilioCaller` settings
that carry the answer into the stream::

    dialed = await dial("http://127.0.0.1:8080", public_url=PUBLIC, auth_token=TOKEN)
    caller = FakeTwilioCaller("ws://127.0.0.1:8080/media-stream", dialed.caller_config())
"""

from __future__ import annotations

import asyncio
import random
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs

from .fake_twilio import FakeCallerConfig, twilio_signature

__all__ = ["DialedCall", "WebhookRefused", "dial", "parse_twiml"]


class WebhookRefused(Exception):
    """The webhook did not answer 200 with a ``<Connect><Stream>``."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"webhook answered {status}: {body[:200]!r}")
        self.status = status
        self.body = body


@attrs.frozen
class DialedCall:
    """What the webhook answered for one call: where to stream, and with which parameters."""

    stream_url: str
    parameters: Mapping[str, str]
    call_sid: str
    account_sid: str
    auth_token: str | None = attrs.field(default=None, repr=False)

    def caller_config(
        self, base: FakeCallerConfig | None = None, **overrides: Any
    ) -> FakeCallerConfig:
        """A :class:`FakeCallerConfig` for this call (``base``'s other settings kept): its ids,
        the TwiML's parameters, and the upgrade signed over the stream URL the TwiML named (as
        Twilio signs it)."""
        settings: dict[str, Any] = {
            "custom_parameters": dict(self.parameters),
            "call_sid": self.call_sid,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "signature_url": self.stream_url,
        }
        settings.update(overrides)
        return attrs.evolve(base, **settings) if base is not None else FakeCallerConfig(**settings)


def parse_twiml(body: bytes) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream url>`` and its ``<Parameter>`` pairs; ``ValueError`` otherwise."""
    root = ET.fromstring(body)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError("no <Connect><Stream url=...> in the TwiML")
    params = {
        p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter") if p.get("name")
    }
    return stream.get("url", ""), params


def _sid(prefix: str) -> str:
    return prefix + "".join(random.choice("0123456789abcdef") for _ in range(32))


async def dial(
    server_url: str,
    *,
    public_url: str,
    auth_token: str | None = None,
    call_sid: str | None = None,
    account_sid: str | None = None,
    caller: str = "+15550100",
    called: str = "+15550199",
    path: str = "/incoming-call",
    timeout: float = 10.0,
) -> DialedCall:
    """POST the voice webhook to ``server_url`` (``http://127.0.0.1:8080``) as Twilio does:
    form-encoded call parameters, signed over ``public_url`` + ``path`` when ``auth_token`` is
    given.  Returns the TwiML's stream URL and parameters; :class:`WebhookRefused` otherwise."""
    call_sid = call_sid or _sid("CA")
    account_sid = account_sid or _sid("AC")
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": caller,
        "To": called,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth_token is not None:
        signed = public_url.rstrip("/") + path
        headers["X-Twilio-Signature"] = twilio_signature(auth_token, signed, form)
    status, body = await asyncio.wait_for(
        _post(server_url.rstrip("/") + path, urlencode(form).encode(), headers), timeout
    )
    if status != 200:
        raise WebhookRefused(status, body)
    try:
        stream_url, params = parse_twiml(body)
    except (ValueError, ET.ParseError) as exc:
        raise WebhookRefused(status, body) from exc
    return DialedCall(stream_url, params, call_sid, account_sid, auth_token)


async def _post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """One HTTP/1.1 POST on a fresh connection (``Connection: close``): status and body."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, parts.port or 80)
    try:
        head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(head).encode() + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    fields = status_line.split()
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    return status, payload
