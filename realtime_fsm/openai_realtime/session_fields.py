"""Checks and shapes for :class:`~.session.SessionConfig`'s pass-through settings.

Kept apart from :mod:`~realtime_fsm.openai_realtime.session` so that module stays about the
session a *telephony bridge* needs (audio formats, turn detection, who creates responses),
while this one holds the many settings the bridge merely carries to the server: tools,
``tool_choice``, token limits, tracing, truncation and the rest, plus the ``extra`` escape
hatch for every other GA field.

Every check runs when the config is built, so a typo fails at start-up instead of as an
``error`` event that makes the server ignore the whole ``session.update`` mid-call.  The ranges
are the ones the ``openai`` package's types state in their docstrings (3.63.0).  Values are
stored as plain JSON data (dicts, lists, str, numbers), copied on the way in and out, so a
frozen config stays what it was built with whatever the caller later does to its own dicts or
to a rendered event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeGuard

import attrs

from .messages import Dialect

if TYPE_CHECKING:
    from .session import SessionConfig


class HasSchema(Protocol):
    """A tool object (:class:`realtime_fsm.tools.Tool` is one): its session ``tools`` entry."""

    def schema(self) -> Mapping[str, Any]: ...


NoiseReduction = Literal["near_field", "far_field"]
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]

#: ``tool_choice`` string modes (GA ``ToolChoiceOptions``; beta takes the same strings).
TOOL_CHOICE_MODES: Final = ("none", "auto", "required")
#: GA ``max_output_tokens`` / beta ``max_response_output_tokens``: "an integer between 1 and
#: 4096 ... or ``inf``".  A model allowing more can still be given more through ``extra``.
MAX_OUTPUT_TOKENS: Final = 4096
#: ``audio.output.speed`` (beta ``speed``): "0.25 is the minimum speed. 1.5 is the maximum".
SPEED_RANGE: Final = (0.25, 1.5)

#: ``extra`` paths the bridge renders itself and the call depends on, with the reason given
#: when one is refused.  Both dialects' spellings: ``extra`` is merged into whichever is
#: rendered.
OWNED_PATHS: Final[Mapping[tuple[str, ...], str]] = {
    ("type",): "the session type is always 'realtime'",
    ("output_modalities",): "a phone caller only hears audio: modalities are always ['audio']",
    ("modalities",): "a phone caller only hears audio: modalities are always ['audio']",
    ("audio", "input", "format"): "Twilio's audio is 8 kHz mu-law: the format is fixed",
    ("audio", "output", "format"): "Twilio's audio is 8 kHz mu-law: the format is fixed",
    ("input_audio_format",): "Twilio's audio is 8 kHz mu-law: the format is fixed",
    ("output_audio_format",): "Twilio's audio is 8 kHz mu-law: the format is fixed",
    ("audio", "input", "turn_detection"): "use SessionConfig's turn detection fields",
    ("turn_detection",): "use SessionConfig's turn detection fields",
    ("create_response",): "use SessionConfig.create_response",
    ("interrupt_response",): "use SessionConfig.interrupt_response",
}

#: Fields with no beta counterpart (absent from ``openai/types/beta/realtime/`` session
#: types): rendering them for beta is refused rather than silently dropped.
GA_ONLY: Final = (
    "truncation",
    "prompt",
    "reasoning_effort",
    "parallel_tool_calls",
    "idle_timeout_ms",
)


def _json_copy(value: object, name: str) -> Any:
    """A plain-JSON deep copy of ``value``; ``ValueError`` naming ``name`` if it is not JSON.

    Checked now because the event is serialised mid-call, where a ``TypeError`` from
    ``json.dumps`` would end the call instead of refusing the config."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_mapping_as_dict))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON data: {exc}") from None


