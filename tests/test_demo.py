"""The demo end to end in a reduced configuration: data through the real tools, Joint Training
and PreAlign runs, evaluations, results.json with the documented keys, plots; deterministic."""

import json
import os

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
    for name in record["plots"]:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    # From scratch again: the same numbers.
    assert run_distributed(_demo_rank, 1, out, timeout=240)[0] == first
