"""The x-LLaMA miniature over several seeds (``demo --only xllama [--full] --seed S`` runs): QA per
base and tuning with the chance level and 95% Wilson intervals, the paired tests (CoIT minus
English-only; PreAlign vs codeswitching-only and Joint), the translation-data sweep, the fitted
laws, and the law-based allocation against the uniform split next to the fine-tuning noise.

    python -m megatron_prealign.demo.xllama_report --inputs DIR1 DIR2 ... [--output FILE.md]
                                                   [--json FILE.json]

Each DIR holds a ``results.json`` with an ``xllama`` record (a different seed also draws other
synthetic languages and facts, so the spread covers the world as well as the training noise).
Paired tests pool the (seed, item) pairs: the same held-out fact asked of both models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Dict, List, Optional

from megatron_prealign import stats
from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.demo.xllama import LAW_SCORE, TARGETS


def load(directories: List[str]) -> List[dict]:
    records = []
    for directory in directories:
        with open(os.path.join(directory, "results.json"), encoding="utf-8") as handle:
            records.append(json.load(handle)["xllama"])
    return records


def _cell(values: List[float], fmt: str = "{:.1f}") -> str:
    """``mean (v1 / v2 / ...)``."""
    return fmt.format(statistics.fmean(values)) + " (" + " / ".join(fmt.format(v) for v in values) + ")"


def _bases(records: List[dict]) -> List[str]:
    return list(records[0]["config"].get("bases") or ("joint", "prealign"))


def _chance(records: List[dict]) -> float:
    if "chance_level" in records[0]:
        return records[0]["chance_level"]
    return stats.chance_level(records[0]["config"].get("attribute_values") or 12)


def _coit_name(records: List[dict], target: str, base: str) -> str:
    return f"coit_{target}_{max(records[0]['config']['sweep_sizes'])}@{base}"


RELATIONS = ("city", "job")  # xllama_data.qa_items asks each person's city, then job


def qa_cell(records: List[dict], run: str, language: str) -> dict:
    """Accuracy over every (seed, item), its Wilson interval, and the per-seed accuracies; with
    per-item scores also per relation: city names are the same word in every language, so city
    questions separate knowing the fact from answering in the right language."""
    scores = [r["runs"][run]["scores"][language] for r in records]
    right = sum(round(s["qa_accuracy"] * s["qa_items"]) for s in scores)
    total = sum(s["qa_items"] for s in scores)
    low, high = stats.proportion_interval(right, total)
    cell = {"accuracy": right / total, "ci95": [low, high], "correct": right, "items": total,
            "per_seed": [s["qa_accuracy"] for s in scores]}
    if all("qa_correct" in s for s in scores):
        for index, relation in enumerate(RELATIONS):
            values = [v for s in scores for v in s["qa_correct"][index::len(RELATIONS)]]
            low, high = stats.proportion_interval(sum(values), len(values))
            cell[relation] = {"accuracy": sum(values) / len(values), "ci95": [low, high], "items": len(values)}
    return cell


def paired(records: List[dict], run_a: str, run_b: str, language: str) -> Optional[dict]:
    """``run_a`` minus ``run_b`` on the same items: mean difference of 0/1 correctness with a
    paired bootstrap interval over all (seed, item) pairs, one that resamples seeds and then
    items (``seed_item_ci95``: a seed's runs share a base), and the exact sign test on the
    discordant pairs (McNemar; valid pooled over seeds: under no effect every discordant pair is
    a fair coin whatever its seed)."""
    groups_a, groups_b = [], []
    for r in records:
        sa, sb = r["runs"][run_a]["scores"][language], r["runs"][run_b]["scores"][language]
        if "qa_correct" not in sa or "qa_correct" not in sb:
            return None  # records from before per-item scores
        groups_a.append(sa["qa_correct"])
        groups_b.append(sb["qa_correct"])
    a, b = sum(groups_a, []), sum(groups_b, [])
    difference = stats.paired_bootstrap(a, b, seed=0)
    nested = stats.seed_item_bootstrap(groups_a, groups_b, seed=0)
    sign = stats.paired_sign_test(a, b)
    return {"pairs": len(a), "mean_difference": difference.mean, "ci95": list(difference.ci95),
            "seed_item_ci95": list(nested.ci95), "seeds": len(groups_a),
            "wins": sign.wins, "losses": sign.losses, "ties": sign.ties, "p_value": sign.p_value}


def _pct(cell: dict) -> str:
    low, high = cell["ci95"]
    return f"{100 * cell['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _diff(test: Optional[dict]) -> str:
    if test is None:
        return "-"
    low, high = test["ci95"]
    text = f"{100 * test['mean_difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
    if "seed_item_ci95" in test:
        low, high = test["seed_item_ci95"]
        text += f"[{100 * low:+.1f}, {100 * high:+.1f}] "
    return text + f"({test['wins']}:{test['losses']}, p={test['p_value']:.2g})"


def analyse(records: List[dict]) -> dict:
    """Every number of the report, as a record (``--json``)."""
    bases, seeds = _bases(records), [r["config"]["seed"] for r in records]
    out: Dict[str, object] = {"seeds": seeds, "bases": bases, "chance_level": _chance(records), "qa": {},
                              "coit_minus_english_only": {}, "base_comparisons": {}}
    for base in bases:
        for target in TARGETS:
            coit, english = _coit_name(records, target, base), f"english_only@{base}"
            key = f"{base}/{target}"
            out["qa"][key] = {"english_only": qa_cell(records, english, target),
                              "coit": qa_cell(records, coit, target),
                              "english_only_en": qa_cell(records, english, "en"),
                              "coit_en": qa_cell(records, coit, "en")}
            out["coit_minus_english_only"][key] = paired(records, coit, english, target)
    for first, second in (("prealign", "codeswitch"), ("prealign", "joint"), ("codeswitch", "joint")):
        if first in bases and second in bases:
            for target in TARGETS:
                for tuning in ("coit", "english_only"):
                    run = (lambda b: _coit_name(records, target, b)) if tuning == "coit" else \
                        (lambda b: f"english_only@{b}")
                    out["base_comparisons"][f"{first}-{second}/{tuning}/{target}"] = paired(
                        records, run(first), run(second), target)
    sizes = [int(x) for x, _ in records[0]["sweep_points"][TARGETS[0]]]
    out["sweep"] = {t: {str(n): [r["sweep_points"][t][i][1] for r in records] for i, n in enumerate(sizes)}
                    for t in TARGETS}
    out["fits"] = {}
    for seed, r in zip(seeds, records):
        if "error" in r["fits"]:
            out["fits"][str(seed)] = {"error": r["fits"]["error"]}
            continue
        out["fits"][str(seed)] = {t: {form: {"params": fit["params"], "r2": fit["r2"]}
                                      for form, fit in entry["fits"].items()}
                                  for t, entry in r["fits"]["languages"].items()}
    out["allocation"] = {}
    differences = []
    for seed, r in zip(seeds, records):
        measured, noise = r["allocation_measured"], r.get("noise") or {}
        entry = {label: {"pairs": m["pairs"], f"mean_{LAW_SCORE}": m[f"mean_{LAW_SCORE}"]}
                 for label, m in measured.items()}
        if noise:
            for label, n in noise.items():
                entry[label]["repeats"] = n[f"mean_{LAW_SCORE}"]
                entry[label]["finetune_seeds"] = n["finetune_seeds"]
            # The noise of one run: the sample SD over fine-tuning seeds, pooled over both splits.
            sds = [statistics.stdev(n[f"mean_{LAW_SCORE}"]) for n in noise.values() if len(n[f"mean_{LAW_SCORE}"]) > 1]
            entry["noise_sd"] = statistics.fmean(sds) if sds else None
            if {"law", "uniform"} <= set(noise):
                pairs = list(zip(noise["law"][f"mean_{LAW_SCORE}"], noise["uniform"][f"mean_{LAW_SCORE}"]))
                entry["law_minus_uniform"] = [x - y for x, y in pairs]
                differences += entry["law_minus_uniform"]
        out["allocation"][str(seed)] = entry
    if len(differences) > 1:
        s = stats.summary(differences)
        out["law_minus_uniform"] = {"n": s.n, "mean": s.mean, "std": s.std, "ci95": list(s.ci95),
                                    "sign_test_p": stats.paired_sign_test(differences, [0] * len(differences)).p_value}
    return out


def report(records: List[dict]) -> str:
    a = analyse(records)
    seeds, bases, chance = a["seeds"], a["bases"], a["chance_level"]
    largest = max(records[0]["config"]["sweep_sizes"])
    items = {t: records[0]["runs"][f"english_only@{bases[0]}"]["scores"][t]["qa_items"] for t in (*TARGETS, "en")}
    out = [f"Seeds {', '.join(map(str, seeds))}. QA: {items[TARGETS[0]]} held-out facts per language and seed, "
           f"chance level {100 * chance:.1f}%; accuracy % over all seeds' items [95% Wilson interval], "
           "per seed in brackets.", "",
           "| base | language | English-only QA % | CoIT QA % | same facts in English (Eng.-only / CoIT) % | "
           "CoIT minus English-only, pp [95% paired bootstrap over items] [95% over seeds, then items] "
           "(wins:losses, sign-test p) |",
           "|---|---|---|---|---|---|"]
    for base in bases:
        for target in TARGETS:
            q = a["qa"][f"{base}/{target}"]
            per_seed = lambda c: " / ".join(f"{100 * v:.1f}" for v in c["per_seed"])  # noqa: E731
            out.append(f"| {base} | {target} | {_pct(q['english_only'])} ({per_seed(q['english_only'])}) | "
                       f"{_pct(q['coit'])} ({per_seed(q['coit'])}) | {_pct(q['english_only_en'])} / "
                       f"{_pct(q['coit_en'])} | {_diff(a['coit_minus_english_only'][f'{base}/{target}'])} |")
    if "city" in a["qa"][f"{bases[0]}/{TARGETS[0]}"]["coit"]:
        out += ["", "Per relation (city names are the same word in every language; professions are translated), "
                "accuracy % [95% Wilson]:", "",
                "| base | language | relation | English-only | CoIT | same facts in English (Eng.-only / CoIT) |",
                "|---|---|---|---|---|---|"]
        for base in bases:
            for target in TARGETS:
                q = a["qa"][f"{base}/{target}"]
                for relation in RELATIONS:
                    out.append(f"| {base} | {target} | {relation} | {_pct(q['english_only'][relation])} | "
                               f"{_pct(q['coit'][relation])} | {_pct(q['english_only_en'][relation])} / "
                               f"{_pct(q['coit_en'][relation])} |")
    if a["base_comparisons"]:
        out += ["", "Bases compared on the same items (pp [95% paired bootstrap over items] [95% over seeds, "
                "then items] (wins:losses, sign-test p)):", "",
                "| comparison | tuning | " + " | ".join(TARGETS) + " |", "|---|---|" + "---|" * len(TARGETS)]
        pairs = sorted({key.rsplit("/", 1)[0] for key in a["base_comparisons"]})
        for pair in pairs:
            comparison, tuning = pair.split("/")
            out.append(f"| {comparison} | {tuning} | " + " | ".join(
                _diff(a["base_comparisons"][f"{pair}/{t}"]) for t in TARGETS) + " |")
    out += ["", f"Translation (mean (per seed)), CoIT with {largest} pairs:", ""]
    out += ["| base | language | BLEU | chrF++ | English-only chrF++ |", "|---|---|---|---|---|"]
    for base in bases:
        for target in TARGETS:
            coit = [r["runs"][_coit_name(records, target, base)]["scores"][target] for r in records]
            english = [r["runs"][f"english_only@{base}"]["scores"][target] for r in records]
            out.append(f"| {base} | {target} | {_cell([s['bleu'] for s in coit])} | "
                       f"{_cell([s['chrf'] for s in coit])} | "
                       f"{_cell([s['chrf'] for s in english])} |")
    out += ["", f"Sweep (Joint base, {LAW_SCORE} per English->X pairs, mean (per seed)):"]
    for target in TARGETS:
        out.append(f"  {target}: " + "; ".join(f"{n}: {_cell(v)}" for n, v in a["sweep"][target].items()))
    out += ["", "Fitted laws (R^2 log / power; log law a * log(g x + b)):"]
    for seed, fits in a["fits"].items():
        if "error" in fits:
            out.append(f"  seed {seed}: no fit ({fits['error']})")
            continue
        out.append(f"  seed {seed}: " + "; ".join(
            f"{t} {f['log']['r2']:.3f} / {f['power']['r2']:.3f} (a={f['log']['params']['a']:.2f})"
            for t, f in fits.items()))
    out += ["", f"Budget allocation (log laws) vs uniform, measured mean {LAW_SCORE}:"]
    for seed, entry in a["allocation"].items():
        if "law" not in entry:
            out.append(f"  seed {seed}: no fit; uniform {entry['uniform'][f'mean_{LAW_SCORE}']:.2f}")
            continue
        law, uniform = entry["law"], entry["uniform"]
        line = (f"  seed {seed}: law {law['pairs']} -> {law[f'mean_{LAW_SCORE}']:.2f}, uniform "
                f"{uniform['pairs']} -> {uniform[f'mean_{LAW_SCORE}']:.2f} "
                f"(difference {law[f'mean_{LAW_SCORE}'] - uniform[f'mean_{LAW_SCORE}']:+.2f})")
        if "law_minus_uniform" in entry:
            line += (f"; over fine-tuning seeds {entry['law']['finetune_seeds']}: law "
                     f"{' / '.join(f'{v:.2f}' for v in law['repeats'])}, uniform "
                     f"{' / '.join(f'{v:.2f}' for v in uniform['repeats'])}, fine-tuning noise SD "
                     f"{entry['noise_sd']:.2f}")
        out.append(line)
    if "law_minus_uniform" in a:
        d = a["law_minus_uniform"]
        out.append(f"  law minus uniform over all {d['n']} (seed, fine-tuning seed) runs: {d['mean']:+.2f} "
                   f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] (t interval; sign test p={d['sign_test_p']:.2g})")
    ppl = {base: {lang: _cell([r["bases"][base]["perplexity"][lang] for r in records], "{:.2f}")
                  for lang in records[0]["bases"][base]["perplexity"]} for base in bases}
    out += ["", "Bases' perplexity: " + "; ".join(
        f"{base} " + ", ".join(f"{lang} {v}" for lang, v in langs.items()) for base, langs in ppl.items())]
    return "\n".join(out)


def publish(directories: List[str], records: List[dict], target: str, prefix: str) -> None:
    """The per-seed records (atomically) and plots, under the names docs/xllama/ uses."""
    import shutil

    from megatron_prealign.data.atomic import temp_path
    from megatron_prealign.evaluation.common import write_json

    os.makedirs(target, exist_ok=True)
    for directory, record in zip(directories, records):
        seed = record["config"]["seed"]
        write_json(os.path.join(target, f"{prefix}_seed{seed}.json"), {"xllama": record})
        plot = os.path.join(directory, "xllama_scaling_law.png")
        if os.path.exists(plot):
            destination = os.path.join(target, f"scaling_law_{prefix}_seed{seed}.png")
            temporary = temp_path(destination)
            shutil.copyfile(plot, temporary)
            os.replace(temporary, destination)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="x-LLaMA miniature over several seeds")
    parser.add_argument("--inputs", nargs="+", required=True, help="output directories of demo --only xllama")
    parser.add_argument("--output", help="also write the report (Markdown) here")
    parser.add_argument("--json", help="also write every number of the report (JSON) here")
    parser.add_argument("--publish", metavar="DIR",
                        help="copy each seed's record (PREFIX_seedS.json) and scaling-law plot here")
    parser.add_argument("--prefix", default="results", help="file-name prefix for --publish")
    args = parser.parse_args(argv)
    records = load(args.inputs)
    if args.publish:
        publish(args.inputs, records, args.publish, args.prefix)
    text = report(records)
    print(text)
    if args.output:
        with atomic_text_writer(args.output) as handle:
            handle.write(text + "\n")
    if args.json:
        from megatron_prealign.evaluation.common import write_json

        write_json(args.json, analyse(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
