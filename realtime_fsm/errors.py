"""Typed exceptions, in the h11 style.

A :class:`LocalProtocolError` means *you* (the application or driver) misused the API: fed an
event of the wrong type, let time run backwards, or kept using a closed machine.  A
:class:`RemoteProtocolError` means the *peer* sent something that cannot be understood (bad
JSON, a wrong shape).  Adapters raise the remote kind at their parsing boundary so a bridge can
log the offending frame, count it, and keep the call alive.  A :class:`ToolArgumentsError`
means the *model* called a function tool with arguments that do not fit it: the bridge sends the
message back as the call's output, and the model can try again.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: never raised directly, so ``except ProtocolError`` catches both directions."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(message)
        self.message = message


class LocalProtocolError(ProtocolError):
    """The caller of this library broke a rule of the API."""


class RemoteProtocolError(ProtocolError):
    """A peer (OpenAI Realtime server, Twilio) sent input that violates its protocol."""


class CallNotActive(Exception):
    """A call-scoped request (``CallBridge.send_user_text``, ``request_response``) came when
    the call is not running: before the telephony stream started, or after the call ended.

    Nothing was taken: user text passed in that call is still the caller's to keep or retry."""


class ToolArgumentsError(ProtocolError):
    """The model called a function tool with ``arguments`` that do not fit its parameters: not
    JSON, not an object, or a field missing, unknown or of the wrong type.

    Raised by :meth:`realtime_fsm.tools.Tool.parse_arguments`.  ``message`` is short, names
    fields but never their values, and is meant to go back to the model as the call's output
    so it can call again correctly."""


class UpstreamUnreachable(ConnectionError):
    """A connector could not open the OpenAI Realtime socket.  Its text is safe to log (the
    host and the failure's type, never the URL: some deployments put a key in its query)."""
