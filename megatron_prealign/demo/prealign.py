"""The PreAlign demo: the paper's En-Clone experiment (Table 1) in miniature, on the CPU.

1. data: synthetic English (grammar + facts about invented people, ``demo.data``), a tokenizer,
   an identity dictionary -> English table -> En-Clone table and id mapping, indexed datasets
   (English plain and input-only codeswitched into En-Clone, a small En-Clone corpus cloned from
   fact-free English text), all through the real command-line tools (``megatron_prealign.cli``);
2. two runs, same model, same LM batches and iterations: Joint Training (English + En-Clone mix)
   and PreAlign (pre-alignment on the En-Clone table, then pretraining on the codeswitched mix);
3. evaluation with ``megatron_prealign.evaluation``: English / En-Clone perplexity, CLKA asked in
   En-Clone (facts were taught in English only), per-layer aligned-word similarity at every saved
   checkpoint; a Table-1 shaped table, ``results.json`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import random
import time
from typing import TYPE_CHECKING, Dict, List

from megatron_prealign.data.atomic import save_figure
from megatron_prealign.demo import data as demo_data
from megatron_prealign.demo import fresh_directory

if TYPE_CHECKING:
    from megatron_prealign.training.config import TrainConfig


@dataclasses.dataclass
class DemoConfig:
    seed: int = 1234
    people: int = 48
    english_docs: int = 3000
    sentences_per_doc: int = 8
    fact_share: float = 0.3
    enclone_fraction: float = 0.05   # En-Clone corpus and mixture weight, relative to English
    valid_docs: int = 150
    vocab_size: int = 400
    num_layers: int = 4
    hidden_size: int = 64
    heads: int = 4
    seq_length: int = 64
    micro_batch_size: int = 8
    global_batch_size: int = 16
    prealign_iters: int = 250
    train_iters: int = 1000
    lr: float = 3e-3
    codeswitch_ratio: float = 0.05
    alignment_words_per_batch: int = 64
    held_out_fraction: float = 0.15
    save_interval: int = 200  # (PreAlign also saves at the end of pre-alignment)
    eval_tokens: int = 20000

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A reduced configuration for the test suite (seconds, not minutes)."""
        return cls(people=8, english_docs=200, valid_docs=20, num_layers=2, hidden_size=32,
                   prealign_iters=4, train_iters=12, save_interval=8, eval_tokens=1500,
                   alignment_words_per_batch=8)


def log(message: str):
    print(f"[demo] {message}", flush=True)


def _run_tool(name: str, argv: List[str]):
    """Run the command-line tool NAME (``megatron_prealign.cli.NAME``) in this process."""
    code = importlib.import_module(f"megatron_prealign.cli.{name}").main(argv)
    if code:
        raise SystemExit(f"[demo] tools/{name}.py failed with status {code}")


