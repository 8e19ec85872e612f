"""Client event rendering: core commands and audio in, OpenAI Realtime client events out.

:func:`render_command` for the core's commands, the events a bridge sends on its own
(``input_audio_buffer.append``/``commit``, a restored ``conversation.item.create``), and
:func:`dumps`, the compact JSON they go out as.  :func:`input_audio_append_json` is the
per-frame path of the caller's audio: it skips ``json.dumps`` when the payload needs no escaping.
Where the dialects disagree (modalities, assistant text parts), the :class:`Dialect` decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypeGuard

from .._wire import plain_json_string
from ..commands import (
    Command,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
)
from ..errors import LocalProtocolError
from .messages import CLIENT_COMMANDS, ClientCommand, Dialect


def _modalities(modalities: Sequence[str], dialect: Dialect) -> tuple[str, list[str]]:
    """The response/session modality field for a dialect.

    Beta servers reject ``["audio"]`` alone (audio always came with its transcript), so beta
    gets ``["text", "audio"]`` for audio; GA allows exactly one modality."""
    if not set(modalities) <= {"audio", "text"} or (
        dialect is Dialect.GA and len(set(modalities)) != 1
    ):
        raise LocalProtocolError(
            f"output modalities {tuple(modalities)!r} are not valid for {dialect.value}: use"
            " ('audio',) or ('text',)"
        )
    if dialect is Dialect.GA:
        return "output_modalities", list(modalities)
    if "audio" in modalities:
        return "modalities", ["text", "audio"]
    return "modalities", list(modalities)


def _render_create(
    command: SendResponseCreate, dialect: Dialect, modalities: Sequence[str] | None
) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if command.out_of_band:
        response["conversation"] = "none"
    if command.instructions is not None:
        response["instructions"] = command.instructions
    if command.metadata:
        response["metadata"] = dict(command.metadata)
    if modalities:
        key, value = _modalities(modalities, dialect)
        response[key] = value
    return {"type": "response.create", "event_id": command.event_id, "response": response}


def _render_cancel(command: SendResponseCancel) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel", "event_id": command.event_id}
    if command.response_id is not None:
        event["response_id"] = command.response_id
    return event


def _render_user_text(command: SendUserText) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "event_id": command.event_id,
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": command.text}],
        },
    }


def _render_truncate(command: SendTruncate) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "event_id": command.event_id,
        "item_id": command.item_id,
        "content_index": 0,
        "audio_end_ms": command.audio_end_ms,
    }


def _render_delete(command: SendItemDelete) -> dict[str, Any]:
    return {
        "type": "conversation.item.delete",
        "event_id": command.event_id,
        "item_id": command.item_id,
    }


#: Content part type of an assistant text message, per dialect (GA ``output_text``, beta ``text``).
_ASSISTANT_TEXT: Final[Mapping[Dialect, str]] = {Dialect.GA: "output_text", Dialect.BETA: "text"}


def render_input_audio_commit(*, event_id: str | None = None) -> dict[str, Any]:
    """``input_audio_buffer.commit``: end the caller's turn by hand (push-to-talk), for a
    session without turn detection.  The server answers ``input_audio_buffer.committed``
    (the core's :class:`~realtime_fsm.events.UserTurnCommitted`), or the error
    ``input_audio_buffer_commit_empty`` when the buffer holds too little audio.  The same in
    both dialects."""
    event: dict[str, Any] = {"type": "input_audio_buffer.commit"}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def render_message_item(
    role: Literal["user", "assistant"],
    text: str,
    *,
    dialect: Dialect = Dialect.GA,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``conversation.item.create`` of one text message, to restore a conversation on a new
    session: user text as ``input_text``, an assistant transcript as ``output_text`` (beta
    ``text``).  Assistant *audio* cannot be created by a client, so a restored assistant turn is
    its transcript."""
    if role == "user":
        part = {"type": "input_text", "text": text}
    elif role == "assistant":
        part = {"type": _ASSISTANT_TEXT[dialect], "text": text}
    else:
        raise LocalProtocolError(f"message role must be 'user' or 'assistant', got {role!r}")
    event: dict[str, Any] = {"type": "conversation.item.create"}
    if event_id is not None:
        event["event_id"] = event_id
    event["item"] = {"type": "message", "role": role, "content": [part]}
    return event


def render_command(
    command: ClientCommand,
    *,
    dialect: Dialect = Dialect.GA,
    response_modalities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The client event (a JSON-ready dict) for one core command.

    ``response_modalities`` is put on every ``response.create`` when given (``("audio",)`` for
    telephony); ``None`` leaves it to the session.  Raises :class:`LocalProtocolError` for a
    command that is not an OpenAI client event (``ClearPlayback`` and friends)."""
    if isinstance(command, SendResponseCreate):
        return _render_create(command, dialect, response_modalities)
    if isinstance(command, SendResponseCancel):
        return _render_cancel(command)
    if isinstance(command, SendUserText):
        return _render_user_text(command)
    if isinstance(command, SendTruncate):
        return _render_truncate(command)
    if isinstance(command, SendItemDelete):
        return _render_delete(command)
    raise LocalProtocolError(f"{type(command).__name__} is not an OpenAI Realtime client event")


def is_client_command(command: Command) -> TypeGuard[ClientCommand]:
    """True for the commands :func:`render_command` accepts (the rest are not for OpenAI)."""
    return isinstance(command, CLIENT_COMMANDS)


def dumps(event: Mapping[str, Any]) -> str:
    """Compact JSON for the wire (no spaces: audio appends are sent 50 times a second)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def render_input_audio_append(payload: str) -> dict[str, Any]:
    """``input_audio_buffer.append`` with a base64 payload passed through as is (Twilio mu-law
    into a ``pcmu`` session needs no transcoding).  No ``event_id``: the server never answers
    an append, and minting ids 50 times a second would only cost."""
    return {"type": "input_audio_buffer.append", "audio": payload}


def input_audio_append_json(payload: str) -> str:
    """:func:`render_input_audio_append` already serialised, for the per-frame path: the base64
    string is wrapped as is (one concatenation instead of a ``json.dumps``)."""
    if type(payload) is str and plain_json_string(payload):
        return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'
    return dumps({"type": "input_audio_buffer.append", "audio": payload})


def render_function_call_output(call_id: str, output: str, *, event_id: str) -> dict[str, Any]:
    """``conversation.item.create`` of a ``function_call_output``: a tool's answer to the call
    ``call_id`` (the same in both dialects).  Sent as an item, never only inside a
    ``response.create`` (the server then cannot find the call id, reference §11)."""
    return {
        "type": "conversation.item.create",
        "event_id": event_id,
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }
