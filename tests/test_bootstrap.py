"""tools/find_python.sh: the bootstrap's choice of a Python >= 3.12 (megatron-core 0.19)."""

import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "find_python.sh"


def _find(tmp_path, **env):
    # PATH: the fake interpreters, then only the tools the script uses (no system Python).
    tools = tmp_path / "tools"
    if not tools.exists():
        tools.mkdir()
        for tool in ("find", "grep", "awk", "sort", "cut", "cat", "id", "getent"):
            (tools / tool).symlink_to(shutil.which(tool))
    base = {"PATH": f"{tmp_path / 'bin'}:{tools}", "HOME": str(tmp_path / "home")}
    return subprocess.run(["/bin/bash", str(SCRIPT)], env={**base, **env}, capture_output=True, text=True)


def _fake_python(directory: Path, name: str, minor: int) -> Path:
    """An executable that answers the script's version probe like Python 3.<minor> would."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\nexit $([ {minor} -ge 12 ] && echo 0 || echo 1)\n")
    path.chmod(0o755)
    return path


def test_python_variable_is_used_or_refused_with_what_to_do(tmp_path):
    (tmp_path / "bin").mkdir()
    assert _find(tmp_path, PYTHON=sys.executable).stdout.strip() == sys.executable
    old = _fake_python(tmp_path / "bin", "python3.11", 11)
    result = _find(tmp_path, PYTHON=str(old))
    assert result.returncode == 2 and "is not a Python >= 3.12" in result.stderr


def test_path_first_then_pyenv_preferring_312(tmp_path):
    (tmp_path / "bin").mkdir()
    versions = tmp_path / "home" / ".pyenv" / "versions"
    for version, minor in (("3.11.7", 11), ("3.13.0", 13), ("3.12.1", 12)):
        _fake_python(versions / version / "bin", "python3", minor)
    assert _find(tmp_path).stdout.strip() == str(versions / "3.12.1" / "bin" / "python3")
    on_path = _fake_python(tmp_path / "bin", "python3", 13)
    assert _find(tmp_path).stdout.strip() == str(on_path)


def test_none_found_says_what_to_install(tmp_path):
    (tmp_path / "bin").mkdir()
    _fake_python(tmp_path / "bin", "python3", 11)
    result = _find(tmp_path)
    assert result.returncode == 2 and "pyenv install 3.12" in result.stderr
