"""The deployment files stay in step with the code: the ``Dockerfile`` and
``deploy/kubernetes/*.yaml`` are parsed (no docker or cluster needed) and checked against what
the server really does: its flags, port, probe paths, stop signal, drain deadline."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from realtime_fsm.drain import CLOSE_GRACE, HEALTH_PATH, READY_PATH
from realtime_fsm.serve_command import add_arguments

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages[-1]


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def serve_flags(args: list[str]) -> argparse.Namespace:
    """``args`` (after ``serve``) parsed by the real ``serve`` parser: an unknown flag fails."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    namespace, unknown = parser.parse_known_args(args)
    assert unknown == [], f"flags the serve command does not have: {unknown}"
    return namespace


def docker_command() -> list[str]:
    [entrypoint] = instruction("ENTRYPOINT")
    [cmd] = instruction("CMD")
    return [*json.loads(entrypoint), *json.loads(cmd)]


def test_the_image_runs_realtime_fsm_serve_with_flags_that_exist() -> None:
    command = docker_command()
    assert command[:2] == ["realtime-fsm", "serve"]
    flags = serve_flags(command[2:])
    assert flags.host == "0.0.0.0"
    [exposed] = instruction("EXPOSE")
    assert int(exposed) == flags.port
    # The console script the image runs is the one the package declares.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["realtime-fsm"] == "realtime_fsm.cli:main"


def test_the_image_is_slim_not_root_installs_the_wheel_and_stops_with_sigterm() -> None:
    base = [rest for word, rest in dockerfile() if word == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.\d+-slim", base[0])
    [user] = instruction("USER")
    assert user not in ("root", "0")
    assert instruction("STOPSIGNAL") == ["SIGTERM"]
    [install] = [r for r in instruction("RUN") if "pip install" in r]
    extras = re.findall(r"\.whl\)?\[([a-z,]+)\]", install)
    assert extras, install
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    assert all(extra in declared for extra in extras[0].split(","))


def test_the_healthcheck_asks_the_liveness_path_on_the_served_port() -> None:
    [check] = instruction("HEALTHCHECK")
    port = serve_flags(docker_command()[2:]).port
    assert f"127.0.0.1:{port}{HEALTH_PATH}" in check


def kube(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KUBE / name).read_text())
    return document


def container() -> dict[str, Any]:
    [bridge] = kube("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = bridge
    return result


def test_the_deployment_probes_the_health_paths_on_the_served_port() -> None:
    bridge = container()
    assert bridge["args"][0] == "serve"
    flags = serve_flags(bridge["args"][1:])
    [port] = bridge["ports"]
    assert port["containerPort"] == flags.port
    assert bridge["livenessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert bridge["readinessProbe"]["httpGet"]["path"] == READY_PATH
    for probe in ("livenessProbe", "readinessProbe"):
        assert bridge[probe]["httpGet"]["port"] in (port["name"], flags.port)
    env = {e["name"] for e in bridge["env"]}
    assert {"PUBLIC_URL", "OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"} <= env
    pod = kube("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_grace_period_covers_the_drain_deadline() -> None:
    """Kubernetes kills the pod when the grace period runs out: it must outlast the drain
    deadline plus the close of the calls ended at it."""
    flags = serve_flags(container()["args"][1:])
    grace = kube("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= flags.drain_timeout + CLOSE_GRACE


def test_the_service_and_the_autoscaler_point_at_the_deployment() -> None:
    deployment = kube("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = kube("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in ("http", container()["ports"][0]["containerPort"])
    # The gauge the autoscaler reads is served: /metrics is on, in the pod and the image.
    assert serve_flags(container()["args"][1:]).metrics_path == "/metrics"
    assert serve_flags(docker_command()[2:]).metrics_path == "/metrics"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container()["ports"][0]["containerPort"]
    hpa = kube("hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "realtime_fsm_calls_active"
    # Scale out before the pods refuse calls.
    target = float(metric["pods"]["target"]["averageValue"])
    assert target < serve_flags(container()["args"][1:]).max_calls


@pytest.mark.parametrize("name", sorted(p.name for p in KUBE.glob("*.yaml")))
def test_every_manifest_is_one_yaml_document_with_a_kind(name: str) -> None:
    documents = list(yaml.safe_load_all((KUBE / name).read_text()))
    assert len(documents) == 1 and documents[0]["kind"] and documents[0]["apiVersion"]


def test_the_docs_commands_use_flags_that_exist() -> None:
    """Every ``realtime-fsm serve ...`` line in docs/deploying.md parses."""
    text = (ROOT / "docs" / "deploying.md").read_text()
    lines = [
        line for line in re.sub(r"\\\n\s*", " ", text).splitlines() if "realtime-fsm serve" in line
    ]
    commands = [line.split("realtime-fsm serve", 1)[1] for line in lines if "`" not in line]
    assert commands
    for command in commands:
        serve_flags([w for w in shlex.split(command) if not w.startswith("$")])
