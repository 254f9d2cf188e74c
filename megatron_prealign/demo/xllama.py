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
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from megatron_prealign.demo import data as demo_data
from megatron_prealign.demo import fresh_directory, xllama_data
from megatron_prealign.demo.prealign import _evaluate, _run_tool, _write_jsonl, log

if TYPE_CHECKING:
    from megatron_prealign.training.config import TrainConfig

TARGETS = ("qaa", "qab")
LAW_SCORE = "chrf"  # the score the scaling law is fitted to
# A compact prompt (tools/build_instruction_data.py --template): the Alpaca preamble alone would be
# ~70 tokens of a 700-token vocabulary, more than the miniature's whole sequence.
COMPACT_TEMPLATE = {"prompt_input": "{instruction}\n{input}\n=>", "prompt_no_input": "{instruction}\n=>",
                    "response_suffix": ""}


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
    seq_length: int = 128  # a translation prompt is ~47 tokens, its response up to ~30
    micro_batch_size: int = 8
    global_batch_size: int = 16
    lr: float = 3e-3
    prealign_iters: int = 150
    train_iters: int = 600
    codeswitch_ratio: float = 0.05
    alignment_words_per_batch: int = 64
    eval_tokens: int = 10000
    # instruction tuning (the same steps for every run: more pairs = more diverse data, same compute)
    finetune_iters: int = 150
    finetune_lr: float = 1e-3
    sweep_sizes: Tuple[int, ...] = (100, 300, 900, 2700)   # translation pairs; CoIT uses the largest
    budget: int = 1800                                      # translation pairs over both languages
    max_new_tokens: int = 40
    # The full configuration's redesign (the defaults keep the default run as it was):
    attribute_values: Optional[int] = None  # cities / professions people draw from (None: all 12)
    bases: Tuple[str, ...] = ("joint", "prealign")  # "codeswitch": codeswitched English, no pre-alignment
    sweep_qa: bool = True          # False: sweep and MuIT runs are scored on translation only
    noise_repeats: int = 0         # extra fine-tuning seeds of both MuIT splits (the noise of a run)
    qa_max_new_tokens: Optional[int] = None  # QA answers are one sentence (None: max_new_tokens)
    short_answers: bool = False    # fact questions answered by the word alone (xllama_data._fact_answer)

    @classmethod
    def quick(cls) -> "XllamaDemoConfig":
        return cls(people=10, held_out_people=4, english_docs=150, valid_docs=10, english_instructions=100,
                   target_instructions=60, translation_pool=200, translation_test=10, num_layers=2,
                   hidden_size=32, seq_length=64, prealign_iters=4, train_iters=8,
                   alignment_words_per_batch=8, eval_tokens=1000, finetune_iters=6,
                   sweep_sizes=(20, 60, 160), budget=120, max_new_tokens=12,
                   # the full configuration's paths too: three bases, per-item QA, noise repeats
                   attribute_values=4, bases=("joint", "codeswitch", "prealign"), sweep_qa=False,
                   noise_repeats=1, qa_max_new_tokens=6, short_answers=True)

    @classmethod
    def full(cls) -> "XllamaDemoConfig":
        """QA that can show an effect: 110 held-out people (220 items per cell), 4 attribute values
        (chance 1/4), facts in 70% of the English sentences, answers of one word, 90 training
        people for the fact questions of instruction tuning; 2000 LM batches per base and gentler,
        longer instruction tuning (lr 3e-4, 160 steps: tuned at 1e-3, the model answers far fewer
        of the facts its base completes; docs/xllama.md, "The base's knowledge"); a
        codeswitching-only base; a 6-point sweep per language; both MuIT splits fine-tuned with 3
        seeds (the noise the allocation is compared with). Sized to run in ~30 min per seed on one
        thread of a lightly loaded machine."""
        return cls(people=200, held_out_people=110, attribute_values=4, english_docs=3000, fact_share=0.7,
                   bases=("joint", "codeswitch", "prealign"), train_iters=1850, finetune_iters=160,
                   finetune_lr=3e-4,
                   sweep_sizes=(100, 200, 400, 800, 1600, 3200), budget=1600,
                   translation_pool=3200, translation_test=60, sweep_qa=False, noise_repeats=2,
                   qa_max_new_tokens=8, short_answers=True, max_new_tokens=32)

    def data_config(self) -> xllama_data.XllamaDataConfig:
        return xllama_data.XllamaDataConfig(
            seed=self.seed, people=self.people, held_out_people=self.held_out_people,
            english_instructions=self.english_instructions, target_instructions=self.target_instructions,
            translation_pool=self.translation_pool, translation_test=self.translation_test,
            target_docs=max(2, round(self.english_docs * self.target_fraction)),
            sentences_per_doc=self.sentences_per_doc, attribute_values=self.attribute_values,
            short_answers=self.short_answers)


