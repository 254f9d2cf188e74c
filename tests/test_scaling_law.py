"""x-LLaMA's translation-data scaling law: fits recover known parameters (noise-free and noisy,
standard errors that match the observed spread), the allocation equals the brute-force integer
optimum and meets the KKT conditions, bad input fails clearly; the CLI end to end."""

import itertools
import json
import math
import os

import numpy as np
import pytest

from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.xllama import scaling_law as sl

from megatron_prealign.cli import scaling_law as tool

SIZES = np.array([500, 1000, 2000, 4000, 8000, 16000, 32000, 64000], dtype=float)
TRUE = {"log": {"a": 4.0, "g": 3e-4, "b": 1.5}, "power": {"c": 40.0, "k": 300.0, "e": 0.45}}


def _curve(form, sizes=SIZES):
    return sl.Law(form, TRUE[form])(sizes)


@pytest.mark.parametrize("form", ["log", "power"])
def test_fit_recovers_noise_free_parameters(form):
    fit = sl.fit_law(form, SIZES, _curve(form))
    for name, value in TRUE[form].items():
        assert fit["params"][name] == pytest.approx(value, rel=1e-6), name
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["n_points"] == len(SIZES)


@pytest.mark.parametrize("form", ["log", "power"])
def test_fit_with_noise_within_standard_errors(form):
    rng = np.random.default_rng(7)
    sizes = np.geomspace(500, 64000, 16).round()
    fits = [sl.fit_law(form, sizes, _curve(form, sizes) + rng.normal(0, 0.1, len(sizes))) for _ in range(60)]
    for name, value in TRUE[form].items():
        assert abs(fits[0]["params"][name] - value) < 4 * fits[0]["stderr"][name], (name, fits[0])
        estimates = np.array([fit["params"][name] for fit in fits])
        reported = np.median([fit["stderr"][name] for fit in fits])
        # Unbiased, and the standard errors are the spread of the estimates over noise draws.
        assert abs(estimates.mean() - value) < 3 * reported / math.sqrt(len(fits)) + 0.02 * abs(value), name
        assert abs(estimates.std() / reported - 1) < 0.3, (name, estimates.std(), reported)
        # About 95% of the 2-standard-error intervals cover the true value.
        covered = np.mean([abs(fit["params"][name] - value) < 2 * fit["stderr"][name] for fit in fits])
        assert covered >= 0.85, (name, covered)
    assert min(fit["r2"] for fit in fits) > 0.99


def test_better_form_is_the_generating_one():
    for form in ("log", "power"):
        other = {"log": "power", "power": "log"}[form]
        result = sl.fit_points({"xx": list(zip(SIZES, _curve(form)))}, forms=(other, form))
        assert result["languages"]["xx"]["better"] == form


def test_exact_fit_has_no_standard_errors():
    fit = sl.fit_law("log", SIZES[:3], _curve("log", SIZES[:3]))
    assert fit["stderr"] == {"a": None, "g": None, "b": None} and fit["covariance"] is None
    assert fit["params"]["a"] == pytest.approx(4.0, rel=1e-5)


