"""The settings the lifecycle's world runs in: the server's turn-detection modes and how rude the
server is (:class:`Profile`), plus the names the world's promises use.  Split from
``lifecycle_world.py`` so each module stays small; ``lifecycle_world`` re-exports all of it."""

from __future__ import annotations

import attrs

from realtime_fsm import LifecycleConfig, ResponseState

IDLE = ResponseState.IDLE
ACTIVE = ResponseState.ACTIVE
CREATING = ResponseState.CREATING
CANCELLING = ResponseState.CANCELLING
CLOSED = ResponseState.CLOSED
RETRY_REASON = "no_audio_retry"
#: Why a request may legitimately end without a response: its create (and its one retry) got
#: no answer, the server refused it (not as busy), the caller interrupted it before it was
#: created, or the connection closed.  Never "the slot was busy".
LEGIT_GIVE_UPS = ("create_timeout", "interrupted", "closed:", "rejected:")


@attrs.frozen
class Mode:
    """Turn detection on the server, and whether the machine was told (else it assumes the
    conservative defaults: it cancels on barge-in and asks for a response per committed turn)."""

    name: str
    turn_detection: bool = False
    create_response: bool = False
    interrupt_response: bool = False
    machine_knows: bool = True

    def config(self) -> LifecycleConfig:
        if not self.machine_knows:
            return LifecycleConfig(call_id=self.name)
        return LifecycleConfig(
            call_id=self.name,
            server_creates_response=self.turn_detection and self.create_response,
            server_interrupts_response=self.turn_detection and self.interrupt_response,
        )


MODES = (
    Mode("no_vad"),
    Mode("vad", turn_detection=True, create_response=True, interrupt_response=True),
    Mode(
        "vad_unannounced",
        turn_detection=True,
        create_response=True,
        interrupt_response=True,
        machine_knows=False,
    ),
    Mode("vad_interrupt_only", turn_detection=True, interrupt_response=True),
    Mode("vad_create_only", turn_detection=True, create_response=True),
    Mode("vad_manual", turn_detection=True),
)


@attrs.frozen
class Profile:
    """How rude the server is.  Every field is something the real server may do
    (``reference_server.py`` says why for each)."""

    name: str
    cancel_ack: str = "prompt"
    late_created: bool = False
    old_busy_wording: bool = False
    echo_event_ids: bool = True
    #: The world may make the server reject a create (not as busy) or swallow one.
    refusals: bool = False
    swallows: bool = False


PROFILES = (
    Profile("polite"),
    Profile("slow_cancel", cancel_ack="slow"),
    Profile("lost_cancel", cancel_ack="lost"),
    Profile("late_created", late_created=True),
    Profile("old_server", old_busy_wording=True, echo_event_ids=False),
    Profile("refusing", refusals=True, swallows=True),
    Profile(
        "rude",
        cancel_ack="slow",
        late_created=True,
        old_busy_wording=True,
        refusals=True,
        swallows=True,
    ),
)
PROFILE = {profile.name: profile for profile in PROFILES}


class InvariantBroken(AssertionError):
    """A promise failed; the message ends with the trace of world actions."""
