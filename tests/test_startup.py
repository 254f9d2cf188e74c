"""Every entry point parses its arguments before importing torch, megatron-core or transformers:
``--help`` and a wrong flag never import them (timing-free; bench/startup.py measures the time)."""

import os
import re

import pytest

from bench.startup import MODULES, ROOT, entry_points, heavy_imports

POINTS = entry_points()


@pytest.mark.parametrize("name", sorted(POINTS))
def test_help_imports_no_heavy_package(name):
    code, heavy = heavy_imports(POINTS[name], ("--help",))
    assert code == 0
    assert heavy == [], f"{name} --help imported {heavy}"


@pytest.mark.parametrize("name", sorted(POINTS))
def test_wrong_flag_imports_no_heavy_package(name):
    code, heavy = heavy_imports(POINTS[name], ("--no-such-flag",))
    assert code == 2  # argparse's usage error
    assert heavy == [], f"{name} with a wrong flag imported {heavy}"


def test_every_console_script_is_checked():
    """Each console script of setup.py is a tools/ wrapper's module or one of bench/startup.py's
    MODULES, so a new entry point cannot escape the tests above."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        scripts = re.findall(r'"prealign-[\w-]+=([\w.]+):main"', f.read())
    assert scripts
    wrapped = set()
    for path in POINTS.values():
        if path[0] != "-m":
            with open(path[0]) as f:
                wrapped.update(re.findall(r"^from ([\w.]+) import main", f.read(), re.M))
    runnable = wrapped | set(MODULES) | {m + ".__main__" for m in MODULES}
    assert sorted(set(scripts) - runnable) == []
