"""The lifecycle's property search at scale: tens of thousands of generated calls, outside CI.

CI runs a bounded, derandomized slice of the same search (``tests/test_lifecycle_properties.py``).
This script runs the same hypothesis state machine -- the real machine against the rude reference
server, every turn-detection mode -- for as many calls as asked, split evenly over the server
profiles (polite, slow and lost cancel acknowledgements, late ``response.created``, the old busy
wording, refused and swallowed creates, all of it at once), and prints one line per profile and
a total.  Any finding is printed with the shrunk action sequence that reproduces it, and the exit
status is 1.

    python -m benchmarks.property_search --calls 20000 [--seed 7] [--steps 50] [--profile rude]

No network, no clock: ~2-4 ms per generated call on one core.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, run_state_machine_as_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lifecycle_world import MODES, PROFILES, Mode, Profile
from test_lifecycle_properties import LifecycleAgainstServer


def machine_for(profile: Profile) -> type[LifecycleAgainstServer]:
    """The property test's state machine with the server profile fixed."""

    class Fixed(LifecycleAgainstServer):
        @initialize(
            mode=st.sampled_from(MODES),
            profile=st.just(profile),
            audio_chunks=st.integers(1, 3),
            transcript_chunks=st.integers(0, 2),
            always_silent=st.sampled_from([False, False, False, True]),
            mixed=st.sampled_from([True, True, False]),
        )
        def setup(
            self,
            mode: Mode,
            profile: Profile,
            audio_chunks: int,
            transcript_chunks: int,
            always_silent: bool,
            mixed: bool,
        ) -> None:
            super().setup(mode, profile, audio_chunks, transcript_chunks, always_silent, mixed)

    Fixed.__name__ = f"LifecycleAgainst_{profile.name}"
    return Fixed


def search(profile: Profile, calls: int, steps: int, seed: int | None) -> str | None:
    """Run ``calls`` generated calls against one profile; the finding, or ``None``."""
    config = settings(
        max_examples=calls,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        derandomize=seed is None,
    )
    machine = machine_for(profile)
    try:
        if seed is not None:
            from hypothesis import seed as fix_seed

            machine.TestCase.runTest = fix_seed(seed)(machine.TestCase.runTest)  # type: ignore[method-assign]
        run_state_machine_as_test(machine, settings=config)
    except Exception as exc:  # a finding: hypothesis re-raises the shrunk failure(s)
        found = getattr(exc, "exceptions", None) or (exc,)  # an ExceptionGroup: several
        return "\n".join(f"{type(e).__name__}: {e}" for e in found)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000, help="generated calls in all")
    parser.add_argument("--steps", type=int, default=50, help="actions per call at most")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fixed)")
    parser.add_argument(
        "--profile", choices=[p.name for p in PROFILES], action="append", help="only these"
    )
    args = parser.parse_args(argv)
    # The machine's own log lines (warnings included) are the calls' business, not the report's.
    logging.getLogger("realtime_fsm").setLevel(logging.CRITICAL)
    profiles = [p for p in PROFILES if not args.profile or p.name in args.profile]
    per = max(1, args.calls // len(profiles))
    findings = 0
    details: list[str] = []
    started = time.perf_counter()
    print("| profile | calls | seconds | finding |\n|---|---|---|---|")
    for profile in profiles:
        t0 = time.perf_counter()
        finding = search(profile, per, args.steps, args.seed)
        took = time.perf_counter() - t0
        findings += finding is not None
        print(f"| {profile.name} | {per} | {took:.0f} | {'none' if finding is None else 'yes'} |")
        if finding is not None:
            details.append(f"{profile.name}:\n{finding}")
        sys.stdout.flush()
    total = time.perf_counter() - started
    print(f"\n{per * len(profiles)} calls, {findings} finding(s), {total:.0f} s")
    for text in details:
        print(f"\n{text}")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
