"""The x-LLaMA miniature end to end in a reduced configuration: data through the real tools, three
bases (Joint, codeswitching-only, PreAlign), English-only vs CoIT instruction tuning with per-item
QA, the sweep, the fit (or its reported failure), the allocation runs and their repeats with
another fine-tuning seed; results.json gains `xllama`; deterministic from scratch."""

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
    bases = ("joint", "codeswitch", "prealign")
    assert cfg.bases == bases
    qa_runs = {f"english_only@{b}" for b in bases} | {f"coit_{t}_{largest}@{b}" for t in TARGETS for b in bases}
    expected = qa_runs | {f"coit_{t}_{n}@joint" for t in TARGETS for n in cfg.sweep_sizes}
    expected |= {f"muit_uniform@joint#r{r}" for r in range(1, cfg.noise_repeats + 1)}
    assert expected <= set(x["runs"]) and "muit_uniform@joint" in x["runs"]
    for name, run in x["runs"].items():
        for target in TARGETS:
            scores = run["scores"][target]
            assert 0 <= scores["bleu"] <= 100 and 0 <= scores["chrf"] <= 100
            # QA (per item, for the paired tests) where it is reported; the sweep scores translation
            assert ("qa_correct" in scores) == (name in qa_runs)
        if name in qa_runs:
            for language in (*TARGETS, "en"):  # "en": the same held-out facts asked in English
                scores = run["scores"][language]
                assert scores["qa_items"] == cfg.held_out_people * 2 == len(scores["qa_correct"])
                assert scores["qa_accuracy"] == sum(scores["qa_correct"]) / scores["qa_items"]
    assert x["chance_level"] == 1 / cfg.attribute_values
    assert x["noise"]["uniform"]["finetune_seeds"] == [cfg.seed, cfg.seed + 1]
    assert x["runs"]["muit_uniform@joint#r1"]["finetune_seed"] == cfg.seed + 1
    for target in TARGETS:
        assert [int(p[0]) for p in x["sweep_points"][target]] == list(cfg.sweep_sizes)
    if "error" in x["fits"]:  # a tiny, barely trained model may score the same at every size
        assert x["allocation"] is None and set(x["allocation_measured"]) == {"uniform"}
    else:
        assert set(x["allocation_measured"]) == {"law", "uniform"}
        assert sum(x["allocation"]["allocation"].values()) == cfg.budget
        with open(os.path.join(out, "xllama_scaling_law.png"), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    assert set(x["bases"]) == set(bases)
    from megatron_prealign.demo import xllama_report  # the several-seeds report reads the record

    text = xllama_report.report(xllama_report.load([out]))
    assert f"seed {cfg.seed}:" in text and "chance level 25.0%" in text and "prealign-codeswitch" in text
    # From scratch again: the same numbers.
    assert run_distributed(_xllama_rank, 1, out, timeout=600)[0] == first