def _write_jsonl(path: str, texts: List[str]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return path


def alignment_over_training(ckpt: str, run_dir: str, alignment_args: List[str]):
    """Per-layer aligned-word similarity at every complete checkpoint of a run (a save cut short
    is skipped): ([{iteration, seen, unseen}, ...], the last evaluation's full result)."""
    from megatron_prealign.training import checkpointing

    series, result = [], None
    for iteration in checkpointing.complete_iterations(ckpt):
        result = _evaluate(["alignment", "--load", ckpt, "--iteration", str(iteration), *alignment_args,
                            "--output", os.path.join(run_dir, f"alignment_{iteration:05d}.json")])
        series.append({"iteration": iteration, "seen": result["splits"]["seen"],
                       "unseen": result["splits"]["unseen"]})
    return series, result


def prepare_data(cfg: DemoConfig, work: str) -> Dict[str, str]:
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    rng = random.Random(cfg.seed)
    people = demo_data.make_people(cfg.seed, cfg.people)
    n_clone = max(2, int(round(cfg.english_docs * cfg.enclone_fraction)))
    paths = {
        "en_train": _write_jsonl(os.path.join(data, "en_train.jsonl"), [
            demo_data.english_document(rng, people, cfg.sentences_per_doc, cfg.fact_share)
            for _ in range(cfg.english_docs)]),
        "en_valid": _write_jsonl(os.path.join(data, "en_valid.jsonl"), [
            demo_data.english_document(rng, people, cfg.sentences_per_doc, cfg.fact_share)
            for _ in range(cfg.valid_docs)]),
        # En-Clone sources: fact-free English text (facts are taught in English only).
        "clone_train_src": _write_jsonl(os.path.join(data, "clone_train_src.jsonl"), [
            demo_data.grammar_document(rng, cfg.sentences_per_doc) for _ in range(n_clone)]),
        "clone_valid_src": _write_jsonl(os.path.join(data, "clone_valid_src.jsonl"), [
            demo_data.grammar_document(rng, cfg.sentences_per_doc) for _ in range(cfg.valid_docs)]),
    }
    items = demo_data.clka_items(people, cfg.seed)
    paths["clka"] = os.path.join(data, "clka.jsonl")
    with open(paths["clka"], "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in items)
    # Identity dictionary: every word of the language is its own "translation" (En-Clone).
    words = sorted({w.strip(".") for line in open(paths["en_train"], encoding="utf-8")
                    for w in json.loads(line)["text"].split()})
    paths["dictionary"] = os.path.join(data, "identity.txt")
    with open(paths["dictionary"], "w", encoding="utf-8") as handle:
        handle.writelines(f"{w} {w}\n" for w in words if w)

    log(f"data: {cfg.english_docs} English documents ({cfg.people} people, 2 facts each), "
        f"{n_clone} En-Clone documents ({100 * cfg.enclone_fraction:.0f}%), {len(items)} CLKA items")
    tok = os.path.join(data, "spm")
    _run_tool("train_tokenizer", ["--input", paths["en_train"], "--vocab-size", str(cfg.vocab_size),
                                  "--model-prefix", tok, "--no-hard-vocab-limit", "--threads", "1",
                                  "--seed", str(cfg.seed), "--no-progress"])
    paths["spm"] = tok + ".model"
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    paths["table_en"] = os.path.join(data, "table_en.jsonl")
    _run_tool("build_alignment_table", ["--input", paths["en_train"], "--dictionary",
                                        f"xx={paths['dictionary']}", "--output", paths["table_en"],
                                        "--min-count", "3", "--keep-identical", "--no-progress"])
    paths["table"] = os.path.join(data, "table_enclone.jsonl")
    paths["mapping"] = os.path.join(data, "enclone_mapping.json")
    _run_tool("make_enclone", [*tokenizer, "--alignment-table", paths["table_en"], "--output-table",
                               paths["table"], "--mapping-output", paths["mapping"], "--no-progress"])
    common = ["--json-keys", "text", *tokenizer, "--append-eod", "--no-progress", "--seed", str(cfg.seed)]
    for name, source, extra in (
        ("en", paths["en_train"], ["--codeswitch-mode", "none"]),
        ("en_cs", paths["en_train"], ["--alignment-table", paths["table"], "--codeswitch-languages",
                                      "enclone", "--codeswitch-ratio", str(cfg.codeswitch_ratio),
                                      "--codeswitch-mode", "input-only"]),
        ("en_valid", paths["en_valid"], ["--codeswitch-mode", "none"]),
        ("clone_train_src", paths["clone_train_src"], ["--codeswitch-mode", "none"]),
        ("clone_valid_src", paths["clone_valid_src"], ["--codeswitch-mode", "none"]),
    ):
        _run_tool("preprocess_data", ["--input", source, "--output-prefix", os.path.join(data, name),
                                      *common, *extra])
        paths[name + "_prefix"] = os.path.join(data, name + "_text_document")
    for name in ("clone_train", "clone_valid"):
        paths[name + "_prefix"] = os.path.join(data, name.replace("clone", "enclone") + "_text_document")
        _run_tool("make_enclone", [*tokenizer, "--input-prefix", paths[name + "_src_prefix"],
                                   "--output-prefix", paths[name + "_prefix"], "--no-progress"])
    return paths


def train_config(cfg: DemoConfig, paths: Dict[str, str], run_dir: str, prealign: bool) -> "TrainConfig":
    from megatron_prealign.training import arguments

    english = paths["en_cs_prefix"] if prealign else paths["en_prefix"]
    w = cfg.enclone_fraction
    settings = dict(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, num_attention_heads=cfg.heads,
        seq_length=cfg.seq_length, max_position_embeddings=cfg.seq_length,
        hidden_dropout=0.0, attention_dropout=0.0,
        micro_batch_size=cfg.micro_batch_size, global_batch_size=cfg.global_batch_size,
        lr=cfg.lr, min_lr=cfg.lr / 10, lr_warmup_iters=max(1, cfg.prealign_iters // 2),
        weight_decay=0.01, seed=cfg.seed,
        data_path=[f"{1 - w:.4f}", english, f"{w:.4f}", paths["clone_train_prefix"]],
        split="100,0,0", tokenizer_type="SentencePieceTokenizer",
        tokenizer_model=paths["spm"], enclone_mapping=paths["mapping"],
        save=os.path.join(run_dir, "ckpt"), save_interval=cfg.save_interval,
        log_json=os.path.join(run_dir, "log.jsonl"),
        log_interval=max(1, min(10, cfg.prealign_iters // 2)),
    )
    if prealign:
        settings.update(alignment_table=paths["table"], alignment_languages=["enclone"],
                        prealign_iters=cfg.prealign_iters, train_iters=cfg.train_iters,
                        alignment_words_per_batch=cfg.alignment_words_per_batch,
                        alignment_held_out_fraction=cfg.held_out_fraction)
    else:
        # Same number of LM batches: PreAlign's pre-alignment steps also train the LM (Eq. 4).
        settings.update(train_iters=cfg.prealign_iters + cfg.train_iters)
    return arguments.config(**settings)


def _evaluate(argv: List[str]) -> dict:
    from megatron_prealign.cli import evaluate as cli

    return cli.run(cli.build_parser().parse_args(argv))


def evaluate_run(cfg: DemoConfig, paths: Dict[str, str], run_dir: str, name: str, out: str) -> dict:
    ckpt = os.path.join(run_dir, "ckpt")
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    ppl = _evaluate(["perplexity", "--load", ckpt, "--output", os.path.join(run_dir, "ppl.json"),
                     "--data-path", f"en={paths['en_valid_prefix']}", f"enclone={paths['clone_valid_prefix']}",
                     "--max-tokens", str(cfg.eval_tokens)])
    clka = {}
    for language, extra in (("enclone", ["--enclone-mapping", paths["mapping"]]), ("en", [])):
        clka[language] = _evaluate(["clka", "--load", ckpt, *tokenizer, "--input", paths["clka"],
                                    "--output", os.path.join(run_dir, f"clka_{language}.json"), *extra])
    over_training, result = alignment_over_training(
        ckpt, run_dir, [*tokenizer, "--alignment-table", paths["table"], "--alignment-languages", "enclone",
                        "--alignment-held-out-fraction", str(cfg.held_out_fraction),
                        "--words-per-batch", str(cfg.alignment_words_per_batch)])
    from megatron_prealign.evaluation.alignment_similarity import plot_alignment

    plot_alignment(result, os.path.join(out, f"alignment_final_{name}.png"),
                   f"{name}: En / En-Clone word similarity per layer, end of training")
    return {
        "en_ppl": ppl["sources"]["en"]["perplexity"],
        "enclone_ppl": ppl["sources"]["enclone"]["perplexity"],
        "clka_enclone": clka["enclone"]["accuracy"],
        "clka_enclone_ci95": clka["enclone"]["ci95"],
        "clka_en": clka["en"]["accuracy"],
        "clka_en_ci95": clka["en"]["ci95"],
        "clka_items": clka["enclone"]["items"],
        "clka_chance": clka["enclone"]["chance"],
        # per item, for the paired comparison of the runs on the same questions
        "clka_enclone_correct": [item["correct"] for item in clka["enclone"]["per_item"]],
        "alignment_final": over_training[-1] if over_training else None,
        "alignment_over_training": over_training,
        "states": result["states"],
    }


def plot_losses(runs: Dict[str, str], path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, run_dir in runs.items():
        records = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl")) if '"stage"' in line]
        xs = [r["iteration"] for r in records if r.get("lm_loss") is not None]
        axis.plot(xs, [r["lm_loss"] for r in records if r.get("lm_loss") is not None], label=f"{name}: LM loss")
        aligned = [r for r in records if r.get("alignment_loss") is not None]
        if aligned:
            axis.plot([r["iteration"] for r in aligned], [r["alignment_loss"] / 10 for r in aligned], "o--",
                      label=f"{name}: alignment loss / 10")
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    axis.set_title("training losses (same number of LM batches)")
    axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_similarity_over_training(results: Dict[str, dict], path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), sharey=True)
    for axis, name in zip(axes if len(names) > 1 else [axes], names):
        points = results[name]["alignment_over_training"]
        states = results[name]["states"]
        xs = [p["iteration"] for p in points]
        for index, state in enumerate(states):
            axis.plot(xs, [p["seen"]["aligned"][index] for p in points], "-o", markersize=3, label=state)
        axis.plot(xs, [sum(p["seen"]["random"]) / len(p["seen"]["random"]) for p in points], "k--",
                  label="random pairs (mean over layers)")
        axis.set_title(f"{name}: aligned En / En-Clone word similarity")
        axis.set_xlabel("iteration")
    (axes[0] if len(names) > 1 else axes).set_ylabel("cosine similarity")
    (axes[-1] if len(names) > 1 else axes).legend(fontsize=7)
    save_figure(figure, path)


def paired_items(first: List[bool], second: List[bool]) -> dict:
    """Two runs on the same items: the items only one of them gets right, and the two-sided exact
    sign test on those (McNemar's exact test), from megatron_prealign.stats."""
    from megatron_prealign import stats

    test = stats.paired_sign_test([float(x) for x in first], [float(x) for x in second])
    return {"first_only": test.wins, "second_only": test.losses, "both_or_neither": test.ties,
            "sign_p": test.p_value}


def table(results: Dict[str, dict]) -> str:
    lines = ["| run | En ppl | En-Clone ppl | En-Clone CLKA (95% CI) | En CLKA |",
             "|---|---|---|---|---|"]
    labels = {"joint": "Joint Training", "prealign": "PreAlign"}
    for name, r in results.items():
        low, high = r["clka_enclone_ci95"]
        lines.append(f"| {labels.get(name, name)} | {r['en_ppl']:.2f} | {r['enclone_ppl']:.2f} | "
                     f"{100 * r['clka_enclone']:.1f}% ({100 * low:.1f}-{100 * high:.1f}) | "
                     f"{100 * r['clka_en']:.1f}% |")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig, output_dir: str) -> dict:
    from megatron_prealign.evaluation.common import write_json
    from megatron_prealign.training import loop

    start = time.time()
    work = fresh_directory(os.path.join(output_dir, "work"))
    paths = prepare_data(cfg, work)
    log(f"data ready ({time.time() - start:.0f} s)")
    runs = {"joint": os.path.join(work, "joint"), "prealign": os.path.join(work, "prealign")}
    results, timings = {}, {}
    for name, run_dir in runs.items():
        os.makedirs(run_dir)
        t0 = time.time()
        log(f"training {name} ({'pre-alignment %d + ' % cfg.prealign_iters if name == 'prealign' else ''}"
            f"{cfg.train_iters + (0 if name == 'prealign' else cfg.prealign_iters)} pretraining iterations)")
        loop.run(train_config(cfg, paths, run_dir, name == "prealign"))
        timings[f"train_{name}_s"] = time.time() - t0
        t0 = time.time()
        log(f"evaluating {name}")
        results[name] = evaluate_run(cfg, paths, run_dir, name, output_dir)
        timings[f"evaluate_{name}_s"] = time.time() - t0
        from megatron_prealign import runtime

        runtime.shutdown()
    plot_losses(runs, os.path.join(output_dir, "loss_curves.png"))
    plot_similarity_over_training(results, os.path.join(output_dir, "alignment_over_training.png"))
    record = {
        "runs": results,
        "config": dataclasses.asdict(cfg),
        "margins": {
            "enclone_ppl_joint_minus_prealign": results["joint"]["enclone_ppl"] - results["prealign"]["enclone_ppl"],
            "clka_enclone_prealign_minus_joint": results["prealign"]["clka_enclone"] - results["joint"]["clka_enclone"],
            "clka_enclone_paired": paired_items(results["prealign"]["clka_enclone_correct"],
                                                results["joint"]["clka_enclone_correct"]),
        },
        "timings_s": {**timings, "total_s": time.time() - start},
        "plots": ["loss_curves.png", "alignment_over_training.png", "alignment_final_joint.png",
                  "alignment_final_prealign.png"],
    }
    write_json(os.path.join(output_dir, "results.json"), record)
    print("\nEn-Clone in miniature (the paper's Table 1 shape):\n" + table(results), flush=True)
    m = record["margins"]
    paired = m["clka_enclone_paired"]
    log(f"margins: En-Clone ppl Joint - PreAlign = {m['enclone_ppl_joint_minus_prealign']:+.2f}; "
        f"En-Clone CLKA PreAlign - Joint = {100 * m['clka_enclone_prealign_minus_joint']:+.1f} points "
        f"(chance {100 * results['joint']['clka_chance']:.0f}%; items right for PreAlign only / Joint only: "
        f"{paired['first_only']} / {paired['second_only']}, exact sign test p = {paired['sign_p']:.2g})")
    log(f"results -> {os.path.join(output_dir, 'results.json')} ({record['timings_s']['total_s']:.0f} s)")
    return record
