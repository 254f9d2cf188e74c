"""The demo end to end in a reduced configuration: data through the real tools, Joint Training
and PreAlign runs, evaluations, results.json with the documented keys, plots; deterministic, and
the same from a (non-editable) wheel installed away from the source tree."""

import glob
import json
import os
import shutil
import subprocess
import sys

from tests.dist_utils import run_distributed


def _demo_rank(output_dir):
    from megatron_prealign.demo.prealign import DemoConfig, run_demo

    record = run_demo(DemoConfig.quick(), output_dir)
    return {name: {k: float(run[k]) for k in ("en_ppl", "enclone_ppl", "clka_enclone")}
            for name, run in record["runs"].items()}


def test_quick_demo(tmp_path):
    out = str(tmp_path / "demo")
    first = run_distributed(_demo_rank, 1, out, timeout=240)[0]
    with open(os.path.join(out, "results.json")) as f:
        record = json.load(f)
    assert set(record["runs"]) == {"joint", "prealign"}
    for run in record["runs"].values():
        assert {"en_ppl", "enclone_ppl", "clka_enclone"} <= set(run)
        assert run["en_ppl"] > 1 and run["enclone_ppl"] > 1 and 0 <= run["clka_enclone"] <= 1
        assert run["alignment_over_training"]
        assert len(run["clka_enclone_correct"]) == run["clka_items"]
        assert sum(run["clka_enclone_correct"]) == round(run["clka_enclone"] * run["clka_items"])
    paired = record["margins"]["clka_enclone_paired"]
    right = [record["runs"][name]["clka_enclone_correct"] for name in ("prealign", "joint")]
    assert paired["first_only"] == sum(a and not b for a, b in zip(*right))
    assert paired["second_only"] == sum(b and not a for a, b in zip(*right))
    assert 0 < paired["sign_p"] <= 1
    for name in record["plots"]:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    # From scratch again, from the built wheel installed into its own directory and run from
    # another working directory (what `pip install .` and the Docker image give): the same numbers.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source, wheels, site, again = (str(tmp_path / name) for name in ("source", "wheels", "site", "again"))
    # Built from a copy: setuptools' build/ directory would otherwise land in (and persist in) the tree.
    os.makedirs(source)
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(root, name), source)
    shutil.copytree(os.path.join(root, "megatron_prealign"), os.path.join(source, "megatron_prealign"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", wheels, source], check=True, cwd=str(tmp_path))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
                    *glob.glob(os.path.join(wheels, "*.whl"))], check=True)
    env = {**os.environ, "PYTHONPATH": site, "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import megatron_prealign; print(megatron_prealign.__file__)"],
                           env=env, cwd=str(tmp_path), capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where
    subprocess.run([sys.executable, "-m", "megatron_prealign.demo", "--only", "prealign", "--quick",
                    "--output-dir", again], env=env, cwd=str(tmp_path), check=True, timeout=400)
    with open(os.path.join(again, "results.json")) as f:
        runs = json.load(f)["runs"]
    assert {name: {k: float(run[k]) for k in first[name]} for name, run in runs.items()} == first
