"""Untrusted strings made fit for a log line.

Ids, parameters, transcripts and error messages come from the caller, from Twilio or from the
OpenAI server.  Put into a log line as they are, a ``\\n`` or a ``\\u2028`` forges a second
line (one that looks like ours to whoever greps the log), a ``\\r`` or an ANSI escape rewrites
what a terminal shows, and a megabyte of text floods the log.  :func:`safe` escapes and cuts
such a string; :func:`redacted` stands in for what the caller said or typed, which is personal
data and stays out of logs unless the deployment asks for it (:func:`caller_text`, driven by
``LifecycleConfig.log_caller_content``).

A value-type module: no I/O and no clock, so every layer (the sans-IO core included) may use it.
None of this is called on a per-frame path: only where a line is logged anyway.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Final

__all__ = ["DEFAULT_LIMIT", "caller_params", "caller_text", "redacted", "safe"]

#: Characters of an untrusted string kept in a log line before it is cut.
DEFAULT_LIMIT: Final = 200
#: ``customParameters`` entries shown in a log line.
_MAX_PARAMS: Final = 20

#: Per-process salt of :func:`redacted`'s hash.  Why salted: a plain sha256 prefix of a short
#: text ("yes", a DTMF code, a date of birth, a card's last four digits) is reversed by hashing
#: every candidate, so it would leak exactly the short, sensitive answers redaction is for.
#: With a random salt that never leaves memory the hash only says "the same text as that other
#: line" -- within one process, which is what correlating one call's lines (or a repeated
#: parameter across calls) needs.  The price: the hashes differ after a restart and between
#: the processes of a deployment, and cannot be matched against a hash computed elsewhere.
_SALT: Final = secrets.token_bytes(16)


def safe(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` as one harmless piece of a log line: at most ``limit`` characters of it, with
    every character that is not printable escaped the way ``repr`` does (``\\n``, ``\\r``,
    ``\\x1b``, other C0 and C1 controls, ``\\u2028``/``\\u2029`` and the other separators), and
    ``...[+N chars]`` where it was cut.

    The cut is on the input, before escaping, so a line's size stays bounded by the input's
    limit and the escaping never splits an escape sequence.  Printable text comes back as it
    is (the common case costs one ``isprintable``): a backslash is not escaped, so a literal
    ``\\n`` typed by a caller reads like an escaped newline -- harmless, since it cannot end
    the line.  Not a string (``None``, a number, an exception): its ``str`` is made safe.
    """
    if not isinstance(text, str):
        text = str(text)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not text.isprintable():
        # repr escapes exactly the non-printable characters (and backslashes, quotes); drop
        # the quotes it adds.
        text = repr(text)[1:-1]
    return f"{text}...[+{cut} chars]" if cut > 0 else text


def redacted(text: str) -> str:
    """What stands in for caller content in a log line: ``<redacted len=42 sha=1a2b3c4d>``.

    The length and a short salted hash (see ``_SALT``): enough to see that the caller said
    something, how much, and that two lines carry the same text, without the text.  Eight hex
    digits (32 bits) keep the line short; a collision between two texts of one call is
    unlikely enough for correlation, and the hash is no proof of identity anyway.
    """
    digest = hashlib.sha256(_SALT + text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"<redacted len={len(text)} sha={digest[:8]}>"


def caller_text(text: str, show: bool, limit: int = DEFAULT_LIMIT) -> str:
    """Caller content (what the caller said or typed, DTMF, custom parameters) for a log line:
    shown quoted and made :func:`safe` when ``show`` (``LifecycleConfig.log_caller_content``,
    off by default), else :func:`redacted`.  Quoted so an empty or blank text stays visible
    and the lines keep the seed's ``text='...'`` shape."""
    if show:
        return f"'{safe(text, limit)}'"
    return redacted(text)


def caller_params(params: Mapping[str, str], show: bool) -> str:
    """A call's ``customParameters`` for a log line: ``{name: value, ...}`` with the names made
    :func:`safe` (the deployment's TwiML chooses them) and each value :func:`caller_text`
    (they carry what the app knows of the caller: a number, a name, an account).  At most
    ``_MAX_PARAMS`` entries, so a stream with thousands of parameters stays one short line."""
    shown = [
        f"{safe(name, 64)}={caller_text(str(value), show, 100)}"
        for name, value in list(params.items())[:_MAX_PARAMS]
    ]
    if len(params) > _MAX_PARAMS:
        shown.append(f"...[+{len(params) - _MAX_PARAMS} more]")
    return "{" + ", ".join(shown) + "}"
