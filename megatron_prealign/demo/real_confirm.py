"""Confirm the real-language regime on fresh seeds against baselines tuned as well as it.

``docs/real_languages.md`` chose ``prealign_3_translations_words128`` after trying about 15
variants on seeds 1234, 1, 2 and 3, at one learning rate and warm-up shared by every run. This
driver gives each method the same small tuning budget and then tests the chosen settings on seeds
that played no part in any choice:

1. **Tuning**: every method (Joint Training, codeswitching alone with the same table, the
   PreAlign regime) trains with each learning rate x warm-up share of the grid on the tuning
   seeds; the setting with the lowest mean of German and English log-perplexity on the *tuning*
   half of the validation text is chosen per method (fixed criterion, stated before the runs).
2. **Confirmation**: each method with its chosen setting on the fresh seeds, measured on the
   *test* half of the validation text (documents alternate between the halves), paired seed by
   seed: PreAlign against Joint Training and against codeswitching alone, with the exact sign test
   and a paired bootstrap interval (``megatron_prealign.stats``).

    python -m megatron_prealign.demo.real_confirm --output-dir results/real_confirm \\
        [--text-dir results/demo_real/work/text] [--tune-seeds 1234 1] [--test-seeds 11 12 13 14]

Runs already in ``OUTPUT/results.json`` are kept (an interrupted study continues);
``OUTPUT/report.md`` holds the tables.

``--figure6`` then measures PreAlign's Figure 6 on the confirmation's checkpoints: German test
perplexity of the tokens of words seen in pre-alignment, held out of it and not in the table
(``tools/evaluate.py word-perplexity``), per method and seed, with the paired comparison of the
regime against each baseline per group; ``OUTPUT/figure6.json`` and ``figure6.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Dict, List

from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.demo.prealign import _evaluate, _run_tool, log
from megatron_prealign.demo.real import RealConfig, prepare_work, train, variant_config

METHODS = ("joint", "codeswitch_only_3_translations", "prealign_3_translations_words128")
PREALIGN = "prealign_3_translations_words128"


def split_validation(text: Dict[str, str], data_dir: str) -> Dict[str, str]:
    """Indexed datasets of the tuning and test halves of each language's validation documents."""
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer",
                 "--tokenizer-model", os.path.join(data_dir, "spm.model")]
    prefixes = {}
    for lang in ("en", "de"):
        with open(text[f"{lang}_valid"], encoding="utf-8") as handle:
            lines = handle.readlines()
        for half, keep in (("tune", 0), ("test", 1)):
            prefix = os.path.join(data_dir, f"{lang}_valid_{half}")
            prefixes[f"{lang}_{half}"] = prefix + "_text_document"
            if os.path.isfile(prefix + "_text_document.idx"):
                continue
            source = prefix + ".jsonl"
            with open(source + ".tmp", "w", encoding="utf-8") as handle:
                handle.writelines(lines[keep::2])
            os.replace(source + ".tmp", source)
            _run_tool("preprocess_data", ["--input", source, "--output-prefix", prefix, "--json-keys", "text",
                                          *tokenizer, "--append-eod", "--no-progress", "--codeswitch-mode", "none"])
    return prefixes


def perplexities(cfg: RealConfig, run_dir: str, prefixes: Dict[str, str], half: str) -> Dict[str, float]:
    result = _evaluate(["perplexity", "--load", os.path.join(run_dir, "ckpt"),
                        "--output", os.path.join(run_dir, f"ppl_{half}.json"),
                        "--data-path", f"en={prefixes['en_' + half]}", f"de={prefixes['de_' + half]}",
                        "--max-tokens", str(cfg.eval_tokens)])
    return {lang: result["sources"][lang]["perplexity"] for lang in ("en", "de")}


def criterion(ppl: Dict[str, float]) -> float:
    """Mean of German and English log-perplexity: lower is better (the tuning's one number)."""
    return (math.log(ppl["de"]) + math.log(ppl["en"])) / 2


def choose(runs: List[dict]) -> dict:
    """The (lr, warm-up) of ``runs`` (one method's tuning runs) with the best mean criterion."""
    scores: Dict[tuple, List[float]] = {}
    for r in runs:
        scores.setdefault((r["lr"], r["warmup_share"]), []).append(criterion({"de": r["de_ppl"], "en": r["en_ppl"]}))
    mean = {setting: sum(v) / len(v) for setting, v in scores.items()}
    lr, warmup = min(mean, key=mean.get)
    return {"lr": lr, "warmup_share": warmup, "tune_criterion": mean[(lr, warmup)]}


def paired(a: List[float], b: List[float]) -> dict:
    from megatron_prealign import stats

    sign = stats.paired_sign_test(a, b)
    relative = [x / y - 1 for x, y in zip(a, b)]
    difference = stats.paired_bootstrap(relative, [0.0] * len(relative))
    return {"wins_lower": sign.losses, "losses_higher": sign.wins, "ties": sign.ties, "sign_p": sign.p_value,
            "mean_relative": difference.mean, "relative_ci95": list(difference.ci95)}


def run_study(base: RealConfig, output_dir: str, text_dir: str, methods: List[str], lrs: List[float],
              warmups: List[float], tune_seeds: List[int], test_seeds: List[int]) -> dict:
    from megatron_prealign.evaluation.common import write_json

    if set(tune_seeds) & set(test_seeds):
        raise SystemExit(f"[real_confirm] tuning and test seeds overlap ({sorted(set(tune_seeds) & set(test_seeds))}): "
                         "the test seeds must play no part in the choice")
    work, text, paths = prepare_work(base, output_dir, [variant_config(base, m, 0) for m in methods], text_dir)
    prefixes = split_validation(text, os.path.join(work, "data"))
    results_path = os.path.join(output_dir, "results.json")
    record = {"base_config": dataclasses.asdict(base), "tune_seeds": tune_seeds, "test_seeds": test_seeds,
              "grid": {"lr": lrs, "warmup_share": warmups}, "runs": {}}
    if os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as handle:
            record["runs"] = json.load(handle)["runs"]

    def measure(method: str, lr: float, warmup: float, seed: int, half: str) -> dict:
        key = f"{half}/{method}/lr{lr:g}/warmup{warmup:g}/{seed}"
        if key not in record["runs"]:
            cfg = dataclasses.replace(variant_config(base, method, seed), lr=lr, warmup_share=warmup,
                                      save_interval=10 * base.total_iters)  # the final save only
            run_dir = os.path.join(work, key.replace("/", "_"))
            train_s = train(cfg, method, paths, run_dir)
            ppl = perplexities(cfg, run_dir, prefixes, half)
            record["runs"][key] = {"method": method, "lr": lr, "warmup_share": warmup, "seed": seed,
                                   "half": half, "de_ppl": ppl["de"], "en_ppl": ppl["en"], "train_s": train_s}
            write_json(results_path, record)
            log(f"{key}: de {ppl['de']:.1f}, en {ppl['en']:.2f} ({train_s:.0f} s)")
        return record["runs"][key]

    start = time.time()
    chosen = {}
    for method in methods:
        runs = [measure(method, lr, warmup, seed, "tune") for lr in lrs for warmup in warmups for seed in tune_seeds]
        chosen[method] = choose(runs)
        log(f"{method}: chosen lr {chosen[method]['lr']:g}, warm-up {chosen[method]['warmup_share']:g} "
            f"(criterion {chosen[method]['tune_criterion']:.4f})")
    for method in methods:
        for seed in test_seeds:
            measure(method, chosen[method]["lr"], chosen[method]["warmup_share"], seed, "test")
    record["chosen"] = chosen
    record["comparisons"] = compare(record, methods, test_seeds)
    record["elapsed_s"] = time.time() - start
    write_json(results_path, record)
    write_report(record, methods, os.path.join(output_dir, "report.md"))
    return record


def test_values(record: dict, method: str, seeds: List[int]) -> Dict[str, List[float]]:
    c = record["chosen"][method]
    runs = [record["runs"][f"test/{method}/lr{c['lr']:g}/warmup{c['warmup_share']:g}/{s}"] for s in seeds]
    return {"de": [r["de_ppl"] for r in runs], "en": [r["en_ppl"] for r in runs]}


def compare(record: dict, methods: List[str], seeds: List[int]) -> dict:
    if PREALIGN not in methods:
        return {}
    ours = test_values(record, PREALIGN, seeds)
    out = {}
    for baseline in methods:
        if baseline == PREALIGN:
            continue
        theirs = test_values(record, baseline, seeds)
        out[baseline] = {lang: paired(ours[lang], theirs[lang]) for lang in ("de", "en")}
    return out


def paired_rows(paired_by_baseline: Dict[str, Dict[str, dict]], label: Dict[str, str], pairs: int) -> List[str]:
    """Markdown rows of ``paired`` results of the regime against each baseline, per ``label`` key."""
    rows = [f"| {PREALIGN} vs | what | lower in | sign test p (two-sided) | mean relative change (95% bootstrap CI) |",
            "|---|---|---|---|---|"]
    for baseline, by_key in paired_by_baseline.items():
        for key, r in by_key.items():
            rows.append(f"| {baseline} | {label[key]} | {r['wins_lower']} of {pairs} seeds | {r['sign_p']:.3f} | "
                        f"{100 * r['mean_relative']:+.1f}% ({100 * r['relative_ci95'][0]:+.1f}% to "
                        f"{100 * r['relative_ci95'][1]:+.1f}%) |")
    return rows


def write_report(record: dict, methods: List[str], path: str):
    from megatron_prealign import stats

    seeds = record["test_seeds"]
    lines = ["| method | chosen lr / warm-up | seed | German ppl | English ppl |", "|---|---|---|---|---|"]
    for method in methods:
        c = record["chosen"][method]
        values = test_values(record, method, seeds)
        for i, seed in enumerate(seeds):
            lines.append(f"| {method} | {c['lr']:g} / {c['warmup_share']:g} | {seed} | "
                         f"{values['de'][i]:.1f} | {values['en'][i]:.2f} |")
        de, en = stats.summary(values["de"]), stats.summary(values["en"])
        lines.append(f"| {method} | | mean ± sd (95% CI) | {de.mean:.1f} ± {de.std:.1f} "
                     f"({de.ci95[0]:.1f}-{de.ci95[1]:.1f}) | {en.mean:.2f} ± {en.std:.2f} "
                     f"({en.ci95[0]:.2f}-{en.ci95[1]:.2f}) |")
    lines += ["", *paired_rows(record["comparisons"], {"de": "German", "en": "English"}, len(seeds))]
    with atomic_text_writer(path) as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


GROUP_LABELS = {"seen": "seen in pre-alignment", "held_out": "held out of it", "not_in_table": "not in the table"}


def word_perplexity_figure(base: RealConfig, output_dir: str, methods: List[str], test_seeds: List[int],
                           max_tokens: int = 20000) -> dict:
    """Figure 6 on the confirmation's test checkpoints (German test half, the regime's table)."""
    import numpy as np

    from megatron_prealign import stats
    from megatron_prealign.evaluation.common import write_json

    results_path = os.path.join(output_dir, "results.json")
    if not os.path.isfile(results_path):
        raise SystemExit(f"[real_confirm] {results_path} is missing: run the study first")
    with open(results_path, encoding="utf-8") as handle:
        record = json.load(handle)
    work = os.path.join(output_dir, "work")
    data = os.path.join(work, "data")
    table = variant_config(base, PREALIGN, 0).table
    groups: Dict[str, Dict[str, List[float]]] = {m: {g: [] for g in GROUP_LABELS} for m in methods}
    tokens: Dict[str, Dict[str, int]] = {}
    for method in methods:
        c = record["chosen"][method]
        for seed in test_seeds:
            run_dir = os.path.join(work, f"test_{method}_lr{c['lr']:g}_warmup{c['warmup_share']:g}_{seed}")
            result = _evaluate(["word-perplexity", "--load", os.path.join(run_dir, "ckpt"),
                                "--tokenizer-type", "SentencePieceTokenizer",
                                "--tokenizer-model", os.path.join(data, "spm.model"),
                                "--jsonl", os.path.join(data, "de_valid_test.jsonl"), "--language", "de",
                                "--alignment-table", os.path.join(data, f"table_{table}.jsonl"),
                                "--alignment-held-out-fraction", str(base.held_out_fraction),
                                "--max-tokens", str(max_tokens), "--output", os.path.join(run_dir, "figure6.json")])
            for group in GROUP_LABELS:
                groups[method][group].append(result["groups"][group]["perplexity"])
            tokens = {g: result["groups"][g]["tokens"] for g in GROUP_LABELS}
    figure = {"methods": methods, "test_seeds": test_seeds, "table": table, "tokens_per_group": tokens,
              "perplexity": groups, "summary": {}, "paired": {}}
    for method in methods:
        figure["summary"][method] = {g: dataclasses.asdict(stats.summary(v)) for g, v in groups[method].items()}
    for baseline in methods:
        if baseline != PREALIGN and PREALIGN in methods:
            figure["paired"][baseline] = {g: paired(groups[PREALIGN][g], groups[baseline][g]) for g in GROUP_LABELS}
    write_json(os.path.join(output_dir, "figure6.json"), figure)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from megatron_prealign.data.atomic import save_figure

    fig, axis = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        xs = np.arange(len(GROUP_LABELS)) + (index - (len(methods) - 1) / 2) * width
        means = [figure["summary"][method][g]["mean"] for g in GROUP_LABELS]
        axis.bar(xs, means, width, label=method)
        for x, g in zip(xs, GROUP_LABELS):
            axis.plot([x] * len(groups[method][g]), groups[method][g], "k.", markersize=3)
    axis.set_xticks(range(len(GROUP_LABELS)))
    axis.set_xticklabels([f"{GROUP_LABELS[g]}\n({tokens[g]} tokens)" for g in GROUP_LABELS], fontsize=8)
    axis.set_ylabel("German test perplexity of the words' tokens")
    axis.set_title(f"PreAlign Fig. 6 in miniature: English -> German, seeds {', '.join(map(str, test_seeds))}",
                   fontsize=9)
    axis.legend(fontsize=7)
    save_figure(fig, os.path.join(output_dir, "figure6.png"))
    lines = ["| group | tokens | " + " | ".join(f"{m} (mean ± sd)" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for g in GROUP_LABELS:
        cells = [f"{figure['summary'][m][g]['mean']:.1f} ± {figure['summary'][m][g]['std']:.1f}" for m in methods]
        lines.append(f"| {GROUP_LABELS[g]} | {tokens[g]} | " + " | ".join(cells) + " |")
    lines += ["", *paired_rows(figure["paired"], GROUP_LABELS, len(test_seeds))]
    print("\n".join(lines), flush=True)
    return figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.path.join("results", "real_confirm"))
    parser.add_argument("--text-dir", help="reuse extracted text (tools/extract_debian_text.py output)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[1.5e-3, 3e-3, 6e-3])
    parser.add_argument("--warmup-shares", nargs="+", type=float, default=[0.05, 0.2])
    parser.add_argument("--tune-seeds", nargs="+", type=int, default=[1234, 1])
    parser.add_argument("--test-seeds", nargs="+", type=int, default=[11, 12, 13, 14])
    parser.add_argument("--quick", action="store_true", help="the reduced configuration (a test)")
    parser.add_argument("--figure6", action="store_true",
                        help="after the study: PreAlign's Figure 6 on its test checkpoints")
    args = parser.parse_args(argv)
    base = RealConfig.quick() if args.quick else RealConfig()
    run_study(base, args.output_dir, args.text_dir, args.methods, args.lrs, args.warmup_shares,
              args.tune_seeds, args.test_seeds)
    if args.figure6:
        word_perplexity_figure(base, args.output_dir, args.methods, args.test_seeds)


if __name__ == "__main__":
    sys.exit(main())
