# The built-in Twilio bridge server (`realtime-fsm serve`) in a slim image: docs/deploying.md.
#
#   docker build -t realtime-fsm .
#   docker run -p 8080:8080 -e PUBLIC_URL=https://voice.example.com \
#       -e OPENAI_API_KEY -e TWILIO_AUTH_TOKEN --stop-timeout 45 realtime-fsm
#
# SIGTERM drains (calls in progress go on for up to --drain-timeout seconds), so the stop
# timeout (docker's default is 10 s) must cover the drain: --stop-timeout 45 here.

# --- build the wheel ------------------------------------------------------------------------
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE* ./
COPY realtime_fsm ./realtime_fsm
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- the image ------------------------------------------------------------------------------
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheel with the `twilio` extra (X-Twilio-Signature checks and per-call stream credentials
# need it whenever TWILIO_AUTH_TOKEN is set: the server refuses to start without it then) and
# the `prometheus` extra (/metrics, whose active-calls gauge the autoscaler reads).
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/realtime_fsm-*.whl)[twilio,prometheus]" && rm -rf /wheels
# Not root: the server binds 8080 and writes nothing but optional traces (--trace-dir).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin realtime
USER 10001
EXPOSE 8080
# The drain starts on SIGTERM (docker stop, Kubernetes); a second one ends calls at once.
STOPSIGNAL SIGTERM
# For plain docker and compose (Kubernetes ignores it and uses the probes of
# deploy/kubernetes/deployment.yaml): liveness only, /healthz, which answers while draining
# too; readiness (/readyz) is for load balancers and must not mark a draining container sick.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["realtime-fsm"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--drain-timeout", "30", "--metrics-path", "/metrics"]
