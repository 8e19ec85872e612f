"""What a new OpenAI session must be asked for, from what the lost one's machine handed over.

Pure functions over a :class:`~realtime_fsm.lifecycle.Handover` and the call's knowledge of the
caller's turns: no state of their own, so the rules can be read (and tested) in one place.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Final

from .. import events as ev
from ..lifecycle import USER_TURN_REASON, Handover
from ..table import ResponseState

#: The reason of the request that asks a new session for a response the lost one cut off.
RETELLING_REASON: Final = "reconnect"


def carried_requests(
    handover: Handover,
    *,
    unconfirmed_commits: int,
    turn_item: str | None,
    transcribed: Container[str],
) -> tuple[list[ev.RequestResponse], int]:
    """The requests the new session must serve, oldest first, and the caller turns lost.

    Carried: the lost session's queued and in-flight requests, the retelling of a response it
    cut off, and an answer to a turn its VAD committed but had not begun to answer.  Not
    carried: anything that would answer a turn whose words died with the session (counted as
    lost: the caller, hearing nothing, repeats), nor a create the caller interrupted (its
    requests were given up then).  ``unconfirmed_commits``: push-to-talk commits the session
    never confirmed, whose audio is gone."""
    queued = list(handover.queued)
    active = handover.state is ResponseState.ACTIVE
    served = list(handover.served) if active else []
    instructions = served[0].instructions if served else None
    retell = active
    lost = unconfirmed_commits
    words_lost = turn_item is not None and turn_item not in transcribed
    if handover.awaiting_server_response:
        # The server's VAD committed the newest turn and its answer had not begun: with the
        # turn's transcript restored as history, the new session can answer it.
        if words_lost:
            lost += 1
        else:
            queued.append(ev.RequestResponse(reason=USER_TURN_REASON))
    elif words_lost:
        # The newest turn is answered by the response in play or by a create of ours: with its
        # words unknown, that answer would answer the turn before it.  Requests are served in
        # order, so ours is the last ``user_turn`` of those served and queued.
        if active and not served:
            retell = False  # the server's own answer to it
            lost += 1
        else:
            for held in (queued, served):
                index = _last_turn_request(held)
                if index is not None:
                    del held[index]
                    lost += 1
                    retell = retell and bool(served)
                    break
    if retell:
        # Cut off mid-response: ask for the rest first, with the instructions and metadata it
        # was asked with (a greeting's are in no restored history item).
        queued.insert(0, retelling(served, instructions))
    return queued, lost


def retelling(served: list[ev.RequestResponse], instructions: str | None) -> ev.RequestResponse:
    """The request that asks a new session for a response cut off with the old one: the
    ``instructions`` it was created with (coalesced requests share them) and the metadata of
    the requests it still serves; a response the server created by itself served none and
    gets the defaults."""
    metadata: dict[str, str] = {}
    for request in served:
        metadata.update(request.metadata)
    return ev.RequestResponse(reason=RETELLING_REASON, instructions=instructions, metadata=metadata)


def split_first(
    requests: list[ev.RequestResponse],
) -> tuple[ev.RequestResponse | None, list[ev.RequestResponse]]:
    """A cut-off response asked with its own instructions (a greeting) is retold on its own:
    the machine would fold requests without instructions into it, and answer the caller's turn
    with the greeting's.  The rest wait for its done, as they did."""
    if requests and requests[0].reason == RETELLING_REASON and requests[0].instructions:
        return requests[0], requests[1:]
    return None, requests


def _last_turn_request(requests: list[ev.RequestResponse]) -> int | None:
    for index in range(len(requests) - 1, -1, -1):
        if requests[index].reason == USER_TURN_REASON:
            return index
    return None


def merged(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Counters of two machines added up."""
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out
