"""The x-LLaMA miniature, part 1: data and the two English-dominant base models.

1. data (``xllama_data``): English with facts about invented people (the demo grammar), two
   target languages (Clonish: relexified English; Tolvish: own vocabulary and word order) as 5%
   fact-free text each, instruction data, translation pairs, target-language QA about held-out
   people; a SentencePiece tokenizer over all of it (prompt template included); the En->target
   alignment table from the generated dictionaries; indexed datasets through the real tools;
2. two bases, same model, same LM batches: Joint Training (English + both target languages)
   and PreAlign (pre-alignment on the En->Clonish/Tolvish table, then pretraining with the
   English input codeswitched into both languages);
3. the bases' perplexity per language.

Instruction tuning of these bases (English-only vs CoIT, the translation-data sweep, the fitted
laws and the allocation) builds on them; see docs/xllama.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Dict, List

from megatron_prealign.demo import data as demo_data
from megatron_prealign.demo import xllama_data
from megatron_prealign.demo.prealign import _evaluate, _run_tool, _write_jsonl, log

TARGETS = ("qaa", "qab")


@dataclasses.dataclass
class XllamaDemoConfig:
    seed: int = 1234
    people: int = 48
    held_out_people: int = 16
    english_docs: int = 1500
    sentences_per_doc: int = 8
    fact_share: float = 0.3
    target_fraction: float = 0.05   # each target language's corpus and mixture weight vs English
    valid_docs: int = 100
    english_instructions: int = 2000
    target_instructions: int = 1000
    translation_pool: int = 3200
    translation_test: int = 100
    vocab_size: int = 700
    num_layers: int = 4
    hidden_size: int = 64
    heads: int = 4
    seq_length: int = 128
    micro_batch_size: int = 8
    global_batch_size: int = 16
    lr: float = 3e-3
    prealign_iters: int = 150
    train_iters: int = 600
    codeswitch_ratio: float = 0.05
    alignment_words_per_batch: int = 64
    eval_tokens: int = 10000

    @classmethod
    def quick(cls) -> "XllamaDemoConfig":
        return cls(people=10, held_out_people=4, english_docs=150, valid_docs=10, english_instructions=100,
                   target_instructions=60, translation_pool=200, translation_test=10, num_layers=2,
                   hidden_size=32, seq_length=64, prealign_iters=4, train_iters=8,
                   alignment_words_per_batch=8, eval_tokens=1000)

    def data_config(self) -> xllama_data.XllamaDataConfig:
        return xllama_data.XllamaDataConfig(
            seed=self.seed, people=self.people, held_out_people=self.held_out_people,
            english_instructions=self.english_instructions, target_instructions=self.target_instructions,
            translation_pool=self.translation_pool, translation_test=self.translation_test,
            target_docs=max(2, round(self.english_docs * self.target_fraction)),
            sentences_per_doc=self.sentences_per_doc)


def _prompt_texts(paths: Dict[str, str], names: Dict[str, str]) -> List[str]:
    """Rendered instruction prompts, so that the tokenizer covers the template's characters."""
    from megatron_prealign.instruct.templates import ALPACA, translation_instruction

    texts = []
    for name in ("instructions_en", *(f"instructions_{t}" for t in TARGETS)):
        with open(paths[name], encoding="utf-8") as handle:
            for line in list(handle)[:50]:
                record = json.loads(line)
                texts.append("".join(ALPACA.render(record["instruction"], record["input"], record["output"])))
    for target in TARGETS:
        with open(paths[f"translation_{target}"], encoding="utf-8") as handle:
            for index, line in enumerate(list(handle)[:50]):
                pair = json.loads(line)
                instruction = translation_instruction("en", target, index, names)
                texts.append("".join(ALPACA.render(instruction, pair["src"], pair["tgt"])))
    return texts


