"""Tables and plots of the real-language demo (``megatron_prealign.demo.real``): per run and seed German / English
perplexity, the aligned-word similarity gap to random pairs (middle layers), sentence retrieval;
the similarity over training and the loss curves as PNG."""

from __future__ import annotations

import json
import os
import statistics
from typing import Dict, List

from megatron_prealign.data.atomic import atomic_text_writer, save_figure


def _mid(values: List[float]) -> float:
    """Mean over the transformer layers (states 1 .. n-2: not the input / output embedding)."""
    inner = [v for v in values[1:-2] if v is not None]
    return sum(inner) / len(inner) if inner else float("nan")


def summarize(result: dict) -> Dict[str, float]:
    final = result["alignment_final"]
    seen, unseen = final["seen"], final["unseen"]
    retrieval = result["retrieval"]
    top1 = retrieval["retrieval_acc@1"]  # English -> German; states: embedding, layers 1..L
    return {
        "de_ppl": result["de_ppl"], "en_ppl": result["en_ppl"],
        "seen_mid": _mid(seen["aligned"]), "unseen_mid": _mid(unseen["aligned"]) if unseen["aligned"] else float("nan"),
        "random_mid": _mid(seen["random"]),
        "gap_seen": _mid(seen["aligned"]) - _mid(seen["random"]),
        "gap_unseen": (_mid(unseen["aligned"]) - _mid(unseen["random"])) if unseen["aligned"] else float("nan"),
        "retrieval_top1_best": max(top1[1:]),
        "retrieval_top1_mid": sum(top1[1:]) / (len(top1) - 1),
        "sentence_gap_mid": (sum(retrieval["aligned"][1:]) - sum(retrieval["random"][1:])) / (len(top1) - 1),
        "train_s": result.get("train_s", float("nan")),
    }


def table(record: dict) -> str:
    lines = ["| run | seed | German ppl | English ppl | word sim. mid layers: seen / held-out / random | word gap seen / held-out | sentence gap | retrieval top-1, mean over layers (best) | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, result in record["runs"].items():
        name, seed = key.rsplit("/", 1)
        s = summarize(result)
        lines.append(f"| {name} | {seed} | {s['de_ppl']:.1f} | {s['en_ppl']:.1f} | "
                     f"{s['seen_mid']:.2f} / {s['unseen_mid']:.2f} / {s['random_mid']:.2f} | "
                     f"{s['gap_seen']:+.2f} / {s['gap_unseen']:+.2f} | {s['sentence_gap_mid']:+.3f} | "
                     f"{100 * s['retrieval_top1_mid']:.1f}% ({100 * s['retrieval_top1_best']:.1f}%) | {s['train_s']:.0f} |")
    return "\n".join(lines)


def mean_table(record: dict) -> str:
    groups: Dict[str, List[Dict[str, float]]] = {}
    for key, result in record["runs"].items():
        groups.setdefault(key.rsplit("/", 1)[0], []).append(summarize(result))
    lines = ["| run | seeds | German ppl (mean) | English ppl (mean) | word gap seen / held-out | sentence gap | retrieval top-1 |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        m = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
        lines.append(f"| {name} | {len(rows)} | {m['de_ppl']:.1f} | {m['en_ppl']:.1f} | "
                     f"{m['gap_seen']:+.2f} / {m['gap_unseen']:+.2f} | {m['sentence_gap_mid']:+.3f} | "
                     f"{100 * m['retrieval_top1_mid']:.1f}% |")
    return "\n".join(lines)


def _styles(record: dict) -> Dict[str, dict]:
    """Plot style per run key: one colour per run name, one line style per seed, one legend
    entry per run name (with 20+ runs, a colour per line would repeat)."""
    import matplotlib

    names = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in record["runs"]))
    seeds = list(dict.fromkeys(key.rsplit("/", 1)[1] for key in record["runs"]))
    colours = matplotlib.colormaps["tab20"]
    styles, labelled = {}, set()
    for key in record["runs"]:
        name, seed = key.rsplit("/", 1)
        styles[key] = {"color": colours(names.index(name) % 20),
                       "linestyle": ("-", "--", ":", "-.")[seeds.index(seed) % 4],
                       "label": None if name in labelled else name}
        labelled.add(name)
    return styles


def _finish(figure, axis, path: str, record: dict) -> None:
    seeds = dict.fromkeys(key.rsplit("/", 1)[1] for key in record["runs"])
    title = ", ".join(f"seed {seed}: {('solid', 'dashed', 'dotted', 'dash-dot')[i % 4]}"
                      for i, seed in enumerate(seeds))
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title, title_fontsize=7)
    save_figure(figure, path)


def plot_similarity(record: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.8))
    styles = _styles(record)
    for key, result in record["runs"].items():
        points = result["alignment_over_training"]
        xs = [p["iteration"] for p in points]
        gaps = [_mid(p["seen"]["aligned"]) - _mid(p["seen"]["random"]) for p in points]
        axis.plot(xs, gaps, marker="o", markersize=3, linewidth=1, **styles[key])
    axis.axhline(0, color="k", linewidth=0.5)
    axis.set_xlabel("iteration")
    axis.set_ylabel("aligned - random cosine (mid layers, seen words)")
    axis.set_title("English / German word alignment over training")
    _finish(figure, axis, path, record)


def plot_losses(record: dict, path: str, window: int = 5):
    """LM loss of the training batches, a moving mean over ``window`` logged points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.8))
    styles = _styles(record)
    for key, result in record["runs"].items():
        log_path = result.get("log")
        if not log_path or not os.path.isfile(log_path):
            continue
        with open(log_path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if '"lm_loss"' in line]
        rows = [r for r in rows if r.get("lm_loss") is not None]
        losses = [r["lm_loss"] for r in rows]
        smooth = [statistics.fmean(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
        axis.plot([r["iteration"] for r in rows], smooth, linewidth=0.9, **styles[key])
    axis.set_xlabel("iteration")
    axis.set_ylabel(f"LM loss (training batches, mean of {window} logged points)")
    axis.set_ylim(top=8)
    _finish(figure, axis, path, record)


def write_report(record: dict, output_dir: str, work=None):
    plot_similarity(record, os.path.join(output_dir, "real_alignment_over_training.png"))
    plot_losses(record, os.path.join(output_dir, "real_loss_curves.png"))
    text = table(record) + "\n\n" + mean_table(record)
    with atomic_text_writer(os.path.join(output_dir, "results.md")) as handle:
        handle.write(text + "\n")
    print("\nEnglish -> German in miniature:\n" + text, flush=True)


def merge(directories: List[str]) -> dict:
    """The runs of several ``results.json`` (e.g. two queues of one sweep) in one record."""
    runs = {}
    for directory in directories:
        with open(os.path.join(directory, "results.json"), encoding="utf-8") as handle:
            for key, result in json.load(handle)["runs"].items():
                name, seed = key.rsplit("/", 1)
                result.setdefault("log", os.path.join(directory, "work", f"{name}_{seed}", "log.jsonl"))
                runs[key] = result
    return {"runs": runs, "sources": directories}


def main(argv=None):
    """python -m megatron_prealign.demo.real_report --inputs DIR... --output-dir OUT"""
    import argparse

    parser = argparse.ArgumentParser(description="merge real-language demo results: tables and plots")
    parser.add_argument("--inputs", nargs="+", required=True, help="output directories of demo --only real")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    from megatron_prealign.evaluation.common import write_json

    record = merge(args.inputs)
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "results.json"), record)
    write_report(record, args.output_dir, None)


if __name__ == "__main__":
    main()