def _prompt_texts(paths: Dict[str, str], names: Dict[str, str]) -> List[str]:
    """Rendered instruction prompts, so that the tokenizer covers the template's characters."""
    from megatron_prealign.generation.prompts import load_template
    from megatron_prealign.instruct.templates import translation_instruction

    template, texts = load_template(paths["template"]), []
    for name in ("instructions_en", *(f"instructions_{t}" for t in TARGETS)):
        with open(paths[name], encoding="utf-8") as handle:
            for line in list(handle)[:50]:
                record = json.loads(line)
                texts.append("".join(template.render(record["instruction"], record["input"], record["output"])))
    for target in TARGETS:
        with open(paths[f"translation_{target}"], encoding="utf-8") as handle:
            for index, line in enumerate(list(handle)[:50]):
                pair = json.loads(line)
                instruction = translation_instruction("en", target, index, names)
                texts.append("".join(template.render(instruction, pair["src"], pair["tgt"])))
    return texts


def prepare_data(cfg: XllamaDemoConfig, work: str) -> Dict[str, str]:
    data = os.path.join(work, "data")
    paths = xllama_data.write_corpus(cfg.data_config(), os.path.join(data, "xllama"))
    with open(paths["languages"], encoding="utf-8") as handle:
        names = {code: spec["name"] for code, spec in json.load(handle).items()}
    paths["language_names"] = [f"{code}={name}" for code, name in names.items()]
    paths["template"] = os.path.join(data, "template.json")
    os.makedirs(data, exist_ok=True)
    with open(paths["template"], "w", encoding="utf-8") as handle:
        json.dump(COMPACT_TEMPLATE, handle)
    rng = random.Random(f"xllama-demo-{cfg.seed}")
    people = xllama_data.make_people(cfg.seed, cfg.people, cfg.attribute_values)
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


def _model_settings(cfg: XllamaDemoConfig, paths: Dict[str, str]) -> dict:
    """The settings bases and fine-tuning share: model, batches, tokenizer."""
    return dict(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, num_attention_heads=cfg.heads,
        seq_length=cfg.seq_length, max_position_embeddings=cfg.seq_length,
        hidden_dropout=0.0, attention_dropout=0.0,
        micro_batch_size=cfg.micro_batch_size, global_batch_size=cfg.global_batch_size,
        tokenizer_type="SentencePieceTokenizer", tokenizer_model=paths["spm"],  # paths["tokenizer_args"]
    )


