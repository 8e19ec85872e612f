"""Function tools for the Realtime API: a schema to put in the session, arguments in, a string out.

A tool call crosses the wire as text both ways (reference §11): the model's ``function_call``
carries ``arguments``, "a JSON-encoded string" it wrote itself and may get wrong, and the
client answers with a ``function_call_output`` whose ``output`` is a string.  This module owns
the three pure steps around running a tool, so that a bridge cannot get them wrong:

* :meth:`Tool.schema` renders the GA session ``tools`` entry;
* :meth:`Tool.parse_arguments` turns the model's text into keyword arguments or raises
  :class:`~realtime_fsm.errors.ToolArgumentsError`, whose message is short and safe to send back
  to the model so it can correct itself;
* :meth:`Tool.format_output` turns whatever the function returned into a bounded string.

Running the function (threads, timeouts, cancellation) is I/O and lives in
:mod:`realtime_fsm.tool_runner`; this module is sans-IO like the core and imports neither
``asyncio`` nor ``threading``.

:func:`function_tool` builds a :class:`Tool` from a plain function, the way openai-agents and
livekit-agents do: the parameters' JSON schema comes from the signature's type hints through a
pydantic model, which also validates and coerces the arguments, so the schema the model sees and
the check its answer meets are one object and cannot drift apart; parameter descriptions come
from the docstring (Google, reST, numpydoc or epydoc) through docstring_parser.  Both are the
optional ``realtime-fsm[tools]`` extra, imported only when the decorator runs.  A :class:`Tool`
can also be built by hand from a JSON schema one already has; its arguments then get a
structural check (object, required and unknown keys, top-level JSON types) unless a validator is
given.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, overload

import attrs

from .errors import ToolArgumentsError

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_OUTPUT_CHARS",
    "ArgumentsValidator",
    "Tool",
    "check_tool_name",
    "function_tool",
    "tools_by_name",
]

#: ``function_call_output.output`` longer than this is cut, with a marker saying so: the output
#: joins the conversation, and every later response pays for its tokens.
MAX_OUTPUT_CHARS = 16_000
#: A :class:`ToolArgumentsError` message goes back to the model: keep it short.
MAX_ERROR_CHARS = 300

#: What the API accepts as a function name.
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INSTALL_HINT = "pip install 'pydantic>=2' 'docstring-parser>=0.15' (the 'tools' extra)"

#: Validates decoded arguments and returns the keyword arguments to call the function with.
ArgumentsValidator = Callable[[dict[str, Any]], dict[str, Any]]


def check_tool_name(name: object) -> str:
    """Return ``name`` if the API accepts it as a function name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"tool name {name!r} is not a valid function name (1 to 64 of a-z A-Z 0-9 _ -)"
        )
    return name


