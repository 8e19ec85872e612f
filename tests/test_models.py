"""Models and providers: the model tables against the installed ``openai`` SDK, the URLs and
headers of OpenAI and Azure OpenAI, ``ServerConfig``'s model and provider settings, the
warnings a deprecated model gets, and the example's flags.

The SDK is a test dependency only; the library's tables (``realtime_fsm.openai_realtime.models``)
are plain data.  These tests parse the SDK's own docstrings ("Deprecated values: ... Announced
shutdown date: ...") and literal lists, so an SDK update that deprecates or adds a model fails
here rather than leaving the tables stale.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import re
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import openai.types.realtime.audio_transcription as sdk_transcription
import openai.types.realtime.realtime_session_create_request as sdk_session
import pytest

from realtime_fsm import server as server_module
from realtime_fsm.bridge import BridgeConfig
from realtime_fsm.openai_realtime import (
    DEFAULT_REALTIME_MODEL,
    Dialect,
    SessionConfig,
    auth_headers,
    azure_url,
    models,
    openai_url,
    realtime_deprecation,
    render_session_update,
    takes_reasoning,
    transcription_deprecation,
)
from realtime_fsm.openai_realtime.endpoint import url_model, with_query
from realtime_fsm.server import (
    DEFAULT_REALTIME_URL,
    ENV_SETTINGS,
    ServerConfig,
    log_model_warnings,
    realtime_settings_from_env,
)

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://example.test"
AZURE = "https://my-resource.openai.azure.com/"
SECRET = "sk-models-test-secret-7c1d"


# --- the tables against the installed SDK ------------------------------------------------------


def field_docstring(module: ModuleType, class_name: str, field: str) -> str:
    """The docstring under a pydantic field (the string statement right after it)."""
    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    body = cls.body
    for index, node in enumerate(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == field
        ):
            doc = body[index + 1]
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            return inspect.cleandoc(str(doc.value.value))
    raise AssertionError(f"{class_name}.{field} not found")


def deprecated_values(docstring: str) -> dict[str, str]:
    """``model -> shutdown date`` from a "Deprecated values:" section:
    ``- "a", "b": Announced shutdown date: 2027-01-20. See ...`` (entries may wrap)."""
    _, found, section = docstring.partition("Deprecated values:")
    assert found, "the SDK docstring no longer has a 'Deprecated values:' section"
    entries = re.split(r"\n\s*- ", "\n" + section.strip())
    table: dict[str, str] = {}
    for entry in filter(None, (" ".join(e.split()) for e in entries)):
        names_part, sep, rest = entry.partition(": Announced shutdown date:")
        assert sep, f"an entry without a shutdown date: {entry!r}"
        date = re.match(r"\s*(\d{4}-\d{2}-\d{2})", rest)
        assert date is not None, entry
        names = re.findall(r'"([^"]+)"', names_part)
        assert names, entry
        table.update(dict.fromkeys(names, date.group(1)))
    return table


def listed_literals(annotation: Any) -> set[str]:
    """Every string of the ``Literal[...]`` inside a ``Union[str, Literal[...], None]``."""
    values: set[str] = set()
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            values.update(typing.get_args(arg))
    assert values
    return values


REALTIME_DOC = field_docstring(sdk_session, "RealtimeSessionCreateRequest", "model")
TRANSCRIPTION_DOC = field_docstring(sdk_transcription, "AudioTranscription", "model")
REALTIME_LISTED = listed_literals(
    sdk_session.RealtimeSessionCreateRequest.model_fields["model"].annotation
)
TRANSCRIPTION_LISTED = listed_literals(
    sdk_transcription.AudioTranscription.model_fields["model"].annotation
)


def test_the_realtime_deprecation_table_is_the_sdks() -> None:
    assert dict(models.REALTIME_MODEL_SHUTDOWNS) == deprecated_values(REALTIME_DOC)


def test_the_transcription_deprecation_table_is_the_sdks() -> None:
    assert dict(models.TRANSCRIPTION_MODEL_SHUTDOWNS) == deprecated_values(TRANSCRIPTION_DOC)


def test_every_listed_realtime_model_is_sorted_as_reasoning_or_not() -> None:
    """A model the SDK starts listing must be put in one of the two sets (and so be judged
    on purpose when reasoning settings are sent)."""
    assert models.REASONING_MODELS.isdisjoint(models.NON_REASONING_MODELS)
    assert models.REASONING_MODELS | models.NON_REASONING_MODELS == REALTIME_LISTED


def test_the_defaults_are_listed_and_not_deprecated() -> None:
    assert DEFAULT_REALTIME_MODEL in REALTIME_LISTED
    assert DEFAULT_REALTIME_MODEL not in models.REALTIME_MODEL_SHUTDOWNS
    assert models.DEFAULT_GA_TRANSCRIPTION_MODEL in TRANSCRIPTION_LISTED
    assert models.DEFAULT_GA_TRANSCRIPTION_MODEL not in models.TRANSCRIPTION_MODEL_SHUTDOWNS
    assert f"model={DEFAULT_REALTIME_MODEL}" in DEFAULT_REALTIME_URL


@pytest.mark.parametrize("model", sorted(models.REALTIME_MODEL_SHUTDOWNS))
def test_a_deprecated_realtime_model_names_its_date_and_a_current_replacement(model: str) -> None:
    found = realtime_deprecation(model)
    assert found is not None and found.shutdown == "2027-01-20"
    assert found.replacement in models.REASONING_MODELS
    assert found.replacement not in models.REALTIME_MODEL_SHUTDOWNS
    line = found.describe()
    assert model in line and "2027-01-20" in line and found.replacement in line


@pytest.mark.parametrize("model", sorted(models.TRANSCRIPTION_MODEL_SHUTDOWNS))
def test_a_deprecated_transcription_model_names_its_date(model: str) -> None:
    found = transcription_deprecation(model)
    assert found is not None and found.shutdown == "2027-02-26"
    assert found.replacement in TRANSCRIPTION_LISTED
    assert found.replacement not in models.TRANSCRIPTION_MODEL_SHUTDOWNS


def test_current_and_unknown_models_are_not_deprecated() -> None:
    for model in ("gpt-realtime-2.1", "gpt-realtime-2.1-mini", "gpt-realtime-1.5", "my-deploy"):
        assert realtime_deprecation(model) is None
    assert transcription_deprecation("gpt-transcribe") is None


# --- reasoning settings by model ---------------------------------------------------------------


REASONING_CONFIG = SessionConfig(reasoning_effort="low", parallel_tool_calls=True)


@pytest.mark.parametrize("model", ["gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini"])
def test_a_reasoning_model_is_sent_the_reasoning_settings(model: str) -> None:
    config, dropped = REASONING_CONFIG.for_model(model)
    assert config is REASONING_CONFIG and dropped == ()
    session = render_session_update(config)["session"]
    assert session["reasoning"] == {"effort": "low"} and session["parallel_tool_calls"] is True


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-mini"])
def test_a_non_reasoning_model_is_not_sent_them(model: str) -> None:
    assert not takes_reasoning(model)
    config, dropped = REASONING_CONFIG.for_model(model)
    assert dropped == ("reasoning_effort", "parallel_tool_calls")
    session = render_session_update(config)["session"]
    assert "reasoning" not in session and "parallel_tool_calls" not in session


@pytest.mark.parametrize("model", [None, "my-azure-deployment", "gpt-realtime-3"])
def test_an_unknown_model_gets_what_was_configured(model: str | None) -> None:
    assert takes_reasoning(model)
    assert REASONING_CONFIG.for_model(model) == (REASONING_CONFIG, ())


def test_extra_is_sent_as_written_whatever_the_model() -> None:
    config = SessionConfig(extra={"reasoning": {"effort": "high"}})
    stripped, dropped = config.for_model("gpt-realtime-1.5")
    assert dropped == () and render_session_update(stripped)["session"]["reasoning"] == {
        "effort": "high"
    }


def test_the_transcription_default_is_current_for_ga_and_whisper_for_beta() -> None:
    config = SessionConfig()
    assert config.transcription_model_for(Dialect.GA) == "gpt-transcribe"
    assert config.transcription_model_for(Dialect.BETA) == "whisper-1"
    assert SessionConfig(input_transcription=False).transcription_model_for(Dialect.GA) is None


# --- URLs and headers ---------------------------------------------------------------------------


def test_openai_urls_are_the_base_url_and_the_model() -> None:
    assert openai_url("wss://api.openai.com/v1/realtime", "gpt-realtime-2.1") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
    )
    # A proxy's own parameters stay; a model already there is replaced, not doubled.
    assert openai_url("https://proxy.test/rt?team=a&model=old", "gpt-realtime-2.1") == (
        "wss://proxy.test/rt?team=a&model=gpt-realtime-2.1"
    )
    assert with_query("ws://h/p?a=1", b="x y") == "ws://h/p?a=1&b=x+y"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://my-resource.openai.azure.com/",
        "https://my-resource.openai.azure.com",
        "https://my-resource.openai.azure.com/openai",
        "wss://my-resource.openai.azure.com/openai/v1/",
    ],
)
def test_azure_ga_url(endpoint: str) -> None:
    assert azure_url(endpoint, "rt-prod") == (
        "wss://my-resource.openai.azure.com/openai/v1/realtime?model=rt-prod"
    )


def test_azure_preview_url_and_a_gateway_prefix() -> None:
    assert azure_url(AZURE, "rt", "2025-04-01-preview") == (
        "wss://my-resource.openai.azure.com/openai/realtime"
        "?api-version=2025-04-01-preview&deployment=rt"
    )
    assert azure_url("https://gw.test/team-a", "rt") == (
        "wss://gw.test/team-a/openai/v1/realtime?model=rt"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: azure_url("my-resource.openai.azure.com", "rt"), "absolute"),
        (lambda: azure_url("ftp://x.test", "rt"), "absolute"),
        (lambda: azure_url(AZURE + "?x=1", "rt"), "query"),
        (lambda: azure_url(AZURE, " rt"), "azure_deployment"),
        (lambda: azure_url(AZURE, "rt", ""), "api_version"),
        (lambda: openai_url("wss://api.openai.com/v1/realtime", ""), "model"),
        (lambda: openai_url("wss://h/p#frag", "m"), "fragment"),
    ],
)
def test_bad_url_settings_are_refused_by_name(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_auth_headers_per_provider() -> None:
    assert auth_headers("openai", SECRET) == {"Authorization": f"Bearer {SECRET}"}
    assert auth_headers("openai", "") == {}
    assert auth_headers("azure", SECRET) == {"api-key": SECRET}
    assert auth_headers("azure", "", "entra-token") == {"Authorization": "Bearer entra-token"}
    assert auth_headers("azure", SECRET, "entra-token") == {"api-key": SECRET}  # as the SDK
    assert auth_headers("azure", "") == {}


def test_url_model() -> None:
    assert url_model("wss://h/v1/realtime?model=gpt-realtime") == "gpt-realtime"
    assert url_model("wss://h/openai/realtime?api-version=v&deployment=d") == "d"
    assert url_model("ws://127.0.0.1:1/v1/realtime") is None


# --- ServerConfig -------------------------------------------------------------------------------


def test_server_config_builds_the_url_from_model_and_base_url() -> None:
    config = ServerConfig(public_url=PUBLIC_URL, model="gpt-realtime-2.1-mini")
    assert config.connect_url == "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1-mini"
    assert config.session_model == "gpt-realtime-2.1-mini"
    local = ServerConfig(public_url=PUBLIC_URL, base_url="ws://127.0.0.1:9/v1/realtime")
    assert local.connect_url == f"ws://127.0.0.1:9/v1/realtime?model={DEFAULT_REALTIME_MODEL}"


def test_the_url_override_is_used_as_written() -> None:
    url = "wss://proxy.test/v1/realtime?model=gpt-realtime&tenant=7"
    config = ServerConfig(public_url=PUBLIC_URL, realtime_url=url, model="ignored-here")
    assert config.connect_url == url and config.session_model == "gpt-realtime"
    assert ServerConfig(public_url=PUBLIC_URL, realtime_url="ws://h/x").session_model is None


def test_server_config_for_azure() -> None:
    bridge = BridgeConfig(session=SessionConfig(transcription_model="my-transcribe"))
    config = ServerConfig(
        public_url=PUBLIC_URL,
        provider="azure",
        azure_endpoint=AZURE,
        azure_deployment="rt-prod",
        api_key=SECRET,
        bridge=bridge,
    )
    assert config.connect_url.endswith("/openai/v1/realtime?model=rt-prod")
    assert SECRET not in repr(config)
    # The deployment defaults to the model's name.
    same = ServerConfig(
        public_url=PUBLIC_URL, provider="azure", azure_endpoint=AZURE, bridge=bridge
    )
    assert same.connect_url.endswith(f"?model={DEFAULT_REALTIME_MODEL}")
    token = ServerConfig(
        public_url=PUBLIC_URL,
        provider="azure",
        azure_endpoint=AZURE,
        azure_ad_token="entra-token-secret",
        bridge=bridge,
    )
    assert "entra-token-secret" not in repr(token)
    assert token.secrets == ("", "entra-token-secret")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"provider": "azure"}, "needs azure_endpoint"),
        ({"azure_endpoint": AZURE}, r"azure_endpoint need provider='azure'"),
        ({"api_version": "2025-04-01-preview"}, "api_version need"),
        ({"provider": "bedrock"}, "provider"),
        ({"provider": "azure", "azure_endpoint": "not a url"}, "azure_endpoint must be"),
        ({"base_url": "api.openai.com/v1/realtime"}, "base_url must be"),
        ({"model": ""}, "model must be"),
    ],
)
def test_server_config_refuses_settings_that_cannot_connect(
    settings: dict[str, Any], message: str
) -> None:
    bridge = BridgeConfig(session=SessionConfig(transcription_model="t"))
    with pytest.raises(ValueError, match=message):
        ServerConfig(public_url=PUBLIC_URL, bridge=bridge, **settings)


def test_azure_needs_a_transcription_deployment_or_none() -> None:
    """Azure reads the transcription ``model`` as a deployment name: a default model name
    would be refused mid-call (its session.update), so the config says so at start-up."""
    with pytest.raises(ValueError, match="deployment name"):
        ServerConfig(public_url=PUBLIC_URL, provider="azure", azure_endpoint=AZURE)
    off = BridgeConfig(session=SessionConfig(input_transcription=False))
    ServerConfig(public_url=PUBLIC_URL, provider="azure", azure_endpoint=AZURE, bridge=off)


def test_the_call_config_leaves_out_what_the_model_cannot_take() -> None:
    bridge = BridgeConfig(session=REASONING_CONFIG)
    old = ServerConfig(public_url=PUBLIC_URL, model="gpt-realtime-1.5", bridge=bridge)
    call, dropped = old.call_bridge()
    assert dropped == ("reasoning_effort", "parallel_tool_calls")
    assert call.session.reasoning_effort is None and call.tools == bridge.tools
    new = ServerConfig(public_url=PUBLIC_URL, bridge=bridge)
    assert new.call_bridge() == (bridge, ())


# --- warnings ----------------------------------------------------------------------------------


def test_model_warnings() -> None:
    assert ServerConfig(public_url=PUBLIC_URL).model_warnings() == []
    old = ServerConfig(
        public_url=PUBLIC_URL,
        model="gpt-realtime",
        bridge=BridgeConfig(session=SessionConfig(transcription_model="whisper-1")),
    )
    realtime, transcription = old.model_warnings()
    assert "'gpt-realtime'" in realtime and "2027-01-20" in realtime
    assert "'gpt-realtime-2.1'" in realtime
    assert "'whisper-1'" in transcription and "2027-02-26" in transcription
    # Through a URL override too: the model in its query is the one that runs.
    url = ServerConfig(public_url=PUBLIC_URL, realtime_url=f"{DEFAULT_REALTIME_URL}-mini-x")
    assert url.model_warnings() == []
    legacy = "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    [line] = ServerConfig(public_url=PUBLIC_URL, realtime_url=legacy).model_warnings()
    assert "'gpt-realtime-2.1-mini'" in line
    # Beta sessions: whisper-1 is the only choice the beta types list, and it is deprecated.
    beta = ServerConfig(public_url=PUBLIC_URL, bridge=BridgeConfig(dialect=Dialect.BETA))
    [line] = beta.model_warnings()
    assert "'whisper-1'" in line
    # Reasoning settings a model will not be sent.
    reasoning = BridgeConfig(session=SessionConfig(reasoning_effort="high"))
    [line] = ServerConfig(
        public_url=PUBLIC_URL, model="gpt-realtime-1.5", bridge=reasoning
    ).model_warnings()
    assert "'gpt-realtime-1.5'" in line and "reasoning_effort" in line


def test_azure_names_are_deployments_so_no_shutdown_is_claimed() -> None:
    bridge = BridgeConfig(session=SessionConfig(transcription_model="whisper-1"))
    config = ServerConfig(
        public_url=PUBLIC_URL,
        provider="azure",
        azure_endpoint=AZURE,
        model="gpt-realtime",
        bridge=bridge,
    )
    assert config.model_warnings() == []


def test_a_deprecated_model_is_logged_once_per_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_warned", set())
    caplog.set_level(logging.WARNING, logger="realtime_fsm")
    old = ServerConfig(public_url=PUBLIC_URL, model="gpt-realtime")
    for _ in range(3):
        log_model_warnings(old)
    log_model_warnings(ServerConfig(public_url=PUBLIC_URL, model="gpt-realtime-mini"))
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(lines) == 2
    assert "'gpt-realtime'" in lines[0] and "'gpt-realtime-mini'" in lines[1]


def test_the_handshake_filter_redacts_both_secret_headers() -> None:
    record = logging.LogRecord("websockets.client", logging.DEBUG, "", 0, "> %s: %s", None, None)
    for name in ("api-key", "Authorization"):
        record.args = (name, SECRET)
        server_module._RedactAuthorization().filter(record)
        assert record.args == (name, "[redacted]")


# --- the environment and the example's flags ----------------------------------------------------


def test_settings_from_the_environment() -> None:
    assert realtime_settings_from_env({"OPENAI_API_KEY": SECRET}) == {"api_key": SECRET}
    env = {
        "REALTIME_PROVIDER": "azure",
        "AZURE_OPENAI_ENDPOINT": AZURE,
        "AZURE_OPENAI_DEPLOYMENT": "rt",
        "AZURE_OPENAI_API_KEY": "azure-key",
        "OPENAI_API_KEY": SECRET,  # not Azure's
        "OPENAI_REALTIME_MODEL": "gpt-realtime-2.1-mini",
        "AZURE_OPENAI_API_VERSION": "",  # empty: unset
    }
    assert realtime_settings_from_env(env) == {
        "provider": "azure",
        "azure_endpoint": AZURE,
        "azure_deployment": "rt",
        "api_key": "azure-key",
        "model": "gpt-realtime-2.1-mini",
    }


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name in (*ENV_SETTINGS, "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = ROOT / "examples" / "twilio_bridge.py"
    spec = importlib.util.spec_from_file_location("twilio_bridge_models_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_model_flag_and_environment(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = example.build_config(example.parse_args(["--public-url", PUBLIC_URL]))
    assert config.connect_url == DEFAULT_REALTIME_URL
    monkeypatch.setenv("OPENAI_REALTIME_MODEL", "gpt-realtime-2.1-mini")
    config = example.build_config(example.parse_args(["--public-url", PUBLIC_URL]))
    assert config.model == "gpt-realtime-2.1-mini"
    args = example.parse_args(
        ["--public-url", PUBLIC_URL, "--model", "gpt-realtime-2", "--reasoning-effort", "low"]
    )
    config = example.build_config(args)
    assert config.connect_url.endswith("?model=gpt-realtime-2")
    assert config.bridge.session.reasoning_effort == "low"


def test_example_azure_flags(example: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    args = example.parse_args(
        [
            "--public-url",
            PUBLIC_URL,
            "--provider",
            "azure",
            "--azure-endpoint",
            AZURE,
            "--azure-deployment",
            "rt-prod",
            "--api-version",
            "2025-04-01-preview",
            "--transcription-model",
            "my-transcribe",
            "--dialect",
            "beta",
        ]
    )
    config = example.build_config(args)
    assert config.provider == "azure" and config.api_key == "azure-key"
    assert config.connect_url == (
        "wss://my-resource.openai.azure.com/openai/realtime"
        "?api-version=2025-04-01-preview&deployment=rt-prod"
    )
    assert config.bridge.session.transcription_model == "my-transcribe"
