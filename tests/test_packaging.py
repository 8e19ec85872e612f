"""Packaging: one version source, and a wheel built from this checkout that installs into a clean
virtualenv and runs from there (``import realtime_fsm``, ``realtime-fsm --help``, the demo).

The wheel test builds without network: ``python -m build --no-isolation`` with the hatchling of
the test environment (the ``test`` extra), the wheel installed with ``--no-deps``, and the new
venv given the test environment's site-packages *after* its own (a ``.pth`` line), so the
runtime dependencies resolve while ``realtime_fsm`` can only come from the wheel.  CI also
installs the wheel with its dependencies from the index in a venv of its own (.ci/run).
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

import realtime_fsm

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())  # type: ignore[no-any-return]


def test_one_version_source() -> None:
    """The version lives in ``realtime_fsm.__version__`` alone: pyproject declares it dynamic and
    hatch reads it from there (a checkout without git tags builds the same version)."""
    project = _pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["tool"]["hatch"]["version"]["path"] == "realtime_fsm/__init__.py"
    assert realtime_fsm.__version__.count(".") == 2


def test_slow_marker_is_registered_and_deselected_by_default() -> None:
    """``pytest`` alone skips the slow tests; CI runs ``pytest -m ''`` (every test)."""
    options = _pyproject()["tool"]["pytest"]
    assert any(m.startswith("slow:") for m in options["ini_options"]["markers"])
    assert "-m 'not slow'" in options["ini_options"]["addopts"]
    assert "python -m pytest -m ''" in (ROOT / ".ci" / "run").read_text()


#: Where the library tells a user to install an extra it is missing, and that extra's name.
_INSTALL_HINTS = {
    "realtime_fsm/asgi.py": "asgi",
    "realtime_fsm/tools.py": "tools",
    "realtime_fsm/server.py": "twilio",
    "realtime_fsm/telemetry/telemetry.py": "otel",
}


def test_missing_extra_hints_name_installable_requirements() -> None:
    """The package is not on PyPI, so ``pip install 'realtime-fsm[asgi]'`` in an error message
    would send a user to someone else's package or to nothing: every hint names the extra's own
    requirements, exactly as pyproject lists them, which install from any index."""
    extras = _pyproject()["project"]["optional-dependencies"]
    every_source = "\n".join(p.read_text() for p in (ROOT / "realtime_fsm").rglob("*.py"))
    assert "realtime-fsm[" not in every_source.replace("``realtime-fsm[", "")
    for path, extra in _INSTALL_HINTS.items():
        source = (ROOT / path).read_text()
        for requirement in extras[extra]:
            assert f"'{requirement}'" in source, (path, requirement)
    telemetry = (ROOT / "realtime_fsm/telemetry/telemetry.py").read_text()
    for requirement in extras["prometheus"]:
        assert f"'{requirement}'" in telemetry


def _run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(tmp_path: Path) -> None:
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=ROOT,
    )
    (wheel,) = dist.glob("realtime_fsm-*-py3-none-any.whl")
    assert wheel.name.startswith(f"realtime_fsm-{realtime_fsm.__version__}-")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    _run([*pip, "--no-index", "--no-deps", str(wheel)], cwd=tmp_path)
    # The dependencies (transitions, attrs, websockets) from the test environment, searched
    # after the venv's own site-packages; .pth files there are not run, so an editable
    # realtime_fsm in the test environment stays invisible.
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
    )
    Path(purelib.strip(), "zz_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    where = _run(
        [
            str(python),
            "-c",
            "import realtime_fsm; print(realtime_fsm.__version__, realtime_fsm.__file__)",
        ],
        cwd=tmp_path,
    )
    version, path = where.split()
    assert version == realtime_fsm.__version__
    assert Path(path).is_relative_to(env_dir), path
    assert Path(path).with_name("py.typed").exists()

    cli = env_dir / "bin" / "realtime-fsm"
    assert "demo" in _run([str(cli), "--help"], cwd=tmp_path)
    assert "OK" in _run([str(cli), "demo"], cwd=tmp_path)

    # A user's code type-checks against the installed wheel (py.typed): the package is found,
    # its names are typed, and a typed call with a mistake is caught.
    if importlib.util.find_spec("mypy") is None:
        return
    user = tmp_path / "user_code.py"
    user.write_text(
        "from realtime_fsm import BridgeConfig, CallSession, Tool\n"
        "from realtime_fsm.bridge import CallBridge\n\n"
        "def build(tool: Tool) -> CallSession:\n"
        "    return CallSession(BridgeConfig(tools=(tool,)), now=0.0)\n\n"
        "def listen(bridge: CallBridge) -> None:\n"
        "    bridge.send_user_text('hello')\n"
    )
    mypy = [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python)]
    mypy += ["--cache-dir", str(tmp_path / ".mypy_cache"), "--no-error-summary"]
    _run([*mypy, str(user)], cwd=tmp_path)
    user.write_text(user.read_text().replace("now=0.0", "now='0'"))
    wrong = subprocess.run(
        [*mypy, str(user)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert wrong.returncode == 1 and '"now"' in wrong.stdout, wrong.stdout + wrong.stderr