def _valid_name(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    check_tool_name(value)


def _valid_parameters(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping) or value.get("type") != "object":
        raise ValueError('a tool\'s parameters must be a JSON schema with "type": "object"')


def _valid_timeout(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError("timeout must be a number of seconds or None")
    if not value > 0:
        raise ValueError(f"timeout must be > 0, got {value}")


def _is_async(func: Callable[..., Any]) -> bool:
    # A callable object with an ``async def __call__`` is not a coroutine function itself.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the attribute, not callability
    )


def _detect_async(tool: Tool) -> bool:
    return _is_async(tool.func)


@attrs.frozen(eq=False)
class Tool:
    """One function the model may call.

    Build it with :func:`function_tool`, or by hand with a JSON schema for ``parameters``: then
    pass ``validate_arguments`` for a full check, or get the structural one.  Tools compare by
    identity.
    """

    #: The function name the model calls (``^[a-zA-Z0-9_-]{1,64}$``).
    name: str = attrs.field(validator=_valid_name)
    #: When and how to call it; the model reads this.
    description: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: JSON schema of the arguments object.
    parameters: Mapping[str, Any] = attrs.field(validator=_valid_parameters)
    #: The function, called with the parsed arguments as keywords.
    func: Callable[..., Any] = attrs.field(validator=attrs.validators.is_callable())
    #: Seconds before the runner gives up on a call; ``None``: the runner's default.
    timeout: float | None = attrs.field(default=None, validator=_valid_timeout)
    #: Turns decoded arguments into keyword arguments, raising ToolArgumentsError.
    validate_arguments: ArgumentsValidator | None = attrs.field(
        default=None, repr=False, kw_only=True
    )
    #: ``func`` is a coroutine function: awaited on the event loop, not run in a thread.
    is_async: bool = attrs.field(init=False, default=attrs.Factory(_detect_async, takes_self=True))

    def schema(self) -> dict[str, Any]:
        """The session ``tools`` entry (GA shape, ``RealtimeFunctionTool``); a fresh copy."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(dict(self.parameters)),
        }

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """Keyword arguments for :attr:`func` from the model's JSON-encoded ``arguments``.

        An empty string means no arguments (some models send it for parameterless functions).
        Raises :class:`ToolArgumentsError`, with a message meant for the model, when the text is
        not a JSON object or the object does not fit :attr:`parameters`.
        """
        if not isinstance(arguments, str):
            raise ToolArgumentsError("arguments must be a JSON-encoded string")
        try:
            data = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            # ValueError covers JSONDecodeError and over-long integer literals.
            raise ToolArgumentsError("arguments are not valid JSON") from None
        if not isinstance(data, dict):
            raise ToolArgumentsError(
                f"arguments must be a JSON object, got {_json_type_name(data)}"
            )
        if self.validate_arguments is not None:
            return self.validate_arguments(data)
        return _check_structure(self.parameters, data)

    @staticmethod
    def format_output(result: Any, *, max_chars: int = MAX_OUTPUT_CHARS) -> str:
        """The ``function_call_output.output`` string for what the function returned.

        ``str`` passes through, ``None`` is empty, pydantic models, dataclasses, attrs classes,
        mappings and sequences become compact JSON, anything else ``str()``.  Longer than
        ``max_chars``, it is cut and ends with a marker saying how long it was.
        """
        if isinstance(result, str):
            text = result
        elif result is None:
            text = ""
        elif isinstance(result, (Mapping, list, tuple)) or _is_structured(result):
            try:
                text = json.dumps(
                    result, default=_json_default, separators=(",", ":"), ensure_ascii=False
                )
            except (TypeError, ValueError):  # non-string keys, cycles
                text = str(result)
        else:
            text = str(result)
        return _bound(text, max_chars)


def _is_structured(value: Any) -> bool:
    return (
        callable(getattr(value, "model_dump", None))
        or attrs.has(type(value))
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
    )


def _json_default(value: Any) -> Any:
    """``json.dumps`` fallback: structured objects as their fields, the rest as text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model; duck-typed so pydantic is never imported here
        return dump(mode="json")
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    isoformat = getattr(value, "isoformat", None)  # date, datetime, time
    if callable(isoformat):
        return isoformat()
    return str(value)


def _bound(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = f"…[truncated: {len(text)} chars in all]"
    return text[: max(0, max_chars - len(marker))] + marker


def _short(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _json_type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


def _check_structure(schema: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The check a hand-built tool gets: required and unknown keys, top-level JSON types."""
    properties = schema.get("properties") or {}
    problems: list[str] = []
    problems += [f"{key}: missing" for key in schema.get("required", ()) if key not in data]
    for key, value in data.items():
        prop = properties.get(key) if isinstance(properties, Mapping) else None
        if prop is None:
            if schema.get("additionalProperties", True) is False:
                problems.append(f"{key}: not a parameter")
            continue
        wanted = prop.get("type") if isinstance(prop, Mapping) else None
        names = [wanted] if isinstance(wanted, str) else wanted
        if isinstance(names, list) and not any(
            _JSON_TYPES.get(n, lambda _v: True)(value) for n in names if isinstance(n, str)
        ):
            problems.append(f"{key}: should be {' or '.join(map(str, names))}")
    if problems:
        raise ToolArgumentsError(_short("invalid arguments: " + "; ".join(problems)))
    return data


def tools_by_name(tools: Iterable[Tool]) -> Mapping[str, Tool]:
    """A read-only name -> tool map for dispatching ``function_call`` items.

    Raises ``ValueError`` for a name the API would refuse or one used twice (the model could
    not tell the two apart).
    """
    found: dict[str, Tool] = {}
    for tool in tools:
        check_tool_name(tool.name)
        if tool.name in found:
            raise ValueError(f"two tools are named {tool.name!r}")
        found[tool.name] = tool
    return MappingProxyType(found)


# --- function_tool: the schema and the validator from a signature ------------------------------

_AnyFunc = Callable[..., Any]


@overload
def function_tool(func: _AnyFunc, /) -> Tool: ...


@overload
def function_tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[_AnyFunc], Tool]: ...


def function_tool(
    func: _AnyFunc | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[_AnyFunc], Tool]:
    """Make a :class:`Tool` of a sync or async function; bare or with arguments.

    ``name`` defaults to the function's ``__name__``, ``description`` to its docstring's
    summary and long description.  Each parameter needs a type pydantic can validate (no
    annotation means any JSON value); its docstring entry (``Args:`` or ``:param x:``) becomes
    its description, and a default makes it optional.  ``*args``, ``**kwargs`` and
    positional-only parameters are refused: the model passes named arguments.  ``timeout``
    (seconds) overrides the runner's default for this tool.

    Needs the ``tools`` extra: ``pip install 'pydantic>=2' 'docstring-parser>=0.15'``.
    """

    def build(f: _AnyFunc) -> Tool:
        return _tool_from_function(f, name=name, description=description, timeout=timeout)

    if func is None:
        return build
    return build(func)


def _import_extras() -> tuple[Any, Any]:
    try:
        import docstring_parser
        import pydantic
    except ImportError as exc:
        raise ImportError(
            f"function_tool needs pydantic and docstring_parser ({exc}): {_INSTALL_HINT}"
        ) from exc
    return pydantic, docstring_parser


def _tool_from_function(
    func: _AnyFunc, *, name: str | None, description: str | None, timeout: float | None
) -> Tool:
    pydantic, docstring_parser = _import_extras()
    if not callable(func):
        raise TypeError(f"function_tool needs a function, got {func!r}")
    if name is None:
        name = getattr(func, "__name__", None)
        if name is None:
            raise TypeError(f"{func!r} has no __name__: pass function_tool(name=...)")
    check_tool_name(name)

    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    if description is None:
        description = "\n\n".join(
            part.strip() for part in (doc.short_description, doc.long_description) if part
        )
    param_docs = {p.arg_name: p.description for p in doc.params if p.description}

    try:
        hints = _parameter_hints(func)
    except Exception as exc:  # NameError for a hint naming something out of reach, and more
        raise TypeError(f"cannot resolve the type hints of {name}: {exc}") from exc

    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"{name}: parameter {param.name!r} is {param.kind.description}; "
                "a tool's parameters must be passable by name"
            )
        extra: dict[str, Any] = {}
        if param.name in param_docs:
            extra["description"] = param_docs[param.name]
        if param.default is not param.empty:
            extra["default"] = param.default
        fields[param.name] = (hints.get(param.name, Any), pydantic.Field(**extra))

    model = pydantic.create_model(
        f"{name}_arguments",
        __config__=pydantic.ConfigDict(extra="forbid", protected_namespaces=()),
        **fields,
    )
    return Tool(
        name=name,
        description=description,
        parameters=_tidy_schema(model.model_json_schema()),
        func=func,
        timeout=timeout,
        validate_arguments=_pydantic_validator(pydantic, model),
    )


def _hinted(func: _AnyFunc) -> Any:
    """What carries the annotations: a partial's function, a callable object's ``__call__``."""
    if isinstance(func, functools.partial):
        return _hinted(func.func)
    if inspect.isroutine(func) or inspect.isclass(func):
        return func
    return type(func).__call__


def _parameter_hints(func: _AnyFunc) -> dict[str, Any]:
    """The parameters' resolved type hints.  The return annotation is left out: it is not part
    of the schema, and it often names a type imported only under ``TYPE_CHECKING``."""
    target = _hinted(func)
    annotations = getattr(target, "__annotations__", None) or {}
    shim = types.SimpleNamespace(
        __annotations__={k: v for k, v in annotations.items() if k != "return"},
        __globals__=getattr(inspect.unwrap(target), "__globals__", {}),
    )
    return typing.get_type_hints(shim, include_extras=True)


def _pydantic_validator(
    pydantic: Any, model: type[pydantic.BaseModel]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    field_names = tuple(model.model_fields)

    def validate(data: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError(_describe_validation_error(exc)) from None
        # Attributes, not model_dump(): nested models and enums reach the function as objects.
        return {field: getattr(parsed, field) for field in field_names}

    return validate


def _describe_validation_error(exc: pydantic.ValidationError) -> str:
    """``invalid arguments: city: Field required; days: Input should be a valid integer``.

    Without the offending input values (``include_input=False``): the message is logged, and
    arguments can hold what the caller said."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return _short("invalid arguments: " + "; ".join(parts))


# --- schema tidying ------------------------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONES = ("items", "additionalProperties", "not", "contains", "propertyNames")


class _Cycle(Exception):
    pass


def _tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema, made smaller and self-contained for the model to read.

    The generated ``title`` of every node goes (the model reads ``description``; a title is
    tokens), and ``$ref`` to ``$defs`` are inlined, so no part of the schema depends on the
    API resolving references.  A recursive model keeps its ``$defs``: it cannot be inlined.
    """
    schema = dict(_map_schema(schema, _strip_title))
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    try:
        inlined = dict(_inline(schema, defs, ()))
    except _Cycle:
        return schema
    inlined.pop("$defs", None)
    return inlined


def _strip_title(node: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node.get("title"), str):
        node = {k: v for k, v in node.items() if k != "title"}
    return node


def _map_schema(node: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``fn`` to every schema node, bottom-up; data (enum, default, const) is left alone."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _map_schema(v, fn) for k, v in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_map_schema(v, fn) for v in out[key]]
    for key in _SCHEMA_ONES:
        if isinstance(out.get(key), dict):
            out[key] = _map_schema(out[key], fn)
    return fn(out)


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = ref[len("#/$defs/") :]
        if target in stack or target not in defs:
            raise _Cycle(target)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(defs[target], defs, (*stack, target)), **siblings}
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if key != "$defs" and isinstance(out.get(key), dict):
            out[key] = {k: _inline(v, defs, stack) for k, v in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_inline(v, defs, stack) for v in out[key]]
    for key in _SCHEMA_ONES:
        if isinstance(out.get(key), dict):
            out[key] = _inline(out[key], defs, stack)
    return out
