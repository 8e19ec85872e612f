"""Bridge a real Twilio number to the OpenAI Realtime API, with realtime-fsm in the middle.

    export OPENAI_API_KEY=sk-...
    python examples/twilio_bridge.py --host 0.0.0.0 --port 8080 \\
        --public-url https://example.ngrok.app --greeting "Greet the caller briefly."

The same as ``realtime-fsm serve`` (:mod:`realtime_fsm.serve_command`, every flag there): this
file shows the whole program around :func:`realtime_fsm.server.start_server`.
Point the Twilio number's voice webhook (GET or POST) at ``https://<public host>/incoming-call``.
Set ``TWILIO_AUTH_TOKEN`` to refuse webhooks and media streams without a valid
``X-Twilio-Signature`` (needs the ``twilio`` extra: ``pip install -e '.[twilio]'`` in a
clone).  ``--model`` (or ``OPENAI_REALTIME_MODEL``) picks the Realtime model (default
``gpt-realtime-2.1``).
``--provider azure`` with ``--azure-endpoint`` and ``--azure-deployment`` (or
``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_DEPLOYMENT``; the key from
``AZURE_OPENAI_API_KEY``) uses Azure OpenAI instead.  ``--realtime-url`` (or
``OPENAI_REALTIME_URL``) points the bridge at any compatible server, such as the simulator in
``realtime_fsm.testing``.
Any client that speaks the Media Streams protocol can connect to ``/media-stream``: no Twilio
account is needed to try it.  SIGTERM drains (``--drain-timeout``); ``docs/deploying.md``.
"""

from __future__ import annotations

import sys

from realtime_fsm.serve_command import build_config, parse_args, run

__all__ = ["build_config", "main", "parse_args"]


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    return run(parse_args(raw), raw)


if __name__ == "__main__":
    raise SystemExit(main())
