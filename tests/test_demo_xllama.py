"""The x-LLaMA miniature end to end in a reduced configuration: data through the real tools, two
bases, English-only vs CoIT instruction tuning, the sweep, the fit (or its reported failure), the
allocation runs; results.json gains `xllama`; deterministic from scratch."""

import json
import os

import pytest

from tests.dist_utils import run_distributed


def _xllama_rank(output_dir):
    from megatron_prealign.demo.__main__ import run_xllama_part
    from megatron_prealign.demo.xllama import XllamaDemoConfig

    record = run_xllama_part(XllamaDemoConfig.quick(), output_dir)
    return {name: run["scores"] for name, run in record["runs"].items()}


@pytest.mark.slow
def test_quick_xllama_demo(tmp_path):
    from megatron_prealign.demo.xllama import TARGETS, XllamaDemoConfig
    out = str(tmp_path / "demo")
    os.makedirs(out)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"runs": {"joint": {}}}, f)  # the PreAlign part's record is kept
    first = run_distributed(_xllama_rank, 1, out, timeout=600)[0]
    with open(os.path.join(out, "results.json")) as f:
        record = json.load(f)
    assert record["runs"] == {"joint": {}}
    x = record["xllama"]
    cfg = XllamaDemoConfig.quick()
    largest = max(cfg.sweep_sizes)
    expected = {f"english_only@{b}" for b in ("joint", "prealign")}
    expected |= {f"coit_{t}_{largest}@{b}" for t in TARGETS for b in ("joint", "prealign")}
    expected |= {f"coit_{t}_{n}@joint" for t in TARGETS for n in cfg.sweep_sizes}
    assert expected <= set(x["runs"]) and "muit_uniform@joint" in x["runs"]
    for run in x["runs"].values():
        for target in TARGETS:
            scores = run["scores"][target]
            assert 0 <= scores["qa_accuracy"] <= 1 and 0 <= scores["bleu"] <= 100 and 0 <= scores["chrf"] <= 100
        english = run["scores"]["en"]  # the same held-out facts asked in English
        assert english["qa_items"] == cfg.held_out_people * 2 and 0 <= english["qa_accuracy"] <= 1
    for target in TARGETS:
        assert [int(p[0]) for p in x["sweep_points"][target]] == list(cfg.sweep_sizes)
    if "error" in x["fits"]:  # a tiny, barely trained model may score the same at every size
        assert x["allocation"] is None and set(x["allocation_measured"]) == {"uniform"}
    else:
        assert set(x["allocation_measured"]) == {"law", "uniform"}
        assert sum(x["allocation"]["allocation"].values()) == cfg.budget
        with open(os.path.join(out, "xllama_scaling_law.png"), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    assert set(x["bases"]) == {"joint", "prealign"}
    from megatron_prealign.demo import xllama_report  # the several-seeds report reads the record

    assert f"seed {cfg.seed}:" in xllama_report.report(xllama_report.load([out]))
    # From scratch again: the same numbers.
    assert run_distributed(_xllama_rank, 1, out, timeout=600)[0] == first
