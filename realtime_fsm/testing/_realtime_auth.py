"""The simulator's handshake checks: the credentials and URL shape the real services demand
(OpenAI's ``Authorization: Bearer``, Azure OpenAI's ``api-key`` header on its own paths).

Kept apart from :mod:`.fake_realtime` because it is about the HTTP upgrade, not the protocol
that follows it.  The URL forms and headers are those of
:mod:`realtime_fsm.openai_realtime.endpoint` (where their sources are cited); the refusal
bodies are the services' as users report them.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import attrs
from websockets.http11 import Request


@attrs.frozen
class RequiredAuth:
    """What the simulator demands of a handshake, as the real services do (see
    :meth:`FakeRealtimeServer.require_auth`).

    ``openai``: ``Authorization: Bearer <key>``.  ``azure``: ``api-key: <key>`` (or
    ``Authorization: Bearer <key>``, an Entra token) on Azure's path: with ``api_version``
    ``None`` the GA form ``/openai/v1/realtime?model=<deployment>``, else the preview form
    ``/openai/realtime?api-version=<api_version>&deployment=<deployment>``."""

    style: Literal["openai", "azure"]
    key: str = attrs.field(repr=False)
    deployment: str | None = None
    api_version: str | None = None


#: Azure's answers to a bad key and to a path or deployment it does not serve (as reported
#: by users; the service's exact wording may change).
AZURE_401_BODY = (
    '{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong'
    " API endpoint. Make sure to provide a valid key for an active subscription and use a"
    ' correct regional API endpoint for your resource."}}'
)
AZURE_404_BODY = '{"error":{"code":"404","message":"Resource not found"}}'
OPENAI_401_BODY = (
    '{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error",'
    '"param":null,"code":"invalid_api_key"}}'
)


def auth_refusal(auth: RequiredAuth, request: Request) -> tuple[int, str] | None:
    """(status, body) refusing ``request`` under ``auth``, or ``None`` to accept it."""
    parts = urlsplit(request.path)
    query = dict(parse_qsl(parts.query))
    headers = request.headers
    if auth.style == "openai":
        ok = headers.get("Authorization") == f"Bearer {auth.key}"
        return None if ok else (401, OPENAI_401_BODY)
    if auth.api_version is None:
        shape = parts.path == "/openai/v1/realtime" and query.get("model") == auth.deployment
    else:
        shape = (
            parts.path == "/openai/realtime"
            and query.get("api-version") == auth.api_version
            and query.get("deployment") == auth.deployment
        )
    if not shape:
        return 404, AZURE_404_BODY
    key_ok = headers.get("api-key") == auth.key
    if not key_ok and "api-key" not in headers:
        key_ok = headers.get("Authorization") == f"Bearer {auth.key}"
    return None if key_ok else (401, AZURE_401_BODY)
