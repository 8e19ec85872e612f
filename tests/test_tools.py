"""realtime_fsm.tools: the schema a function tool shows the model, how its arguments are checked,
how its result becomes the output string, and that the module stays sans-IO."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import enum
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import attrs
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.realtime.realtime_function_tool import RealtimeFunctionTool
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from realtime_fsm.errors import ProtocolError, ToolArgumentsError
from realtime_fsm.tools import MAX_OUTPUT_CHARS, Tool, function_tool, tools_by_name


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(pydantic.BaseModel):
    street: str
    zip_code: int = 0


class Node(pydantic.BaseModel):
    label: str
    children: list[Node] = []


@function_tool
def get_weather(
    city: str,
    days: int,
    ratio: float,
    metric: bool,
    note: Optional[str] = None,  # noqa: UP045 - the spelling under test
    mode: Literal["brief", "full"] = "brief",
    unit: Unit = Unit.CELSIUS,
    tags: list[str] | None = None,
    address: Address | None = None,
) -> str:
    """Look up the weather.

    Use it when the caller asks about the weather.

    Args:
        city: The city's name.
        days: How many days ahead.
        unit: Temperature unit.

    Returns:
        A forecast.
    """
    return f"{city}:{days}"


def props(tool: Tool) -> dict[str, Any]:
    return dict(tool.parameters["properties"])


# --- the schema ----------------------------------------------------------------------------------


def test_schema_types_required_and_no_extra_properties() -> None:
    p = get_weather.parameters
    assert p["type"] == "object"
    assert p["additionalProperties"] is False
    assert p["required"] == ["city", "days", "ratio", "metric"]
    pr = props(get_weather)
    assert pr["city"] == {"type": "string", "description": "The city's name."}
    assert pr["days"] == {"type": "integer", "description": "How many days ahead."}
    assert pr["ratio"] == {"type": "number"}
    assert pr["metric"] == {"type": "boolean"}


def test_schema_optional_literal_enum_list_defaults() -> None:
    pr = props(get_weather)
    assert pr["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert pr["mode"] == {"enum": ["brief", "full"], "type": "string", "default": "brief"}
    assert pr["unit"] == {
        "enum": ["celsius", "fahrenheit"],
        "type": "string",
        "default": "celsius",
        "description": "Temperature unit.",
    }
    assert pr["tags"]["anyOf"][0] == {"type": "array", "items": {"type": "string"}}


def test_schema_nested_model_is_inlined_without_titles() -> None:
    text = json.dumps(get_weather.parameters)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    address = props(get_weather)["address"]["anyOf"][0]
    assert address == {
        "type": "object",
        "properties": {"street": {"type": "string"}, "zip_code": {"type": "integer", "default": 0}},
        "required": ["street"],
    }


def test_a_parameter_named_title_is_kept() -> None:
    @function_tool
    def titled(title: str) -> None: ...

    assert props(titled) == {"title": {"type": "string"}}


def test_recursive_model_keeps_its_defs() -> None:
    @function_tool
    def tree(root: Node) -> None: ...

    p = tree.parameters
    assert props(tree)["root"] == {"$ref": "#/$defs/Node"}
    assert p["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert tree.parse_arguments('{"root": {"label": "a", "children": [{"label": "b"}]}}') == {
        "root": Node(label="a", children=[Node(label="b")])
    }


def test_no_parameters_and_no_annotation() -> None:
    @function_tool
    def hang_up() -> None:
        """End the call."""

    assert hang_up.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert hang_up.parse_arguments("") == {} == hang_up.parse_arguments("{}")

    @function_tool
    def anything(x) -> None:  # type: ignore[no-untyped-def]
        ...

    assert anything.parse_arguments('{"x": [1, {"a": null}]}') == {"x": [1, {"a": None}]}


# --- names, descriptions, the decorator's two forms ---------------------------------------------


def test_description_from_docstring_short_and_long_not_args_or_returns() -> None:
    assert get_weather.name == "get_weather"
    assert get_weather.description == (
        "Look up the weather.\n\nUse it when the caller asks about the weather."
    )


def test_rest_and_numpy_docstrings() -> None:
    @function_tool
    def rest(a: int) -> None:
        """Rest style.

        :param a: the a.
        """

    @function_tool
    def numpy(a: int) -> None:
        """Numpy style.

        Parameters
        ----------
        a : int
            the a.
        """

    for tool in (rest, numpy):
        assert props(tool)["a"] == {"type": "integer", "description": "the a."}
    assert rest.description == "Rest style." and numpy.description == "Numpy style."


def test_decorator_with_arguments_and_async() -> None:
    @function_tool(name="lookup-order", description="Find an order.", timeout=2.5)
    async def lookup(order_id: str) -> dict[str, str]:
        """Ignored docstring."""
        return {"id": order_id}

    assert (lookup.name, lookup.description, lookup.timeout) == (
        "lookup-order",
        "Find an order.",
        2.5,
    )
    assert lookup.is_async and not get_weather.is_async
    assert function_tool()(get_weather.func).name == "get_weather"


def test_callable_object_with_async_call_is_async() -> None:
    class Caller:
        __name__ = "call_obj"

        async def __call__(self, n: int) -> int:
            return n

    assert function_tool(Caller()).is_async


@pytest.mark.parametrize(
    "source",
    [
        "def f(*args: int) -> None: ...",
        "def f(**kw: int) -> None: ...",
        "def f(a: int, /) -> None: ...",
    ],
)
def test_parameters_that_cannot_be_passed_by_name_are_refused(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TypeError, match="passable by name"):
        function_tool(namespace["f"])


def test_bad_names_and_unresolvable_hints() -> None:
    with pytest.raises(ValueError, match="not a valid function name"):
        function_tool(lambda: None)
    with pytest.raises(ValueError, match="not a valid function name"):
        function_tool(name="x" * 65)(get_weather.func)

    def returns(a: int) -> NoSuchType: ...  # type: ignore[name-defined]  # noqa: F821

    assert props(function_tool(returns)) == {"a": {"type": "integer"}}  # the return is not read

    def f(a: NoSuchType) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="cannot resolve the type hints of f"):
        function_tool(f)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)
    with pytest.raises(ImportError, match=r"pip install 'pydantic>=2' 'docstring-parser>=0.15'"):
        function_tool(get_weather.func)


# --- the openai package's own types accept the schema --------------------------------------------


def test_schema_is_a_realtime_function_tool() -> None:
    for tool in (get_weather, function_tool(name="t")(lambda: None)):
        entry = tool.schema()
        parsed = RealtimeFunctionTool.model_validate(entry)
        assert parsed.model_extra == {}  # no key the type does not know
        assert parsed.model_dump(exclude_unset=True) == entry
        assert parsed.type == "function" and parsed.name == tool.name


def test_schema_is_a_session_tools_entry() -> None:
    session = RealtimeSessionCreateRequest.model_validate(
        {"type": "realtime", "tools": [get_weather.schema()]}
    )
    assert session.tools is not None
    (tool,) = session.tools
    assert isinstance(tool, RealtimeFunctionTool)
    assert tool.parameters == get_weather.parameters


def test_schema_is_a_copy() -> None:
    get_weather.schema()["parameters"]["properties"].clear()
    assert "city" in props(get_weather)


# --- arguments -----------------------------------------------------------------------------------

VALID = '{"city": "Oslo", "days": "3", "ratio": 1, "metric": true, "unit": "fahrenheit"}'


def test_arguments_are_validated_and_coerced() -> None:
    kwargs = get_weather.parse_arguments(VALID)
    assert kwargs == {
        "city": "Oslo",
        "days": 3,
        "ratio": 1.0,
        "metric": True,
        "note": None,
        "mode": "brief",
        "unit": Unit.FAHRENHEIT,
        "tags": None,
        "address": None,
    }
    assert get_weather.func(**kwargs) == "Oslo:3"
    nested = get_weather.parse_arguments(VALID[:-1] + ', "address": {"street": "Main"}}')
    assert nested["address"] == Address(street="Main")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{", "arguments are not valid JSON"),
        ("[" * 100_000, "arguments are not valid JSON"),
        ("1" * 5000, "arguments are not valid JSON"),
        ("[]", "must be a JSON object, got array"),
        ('"x"', "must be a JSON object, got string"),
        ("null", "must be a JSON object, got null"),
        ('{"days": 1, "ratio": 1, "metric": true}', "city: Field required"),
        (VALID[:-1] + ', "secret": 1}', "secret: Extra inputs are not permitted"),
        (VALID.replace('"3"', '"soon"'), "days: Input should be a valid integer"),
        (VALID.replace('"fahrenheit"', '"kelvin"'), "unit: Input should be 'celsius'"),
        (VALID[:-1] + ', "address": {"zip_code": 1}}', "address.street: Field required"),
    ],
)
def test_bad_arguments(arguments: str, message: str) -> None:
    with pytest.raises(ToolArgumentsError, match=re.escape(message)) as info:
        get_weather.parse_arguments(arguments)
    assert isinstance(info.value, ProtocolError)
    assert info.value.message == str(info.value) and len(info.value.message) <= 300


def test_error_messages_never_repeat_values() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        get_weather.parse_arguments(VALID.replace('"3"', '"my PIN is 4711"'))
    assert "4711" not in info.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from([*props(get_weather), "other"]), json_values, max_size=6
).map(json.dumps)


@given(st.one_of(st.text(), json_values.map(json.dumps), json_objects))
def test_parse_arguments_only_ever_raises_tool_arguments_error(text: str) -> None:
    for tool in (get_weather, HAND_BUILT):
        try:
            result = tool.parse_arguments(text)
        except ToolArgumentsError as exc:
            assert 0 < len(exc.message) <= 300
        else:
            assert isinstance(result, dict)


# --- hand-built tools and the registry -----------------------------------------------------------

HAND_BUILT = Tool(
    name="transfer",
    description="Transfer the call.",
    parameters={
        "type": "object",
        "properties": {"to": {"type": "string"}, "priority": {"type": ["integer", "null"]}},
        "required": ["to"],
        "additionalProperties": False,
    },
    func=lambda to, priority=None: to,
)


def test_hand_built_tool_keeps_its_schema_and_checks_structure() -> None:
    assert HAND_BUILT.schema()["parameters"] == HAND_BUILT.parameters
    RealtimeFunctionTool.model_validate(HAND_BUILT.schema())
    assert HAND_BUILT.parse_arguments('{"to": "sales", "priority": null}') == {
        "to": "sales",
        "priority": None,
    }
    for arguments, message in [
        ("{}", "to: missing"),
        ('{"to": "x", "cc": 1}', "cc: not a parameter"),
        ('{"to": 5}', "to: should be string"),
        ('{"to": "x", "priority": true}', "priority: should be integer or null"),
    ]:
        with pytest.raises(ToolArgumentsError, match=message):
            HAND_BUILT.parse_arguments(arguments)


def test_hand_built_tool_with_its_own_validator() -> None:
    def validate(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("n") != 1:
            raise ToolArgumentsError("n must be 1")
        return {"n": 1}

    tool = Tool("one", "", {"type": "object"}, lambda n: n, validate_arguments=validate)
    assert tool.parse_arguments('{"n": 1}') == {"n": 1}
    with pytest.raises(ToolArgumentsError, match="n must be 1"):
        tool.parse_arguments('{"n": 2}')


def test_tool_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="not a valid function name"):
        Tool("has space", "", {"type": "object"}, print)
    with pytest.raises(ValueError, match='"type": "object"'):
        Tool("t", "", {"type": "string"}, print)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Tool("t", "", {"type": "object"}, print, timeout=0)
    with pytest.raises(TypeError):
        Tool("t", "", {"type": "object"}, "not callable")  # type: ignore[arg-type]


def test_tools_by_name() -> None:
    registry = tools_by_name([get_weather, HAND_BUILT])
    assert dict(registry) == {"get_weather": get_weather, "transfer": HAND_BUILT}
    with pytest.raises(TypeError):
        registry["x"] = HAND_BUILT  # type: ignore[index]
    with pytest.raises(ValueError, match="two tools are named 'transfer'"):
        tools_by_name([HAND_BUILT, attrs.evolve(HAND_BUILT, description="again")])
    renamed = attrs.evolve(HAND_BUILT)
    object.__setattr__(renamed, "name", "a.b")  # past the constructor's own check
    with pytest.raises(ValueError, match="not a valid function name"):
        tools_by_name([renamed])


# --- output --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Booking:
    when: datetime.date
    unit: Unit


def test_format_output() -> None:
    fmt = Tool.format_output
    assert fmt("plain ü") == "plain ü"
    assert fmt(None) == ""
    assert fmt(42) == "42"
    assert fmt({"a": [1, 2], "b": None}) == '{"a":[1,2],"b":null}'
    assert fmt([Address(street="Main")]) == '[{"street":"Main","zip_code":0}]'
    assert fmt(Address(street="Main")) == '{"street":"Main","zip_code":0}'
    assert fmt(Booking(datetime.date(2025, 1, 2), Unit.CELSIUS)) == (
        '{"when":"2025-01-02","unit":"celsius"}'
    )
    assert fmt({(1, 2): "tuple key"}) == "{(1, 2): 'tuple key'}"  # not JSON-able: str()


@pytest.mark.parametrize("size", [MAX_OUTPUT_CHARS, MAX_OUTPUT_CHARS + 1, 10 * MAX_OUTPUT_CHARS])
def test_format_output_is_bounded(size: int) -> None:
    text = Tool.format_output("x" * size)
    assert len(text) <= MAX_OUTPUT_CHARS
    if size > MAX_OUTPUT_CHARS:
        assert text.endswith(f"…[truncated: {size} chars in all]") and text.startswith("xxx")
    assert len(Tool.format_output(list(range(size)), max_chars=100)) <= 100


# --- layering ------------------------------------------------------------------------------------


def test_tools_module_is_sans_io_and_imports_the_extra_lazily() -> None:
    source = Path(__file__).parent.parent / "realtime_fsm" / "tools.py"
    tree = ast.parse(source.read_text())
    every: set[str] = set()
    top_level: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            continue
        every |= names
        if node in tree.body:
            top_level |= names
    assert not every & {"asyncio", "socket", "threading", "concurrent", "selectors"}
    assert not top_level & {"pydantic", "docstring_parser"}
