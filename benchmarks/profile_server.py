"""Run a server script under cProfile timed in CPU seconds (not wall time), for the load benchmark.

    python -m benchmarks.profile_server OUT.prof examples/twilio_bridge.py --port ... ...

``python -m cProfile`` times with the wall clock, which on a loaded machine also counts the time
the process waited for a core; ``time.process_time`` counts only what the process itself used.
The stats are written when the script returns (both servers stop cleanly on SIGTERM)."""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> int:
    out, script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(runpy.run_path, script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
