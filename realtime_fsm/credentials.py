"""Per-call stream credentials: a media stream that cannot be replayed for another call.

Twilio signs the media stream's WebSocket upgrade, but the signature covers only the stream
URL, which is the same for every call (Twilio forbids a query string on it): one captured
signature would open any number of streams.  So the signed webhook mints a credential for the
one call it answers, puts it in the TwiML as a ``<Parameter>``, and Twilio hands it back in the
stream's ``start`` (``customParameters``), where the call checks it before anything is opened
upstream (the call machine's ``start`` row, ``stream_credential_refused``).

The credential is ``v1.<expiry>.<mac>``: an HMAC-SHA256 over the account, the call and the
expiry (Unix seconds), under a key every worker derives from the Twilio auth token (or a secret
of its own).  Any process or machine with the same configuration verifies it without shared
state, so calls can be spread over many workers.  Refused, each with its own reason: missing,
malformed, forged (another key, or altered), for another call or account, expired; and, within
one process, used a second time (a single-use ledger; across processes the short lifetime is
the bound, since single use everywhere would need shared state).

Pure: no clock of its own (the wall time is passed in), no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict

import attrs

from .validators import positive

#: The ``<Parameter>`` name the credential travels under.  Reserved: an application's own
#: parameter of that name is replaced, and the call removes it from the parameters the
#: application sees (``CallStarted``, the report, the greeting function, the logs).
CREDENTIAL_PARAMETER = "realtime_fsm_credential"

_VERSION = "v1"
#: What the Twilio auth token is stretched into the credential key with: a key of its own, so
#: a credential can never serve as a Twilio signature or the reverse.
_DERIVATION_LABEL = b"realtime-fsm stream credential v1"
#: The MAC is truncated to 128 bits (as HMAC-SHA256-128 in RFC 4868): forging one still takes
#: 2**128 tries, and the parameter stays short.
_MAC_BYTES = 16


def _mac(key: bytes, account_sid: str, call_sid: str, expiry: int) -> bytes:
    # Newline-separated: Twilio ids never contain one, so no two inputs share a message.
    message = f"{_VERSION}\n{account_sid}\n{call_sid}\n{expiry}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@attrs.define(eq=False)
class StreamCredentials:
    """Mints and checks per-call stream credentials; one per server process, shared by its calls.

    ``key``: the HMAC key (at least 16 bytes); :meth:`from_auth_token` derives it from the
    Twilio auth token, so configuring the token is all a deployment needs.  ``ttl``: seconds a
    credential stays valid after the webhook minted it; Twilio opens the stream within a second
    or two of receiving our TwiML, so a minute leaves room for clock skew between the worker
    that minted it and the one that checks it (NTP keeps that well under a second).
    ``max_remembered``: the single-use ledger's bound (entries expire with their credential; at
    the bound the oldest are forgotten first, so a flood cannot grow memory)."""

    key: bytes = attrs.field(repr=False)
    ttl: float = attrs.field(default=60.0, validator=positive)
    max_remembered: int = attrs.field(default=100_000)
    #: Credentials already used by a call of this process, with their expiry (oldest first).
    #: Not a machine: a ledger the check reads, pruned as credentials expire.
    _used: OrderedDict[str, int] = attrs.field(factory=OrderedDict, init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) < 16:
            raise ValueError("the stream credential key must be at least 16 bytes")
        if type(self.max_remembered) is not int or self.max_remembered <= 0:
            raise ValueError(f"max_remembered must be an int > 0, got {self.max_remembered!r}")

    @classmethod
    def from_auth_token(cls, token: str, ttl: float = 60.0) -> StreamCredentials:
        """The key derived from the Twilio auth token: every worker configured with the token
        verifies every other's credentials; rotating the token rotates the key."""
        if not token:
            raise ValueError("an empty auth token cannot key stream credentials")
        key = hmac.new(token.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()
        return cls(key, ttl)

    def mint(self, account_sid: str, call_sid: str, now: float) -> str:
        """The credential for this call, valid for ``ttl`` seconds from ``now`` (wall clock,
        Unix seconds)."""
        expiry = int(now + self.ttl) + 1
        return f"{_VERSION}.{expiry}.{_b64(_mac(self.key, account_sid, call_sid, expiry))}"

    def refusal(
        self, credential: str | None, account_sid: str | None, call_sid: str | None, now: float
    ) -> str | None:
        """Why ``credential`` does not admit the stream of this call at ``now`` (wall clock,
        Unix seconds), or ``None`` when it does.  Only reads: a credential that admitted a
        stream is marked with :meth:`spend`."""
        if not credential:
            return "missing"
        parts = credential.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit() or len(parts[1]) > 12:
            return "malformed"
        expiry = int(parts[1])
        mac = _b64(_mac(self.key, account_sid or "", call_sid or "", expiry))
        # Constant time, and before the expiry: a forged credential learns nothing from timing
        # or from which check failed first.
        if not hmac.compare_digest(mac.encode("ascii"), parts[2].encode("ascii", "replace")):
            return "forged or for another call"
        if now >= expiry:
            return f"expired {now - expiry:.0f} s ago"
        if credential in self._used:
            return "already used"
        return None

    def spend(self, credential: str, now: float) -> None:
        """Remember that ``credential`` admitted a stream (until it expires), so this process
        refuses it the next time."""
        used = self._used
        while used and next(iter(used.values())) <= now:
            used.popitem(last=False)  # expired: no longer needs remembering
        if len(used) >= self.max_remembered:
            used.popitem(last=False)
        parts = credential.split(".")
        used[credential] = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