def prepare_data(cfg: XllamaDemoConfig, work: str) -> Dict[str, str]:
    data = os.path.join(work, "data")
    paths = xllama_data.write_corpus(cfg.data_config(), os.path.join(data, "xllama"))
    with open(paths["languages"], encoding="utf-8") as handle:
        names = {code: spec["name"] for code, spec in json.load(handle).items()}
    paths["language_names"] = [f"{code}={name}" for code, name in names.items()]
    rng = random.Random(f"xllama-demo-{cfg.seed}")
    people = demo_data.make_people(cfg.seed, cfg.people)
    languages = xllama_data.make_languages(cfg.seed, reserved=[p["name"] for p in people])
    paths["en_train"] = _write_jsonl(os.path.join(data, "en_train.jsonl"), [
        demo_data.english_document(rng, people, cfg.sentences_per_doc, cfg.fact_share)
        for _ in range(cfg.english_docs)])
    paths["en_valid"] = _write_jsonl(os.path.join(data, "en_valid.jsonl"), [
        demo_data.english_document(rng, people, cfg.sentences_per_doc, cfg.fact_share)
        for _ in range(cfg.valid_docs)])
    for target in TARGETS:
        paths[f"valid_{target}"] = _write_jsonl(os.path.join(data, f"valid_{target}.jsonl"), xllama_data.documents(
            rng, languages[target], cfg.valid_docs, cfg.sentences_per_doc))
    paths["prompts"] = _write_jsonl(os.path.join(data, "prompts.jsonl"), _prompt_texts(paths, names))
    log(f"x-LLaMA data: {cfg.english_docs} English documents ({cfg.people} people, {cfg.held_out_people} "
        f"held out for QA), {cfg.data_config().target_docs} documents per target language "
        f"({', '.join(f'{c} {n}' for c, n in names.items())})")

    tok = os.path.join(data, "spm")
    _run_tool("train_tokenizer", ["--input", paths["en_train"], paths["docs_qaa"], paths["docs_qab"],
                                  paths["prompts"], "--vocab-size", str(cfg.vocab_size), "--model-prefix", tok,
                                  "--no-hard-vocab-limit", "--threads", "1", "--seed", str(cfg.seed),
                                  "--no-progress"])
    paths["spm"] = tok + ".model"
    paths["tokenizer_args"] = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    paths["table"] = os.path.join(data, "table.jsonl")
    _run_tool("build_alignment_table", ["--input", paths["en_train"], "--dictionary",
                                        *(f"{t}={paths[f'dictionary_{t}']}" for t in TARGETS),
                                        "--output", paths["table"], "--min-count", "3", "--no-progress"])
    common = ["--json-keys", "text", *paths["tokenizer_args"], "--append-eod", "--no-progress",
              "--seed", str(cfg.seed)]
    for name, source, extra in (
        ("en", paths["en_train"], ["--codeswitch-mode", "none"]),
        ("en_cs", paths["en_train"], ["--alignment-table", paths["table"], "--codeswitch-languages", *TARGETS,
                                      "--codeswitch-ratio", str(cfg.codeswitch_ratio),
                                      "--codeswitch-mode", "input-only"]),
        ("en_valid", paths["en_valid"], ["--codeswitch-mode", "none"]),
        *((t, paths[f"docs_{t}"], ["--codeswitch-mode", "none"]) for t in TARGETS),
        *((f"{t}_valid", paths[f"valid_{t}"], ["--codeswitch-mode", "none"]) for t in TARGETS),
    ):
        _run_tool("preprocess_data", ["--input", source, "--output-prefix", os.path.join(data, name),
                                      *common, *extra])
        paths[name + "_prefix"] = os.path.join(data, name + "_text_document")
    return paths


def base_argv(cfg: XllamaDemoConfig, paths: Dict[str, str], run_dir: str, prealign: bool) -> List[str]:
    """Pretraining of a base: English-dominant mixture; PreAlign adds pre-alignment on the table
    and the input-only codeswitched English. Both see the same number of LM batches."""
    english = paths["en_cs_prefix"] if prealign else paths["en_prefix"]
    w = cfg.target_fraction
    argv = [
        "--num-layers", str(cfg.num_layers), "--hidden-size", str(cfg.hidden_size),
        "--num-attention-heads", str(cfg.heads), "--seq-length", str(cfg.seq_length),
        "--max-position-embeddings", str(cfg.seq_length), "--hidden-dropout", "0", "--attention-dropout", "0",
        "--micro-batch-size", str(cfg.micro_batch_size), "--global-batch-size", str(cfg.global_batch_size),
        "--lr", str(cfg.lr), "--min-lr", str(cfg.lr / 10), "--lr-warmup-iters", str(max(1, cfg.prealign_iters // 2)),
        "--weight-decay", "0.01", "--seed", str(cfg.seed),
        "--data-path", f"{1 - 2 * w:.4f}", english, *(x for t in TARGETS for x in (f"{w:.4f}", paths[f"{t}_prefix"])),
        "--split", "100,0,0", *paths["tokenizer_args"],
        "--save", os.path.join(run_dir, "ckpt"), "--save-interval", str(cfg.prealign_iters + cfg.train_iters),
        "--log-json", os.path.join(run_dir, "log.jsonl"),
        "--log-interval", str(max(1, min(10, cfg.prealign_iters // 2))),
    ]
    if prealign:
        argv += ["--alignment-table", paths["table"], "--alignment-languages", *TARGETS,
                 "--prealign-iters", str(cfg.prealign_iters), "--train-iters", str(cfg.train_iters),
                 "--alignment-words-per-batch", str(cfg.alignment_words_per_batch)]
    else:
        argv += ["--train-iters", str(cfg.prealign_iters + cfg.train_iters)]
    return argv


def train_bases(cfg: XllamaDemoConfig, paths: Dict[str, str], work: str) -> Dict[str, dict]:
    """Joint and PreAlign bases, with their perplexity per language."""
    from megatron_prealign import platform
    from megatron_prealign.training import arguments, loop

    bases = {}
    for name in ("joint", "prealign"):
        run_dir = os.path.join(work, f"base_{name}")
        os.makedirs(run_dir, exist_ok=True)
        log(f"x-LLaMA base {name}: pretraining")
        loop.run(arguments.parse_args(base_argv(cfg, paths, run_dir, name == "prealign")))
        ppl = _evaluate(["perplexity", "--load", os.path.join(run_dir, "ckpt"),
                         "--output", os.path.join(run_dir, "ppl.json"),
                         "--data-path", f"en={paths['en_valid_prefix']}",
                         *(f"{t}={paths[f'{t}_valid_prefix']}" for t in TARGETS),
                         "--max-tokens", str(cfg.eval_tokens)])
        platform.shutdown()
        bases[name] = {"checkpoint": os.path.join(run_dir, "ckpt"),
                       "perplexity": {lang: ppl["sources"][lang]["perplexity"] for lang in ("en", *TARGETS)}}
    return bases
