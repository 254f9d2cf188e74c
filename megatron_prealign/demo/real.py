"""The real-language part of the demo: English -> German PreAlign in miniature, on the CPU.

Real text that a Debian machine installs without the internet (man pages, the Debian Reference,
German fortunes; ``tools/extract_debian_text.py``) and the Ding dictionary (``trans-de-en``) go
through the project's tools: a SentencePiece tokenizer on both languages, alignment tables built
from Ding (content words, translations filtered and ordered by the German corpus), indexed
datasets (English plain and input-only codeswitched into German, German). Then Joint Training
(95% English + 5% German) and PreAlign variants train the same small GPT on the same number of
LM batches, and the evaluation measures German / English perplexity, aligned-word similarity
over training (with the random-pair baseline) and sentence retrieval on held-out parallel text.

    python -m megatron_prealign.demo --only real [--quick] [--runs joint prealign ...] [--seeds 1234 1]

Runs (``VARIANTS``) differ from ``prealign`` in one thing each (the ablations); every run sees
``prealign_iters + train_iters`` LM batches. Results: ``OUTPUT/results.json`` and PNG plots;
``docs/real_languages.md`` has the measured table and its reading.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from megatron_prealign.demo import fresh_directory
from megatron_prealign.demo.prealign import _evaluate, _run_tool, alignment_over_training, log

if TYPE_CHECKING:
    from megatron_prealign.training.config import TrainConfig

# One change each from "prealign" (the regime chosen in docs/real_languages.md).
VARIANTS: Dict[str, dict] = {
    "joint": {"prealign_share": 0.0, "codeswitch": False},
    "prealign": {},
    "prealign_2pct": {"prealign_share": 0.02},
    "prealign_20pct": {"prealign_share": 0.20},
    "prealign_w1": {"alignment_loss_weight": 1.0},
    "prealign_w1_20pct_raw": {"alignment_loss_weight": 1.0, "prealign_share": 0.20, "table": "raw"},
    "codeswitch_only": {"prealign_share": 0.0},
    "prealign_no_codeswitch": {"codeswitch": False},
    "prealign_top25": {"table": "top25"},
    "prealign_raw_table": {"table": "raw"},
    "prealign_3_translations": {"table": "multi"},
    "prealign_words8": {"alignment_words_per_batch": 8},
    "prealign_words128": {"alignment_words_per_batch": 128},
    # the two variants that cost least, together; and codeswitching alone with 3 translations
    "prealign_3_translations_words128": {"table": "multi", "alignment_words_per_batch": 128},
    "codeswitch_only_3_translations": {"prealign_share": 0.0, "table": "multi"},
    # strong alignment on few words: the top-25% table, weight 1, 20% of the steps
    "prealign_top25_w1_20pct": {"table": "top25", "alignment_loss_weight": 1.0, "prealign_share": 0.20},
}


# What `make demo-real` runs: Joint Training, the reference PreAlign regime, and the regime the
# selection study of docs/real_languages.md chose (its German gain did not survive tuned baselines
# on fresh seeds: demo/real_confirm.py).
DEMO_RUNS = ("joint", "prealign", "prealign_3_translations_words128")


@dataclasses.dataclass
class RealConfig:
    seed: int = 1234
    english_docs: int = 8000
    german_weight: float = 0.05       # mixture weight of the German corpus
    max_chars: int = 4000
    # Sized for 2 CPU cores shared with other work (about 2 minutes of training per run there).
    vocab_size: int = 1000
    num_layers: int = 4
    hidden_size: int = 64
    heads: int = 4
    seq_length: int = 64
    micro_batch_size: int = 8
    global_batch_size: int = 8
    total_iters: int = 600            # LM batches of every run
    prealign_share: float = 0.05      # of total_iters spent in pre-alignment
    alignment_loss_weight: float = 0.1
    alignment_words_per_batch: int = 32
    codeswitch: bool = True
    codeswitch_ratio: float = 0.05
    table: str = "filtered"           # filtered | top25 | raw | multi (see TABLES)
    lr: float = 3e-3
    warmup_share: float = 0.05        # of total_iters spent in the linear learning-rate warm-up
    held_out_fraction: float = 0.15
    save_interval: int = 150
    eval_tokens: int = 6000
    retrieval_pairs: int = 150
    max_man_pages: Optional[int] = None   # read a sample of the man pages (quick runs)

    @classmethod
    def quick(cls) -> "RealConfig":
        return cls(english_docs=150, max_chars=1500, vocab_size=600, num_layers=2, hidden_size=32,
                   seq_length=64, total_iters=20, prealign_share=0.2, save_interval=10,
                   eval_tokens=1500, retrieval_pairs=40, alignment_words_per_batch=16,
                   max_man_pages=120)

    @property
    def prealign_iters(self) -> int:
        return int(round(self.total_iters * self.prealign_share))


# build_alignment_table.py flags per table kind (all from Ding, English words with count >= 20).
TABLES = {
    # the table: file order, stop words in, several translations
    "raw": ["--max-translations", "3"],
    # content words; translations that occur in the German corpus, most frequent first; one each
    "filtered": ["--exclude-stopwords", "--target-corpus", "de={de_train}", "--min-target-count", "3",
                 "--max-translations", "1"],
    "top25": ["--exclude-stopwords", "--target-corpus", "de={de_train}", "--min-target-count", "3",
              "--max-translations", "1", "--top-fraction", "0.25"],
    "multi": ["--exclude-stopwords", "--target-corpus", "de={de_train}", "--min-target-count", "3",
              "--max-translations", "3"],
}


def variant_config(base: RealConfig, name: str, seed: int) -> RealConfig:
    if name not in VARIANTS:
        raise SystemExit(f"[demo] unknown run {name!r}; choose from {', '.join(VARIANTS)}")
    return dataclasses.replace(base, seed=seed, **VARIANTS[name])


def extract_text(cfg: RealConfig, text_dir: str) -> Dict[str, str]:
    names = ["en_train", "en_valid", "de_train", "de_valid", "parallel", "dictionary"]
    files = {n: os.path.join(text_dir, f"{n}.jsonl") for n in names[:-1]}
    files["dictionary"] = os.path.join(text_dir, "dictionary_ding.txt")
    if not all(os.path.isfile(p) for p in files.values()):
        _run_tool("extract_debian_text", ["--output-dir", text_dir, "--seed", "1234",
                                          "--max-docs", f"en={cfg.english_docs}",
                                          "--max-chars", str(cfg.max_chars), "--no-progress",
                                          *([] if cfg.max_man_pages is None else
                                            ["--max-man-pages", str(cfg.max_man_pages)])])
    return files


def prepare_data(cfg: RealConfig, work: str, text: Dict[str, str], tables: List[str],
                 codeswitch: bool) -> Dict[str, str]:
    """Tokenizer, tables and indexed datasets under ``work/data`` (made once, reused by runs)."""
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    paths = dict(text)
    paths["spm"] = os.path.join(data, "spm.model")
    if not os.path.isfile(paths["spm"]):
        _run_tool("train_tokenizer", ["--input", text["en_train"], text["de_train"], "--weights", "0.7", "0.3",
                                      "--vocab-size", str(cfg.vocab_size), "--model-prefix", paths["spm"][:-6],
                                      "--no-hard-vocab-limit", "--threads", "1", "--seed", "1234",
                                      "--max-sentences", "200000", "--no-progress"])
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    for kind in dict.fromkeys(["filtered", *tables]):
        paths[f"table_{kind}"] = os.path.join(data, f"table_{kind}.jsonl")
        if not os.path.isfile(paths[f"table_{kind}"]):
            flags = [f.format(de_train=text["de_train"]) for f in TABLES[kind]]
            _run_tool("build_alignment_table", ["--input", text["en_train"], "--dictionary",
                                                f"de={text['dictionary']}", "--output",
                                                paths[f"table_{kind}"], "--min-count", "20" if cfg.english_docs > 1000 else "3",
                                                *flags, "--no-progress"])
    common = ["--json-keys", "text", *tokenizer, "--append-eod", "--no-progress", "--seed", "1234"]
    jobs = [("en", text["en_train"], ["--codeswitch-mode", "none"]),
            ("en_valid", text["en_valid"], ["--codeswitch-mode", "none"]),
            ("de", text["de_train"], ["--codeswitch-mode", "none"]),
            ("de_valid", text["de_valid"], ["--codeswitch-mode", "none"])]
    if codeswitch:
        for kind in tables:
            jobs.append((f"en_cs_{kind}", text["en_train"], [
                "--alignment-table", paths[f"table_{kind}"], "--codeswitch-languages", "de",
                "--codeswitch-ratio", str(cfg.codeswitch_ratio), "--codeswitch-mode", "input-only"]))
    for name, source, extra in jobs:
        prefix = os.path.join(data, name)
        paths[name + "_prefix"] = prefix + "_text_document"
        if not os.path.isfile(paths[name + "_prefix"] + ".idx"):
            _run_tool("preprocess_data", ["--input", source, "--output-prefix", prefix, *common, *extra])
    return paths


def train_config(cfg: RealConfig, paths: Dict[str, str], run_dir: str) -> "TrainConfig":
    from megatron_prealign.training import arguments

    english = paths[f"en_cs_{cfg.table}_prefix"] if cfg.codeswitch else paths["en_prefix"]
    w = cfg.german_weight
    pre = cfg.prealign_iters
    settings = dict(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, num_attention_heads=cfg.heads,
        seq_length=cfg.seq_length, max_position_embeddings=cfg.seq_length,
        hidden_dropout=0.0, attention_dropout=0.0,
        micro_batch_size=cfg.micro_batch_size, global_batch_size=cfg.global_batch_size,
        lr=cfg.lr, min_lr=cfg.lr / 10,
        # floor, as total_iters // 20 was (the epsilon absorbs 0.05's binary rounding)
        lr_warmup_iters=max(1, int(cfg.total_iters * cfg.warmup_share + 1e-9)),
        weight_decay=0.01, seed=cfg.seed,
        data_path=[f"{1 - w:.4f}", english, f"{w:.4f}", paths["de_prefix"]],
        split="100,0,0", tokenizer_type="SentencePieceTokenizer", tokenizer_model=paths["spm"],
        save=os.path.join(run_dir, "ckpt"), save_interval=cfg.save_interval,
        log_json=os.path.join(run_dir, "log.jsonl"), log_interval=min(10, max(1, cfg.total_iters // 4)),
        train_iters=cfg.total_iters - pre,
    )
    if pre:
        settings.update(alignment_table=paths[f"table_{cfg.table}"], alignment_languages=["de"],
                        prealign_iters=pre, alignment_loss_weight=cfg.alignment_loss_weight,
                        alignment_words_per_batch=cfg.alignment_words_per_batch,
                        alignment_held_out_fraction=cfg.held_out_fraction)
    return arguments.config(**settings)


def read_parallel(path: str, limit: int, seed: int = 1234):
    """``limit`` (English, German) pairs of ``parallel.jsonl``, a seeded sample."""
    import random

    with open(path, encoding="utf-8") as handle:
        pairs = [(r["en"], r["de"]) for r in map(json.loads, handle)]
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def evaluate_retrieval(cfg: RealConfig, paths: Dict[str, str], ckpt: str) -> dict:
    """Sentence retrieval English -> German on held-out parallel sentences (Ding's examples)
    with the final checkpoint, through ``evaluation.representation``."""
    from megatron_prealign import runtime
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.evaluation.common import TextToIds
    from megatron_prealign.generation.model_loading import load_model
    from megatron_prealign.evaluation.representation import evaluate_representation

    model = load_model(ckpt)
    try:
        to_ids = TextToIds(build_tokenizer("SentencePieceTokenizer", paths["spm"]), model.vocab_size)
        pairs = read_parallel(paths["parallel"], cfg.retrieval_pairs)
        result = evaluate_representation(model, to_ids, [en for en, _ in pairs], [de for _, de in pairs])
    finally:
        runtime.shutdown()
    result["chance"] = 1.0 / result["pairs"]
    return result


def evaluate_run(cfg: RealConfig, paths: Dict[str, str], run_dir: str) -> dict:
    ckpt = os.path.join(run_dir, "ckpt")
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    ppl = _evaluate(["perplexity", "--load", ckpt, "--output", os.path.join(run_dir, "ppl.json"),
                     "--data-path", f"en={paths['en_valid_prefix']}", f"de={paths['de_valid_prefix']}",
                     "--max-tokens", str(cfg.eval_tokens)])
    # Every run is measured on the same (filtered) table; seen/held-out as in pre-alignment.
    over_training, result = alignment_over_training(
        ckpt, run_dir, [*tokenizer, "--alignment-table", paths["table_filtered"], "--alignment-languages", "de",
                        "--alignment-held-out-fraction", str(cfg.held_out_fraction),
                        "--words-per-batch", str(cfg.alignment_words_per_batch)])
    retrieval = evaluate_retrieval(cfg, paths, ckpt)
    return {
        "en_ppl": ppl["sources"]["en"]["perplexity"],
        "de_ppl": ppl["sources"]["de"]["perplexity"],
        "alignment_over_training": over_training,
        "alignment_final": over_training[-1] if over_training else None,
        "states": result["states"],
        "retrieval": retrieval,
    }


def train(cfg: RealConfig, name: str, paths: Dict[str, str], run_dir: str) -> float:
    """Train run NAME into ``run_dir`` (made afresh); returns the seconds it took."""
    from megatron_prealign import runtime
    from megatron_prealign.training import loop

    fresh_directory(run_dir)
    t0 = time.time()
    log(f"training {name} seed {cfg.seed}: {cfg.prealign_iters} pre-alignment + "
        f"{cfg.total_iters - cfg.prealign_iters} iterations (table {cfg.table}, "
        f"codeswitch {'on' if cfg.codeswitch else 'off'}, alignment weight {cfg.alignment_loss_weight}, "
        f"lr {cfg.lr:g}, warm-up {cfg.warmup_share:g})")
    loop.run(train_config(cfg, paths, run_dir))
    runtime.shutdown()
    return time.time() - t0


def run_one(cfg: RealConfig, name: str, paths: Dict[str, str], run_dir: str) -> dict:
    train_s = train(cfg, name, paths, run_dir)
    t0 = time.time()
    result = evaluate_run(cfg, paths, run_dir)
    result.update(config=dataclasses.asdict(cfg), train_s=train_s, evaluate_s=time.time() - t0,
                  log=os.path.join(run_dir, "log.jsonl"))
    from megatron_prealign.evaluation.common import write_json

    write_json(os.path.join(run_dir, "result.json"), result)
    log(f"{name} seed {cfg.seed}: de ppl {result['de_ppl']:.1f}, en ppl {result['en_ppl']:.1f} "
        f"({train_s:.0f} s training, {result['evaluate_s']:.0f} s evaluation)")
    return result


def prepare_work(base: RealConfig, output_dir: str, configs: List[RealConfig],
                 text_dir: Optional[str] = None):
    """``(work, text files, data paths)`` under ``output_dir/work`` for the runs ``configs``:
    the packages checked, the text extracted and the data built (each reused when present)."""
    from megatron_prealign.data.debian_text import MissingPackagesError, check_installed

    try:
        check_installed()
    except MissingPackagesError as error:
        raise SystemExit(f"[demo] the real-language runs need Debian packages: {error}")
    work = os.path.join(output_dir, "work")
    os.makedirs(work, exist_ok=True)
    text = extract_text(base, text_dir or os.path.join(work, "text"))
    paths = prepare_data(base, work, text, sorted({c.table for c in configs}), any(c.codeswitch for c in configs))
    return work, text, paths


def run_real(base: RealConfig, output_dir: str, runs: List[str], seeds: List[int],
             text_dir: Optional[str] = None) -> dict:
    from megatron_prealign.evaluation.common import write_json

    start = time.time()
    configs = {(name, seed): variant_config(base, name, seed) for name in runs for seed in seeds}
    work, _, paths = prepare_work(base, output_dir, list(configs.values()), text_dir)
    log(f"data ready ({time.time() - start:.0f} s)")
    # Runs of earlier invocations with the same output directory are kept (ablations added later).
    results_path = os.path.join(output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        results = previous["runs"]  # each run records its own configuration
    for (name, seed), cfg in configs.items():
        results[f"{name}/{seed}"] = run_one(cfg, name, paths, os.path.join(work, f"{name}_{seed}"))
        record = {"runs": results, "base_config": dataclasses.asdict(base)}
        write_json(results_path, record)
    log(f"done ({time.time() - start:.0f} s)")
    from megatron_prealign.demo import real_report

    real_report.write_report(record, output_dir, work)
    return record
