"""Where the bridge's Realtime sessions connect and how they authenticate: the model, the
provider (OpenAI or Azure OpenAI), the key.

:class:`RealtimeSettings` holds these settings; :class:`~realtime_fsm.server.ServerConfig` is
one (its keyword-only fields), so ``ServerConfig(public_url=..., model="gpt-realtime-2.1")``
and ``ServerConfig(public_url=..., provider="azure", azure_endpoint=...)`` both work.  The URL
is built from them (:attr:`RealtimeSettings.connect_url`) so nobody edits query strings by
hand; ``realtime_url`` still overrides it whole.  :func:`realtime_settings_from_env` reads them
from the environment for the examples.  The URL forms and headers are in
:mod:`realtime_fsm.openai_realtime.endpoint`, the model tables in
:mod:`realtime_fsm.openai_realtime.models`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Final

import attrs

from .openai_realtime.endpoint import (
    OPENAI_REALTIME_BASE_URL,
    PROVIDERS,
    Provider,
    azure_url,
    openai_url,
    url_model,
)
from .openai_realtime.endpoint import (
    auth_headers as build_auth_headers,
)
from .openai_realtime.models import DEFAULT_REALTIME_MODEL

#: The URL of a session with the default settings (OpenAI, :data:`DEFAULT_REALTIME_MODEL`).
DEFAULT_REALTIME_URL: Final = openai_url(OPENAI_REALTIME_BASE_URL, DEFAULT_REALTIME_MODEL)

#: Environment variables :func:`realtime_settings_from_env` reads, and the
#: :class:`RealtimeSettings` field each sets (the key is read by provider:
#: :data:`API_KEY_ENV`).  The Azure names are the ``openai`` package's where it has one
#: (``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_AD_TOKEN``).  The version
#: has its own name, not the package's ``OPENAI_API_VERSION``: a dated chat setup may have that
#: set, and here it would switch the bridge to Azure's preview URL form.
ENV_SETTINGS: Final[Mapping[str, str]] = {
    "REALTIME_PROVIDER": "provider",
    "OPENAI_REALTIME_MODEL": "model",
    "OPENAI_REALTIME_URL": "realtime_url",
    "AZURE_OPENAI_ENDPOINT": "azure_endpoint",
    "AZURE_OPENAI_DEPLOYMENT": "azure_deployment",
    "AZURE_OPENAI_API_VERSION": "api_version",
    "AZURE_OPENAI_AD_TOKEN": "azure_ad_token",
}
#: The environment variable holding each provider's API key.
API_KEY_ENV: Final[Mapping[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
}

_AZURE_ONLY: Final = ("azure_endpoint", "azure_deployment", "api_version", "azure_ad_token")


def realtime_settings_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """:class:`RealtimeSettings` keyword arguments from ``env`` (``os.environ``): those of
    :data:`ENV_SETTINGS`, and ``api_key`` from the chosen provider's variable
    (:data:`API_KEY_ENV`).  Empty variables count as unset."""
    settings = {field: env[name] for name, field in ENV_SETTINGS.items() if env.get(name)}
    key = env.get(API_KEY_ENV.get(settings.get("provider", "openai"), ""), "")
    if key:
        settings["api_key"] = key
    return settings


def _opt_str(_inst: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string or None, got {value!r}")


@attrs.frozen(kw_only=True)
class RealtimeSettings:
    """The Realtime connection's settings (keyword-only fields of ``ServerConfig``).

    Checked when built: a provider's field given for the other provider, an Azure config
    without an endpoint, or a URL that cannot be built fails at start-up, not at the first
    call."""

    #: The whole Realtime WebSocket URL, used as written (a proxy, the simulator, an
    #: SDK-built URL).  ``None``: built from the settings below (:attr:`connect_url`).
    realtime_url: str | None = attrs.field(default=None, validator=_opt_str)
    #: The provider's API key: ``OPENAI_API_KEY``, or for Azure ``AZURE_OPENAI_API_KEY`` (sent
    #: in its ``api-key`` header).  Never logged.
    api_key: str = attrs.field(default="", repr=False)
    #: The Realtime model.  OpenAI: the URL's ``model``.  Azure: the model behind the
    #: deployment (what the reasoning settings are judged by), and the deployment's name when
    #: :attr:`azure_deployment` is unset.
    model: str = DEFAULT_REALTIME_MODEL
    #: ``"openai"`` or ``"azure"`` (Azure OpenAI: same protocol, its own URL and auth).
    provider: Provider = attrs.field(default="openai", validator=attrs.validators.in_(PROVIDERS))
    #: OpenAI's Realtime endpoint or a compatible one (a proxy, the simulator); the session
    #: URL is this with ``?model=`` set from :attr:`model`.
    base_url: str = OPENAI_REALTIME_BASE_URL
    #: Azure: the resource endpoint (``https://<resource>.openai.azure.com/``).
    azure_endpoint: str | None = attrs.field(default=None, validator=_opt_str)
    #: Azure: the deployment's name; ``None``: :attr:`model`.
    azure_deployment: str | None = attrs.field(default=None, validator=_opt_str)
    #: Azure: ``None`` for the GA (v1) URL form, which takes no version; a version (e.g.
    #: ``"2025-04-01-preview"``) for the preview form, which speaks the beta protocol.
    api_version: str | None = attrs.field(default=None, validator=_opt_str)
    #: Azure without a key: a Microsoft Entra ID token, sent as ``Authorization: Bearer``, or a
    #: function returning a fresh one (run in a worker thread for every connection, since
    #: token providers block while refreshing: ``azure.identity.get_bearer_token_provider``).
    azure_ad_token: str | Callable[[], str] | None = attrs.field(default=None, repr=False)

    def check_realtime(self) -> None:
        """Raise ``ValueError`` for settings that cannot make a connection."""
        if self.provider == "openai":
            stray = [name for name in _AZURE_ONLY if getattr(self, name) is not None]
            if stray:
                raise ValueError(f"{', '.join(stray)} need provider='azure'")
        elif self.realtime_url is None and not self.azure_endpoint:
            raise ValueError("provider 'azure' needs azure_endpoint (AZURE_OPENAI_ENDPOINT)")
        self.connect_url  # noqa: B018 - builds the URL: a malformed setting fails now

    @property
    def connect_url(self) -> str:
        """The WebSocket URL every session of every call connects to: :attr:`realtime_url`
        as written, else built from the provider settings."""
        if self.realtime_url is not None:
            return self.realtime_url
        if self.provider == "azure":
            assert self.azure_endpoint is not None
            deployment = self.azure_deployment or self.model
            return azure_url(self.azure_endpoint, deployment, self.api_version)
        return openai_url(self.base_url, self.model)

    @property
    def session_model(self) -> str | None:
        """The model sessions run, as far as these settings know: the ``model`` parameter of
        a :attr:`realtime_url` (``None`` without one), else :attr:`model`."""
        if self.realtime_url is not None:
            return url_model(self.realtime_url)
        return self.model

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """The secrets known in advance (for a trace to scrub)."""
        token = self.azure_ad_token
        return (self.api_key, token if isinstance(token, str) else None)

    async def auth_headers(self) -> dict[str, str]:
        """The handshake's auth header for one connection (an Entra token function is asked
        each time, in a worker thread)."""
        token = self.azure_ad_token
        if callable(token):
            token = await asyncio.to_thread(token)
        return build_auth_headers(self.provider, self.api_key, token)