def base_config(cfg: XllamaDemoConfig, paths: Dict[str, str], run_dir: str, prealign: bool,
                codeswitch: Optional[bool] = None) -> "TrainConfig":
    """Pretraining of a base: English-dominant mixture; PreAlign adds pre-alignment on the table
    and the input-only codeswitched English (``codeswitch`` alone: the codeswitching-only base,
    which separates the two). All see the same number of LM batches."""
    from megatron_prealign.training import arguments

    codeswitch = prealign if codeswitch is None else codeswitch
    english = paths["en_cs_prefix"] if codeswitch else paths["en_prefix"]
    w = cfg.target_fraction
    settings = dict(
        _model_settings(cfg, paths),
        lr=cfg.lr, min_lr=cfg.lr / 10, lr_warmup_iters=max(1, cfg.prealign_iters // 2),
        weight_decay=0.01, seed=cfg.seed,
        data_path=[f"{1 - 2 * w:.4f}", english, *(x for t in TARGETS for x in (f"{w:.4f}", paths[f"{t}_prefix"]))],
        split="100,0,0",
        save=os.path.join(run_dir, "ckpt"), save_interval=cfg.prealign_iters + cfg.train_iters,
        log_json=os.path.join(run_dir, "log.jsonl"),
        log_interval=max(1, min(10, cfg.prealign_iters // 2)),
    )
    if prealign:
        settings.update(alignment_table=paths["table"], alignment_languages=list(TARGETS),
                        prealign_iters=cfg.prealign_iters, train_iters=cfg.train_iters,
                        alignment_words_per_batch=cfg.alignment_words_per_batch)
    else:
        settings.update(train_iters=cfg.prealign_iters + cfg.train_iters)
    return arguments.config(**settings)


def train_bases(cfg: XllamaDemoConfig, paths: Dict[str, str], work: str) -> Dict[str, dict]:
    """The bases of ``cfg.bases`` (Joint, codeswitching-only, PreAlign), with their perplexity
    per language."""
    from megatron_prealign import runtime
    from megatron_prealign.training import loop

    bases = {}
    for name in cfg.bases:
        run_dir = os.path.join(work, f"base_{name}")
        os.makedirs(run_dir, exist_ok=True)
        log(f"x-LLaMA base {name}: pretraining")
        loop.run(base_config(cfg, paths, run_dir, name == "prealign",
                             codeswitch=name in ("prealign", "codeswitch")))
        ppl = _evaluate(["perplexity", "--load", os.path.join(run_dir, "ckpt"),
                         "--output", os.path.join(run_dir, "ppl.json"),
                         "--data-path", f"en={paths['en_valid_prefix']}",
                         *(f"{t}={paths[f'{t}_valid_prefix']}" for t in TARGETS),
                         "--max-tokens", str(cfg.eval_tokens)])
        runtime.shutdown()
        bases[name] = {"checkpoint": os.path.join(run_dir, "ckpt"),
                       "perplexity": {lang: ppl["sources"][lang]["perplexity"] for lang in ("en", *TARGETS)}}
    return bases


# ---------------------------------------------------------------------------------------------
# Part 2: instruction tuning, evaluation, the scaling law and the allocation
# ---------------------------------------------------------------------------------------------


def build_instruction_set(cfg: XllamaDemoConfig, paths: Dict[str, str], name: str, pairs: Dict[str, int]) -> str:
    """English Alpaca-style data, plus (``pairs`` non-empty) CoIT / MuIT: target-language general
    data and the first N English->target pairs of each language in ``pairs``."""
    prefix = os.path.join(os.path.dirname(paths["template"]), "instruct", name)
    if os.path.exists(prefix + "_text_document.idx"):
        return prefix + "_text_document"  # the same set for the other base
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    x = {key: paths[key] for key in paths if key.startswith(("instructions_", "translation_"))}
    common = ["--output-prefix", prefix, *paths["tokenizer_args"], "--seq-length", str(cfg.seq_length),
              "--template", paths["template"], "--language-name", *paths["language_names"],
              "--seed", str(cfg.seed), "--no-progress"]
    if not pairs:
        argv = ["--format", "alpaca", "--input", x["instructions_en"], "--lang", "en"]
    else:
        targets = sorted(pairs)
        recipe = ["--recipe", "coit", "--target-lang", targets[0]] if len(targets) == 1 else \
            ["--recipe", "muit", "--target-langs", *targets]
        argv = [*recipe, "--instruction-data", f"en={x['instructions_en']}",
                *(f"{t}={x[f'instructions_{t}']}" for t in targets),
                "--translation-data", *(f"en-{t}={x[f'translation_{t}']}" for t in targets)]
        # One language: the sweep's --translation-pairs N; several: a budget per source.
        argv += (["--translation-pairs", str(pairs[targets[0]])] if len(targets) == 1 else
                 ["--max-samples", *(f"translation-en-{t}={pairs[t]}" for t in targets)])
    _run_tool("build_instruction_data", argv + common)
    return prefix + "_text_document"


def finetune_config(cfg: XllamaDemoConfig, paths: Dict[str, str], base: str, data: str, run_dir: str,
                    seed: Optional[int] = None) -> "TrainConfig":
    from megatron_prealign.training import arguments

    return arguments.config(
        **_model_settings(cfg, paths),
        lr=cfg.finetune_lr, min_lr=cfg.finetune_lr / 10, lr_warmup_fraction=0.03,
        weight_decay=0.0, seed=cfg.seed if seed is None else seed, data_path=[data],
        split="100,0,0", pretrained_checkpoint=base, finetune=True, sft_packing=True,
        train_iters=cfg.finetune_iters, save=os.path.join(run_dir, "ckpt"),
        log_json=os.path.join(run_dir, "log.jsonl"), log_interval=max(1, cfg.finetune_iters // 5),
    )


def finetune(cfg: XllamaDemoConfig, paths: Dict[str, str], base: str, data: str, run_dir: str,
             seed: Optional[int] = None) -> str:
    """Instruction-tune ``base`` on ``data`` (answer-only loss, packed records, fixed steps)."""
    from megatron_prealign import runtime
    from megatron_prealign.training import loop

    loop.run(finetune_config(cfg, paths, base, data, run_dir, seed))
    runtime.shutdown()
    return os.path.join(run_dir, "ckpt")


def _rows(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def evaluate_model(cfg: XllamaDemoConfig, paths: Dict[str, str], checkpoint: str, out: str,
                   qa: bool = True) -> Dict[str, dict]:
    """Per target language, with the evaluation package's definitions: English->X translation of
    the unseen test pairs (greedy, the canonical translation instruction; corpus BLEU and chrF++)
    and closed-book QA about the held-out people asked in X (the reference code's containment
    accuracy: the gold word inside the lowercased answer); the same facts asked in English
    (``en``: QA only). ``qa_correct`` keeps each item's 0/1 (the paired tests need them);
    ``qa=False``: translation only (the sweep's runs in the full configuration)."""
    from megatron_prealign import runtime
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.evaluation import qa as qa_metrics
    from megatron_prealign.evaluation import translation
    from megatron_prealign.generation.model_loading import load_model
    from megatron_prealign.generation.decoding import completion_text, generate
    from megatron_prealign.generation.prompts import load_template

    names = dict(item.split("=", 1) for item in paths["language_names"])
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", paths["spm"]))
    template = load_template(paths["template"])
    model = load_model(checkpoint, seed=cfg.seed)
    results = {}
    try:
        qa_tokens = cfg.qa_max_new_tokens or cfg.max_new_tokens

        def answer(items: List[dict]) -> List[str]:
            ids = [encoder.encode(template.render(item["instruction"], item["input"])[0]) for item in items]
            room = cfg.seq_length - max(map(len, ids))
            if room < 4:
                raise ValueError(f"prompts of {max(map(len, ids))} tokens leave no room to answer "
                                 f"within seq_length {cfg.seq_length}: raise it")
            generations = generate(model, ids, min(qa_tokens, room), eod=encoder.eod, batch_size=16)
            return [completion_text(g, encoder.decode, encoder.eod).strip() for g in generations]

        def qa_scores(items: List[dict], answers: List[str]) -> dict:
            correct = [int(qa_metrics.contains(a, item["answer"])) for item, a in zip(items, answers)]
            return {"qa_accuracy": sum(correct) / len(items), "qa_items": len(items), "qa_correct": correct,
                    "examples": [{"question": items[0]["instruction"], "answer": answers[0],
                                  "gold": items[0]["answer"]}]}

        # Without a QA length of its own the questions share the translation prompts' batches
        # (as the default configuration always did: the same batches give the same numbers).
        shared = qa and cfg.qa_max_new_tokens is None
        for target in TARGETS:
            pairs = _rows(paths[f"translation_test_{target}"])
            items = _rows(paths[f"qa_{target}"]) if qa else []
            prompts = translation.prompts([p["src"] for p in pairs], "en", target, template, names)
            if shared:
                prompts += [template.render(item["instruction"], item["input"])[0] for item in items]
            ids = [encoder.encode(p) for p in prompts]
            room = cfg.seq_length - max(map(len, ids))
            if room < 4:
                raise ValueError(f"prompts of {max(map(len, ids))} tokens leave no room to answer "
                                 f"within seq_length {cfg.seq_length}: raise it")
            generations = generate(model, ids, min(cfg.max_new_tokens, room), eod=encoder.eod, batch_size=16)
            texts = [completion_text(g, encoder.decode, encoder.eod).strip() for g in generations]
            hypotheses = texts[:len(pairs)]
            scores = translation.score(hypotheses, [p["tgt"] for p in pairs], target)
            results[target] = {"bleu": scores["bleu"], "chrf": scores["chrf++"], "translation_items": len(pairs)}
            examples = [{"src": pairs[0]["src"], "hypothesis": hypotheses[0], "reference": pairs[0]["tgt"]}]
            if qa:
                record = qa_scores(items, texts[len(pairs):] if shared else answer(items))
                examples += record.pop("examples")
                results[target].update(record)
            results[target]["examples"] = examples
        # The same facts asked in English: what the model knows at all, the ceiling of transfer.
        if qa:
            items = _rows(paths["qa_en"])
            results["en"] = qa_scores(items, answer(items))
    finally:
        runtime.shutdown()
    from megatron_prealign.evaluation.common import write_json

    write_json(out, results)
    return results


def run_xllama(cfg: XllamaDemoConfig, output_dir: str) -> dict:
    """The whole miniature; returns the ``xllama`` record of results.json."""
    import shutil
    import time

    from megatron_prealign.xllama import scaling_law

    start = time.time()
    work = fresh_directory(os.path.join(output_dir, "work_xllama"))
    paths = prepare_data(cfg, work)
    bases = train_bases(cfg, paths, work)
    timings = {"data_and_bases_s": time.time() - start}
    runs: Dict[str, dict] = {}

    def tuned(name: str, base: str, pairs: Dict[str, int], qa: bool = True, repeat: int = 0) -> dict:
        """``repeat`` r > 0: the same data fine-tuned with seed + r (name ``...#rR``)."""
        if name not in runs:
            t0 = time.time()
            log(f"x-LLaMA fine-tune {name} (base {base}, translation pairs {pairs or 'none'})")
            data = build_instruction_set(cfg, paths, name.split("@")[0], pairs)
            run_dir = os.path.join(work, "runs", name.replace("@", "_on_").replace("#", "_"))
            checkpoint = finetune(cfg, paths, bases[base]["checkpoint"], data, run_dir, seed=cfg.seed + repeat)
            scores = evaluate_model(cfg, paths, checkpoint, os.path.join(run_dir, "scores.json"), qa=qa)
            runs[name] = {"base": base, "translation_pairs": pairs, "scores": scores,
                          "finetune_seed": cfg.seed + repeat, "seconds": time.time() - t0}
            shutil.rmtree(checkpoint)  # keep the miniature's disk footprint small
        return runs[name]

    largest = max(cfg.sweep_sizes)
    for base in cfg.bases:
        tuned(f"english_only@{base}", base, {})
        for target in TARGETS:
            tuned(f"coit_{target}_{largest}@{base}", base, {target: largest})
    # The sweep on the Joint base (the "LLaMA" of the miniature): chrF++ per size (the law's
    # score; BLEU of a tiny model is often 0 at the small sizes, chrF++ still moves).
    points = {target: [] for target in TARGETS}
    for target in TARGETS:
        for size in cfg.sweep_sizes:
            run = tuned(f"coit_{target}_{size}@joint", "joint", {target: size}, qa=cfg.sweep_qa)
            points[target].append((size, run["scores"][target][LAW_SCORE]))
    caps = {t: cfg.translation_pool for t in TARGETS}
    try:
        fits = scaling_law.fit_points(points, forms=("log", "power"))
        fits["plot"] = scaling_law.plot_fits(fits, os.path.join(output_dir, "xllama_scaling_law.png"),
                                             title=f"miniature: {LAW_SCORE} vs English->X pairs (Joint base)")
        allocation = scaling_law.allocate(scaling_law.laws_from_fits(fits, "log"), cfg.budget, caps)
        splits = {"law": allocation["allocation"], "uniform": allocation["uniform"]}
    except scaling_law.ScalingLawError as error:  # reported, not hidden: e.g. flat scores
        log(f"x-LLaMA: no scaling-law fit ({error}); measuring the uniform split only")
        fits, allocation = {"error": str(error)}, None
        splits = {"uniform": scaling_law.uniform_split(list(TARGETS), cfg.budget, caps)}
    measured, noise = {}, {}
    for label, split in splits.items():
        run = tuned(f"muit_{label}@joint", "joint", {t: int(round(split[t])) for t in TARGETS}, qa=cfg.sweep_qa)
        measured[label] = {"pairs": run["translation_pairs"],
                           **{key: {t: run["scores"][t][key] for t in TARGETS} for key in ("bleu", "chrf")},
                           **{f"mean_{key}": sum(run["scores"][t][key] for t in TARGETS) / len(TARGETS)
                              for key in ("bleu", "chrf")}}
        # The fine-tuning noise: the same split with other fine-tuning seeds (data order).
        if cfg.noise_repeats:
            means = [measured[label][f"mean_{LAW_SCORE}"]]
            for repeat in range(1, cfg.noise_repeats + 1):
                again = tuned(f"muit_{label}@joint#r{repeat}", "joint", run["translation_pairs"], qa=cfg.sweep_qa,
                              repeat=repeat)
                means.append(sum(again["scores"][t][LAW_SCORE] for t in TARGETS) / len(TARGETS))
            noise[label] = {"finetune_seeds": [cfg.seed + r for r in range(cfg.noise_repeats + 1)],
                            f"mean_{LAW_SCORE}": means}
    timings["total_s"] = time.time() - start
    return {"bases": bases, "runs": runs, "sweep_points": points, "fits": fits,
            "allocation": allocation, "allocation_measured": measured, "noise": noise,
            "chance_level": chance_level(cfg), "config": dataclasses.asdict(cfg),
            "timings_s": timings, "plots": ["xllama_scaling_law.png"] if allocation else []}


def chance_level(cfg: XllamaDemoConfig) -> float:
    """QA guessing among the values a fact can take (cities and professions: as many each)."""
    from megatron_prealign import stats

    return stats.chance_level(cfg.attribute_values or len(demo_data.CITIES))


def table(record: dict) -> str:
    """Per target language: QA accuracy (95% Wilson interval) and BLEU / chrF of English-only
    tuning and CoIT, per base."""
    from megatron_prealign import stats

    def qa(scores: dict) -> str:
        low, high = stats.proportion_interval(round(scores["qa_accuracy"] * scores["qa_items"]), scores["qa_items"])
        return f"{100 * scores['qa_accuracy']:.1f}% [{100 * low:.0f}, {100 * high:.0f}]"

    lines = ["| base | tuning | language | QA accuracy [95%] | BLEU | chrF++ | same facts asked in English [95%] |",
             "|---|---|---|---|---|---|---|"]
    largest = max(record["config"]["sweep_sizes"])
    for base in record["config"].get("bases") or ("joint", "prealign"):
        for target in TARGETS:
            for label, name in (("English only", f"english_only@{base}"), ("CoIT", f"coit_{target}_{largest}@{base}")):
                scores = record["runs"][name]["scores"]
                s = scores[target]
                english = qa(scores["en"]) if "en" in scores else "-"
                lines.append(f"| {base} | {label} | {target} | {qa(s)} | {s['bleu']:.1f} | {s['chrf']:.1f} | "
                             f"{english} |")
    items = record["runs"][f"english_only@{(record['config'].get('bases') or ('joint',))[0]}"]["scores"]
    chance = record.get("chance_level", 1 / 12)
    lines.append(f"QA: {items[TARGETS[0]]['qa_items']} items per language, chance level {100 * chance:.1f}%.")
    return "\n".join(lines)


def summary(record: dict) -> str:
    """The console report: bases, English-only vs CoIT, the sweep and its laws, the allocation."""
    out = ["Bases (perplexity): " + "; ".join(
        f"{base} " + ", ".join(f"{lang} {ppl:.2f}" for lang, ppl in b["perplexity"].items())
        for base, b in record["bases"].items()), "", table(record), "",
        f"Translation-data sweep (Joint base, {LAW_SCORE} per English->X pairs):"]
    for target, points in record["sweep_points"].items():
        out.append(f"  {target}: " + ", ".join(f"{int(x)} -> {y:.1f}" for x, y in points))
    fits = record["fits"]
    if "error" in fits:
        out.append(f"  no fit: {fits['error']}")
    else:
        for target, entry in fits["languages"].items():
            for form, fit in entry["fits"].items():
                params = ", ".join(f"{k}={v:.3g}" for k, v in fit["params"].items())
                out.append(f"  {target} {form}: {params} (R^2 {fit['r2']:.3f})")
    allocation, measured = record["allocation"], record["allocation_measured"]
    if allocation:
        out.append(f"Allocation of {allocation['budget']} pairs (log laws), predicted vs measured {LAW_SCORE}:")
    for label, m in measured.items():
        predicted = ""
        if allocation:
            key = "predicted" if label == "law" else "uniform_predicted"
            values = [v for v in allocation[key].values() if v is not None]
            predicted = f"predicted mean {sum(values) / len(values):.2f}, "
        out.append(f"  {label:>7}: pairs {m['pairs']}, {predicted}measured mean {LAW_SCORE} "
                   f"{m['mean_' + LAW_SCORE]:.2f} (BLEU {m['mean_bleu']:.2f})")
        noise = (record.get("noise") or {}).get(label)
        if noise:
            out.append(f"           over fine-tuning seeds {noise['finetune_seeds']}: "
                       + " / ".join(f"{v:.2f}" for v in noise[f"mean_{LAW_SCORE}"]))
    return "\n".join(out)
