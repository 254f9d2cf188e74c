"""PreAlign Figure 4 (CLKA learning dynamics): the periodic fact generator, the scoring per
period x frequency x language pair on a hand-checked case, and the evaluation command with the
demo driver end to end on a tiny model."""

import json
import os
import random

import numpy as np
import pytest

from megatron_prealign.demo import clka_dynamics_data as dyn
from megatron_prealign.demo import data as demo_data
from megatron_prealign.errors import ConfigError
from megatron_prealign.evaluation import clka_dynamics
from megatron_prealign.errors import EvaluationError


def test_generator_states_each_fact_at_its_frequency_in_its_period_and_language():
    spec = dyn.DynamicsSpec(periods=3, frequencies=(1, 3, 5), facts_per_cell=2)
    facts = dyn.make_facts(spec, seed=7)
    assert len(facts) == spec.facts == 3 * 3 * 2 * 2
    assert len({f["name"] for f in facts}) == len(facts)  # every fact about a new person
    for period in (1, 2, 3):
        for frequency in (1, 3, 5):
            for language in dyn.LANGUAGES:
                cell = [f for f in facts if (f["period"], f["frequency"], f["train_language"]) == (period, frequency, language)]
                assert len(cell) == 2 and {f["relation"] for f in cell} == {"city", "job"}
    rng = random.Random(0)
    for period in (1, 2, 3):
        for language in dyn.LANGUAGES:
            docs = dyn.period_documents(facts, period, language, background_docs=20, sentences_per_doc=4, rng=rng)
            words = [set(d.replace(".", " ").split()) for d in docs]
            for fact in facts:
                stating = [d for d, w in zip(docs, words) if fact["name"] in w]
                if (fact["period"], fact["train_language"]) == (period, language):
                    assert len(stating) == fact["frequency"], fact
                    stated = [t.format(name=fact["name"], **{fact["relation"]: fact["object"]})
                              for t in demo_data.FACT_TEMPLATES[fact["relation"]]]
                    assert all(any(t in d for t in stated) for d in stating)
                else:
                    assert not stating, (fact, period, language)
            assert len(docs) == 20 + 2 * (1 + 3 + 5)


def test_generator_items_and_warmup_mentions():
    facts = dyn.make_facts(dyn.DynamicsSpec(periods=1, frequencies=(2,), facts_per_cell=3), seed=1)
    items = dyn.fact_items(facts, seed=1)
    for fact, item in zip(facts, items):
        assert fact["object"] in item["true"] and fact["name"] in item["true"]
        assert len(item["distractors"]) == 3 and item["true"] not in item["distractors"]
        assert all(fact["object"] not in d.split() and fact["object"] + "." not in d.split() for d in item["distractors"])
        assert (item["period"], item["frequency"], item["train_language"]) == (1, 2, fact["train_language"])
    docs = dyn.warmup_documents([f["name"] for f in facts], docs=5, sentences_per_doc=2, mentions=4,
                                rng=random.Random(3))
    text = " ".join(docs).replace(".", " ").split()
    assert all(text.count(f["name"]) == 4 for f in facts)
    # Mentions carry no fact: no city or profession right after a name.
    assert not any(f"{f['name']} was born" in " ".join(docs) for f in facts)


@pytest.mark.parametrize("spec, message", [
    (dyn.DynamicsSpec(periods=0), "periods must be >= 1"),
    (dyn.DynamicsSpec(frequencies=(4, 2)), "distinct and increasing"),
    (dyn.DynamicsSpec(frequencies=(0, 2)), "positive integers"),
    (dyn.DynamicsSpec(facts_per_cell=0), "facts_per_cell"),
])
def test_generator_spec_validation(spec, message):
    with pytest.raises(ConfigError, match=message):
        spec.validate()


def _item(text, period, frequency, language):
    return {"true": f"{text} true.", "distractors": [f"{text} no{i}." for i in range(3)],
            "period": period, "frequency": frequency, "train_language": language}


class _Ids:
    """Fake TextToIds: English ids are the characters, En-Clone ids the characters + 1000."""
    eod = 0

    def __call__(self, text, clone=True):
        ids = np.array([ord(c) for c in text], dtype=np.int64)
        return ids + 1000 if clone else ids


