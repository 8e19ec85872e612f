"""Token counts of the fake Realtime server: ``response.done``'s ``usage`` and the
``max_output_tokens`` limit.

Why it exists: a response's ``usage`` is how a bridge meters a call (``input_tokens`` with
``input_token_details`` - text, audio, cached - and ``output_tokens`` with
``output_token_details``), and ``max_output_tokens`` ends a response ``incomplete`` partway
through its audio.  Both need numbers that grow with what the response said and heard.

The counts are a model, not OpenAI's tokenizer: text is one token per 4 characters, the model's
output audio one token per 50 ms, caller audio one per 100 ms (the ratios OpenAI documents for
its audio models).  The context of a response (its input) is the session's instructions and
tools plus every conversation item before it, an assistant item counting the audio it still
has after a truncate; the part of it the previous response on the connection already had is
reported ``cached`` (prompt caching reuses a prefix that did not change).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import attrs

from ._conversation import JSON, Item

CHARS_PER_TEXT_TOKEN = 4
OUTPUT_AUDIO_MS_PER_TOKEN = 50
INPUT_AUDIO_MS_PER_TOKEN = 100


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


def output_audio_tokens(ms: int) -> int:
    return math.ceil(ms / OUTPUT_AUDIO_MS_PER_TOKEN)


@attrs.frozen
class InputTokens:
    """The context a response was generated from, and how much of it was cached."""

    text: int = 0
    audio: int = 0
    cached_text: int = 0
    cached_audio: int = 0

    def after(self, previous: InputTokens | None) -> InputTokens:
        """This context with the prefix ``previous`` had counted as cached."""
        if previous is None:
            return self
        return attrs.evolve(
            self,
            cached_text=min(previous.text, self.text),
            cached_audio=min(previous.audio, self.audio),
        )


def context_tokens(instructions: str, tools: list[Any], items: Iterable[Item]) -> InputTokens:
    """The input tokens of a response over ``items`` (in conversation order)."""
    text = text_tokens(instructions)
    if tools:
        text += text_tokens(json.dumps(tools))
    audio = 0
    for item in items:
        raw = item.item
        kind = raw.get("type")
        if kind == "function_call":
            text += text_tokens(str(raw.get("name", "")) + str(raw.get("arguments", "")))
            continue
        if kind == "function_call_output":
            text += text_tokens(str(raw.get("output", "")))
            continue
        if item.assistant_audio:
            audio += output_audio_tokens(item.audio_bytes // max(1, item.bytes_per_ms))
        audio += math.ceil(item.input_audio_ms / INPUT_AUDIO_MS_PER_TOKEN)
        for part in raw.get("content") or []:
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
                text += text_tokens(str(part.get("text") or ""))
    return InputTokens(text=text, audio=audio)


def render_usage(context: InputTokens, out_text: int, out_audio: int) -> JSON:
    """``RealtimeResponseUsage`` as ``response.done`` carries it."""
    input_total = context.text + context.audio
    output_total = out_text + out_audio
    return {
        "total_tokens": input_total + output_total,
        "input_tokens": input_total,
        "output_tokens": output_total,
        "input_token_details": {
            "text_tokens": context.text,
            "audio_tokens": context.audio,
            "image_tokens": 0,
            "cached_tokens": context.cached_text + context.cached_audio,
            "cached_tokens_details": {
                "text_tokens": context.cached_text,
                "audio_tokens": context.cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }
