"""The x-LLaMA miniature over several seeds (``demo --only xllama --seed S`` runs): mean and per-seed
scores of English-only tuning vs CoIT, the translation-data sweep, and the law-based allocation
against the uniform split, measured.

    python -m megatron_prealign.demo.xllama_report --inputs DIR1 DIR2 ... [--output FILE.md]

Each DIR holds a ``results.json`` with an ``xllama`` record (a different seed also draws other
synthetic languages and facts, so the spread covers the world as well as the training noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import List

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


def report(records: List[dict]) -> str:
    seeds = [r["config"]["seed"] for r in records]
    largest = max(records[0]["config"]["sweep_sizes"])
    out = [f"Seeds {', '.join(map(str, seeds))}: mean (per seed).", "",
           "| base | tuning | language | QA accuracy % | same facts in English % | BLEU | chrF++ |",
           "|---|---|---|---|---|---|---|"]
    for base in ("joint", "prealign"):
        for target in TARGETS:
            for label, name in (("English only", f"english_only@{base}"), (f"CoIT ({largest} pairs)", f"coit_{target}_{largest}@{base}")):
                scores = [r["runs"][name]["scores"] for r in records]
                english = [100 * s["en"]["qa_accuracy"] for s in scores if "en" in s]
                out.append(f"| {base} | {label} | {target} | {_cell([100 * s[target]['qa_accuracy'] for s in scores])} | "
                           f"{_cell(english) if english else '-'} | {_cell([s[target]['bleu'] for s in scores])} | "
                           f"{_cell([s[target]['chrf'] for s in scores])} |")
    out += ["", f"Sweep (Joint base, {LAW_SCORE} per English->X pairs):"]
    for target in TARGETS:
        sizes = [int(x) for x, _ in records[0]["sweep_points"][target]]
        cells = [_cell([r["sweep_points"][target][i][1] for r in records]) for i in range(len(sizes))]
        out.append(f"  {target}: " + "; ".join(f"{n}: {c}" for n, c in zip(sizes, cells)))
    out += ["", f"Budget allocation (log laws) vs uniform, measured mean {LAW_SCORE}:"]
    for seed, r in zip(seeds, records):
        measured = r["allocation_measured"]
        if "law" not in measured:
            out.append(f"  seed {seed}: no fit ({r['fits'].get('error')}); uniform {measured['uniform']['mean_' + LAW_SCORE]:.2f}")
            continue
        law, uniform = measured["law"], measured["uniform"]
        out.append(f"  seed {seed}: law {law['pairs']} -> {law['mean_' + LAW_SCORE]:.2f}, uniform "
                   f"{uniform['pairs']} -> {uniform['mean_' + LAW_SCORE]:.2f} "
                   f"(difference {law['mean_' + LAW_SCORE] - uniform['mean_' + LAW_SCORE]:+.2f})")
    ppl = {base: {lang: _cell([r["bases"][base]["perplexity"][lang] for r in records], "{:.2f}")
                  for lang in records[0]["bases"][base]["perplexity"]} for base in ("joint", "prealign")}
    out += ["", "Bases' perplexity: " + "; ".join(
        f"{base} " + ", ".join(f"{lang} {v}" for lang, v in langs.items()) for base, langs in ppl.items())]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="x-LLaMA miniature over several seeds")
    parser.add_argument("--inputs", nargs="+", required=True, help="output directories of demo --only xllama")
    parser.add_argument("--output", help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    text = report(load(args.inputs))
    print(text)
    if args.output:
        with atomic_text_writer(args.output) as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
