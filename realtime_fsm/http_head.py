"""HTTP/1.1 request heads for :mod:`realtime_fsm.webserver`: strict parsing, responses, and the
one way untrusted text reaches a log line.

Split from the server loop because parsing decides what a peer may get away with: every head
that is not plainly well-formed (request line, header syntax, ``Content-Length``) is refused
with a status (:class:`HttpError`), never guessed at, since a lenient parser in front of a
proxy is where request smuggling starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import parse_qs, parse_qsl, urlsplit

import attrs

from .logsafe import safe

#: A method is an RFC 9110 token; the target an origin-form path (no control characters, no
#: spaces); only HTTP/1.0 and 1.1 are spoken here.
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) HTTP/1\.[01]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Field values: visible characters, spaces and tabs (obs-text, bytes >= 0x80, allowed).
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(r"[0-9]{1,18}")
_FORM_TYPE = "application/x-www-form-urlencoded"

REASONS: Mapping[int, str] = MappingProxyType(
    {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        408: "Request Timeout",
        413: "Content Too Large",
        431: "Request Header Fields Too Large",
        501: "Not Implemented",
        503: "Service Unavailable",
    }
)


class HttpError(Exception):
    """A request refused before any handler sees it: ``status`` is sent, ``reason`` logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen
class HttpRequest:
    """A request head (header names lower-cased) and, for plain HTTP, its body."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    client: str = ""

    @property
    def target(self) -> str:
        """Path plus query string, exactly as requested (what request signatures cover)."""
        return self.headers.get(":target", self.path)

    @property
    def query_string(self) -> str:
        """The raw query string (no ``?``), as Twilio signs it."""
        return urlsplit(self.target).query

    def is_form(self) -> bool:
        """True when the body is declared ``application/x-www-form-urlencoded``."""
        content_type = self.headers.get("content-type", "")
        return content_type.split(";")[0].strip().lower() == _FORM_TYPE

    def form_fields(self) -> list[tuple[str, str]]:
        """Every form field in order, repeated names included (a signature covers them all);
        none unless the body is declared form-encoded."""
        if not self.body or not self.is_form():
            return []
        return parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def form(self) -> dict[str, str]:
        """The body as ``application/x-www-form-urlencoded`` fields (first value of each)."""
        fields = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    #: More header lines (``Retry-After`` on a 503), as ``(name, value)``; ours, never a peer's.
    headers: tuple[tuple[str, str], ...] = ()


def parse_head(head: bytes, client: str) -> HttpRequest:
    """The request in ``head`` (through the blank line); raises :class:`HttpError` (400) for
    a malformed request line or header line.  A repeated header keeps its last value, except
    ``Content-Length``, whose values must all agree (see :func:`content_length`): the raw
    values are kept under ``:content-length`` joined by commas."""
    lines = head.decode("latin-1").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, f"malformed request line: {safe(lines[0], 80)}")
    method, target = match.group(1), match.group(2)
    headers: dict[str, str] = {":target": target}
    lengths: list[str] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name) is None:  # also refuses obs-fold, "Name :"
            raise HttpError(400, f"malformed header line: {safe(line, 80)}")
        value = value.strip(" \t")
        if _VALUE.fullmatch(value) is None:
            raise HttpError(400, f"control character in header: {safe(name, 40)}")
        key = name.lower()
        if key == "content-length":
            lengths.append(value)
        headers[key] = value
    if lengths:
        headers[":content-length"] = ",".join(lengths)
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return HttpRequest(
        method=method.upper(),
        path=parts.path,
        query=MappingProxyType(query),
        headers=MappingProxyType(headers),
        client=client,
    )


def content_length(request: HttpRequest, limit: int) -> int:
    """The body's length: 0 without ``Content-Length``; :class:`HttpError` 400 for a value that
    is not digits (``abc``, ``-5``, ``+5``), or repeated values that disagree (``5, 6``); 501
    for ``Transfer-Encoding`` (bodies here are small forms, never chunked); 413 above
    ``limit``."""
    if "transfer-encoding" in request.headers:
        raise HttpError(501, "Transfer-Encoding is not supported")
    raw = request.headers.get(":content-length")
    if raw is None:
        return 0
    values = {value.strip(" \t") for value in raw.split(",")}
    if not all(_DIGITS.fullmatch(value) for value in values):
        raise HttpError(400, f"malformed Content-Length: {safe(raw, 40)}")
    if len(values) != 1:
        raise HttpError(400, f"conflicting Content-Length values: {safe(raw, 40)}")
    length = int(values.pop())
    if length > limit:
        raise HttpError(413, f"body of {length} bytes over the {limit}-byte limit")
    return length


def http_bytes(response: HttpResponse) -> bytes:
    """The response on the wire; every response closes the connection (no keep-alive)."""
    reason = REASONS.get(response.status, "Error")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in response.headers)
        + "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + response.body