def test_scoring_hand_checked(monkeypatch):
    """A fake model that knows a fixed set of (checkpoint, statement ids): the cells must be
    exactly the hand-counted ones, each period scored at its own checkpoint, in both languages."""
    from megatron_prealign.evaluation import clka

    records = [_item("a", 1, 1, "en"), _item("b", 1, 1, "en"), _item("c", 1, 4, "enclone"),
               _item("d", 2, 1, "en"), _item("e", 2, 4, "enclone"), _item("f", 2, 4, "enclone")]
    items = clka_dynamics.parse_dynamics_items(records, "t")
    ids = _Ids()
    # At iteration 10 (period 1): a known in English only, c in both languages.
    # At iteration 20 (period 2): d in English and En-Clone, e in En-Clone only; f not at all.
    # b is known only at iteration 20, which is not its period's checkpoint: must not count.
    known = {10: {("a true.", False), ("c true.", False), ("c true.", True)},
             20: {("d true.", False), ("d true.", True), ("e true.", True), ("b true.", False)}}
    loaded = []

    def fake_scores(model, statements, eod, normalize, micro_batch_size=8):
        out = []
        for s in statements:
            clone = bool(s[0] >= 1000)
            text = "".join(chr(int(v) - (1000 if clone else 0)) for v in s)
            out.append(0.0 if (text, clone) in known[model] else -1.0)
        return np.array(out)

    monkeypatch.setattr(clka, "score_statements", fake_scores)
    result = clka_dynamics.evaluate(lambda it: loaded.append(it) or it, items, [10, 20], ids)
    assert loaded == [10, 20]
    assert result["chance"] == 0.25 and result["frequencies"] == [1, 4]
    cell = lambda period, combo, f: result["periods"][str(period)][combo][str(f)]  # noqa: E731
    assert (cell(1, "en->en", 1)["correct"], cell(1, "en->en", 1)["items"]) == (1, 2)  # a yes, b no
    assert cell(1, "en->enclone", 1)["correct"] == 0
    assert cell(1, "enclone->en", 4)["correct"] == 1 and cell(1, "enclone->enclone", 4)["correct"] == 1
    assert cell(1, "en->en", 4)["items"] == 0 and cell(1, "en->en", 4)["accuracy"] is None
    assert (cell(2, "en->en", 1)["correct"], cell(2, "en->enclone", 1)["correct"]) == (1, 1)
    assert (cell(2, "enclone->en", 4)["correct"], cell(2, "enclone->enclone", 4)["correct"]) == (0, 1)
    assert cell(2, "enclone->enclone", 4)["items"] == 2
    pooled = result["pooled"]
    # en->en f=1: a, b, d -> 2 of 3; enclone->enclone f=4: c, e, f -> 2 of 3.
    assert (pooled["en->en"]["1"]["correct"], pooled["en->en"]["1"]["items"]) == (2, 3)
    assert (pooled["enclone->enclone"]["4"]["correct"], pooled["enclone->enclone"]["4"]["items"]) == (2, 3)
    assert pooled["en->en"]["1"]["accuracy"] == pytest.approx(2 / 3)
    # Wilson 95% for 2 of 3, by hand: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
    z, n, p = 1.959964, 3, 2 / 3
    centre, half = (p + z * z / (2 * n)), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]
    assert pooled["en->en"]["1"]["ci95"] == pytest.approx(expected, abs=1e-5)
    assert result["outcomes"]["en"] == [True, False, True, True, False, False]


@pytest.mark.parametrize("records, iterations, message", [
    ([_item("a", 1, 1, "en"), _item("b", 3, 1, "en")], [1, 2], "without gaps"),
    ([_item("a", 1, 1, "en"), _item("b", 2, 1, "en")], [5], "2 periods"),
    ([_item("a", 1, 1, "en"), _item("b", 2, 1, "en")], [5, 5], "must increase"),
    ([{**_item("a", 1, 1, "en"), "train_language": "de"}], [5], "train_language"),
    ([{k: v for k, v in _item("a", 1, 1, "en").items() if k != "frequency"}], [5], "'frequency'"),
])
def test_bad_items_and_iterations(records, iterations, message):
    with pytest.raises(EvaluationError, match=message):
        items = clka_dynamics.parse_dynamics_items(records, "t")
        clka_dynamics.check_periods(items, iterations)


