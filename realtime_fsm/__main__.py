"""``python -m realtime_fsm demo``: the same as the ``realtime-fsm`` console script."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