def test_fit_errors(monkeypatch):
    with pytest.raises(sl.ScalingLawError, match="needs at least 3 distinct sizes"):
        sl.fit_law("log", [100, 100, 200], [1.0, 1.1, 2.0])
    with pytest.raises(sl.ScalingLawError, match="non-positive size"):
        sl.fit_law("log", [0, 100, 200, 400], [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(sl.ScalingLawError, match="all scores.* are equal"):
        sl.fit_law("power", [1, 2, 3, 4], [5.0] * 4)
    with pytest.raises(sl.ScalingLawError, match="unknown law form"):
        sl.fit_law("cubic", SIZES, _curve("log"))

    import scipy.optimize

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: The maximum number of function evaluations is exceeded.")

    monkeypatch.setattr(scipy.optimize, "curve_fit", fail)
    with pytest.raises(sl.ScalingLawError, match="log fit for language 'zz' did not converge"):
        sl.fit_points({"zz": list(zip(SIZES, _curve("log")))})


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


def _brute_force(laws, budget, caps, weights):
    names = list(laws)
    spend = min(budget, sum(caps[n] for n in names))
    best, best_x = -math.inf, None
    with np.errstate(divide="ignore"):
        for x in itertools.product(*(range(int(caps[n]) + 1) for n in names)):
            if sum(x) != spend:
                continue
            value = sum(weights[n] * float(laws[n](v)) for n, v in zip(names, x))
            if value > best + 1e-12:
                best, best_x = value, dict(zip(names, x))
    return best, best_x


def _random_law(rng):
    if rng.random() < 0.5:
        return sl.Law("log", {"a": rng.uniform(0.5, 5), "g": rng.uniform(0.05, 2), "b": rng.uniform(0.5, 3)})
    return sl.Law("power", {"c": rng.uniform(5, 30), "k": rng.uniform(1, 20), "e": rng.uniform(0.2, 1.5)})


@pytest.mark.parametrize("seed", range(12))
def test_allocation_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    names = ["l0", "l1", "l2"] if seed % 3 else ["l0", "l1", "l2", "l3"]
    laws = {n: _random_law(rng) for n in names}
    caps = {n: int(rng.integers(3, 16)) for n in names}
    weights = {n: float(rng.uniform(0.2, 3)) for n in names}
    budget = int(rng.integers(4, sum(caps.values()) + 5))
    result = sl.allocate(laws, budget, caps, weights)
    best, best_x = _brute_force(laws, budget, caps, weights)
    allocation = result["allocation"]
    assert sum(allocation.values()) == min(budget, sum(caps.values()))
    assert all(0 <= allocation[n] <= caps[n] for n in names)
    assert result["objective"] == pytest.approx(best, abs=1e-9), (allocation, best_x)
    # The law-based split is never worse than the uniform one under the laws themselves.
    if result["uniform_objective"] is not None:
        assert result["objective"] >= result["uniform_objective"] - 1e-9


def test_water_filling_meets_kkt_and_closed_form():
    laws = {"de": sl.Law("log", {"a": 4.0, "g": 3e-4, "b": 1.5}),
            "zh": sl.Law("log", {"a": 8.0, "g": 1e-4, "b": 1.2}),
            "tr": sl.Law("log", {"a": 1.0, "g": 1e-5, "b": 2.0}),  # flat: gets nothing
            "hi": sl.Law("power", {"c": 30.0, "k": 200.0, "e": 0.5})}
    caps = {"de": 20000, "zh": math.inf, "tr": math.inf, "hi": math.inf}
    weights = {"de": 1.0, "zh": 1.0, "tr": 1.0, "hi": 2.0}
    x, lam = sl.water_fill(laws, 60000, caps, weights)
    assert sum(x.values()) == pytest.approx(60000, rel=1e-9)
    for name, law in laws.items():
        slope = weights[name] * float(law.marginal(x[name]))
        if 0 < x[name] < caps[name]:
            assert slope == pytest.approx(lam, rel=1e-6), name
        elif x[name] == 0:
            assert slope <= lam * (1 + 1e-9), name
        else:
            assert slope >= lam * (1 - 1e-9), name
        if law.form == "log" and 0 < x[name] < caps[name]:  # x = w a / lambda - b / g
            p = law.params
            assert x[name] == pytest.approx(weights[name] * p["a"] / lam - p["b"] / p["g"], rel=1e-6)
    assert x["tr"] == 0


def test_allocation_when_caps_bind_and_uniform_split():
    laws = {"a": sl.Law("log", {"a": 1.0, "g": 1.0, "b": 1.0}), "b": sl.Law("log", {"a": 2.0, "g": 1.0, "b": 1.0})}
    result = sl.allocate(laws, 100, caps={"a": 10, "b": 20})
    assert result["allocation"] == {"a": 10, "b": 20} and result["lambda"] is None
    assert sl.uniform_split(["a", "b", "c"], 90, {"a": 10, "b": math.inf, "c": math.inf}) == {"a": 10, "b": 40, "c": 40}
    assert sl.round_largest_remainder({"a": 1.6, "b": 2.3, "c": 3.1}, 7, {"a": 9, "b": 9, "c": 9}) == {"a": 2, "b": 2, "c": 3}
    with pytest.raises(sl.ScalingLawError, match="--budget must be a positive"):
        sl.allocate(laws, 0)
    with pytest.raises(sl.ScalingLawError, match=r"cap\(s\) for language\(s\) \['zz'\]"):
        sl.allocate(laws, 10, caps={"zz": 3})
    with pytest.raises(sl.ScalingLawError, match="negative or invalid weight"):
        sl.allocate(laws, 10, weights={"a": -1})


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _write_points(path, rng):
    rows = [("de", x, v) for x, v in zip(SIZES, _curve("log") + rng.normal(0, 0.05, len(SIZES)))]
    rows += [("zh", x, v) for x, v in zip(SIZES, _curve("power") / 4 + rng.normal(0, 0.05, len(SIZES)))]
    if path.endswith(".csv"):
        lines = ["language,pairs,score"] + [f"{lang},{int(x)},{v:.5f}" for lang, x, v in rows]
    else:
        lines = [json.dumps({"language": lang, "pairs": int(x), "score": v}) for lang, x, v in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_cli_fit_allocate_sweep(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for name in ("points.csv", "points.jsonl"):
        _write_points(str(tmp_path / name), rng)
    laws = str(tmp_path / "laws.json")
    assert tool.main(["fit", "--input", str(tmp_path / "points.csv"), str(tmp_path / "points.jsonl"),
                      "--forms", "log", "power", "--output", laws]) == 0
    with open(laws) as f:
        fits = json.load(f)
    assert set(fits["languages"]) == {"de", "zh"}
    assert fits["languages"]["de"]["fits"]["log"]["n_points"] == 2 * len(SIZES)
    assert fits["languages"]["de"]["better"] == "log" and fits["languages"]["zh"]["better"] == "power"
    with open(str(tmp_path / "laws.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"

    out = str(tmp_path / "allocation.json")
    assert tool.main(["allocate", "--fits", laws, "--form", "better", "--budget", "50000",
                      "--cap", "de=20000", "--weight", "zh=2", "--output", out]) == 0
    printed = capsys.readouterr().out
    assert "| de |" in printed and "weighted sum" in printed
    with open(out) as f:
        allocation = json.load(f)
    assert sum(allocation["allocation"].values()) == 50000 and allocation["allocation"]["de"] <= 20000
    assert allocation["objective"] >= allocation["uniform_objective"]

    assert tool.main(["sweep", "--language", "zh", "--sizes", "4000", "1000", "--output-dir",
                      str(tmp_path / "sweep"), "--base", "base ckpt", "--dry-run", "--", "--recipe", "coit"]) == 0
    with open(str(tmp_path / "sweep" / "plan.json")) as f:
        plan = json.load(f)
    assert [run["pairs"] for run in plan["runs"]] == [1000, 4000]
    assert plan["runs"][0]["build"][-4:] == ["--translation-pairs", "1000", "--output-prefix", plan["runs"][0]["prefix"]]
    assert "--recipe" in plan["runs"][0]["build"] and "base ckpt" in plan["runs"][0]["finetune"]
    with open(str(tmp_path / "sweep" / "commands.sh")) as f:
        script = f.read()
    assert "'base ckpt'" in script and script.count("evaluate.py translation") == 2


def test_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("language,pairs,score\nde,1000,1.0\nde,0,2.0\n")
    assert tool.main(["fit", "--input", str(bad), "--output", str(tmp_path / "o.json")]) == 2
    assert f"{bad}:3: pairs must be positive" in capsys.readouterr().err
    bad.write_text("language,size,score\nde,1000,1.0\n")
    assert tool.main(["fit", "--input", str(bad), "--output", str(tmp_path / "o.json")]) == 2
    assert "lacks column(s) ['pairs']" in capsys.readouterr().err
    bad.write_text("language,pairs,score\nde,1000,1.0\nde,2000,1.5\n")
    assert tool.main(["fit", "--input", str(bad), "--output", str(tmp_path / "o.json")]) == 2
    assert "needs at least 3 distinct sizes" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"language": "de", "pairs": 10, "score": 1}\n{"language": "de", "pairs": "x", "score": 1}\n')
    with pytest.raises(BadInputError, match="bad.jsonl:2: pairs 'x' is not a number"):
        sl.read_points([str(jsonl)])

    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps(sl.fit_points({"de": list(zip(SIZES, _curve("log")))})))
    assert tool.main(["allocate", "--fits", str(laws), "--budget", "10", "--cap", "fr=3"]) == 2
    assert "--cap names language(s) ['fr']" in capsys.readouterr().err
    assert tool.main(["allocate", "--fits", str(laws), "--budget", "10", "--form", "power"]) == 2
    assert "has no power fit" in capsys.readouterr().err
    assert tool.main(["allocate", "--fits", str(laws), "--budget", "10", "--cap", "de"]) == 2
    assert "expected LANG=NUMBER" in capsys.readouterr().err
    assert tool.main(["sweep", "--language", "zh", "--sizes", "10", "--output-dir", str(tmp_path / "s"),
                      "--dry-run", "--", "--translation-pairs", "5"]) == 2
    assert "sets ['--translation-pairs']" in capsys.readouterr().err


def test_sweep_builds_the_datasets(assets, tmp_path):
    """The real instruction-data tool, once per size: N translation records in each dataset."""
    if not os.path.isfile(os.path.join(os.path.dirname(tool.__file__), "build_instruction_data.py")):
        pytest.skip("needs tools/build_instruction_data.py (instruction tuning)")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.demo import xllama_data as xd

    paths = xd.write_corpus(xd.XllamaDataConfig(seed=1, people=8, held_out_people=2, english_instructions=20,
                                                target_instructions=10, translation_pool=40,
                                                translation_test=4, target_docs=2), str(tmp_path / "data"))
    out = str(tmp_path / "sweep")
    assert tool.main(["sweep", "--language", "qab", "--sizes", "5", "15", "--output-dir", out, "--",
                      "--recipe", "coit", "--target-lang", "qab", "--language-name", "qab=Tolvish",
                      "--instruction-data", f"en={paths['instructions_en']}", f"qab={paths['instructions_qab']}",
                      "--translation-data", f"en-qab={paths['translation_qab']}",
                      "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"],
                      "--seq-length", "256", "--no-progress"]) == 0
    sizes = [len(IndexedDataset(os.path.join(out, "data", f"qab_pairs{n}_text_document"))) for n in (5, 15)]
    assert sizes == [20 + 10 + 5, 20 + 10 + 15]


def test_allocation_warns_about_falling_laws_and_extrapolation(tmp_path, capsys):
    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps(sl.fit_points({"de": list(zip(SIZES, _curve("log"))),
                                              "fr": list(zip(SIZES, _curve("log")[::-1]))})))
    assert tool.main(["allocate", "--fits", str(laws), "--budget", "64000"]) == 0
    err = capsys.readouterr().err
    assert "warning: the log law of fr falls with more data" in err and "extrapolation" not in err
    out = tmp_path / "allocation.json"
    assert tool.main(["allocate", "--fits", str(laws), "--budget", "1e30", "--output", str(out)]) == 0
    assert "warning: de: 1e+30 pairs (allocation) is" in capsys.readouterr().err
    assert any("extrapolation" in w for w in json.load(open(out))["warnings"])
