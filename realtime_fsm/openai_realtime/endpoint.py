"""Where a Realtime session connects and how it authenticates: OpenAI or Azure OpenAI.

Both speak the same Realtime protocol; only the WebSocket URL and the auth header differ:

* ``openai``: ``wss://api.openai.com/v1/realtime?model=<model>``, with
  ``Authorization: Bearer <OPENAI_API_KEY>``;
* ``azure``, GA (v1) form: ``wss://<resource>.openai.azure.com/openai/v1/realtime?model=<deployment>``;
* ``azure``, preview form:
  ``wss://<resource>.openai.azure.com/openai/realtime?api-version=<version>&deployment=<deployment>``;
  both Azure forms with ``api-key: <AZURE_OPENAI_API_KEY>``, or with
  ``Authorization: Bearer <token>`` for a Microsoft Entra ID token.

Sources: Microsoft Learn, "Use the GPT Realtime API via WebSockets" (the GA and preview URL
forms, "(Preview version only) An ``api-version`` query string parameter", Entra tokens as
``Authorization: Bearer``, API keys in an ``api-key`` header); the ``openai`` package's
``openai/lib/azure.py`` ``_configure_realtime`` (preview form: ``/openai/realtime`` with
``api-version`` and ``deployment``, ``api-key`` header, else a Bearer Entra token).  The
preview form speaks the beta protocol (``BridgeConfig(dialect=Dialect.BETA)``).

Pure: URLs and header dicts from strings.  The secrets themselves are passed in by the server,
which reads them from its configuration; nothing here logs.
"""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

Provider = Literal["openai", "azure"]
PROVIDERS: Final = ("openai", "azure")

#: OpenAI's Realtime WebSocket endpoint; the session's model goes in its ``model`` parameter.
OPENAI_REALTIME_BASE_URL: Final = "wss://api.openai.com/v1/realtime"
#: Handshake headers that carry a secret (lower case): redacted wherever headers are logged.
SECRET_HEADERS: Final = frozenset({"authorization", "api-key"})

_WS_SCHEMES: Final = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


def _ws_parts(url: str, name: str) -> tuple[str, str, str, str]:
    """(scheme, host, path, query) of ``url`` with ``http(s)`` mapped to ``ws(s)``;
    ``ValueError`` naming ``name`` for anything that is not an absolute http(s)/ws(s) URL."""
    parts = urlsplit(url)
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"{name} must be an absolute wss://, ws://, https:// or http:// URL")
    if parts.fragment:
        raise ValueError(f"{name} must not have a #fragment")
    return scheme, parts.netloc, parts.path, parts.query


def _name(value: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"{name} must be a non-empty string without surrounding spaces")
    return value


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query string (replacing a parameter of the same
    name, keeping every other one in order)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query = urlencode([*kept, *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def openai_url(base_url: str, model: str) -> str:
    """The URL of a session on ``model`` at ``base_url`` (OpenAI's endpoint, a proxy, the
    simulator): ``base_url`` with ``model`` set in its query."""
    scheme, host, path, query = _ws_parts(base_url, "base_url")
    return with_query(urlunsplit((scheme, host, path, query, "")), model=_name(model, "model"))


def azure_url(endpoint: str, deployment: str, api_version: str | None = None) -> str:
    """The URL of a session on an Azure OpenAI ``deployment``.

    ``endpoint``: the resource's endpoint as the portal shows it
    (``https://<resource>.openai.azure.com/``; ``https://<resource>.cognitiveservices.azure.com``
    and a gateway's path prefix work too; a trailing ``/openai`` or ``/openai/v1`` is taken as
    part of the form, not doubled).  ``api_version`` ``None``: the GA (v1) form, which takes
    no version; a version: the preview form, which needs one."""
    scheme, host, path, query = _ws_parts(endpoint, "azure_endpoint")
    if query:
        raise ValueError("azure_endpoint must not have a query string")
    prefix = path.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    deployment = _name(deployment, "azure_deployment")
    if api_version is None:
        url = urlunsplit((scheme, host, f"{prefix}/openai/v1/realtime", "", ""))
        return with_query(url, model=deployment)
    url = urlunsplit((scheme, host, f"{prefix}/openai/realtime", "", ""))
    return with_query(
        url, **{"api-version": _name(api_version, "api_version")}, deployment=deployment
    )


def auth_headers(
    provider: Provider, api_key: str, bearer_token: str | None = None
) -> dict[str, str]:
    """The handshake's auth header: OpenAI takes its key as a Bearer token; Azure takes a key
    in ``api-key`` or, without a key, a Microsoft Entra ID token as a Bearer token (the key
    wins when both are set, as in the ``openai`` package).  Empty when there is no secret (a
    local simulator or a proxy that adds its own)."""
    if provider == "azure":
        if api_key:
            return {"api-key": api_key}
        return {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def url_model(url: str) -> str | None:
    """The model (or Azure deployment) a session URL names, or ``None``."""
    params = dict(parse_qsl(urlsplit(url).query))
    return params.get("model") or params.get("deployment")