def _mapping_as_dict(value: object) -> dict[Any, Any]:
    """Any mapping (``MappingProxyType``...) serialises as an object, like a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, got {value!r}")
    return value


def _opt_str_key(entry: Mapping[str, Any], key: str, name: str) -> None:
    if key in entry and not isinstance(entry[key], str):
        raise ValueError(f"{name}.{key} must be a string, got {entry[key]!r}")


# ------------------------------------------------------------------------------------- tools


def to_tools(value: Iterable[Mapping[str, Any] | HasSchema]) -> tuple[dict[str, Any], ...]:
    """The session ``tools`` as plain dicts.

    Each entry is a mapping in the API's shape or an object with a ``schema()`` method that
    returns one (such as :class:`realtime_fsm.tools.Tool`), duck-typed so this module need
    not import the optional tools extra."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"tools must be a sequence of tool entries, got {value!r}")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        schema = getattr(tool, "schema", None)
        entry = schema() if callable(schema) and not isinstance(tool, Mapping) else tool
        name = f"tools[{index}]"
        tools.append(_json_copy(_require_mapping(entry, name), name))
    return tuple(tools)


def check_tools(_inst: object, _attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    """Function tools need a unique ``name``; MCP tools a ``server_label`` (GA types)."""
    names: set[str] = set()
    for index, entry in enumerate(value):
        name = f"tools[{index}]"
        kind = entry.get("type")
        if kind == "function":
            tool_name = entry.get("name")
            if not isinstance(tool_name, str) or not tool_name:
                raise ValueError(f"{name}.name must be a non-empty string, got {tool_name!r}")
            if tool_name in names:
                raise ValueError(f"{name}: duplicate function name {tool_name!r}")
            names.add(tool_name)
            _opt_str_key(entry, "description", name)
            if "parameters" in entry and not isinstance(entry["parameters"], Mapping):
                raise ValueError(f"{name}.parameters must be a JSON Schema object")
        elif kind == "mcp":
            if not isinstance(entry.get("server_label"), str):
                raise ValueError(f"{name}.server_label must be a string")
        else:
            raise ValueError(f"{name}.type must be 'function' or 'mcp', got {kind!r}")


def function_names(tools: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names a function ``tool_choice`` may force."""
    return {t["name"] for t in tools if t.get("type") == "function"}


# ------------------------------------------------------------------------------- tool_choice


def _opt_json(value: object, name: str) -> Any:
    """A mapping becomes a plain-JSON copy; anything else is left for the validator."""
    return _json_copy(value, name) if isinstance(value, Mapping) else value


# Named converters, one per field so a bad value is named (mypy's attrs plugin needs names).
def tool_choice_json(value: str | Mapping[str, Any] | None) -> Any:
    return _opt_json(value, "tool_choice")


def truncation_json(value: str | Mapping[str, Any] | None) -> Any:
    return _opt_json(value, "truncation")


def tracing_json(value: str | Mapping[str, Any] | None) -> Any:
    return _opt_json(value, "tracing")


def prompt_json(value: Mapping[str, Any] | None) -> Any:
    return _opt_json(value, "prompt")


def check_tool_choice(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A mode string, ``{"type": "function", "name"}`` or ``{"type": "mcp", "server_label"}``."""
    if value is None or value in TOOL_CHOICE_MODES:
        return
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "function" and isinstance(value.get("name"), str):
            return
        if kind == "mcp" and isinstance(value.get("server_label"), str):
            _opt_str_key(value, "name", attribute.name)
            return
    raise ValueError(
        f"{attribute.name} must be one of {TOOL_CHOICE_MODES}, {{'type': 'function', 'name': ...}},"
        f" {{'type': 'mcp', 'server_label': ...}} or None, got {value!r}"
    )


# ------------------------------------------------------------------------- scalar settings


def check_max_output_tokens(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or value == "inf":
        return
    if type(value) is not int or not 1 <= value <= MAX_OUTPUT_TOKENS:
        raise ValueError(
            f"{attribute.name} must be an int in [1, {MAX_OUTPUT_TOKENS}], 'inf' or None,"
            f" got {value!r}"
        )


def check_speed(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    low, high = SPEED_RANGE
    if value is not None and (not _is_number(value) or not low <= value <= high):
        raise ValueError(f"{attribute.name} must be a number in [{low}, {high}] or None")


def check_opt_bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a bool or None, got {value!r}")


# ---------------------------------------------------------------- truncation, tracing, prompt


def check_truncation(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``"auto"``, ``"disabled"`` or ``{"type": "retention_ratio", "retention_ratio": 0..1,
    "token_limits"?: {"post_instructions"?: int}}`` (``realtime_truncation.py``)."""
    if value is None or value in ("auto", "disabled"):
        return
    name = attribute.name
    entry = _require_mapping(value, name)
    if entry.get("type") != "retention_ratio":
        raise ValueError(f"{name} must be 'auto', 'disabled' or a retention_ratio mapping")
    ratio = entry.get("retention_ratio")
    if not _is_number(ratio) or not 0 <= ratio <= 1:
        raise ValueError(f"{name}.retention_ratio must be a number in [0, 1], got {ratio!r}")
    limits = _require_mapping(entry.get("token_limits", {}), f"{name}.token_limits")
    post = limits.get("post_instructions")
    if post is not None and (type(post) is not int or post < 0):
        raise ValueError(f"{name}.token_limits.post_instructions must be a non-negative int")


_TRACING_KEYS: Final = frozenset({"group_id", "metadata", "workflow_name"})


def check_tracing(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``"auto"`` or ``{group_id?, metadata?, workflow_name?}`` (``realtime_tracing_config.py``).

    Checked closely because tracing, once on, cannot be changed for the session."""
    if value is None or value == "auto":
        return
    name = attribute.name
    entry = _require_mapping(value, name)
    unknown = sorted(set(entry) - _TRACING_KEYS)
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {unknown}; known: {sorted(_TRACING_KEYS)}")
    _opt_str_key(entry, "group_id", name)
    _opt_str_key(entry, "workflow_name", name)


def check_prompt(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``{"id", "version"?, "variables"?}`` (``ResponsePrompt``; deprecated by OpenAI)."""
    if value is None:
        return
    name = attribute.name
    entry = _require_mapping(value, name)
    if not isinstance(entry.get("id"), str):
        raise ValueError(f"{name}.id must be a string")
    _opt_str_key(entry, "version", name)
    if "variables" in entry:
        _require_mapping(entry["variables"], f"{name}.variables")


# ------------------------------------------------------------------------------------- extra


def to_extra(value: Mapping[str, Any]) -> dict[str, Any]:
    return _json_copy(_require_mapping(value, "extra"), "extra")  # type: ignore[no-any-return]


def check_extra(_inst: object, _attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    """Refuse a key the bridge owns, and a non-mapping where an owned key lies beneath (it
    would replace the owned key rather than merge beside it)."""
    for path, reason in OWNED_PATHS.items():
        node: object = value
        for depth, key in enumerate(path):
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
            dotted = ".".join(path[: depth + 1])
            if depth == len(path) - 1:
                raise ValueError(f"extra may not set {dotted!r}: {reason}")
            if not isinstance(node, Mapping):
                raise ValueError(
                    f"extra[{dotted!r}] must be a mapping (merged into the rendered one, which"
                    f" holds {'.'.join(path)!r}), got {node!r}"
                )


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``base`` in place: mappings merge key by key, anything else
    (``None`` and lists included) replaces what was there."""
    for key, value in extra.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        else:
            base[key] = _json_copy(value, key)


# -------------------------------------------------------------------------- dialect checks


def check_dialect(config: SessionConfig, dialect: Dialect) -> None:
    """Refuse, naming the field, what ``dialect`` cannot carry (beta has no such field, or only
    a narrower shape of it), instead of dropping it silently."""
    if dialect is Dialect.GA:
        return
    for field in GA_ONLY:
        if getattr(config, field) is not None:
            raise ValueError(f"{field} has no beta session field; render with Dialect.GA")
    if isinstance(config.tool_choice, Mapping):
        raise ValueError("beta types tool_choice as a string: a forced tool needs Dialect.GA")
    for index, entry in enumerate(config.tools):
        if entry.get("type") != "function":
            raise ValueError(f"tools[{index}]: beta sessions only take function tools")
