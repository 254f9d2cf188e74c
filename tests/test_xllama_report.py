"""The x-LLaMA report's statistics on hand-made records: pooled accuracy with Wilson intervals,
paired tests over (seed, item), base comparisons, the allocation against the fine-tuning noise."""

import json
import os

import pytest

from megatron_prealign import stats
from megatron_prealign.demo import xllama_report
from megatron_prealign.demo.xllama import TARGETS


def _scores(correct_by_language):
    return {lang: {"qa_accuracy": sum(c) / len(c), "qa_items": len(c), "qa_correct": list(c),
                   "bleu": 1.0, "chrf": 10.0} for lang, c in correct_by_language.items()}


def _record(seed, english_only, coit, prealign_bonus=0):
    """English-only answers ``english_only`` of 10 items right, CoIT ``coit``; PreAlign's CoIT
    ``prealign_bonus`` more."""
    n = 10
    runs = {}
    for base in ("joint", "codeswitch", "prealign"):
        extra = prealign_bonus if base == "prealign" else 0
        runs[f"english_only@{base}"] = {"scores": _scores({l: [1] * english_only + [0] * (n - english_only)
                                                           for l in (*TARGETS, "en")})}
        for t in TARGETS:
            right = coit + extra
            runs[f"coit_{t}_400@{base}"] = {"scores": _scores({l: [1] * right + [0] * (n - right)
                                                               for l in (*TARGETS, "en")})}
    measured = {label: {"pairs": {t: 100 for t in TARGETS}, "mean_chrf": value, "mean_bleu": 0.0}
                for label, value in (("law", 21.0), ("uniform", 20.0))}
    noise = {label: {"finetune_seeds": [seed, seed + 1, seed + 2], "mean_chrf": values}
             for label, values in (("law", [21.0, 20.0, 22.0]), ("uniform", [20.0, 20.5, 19.5]))}
    return {"config": {"seed": seed, "bases": ["joint", "codeswitch", "prealign"], "sweep_sizes": [100, 400],
                       "attribute_values": 6},
            "chance_level": 1 / 6, "runs": runs,
            "sweep_points": {t: [[100, 5.0 + seed], [400, 9.0 + seed]] for t in TARGETS},
            "fits": {"error": "two points"}, "allocation_measured": measured, "noise": noise,
            "bases": {b: {"perplexity": {"en": 2.0}} for b in ("joint", "codeswitch", "prealign")}}


def test_pooled_accuracy_paired_tests_and_noise(tmp_path):
    records = [_record(1, 3, 6, prealign_bonus=2), _record(2, 2, 5, prealign_bonus=2)]
    a = xllama_report.analyse(records)
    assert a["chance_level"] == pytest.approx(1 / 6)
    cell = a["qa"]["joint/qaa"]["coit"]
    assert (cell["correct"], cell["items"]) == (11, 20)
    assert tuple(cell["ci95"]) == stats.proportion_interval(11, 20)
    test = a["coit_minus_english_only"]["joint/qab"]
    # Items 3-5 (seed 1) and 2-4 (seed 2) flip to right, none to wrong: 6 wins, 0 losses of 20 pairs.
    assert (test["pairs"], test["wins"], test["losses"]) == (20, 6, 0)
    assert test["mean_difference"] == pytest.approx(0.3) and test["p_value"] == pytest.approx(2 / 64)
    better = a["base_comparisons"]["prealign-codeswitch/coit/qaa"]
    assert (better["wins"], better["losses"]) == (4, 0)
    assert a["base_comparisons"]["codeswitch-joint/english_only/qab"]["mean_difference"] == 0
    assert a["allocation"]["1"]["law_minus_uniform"] == [1.0, -0.5, 2.5]
    assert a["law_minus_uniform"]["n"] == 6 and a["law_minus_uniform"]["mean"] == pytest.approx(1.0)
    text = xllama_report.report(records)
    assert "chance level 16.7%" in text and "noise SD" in text and "seed 1: no fit" in text
    for seed, record in ((1, records[0]), (2, records[1])):
        os.makedirs(tmp_path / str(seed))
        with open(tmp_path / str(seed) / "results.json", "w") as handle:
            json.dump({"xllama": record}, handle)
    inputs = [str(tmp_path / "1"), str(tmp_path / "2")]
    assert xllama_report.main(["--inputs", *inputs, "--json", str(tmp_path / "s.json"),
                               "--publish", str(tmp_path / "docs"), "--prefix", "full"]) == 0
    with open(tmp_path / "s.json") as handle:
        assert json.load(handle)["seeds"] == [1, 2]
    with open(tmp_path / "docs" / "full_seed2.json") as handle:
        assert json.load(handle)["xllama"]["config"]["seed"] == 2


def test_accuracy_per_relation():
    # Items alternate city, job (xllama_data.qa_items): right on cities only -> city 100%, job 0%.
    record = _record(1, 0, 0)
    record["runs"]["coit_qaa_400@joint"]["scores"]["qaa"] = _scores({"qaa": [1, 0] * 5})["qaa"]
    cell = xllama_report.analyse([record])["qa"]["joint/qaa"]["coit"]
    assert (cell["city"]["accuracy"], cell["job"]["accuracy"], cell["city"]["items"]) == (1.0, 0.0, 5)