def _driver_rank(output_dir):
    from megatron_prealign.demo.clka_dynamics import DynamicsConfig, run_dynamics

    return json.dumps(run_dynamics(DynamicsConfig.quick(), output_dir))


def _cli_rank(argv):
    from megatron_prealign.cli import evaluate as cli

    return cli.main(argv)


def test_driver_and_command_end_to_end(tmp_path, capsys):
    """The quick driver (data through the tools, Joint + PreAlign with periodic injection, the
    command on both runs, the plot), then the command by hand: same numbers, --compare plot,
    bad input answered with status 2 before any model is loaded."""
    from tests.dist_utils import run_distributed

    out = str(tmp_path / "dyn")
    (record,) = run_distributed(_driver_rank, 1, out, timeout=300)
    record = json.loads(record)
    saved = json.load(open(os.path.join(out, "clka_dynamics.json")))
    assert saved["runs"] == record["runs"] and set(saved["runs"]) == {"joint", "prealign"}
    with open(os.path.join(out, "clka_dynamics.png"), "rb") as handle:
        assert handle.read(4) == b"\x89PNG"
    for run in saved["runs"].values():
        assert run["period_iterations"] == {"1": 6, "2": 8} and run["chance"] == 0.25
        for period in ("1", "2"):
            for combination in clka_dynamics.COMBINATIONS:
                assert [run["periods"][period][combination][f]["items"] for f in ("1", "2")] == [2, 2]
        assert all(run["pooled"][c][f]["items"] == 4 for c in clka_dynamics.COMBINATIONS for f in ("1", "2"))
    # Both runs read the same samples (codeswitching keeps document lengths): same exposures.
    exposures = saved["exposures_per_fact"]
    assert exposures["joint"] == exposures["prealign"] and len(exposures["joint"]) == 16
    assert saved["exposures"]["joint"]["en"]["2"]["facts"] == 4

    data = os.path.join(out, "work", "data")
    ckpt = os.path.join(out, "work", "prealign", "ckpt")
    base = ["clka-dynamics", "--load", ckpt, "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", os.path.join(data, "spm.model"), "--input", os.path.join(data, "clka_dynamics.jsonl"),
            "--enclone-mapping", os.path.join(data, "enclone_mapping.json")]
    joint = os.path.join(out, "work", "joint", "clka_dynamics.json")
    again, plot = str(tmp_path / "again.json"), str(tmp_path / "again.png")
    argv = base + ["--period-iterations", "6", "8", "--output", again, "--plot", plot, "--label", "PreAlign",
                   "--compare", f"Joint={joint}"]
    assert run_distributed(_cli_rank, 1, argv)[0] == 0
    result = json.load(open(again))
    assert result["pooled"] == saved["runs"]["prealign"]["pooled"] and os.path.getsize(plot) > 0
    assert result["checkpoint"] == ckpt  # the run, not its first period's iteration directory
    from megatron_prealign.cli import evaluate as cli

    # Checked before any model is loaded, so in this process: status 2, a message, no output.
    other = str(tmp_path / "other.json")
    with open(other, "w") as handle:
        json.dump({**result, "frequencies": [1, 3]}, handle)
    for extra, message in ((["--period-iterations", "8"], "2 periods"),
                           (["--period-iterations", "6", "8", "--compare", f"x={other}"], "differ from --input"),
                           (["--period-iterations", "6", "8", "--compare", f"x={again}.missing"], "cannot read"),
                           (["--period-iterations", "6", "8", "--iteration", "6"], "drop --iteration")):
        bad = str(tmp_path / "bad.json")
        assert cli.main(base + extra + ["--output", bad]) == 2, message
        assert message in capsys.readouterr().err
        assert not os.path.exists(bad)
