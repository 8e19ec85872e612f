"""Bounds on media streams that have not started yet (no Twilio ``start``).

A stream costs no OpenAI session until its ``start`` (see ``CallBridge``), and is closed after
``start_timeout``; these bounds keep a flood of upgrades that never start from holding sockets
and tasks: at most ``max_total`` such streams at once, and ``max_per_client`` from one address
(Twilio sends many calls from few addresses: keep it well above a burst of calls starting at the
same moment).  One instance per server; a refused stream is closed with 1013 (try again later).
"""

from __future__ import annotations

import attrs


def _client_key(client: str) -> str:
    """The address part of ``host:port`` (``[v6]:port`` too): one client, whatever its port."""
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() else client


@attrs.define
class PreStartLimits:
    """Counts of streams waiting for ``start``, in total and per client address."""

    max_total: int
    max_per_client: int
    #: Streams admitted and not yet started (or ended), in total and per address.
    total: int = 0
    per_client: dict[str, int] = attrs.field(factory=dict)

    def enter(self, client: str) -> str | None:
        """Admit a new stream from ``client``; the reason it is refused, or ``None``."""
        key = _client_key(client)
        if self.total >= self.max_total:
            return f"{self.total} streams already waiting for start"
        if self.per_client.get(key, 0) >= self.max_per_client:
            return f"{self.per_client[key]} streams from this address already waiting for start"
        self.total += 1
        self.per_client[key] = self.per_client.get(key, 0) + 1
        return None

    def leave(self, client: str) -> None:
        """The stream admitted for ``client`` started, or ended without starting."""
        key = _client_key(client)
        count = self.per_client.get(key, 0)
        if count <= 1:
            self.per_client.pop(key, None)
        else:
            self.per_client[key] = count - 1
        self.total = max(0, self.total - 1)
