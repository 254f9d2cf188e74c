"""CLKA learning dynamics (PreAlign Figure 4) in miniature: ``python -m megatron_prealign.demo
--only clka-dynamics``.

1. data (``clka_dynamics_data``): warm-up text (the demo's grammar, every invented name
   mentioned without a fact) in English and, 5% as much, En-Clone; per period, new facts at
   each frequency in English and in En-Clone, with fact-free background; tokenizer, identity
   table -> En-Clone table and mapping, indexed datasets, all through the real tools;
2. Joint Training and PreAlign (pre-alignment, then input-only codeswitching): a warm-up run,
   then one resumed run per period (``--load`` the previous checkpoint, ``--data-path`` that
   period's datasets, ``--train-iters`` extended by one period); the checkpoint at every period
   end is kept;
3. ``tools/evaluate.py clka-dynamics`` on each run's period checkpoints, one plot of both runs.

Frequency is the number of the period's documents that state the fact. Each period's datasets
are blended by their token counts and hold about one period of tokens, so a document is read
about once in its period; megatron-core's sampler shuffles samples over epochs, so the exact
count for a given fact varies around its frequency (it is not forced).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import TYPE_CHECKING, Dict, List, Tuple

from megatron_prealign.demo import clka_dynamics_data as dyn
from megatron_prealign.demo import fresh_directory
from megatron_prealign.demo.prealign import _evaluate, _run_tool, _write_jsonl, log
from megatron_prealign.errors import ConfigError

if TYPE_CHECKING:
    from megatron_prealign.training.config import TrainConfig

RUN_LABELS = {"joint": "Joint Training", "prealign": "PreAlign"}


@dataclasses.dataclass
class DynamicsConfig:
    seed: int = 1234
    periods: int = 4
    # At (1, 4, 16, 32) stated documents in 100-step periods both runs stayed near chance even
    # for English facts asked in English: this model needs ~100 exposures to store a fact.
    frequencies: Tuple[int, ...] = (4, 16, 64, 128)
    facts_per_cell: int = 6
    warmup_docs: int = 1500
    sentences_per_doc: int = 8
    name_mentions: int = 4  # per name and language in the warm-up text (table min count 3)
    period_background_docs: int = 1500
    enclone_fraction: float = 0.05  # En-Clone background, relative to English
    vocab_size: int = 400
    num_layers: int = 4
    hidden_size: int = 64
    heads: int = 4
    seq_length: int = 64
    micro_batch_size: int = 8
    global_batch_size: int = 16
    warmup_iters: int = 300  # before period 1 (PreAlign: prealign_iters of them pre-alignment)
    prealign_iters: int = 150
    # 300 x 16 x 64 tokens ~ one pass over a period's data (~308k tokens): at 200 steps a fact
    # stated in 128 documents was read in only ~65 samples of its period.
    period_iters: int = 300
    lr: float = 3e-3
    codeswitch_ratio: float = 0.05
    alignment_words_per_batch: int = 64

    @classmethod
    def quick(cls) -> "DynamicsConfig":
        """For the test suite: two short periods, a tiny model (seconds per run)."""
        return cls(periods=2, frequencies=(1, 2), facts_per_cell=2, warmup_docs=60, period_background_docs=10,
                   num_layers=2, hidden_size=32, warmup_iters=4, prealign_iters=2, period_iters=2,
                   alignment_words_per_batch=8)

    @property
    def spec(self) -> dyn.DynamicsSpec:
        return dyn.DynamicsSpec(self.periods, tuple(self.frequencies), self.facts_per_cell)

    def validate(self) -> "DynamicsConfig":
        self.spec.validate()
        if not 0 < self.prealign_iters < self.warmup_iters:
            raise ConfigError(f"prealign_iters ({self.prealign_iters}) must be in 1..warmup_iters-1 "
                              f"({self.warmup_iters - 1}): PreAlign pre-aligns, then pretrains, inside the warm-up")
        if self.period_iters < 1:
            raise ConfigError(f"period_iters must be >= 1 (got {self.period_iters})")
        return self

    def period_end(self, period: int) -> int:
        return self.warmup_iters + period * self.period_iters


def _token_count(prefix: str) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)  # held while reading: its lengths are a view of its mmap
    return int(dataset.sequence_lengths.sum())


def prepare_data(cfg: DynamicsConfig, work: str) -> Dict:
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    rng = random.Random(cfg.seed)
    facts = dyn.make_facts(cfg.spec, cfg.seed)
    names = [f["name"] for f in facts]
    n_clone = max(2, int(round(cfg.warmup_docs * cfg.enclone_fraction)))
    paths = {
        "warm_en": _write_jsonl(os.path.join(data, "warm_en.jsonl"), dyn.warmup_documents(
            names, cfg.warmup_docs, cfg.sentences_per_doc, cfg.name_mentions, rng)),
        "warm_clone_src": _write_jsonl(os.path.join(data, "warm_clone_src.jsonl"), dyn.warmup_documents(
            names, n_clone, cfg.sentences_per_doc, cfg.name_mentions, rng)),
        "facts": os.path.join(data, "facts.jsonl"),
        "items": os.path.join(data, "clka_dynamics.jsonl"),
    }
    with open(paths["facts"], "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(f) + "\n" for f in facts)
    with open(paths["items"], "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in dyn.fact_items(facts, cfg.seed))
    clone_background = max(1, int(round(cfg.period_background_docs * cfg.enclone_fraction)))
    for period in range(1, cfg.periods + 1):
        for language, background in (("en", cfg.period_background_docs), ("enclone", clone_background)):
            docs = dyn.period_documents(facts, period, language, background, cfg.sentences_per_doc, rng)
            paths[f"p{period}_{language}"] = _write_jsonl(os.path.join(data, f"p{period}_{language}.jsonl"), docs)

    words = sorted({w.strip(".") for line in open(paths["warm_en"], encoding="utf-8")
                    for w in json.loads(line)["text"].split()})
    paths["dictionary"] = os.path.join(data, "identity.txt")
    with open(paths["dictionary"], "w", encoding="utf-8") as handle:
        handle.writelines(f"{w} {w}\n" for w in words if w)
    tok = os.path.join(data, "spm")
    _run_tool("train_tokenizer", ["--input", paths["warm_en"], "--vocab-size", str(cfg.vocab_size),
                                  "--model-prefix", tok, "--no-hard-vocab-limit", "--threads", "1",
                                  "--seed", str(cfg.seed), "--no-progress"])
    paths["spm"] = tok + ".model"
    tokenizer = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", paths["spm"]]
    paths["table_en"] = os.path.join(data, "table_en.jsonl")
    _run_tool("build_alignment_table", ["--input", paths["warm_en"], "--dictionary", f"xx={paths['dictionary']}",
                                        "--output", paths["table_en"], "--min-count", "3", "--keep-identical",
                                        "--no-progress"])
    paths["table"] = os.path.join(data, "table_enclone.jsonl")
    paths["mapping"] = os.path.join(data, "enclone_mapping.json")
    _run_tool("make_enclone", [*tokenizer, "--alignment-table", paths["table_en"], "--output-table",
                               paths["table"], "--mapping-output", paths["mapping"], "--no-progress"])
    common = ["--json-keys", "text", *tokenizer, "--append-eod", "--no-progress", "--seed", str(cfg.seed)]
    codeswitch = ["--alignment-table", paths["table"], "--codeswitch-languages", "enclone",
                  "--codeswitch-ratio", str(cfg.codeswitch_ratio), "--codeswitch-mode", "input-only"]

    def preprocess(name, source, extra):
        _run_tool("preprocess_data", ["--input", source, "--output-prefix", os.path.join(data, name), *common, *extra])
        return os.path.join(data, name + "_text_document")

    def clone(name, source):
        src = preprocess(name + "_src", source, ["--codeswitch-mode", "none"])
        prefix = os.path.join(data, name + "_text_document")
        _run_tool("make_enclone", [*tokenizer, "--input-prefix", src, "--output-prefix", prefix, "--no-progress"])
        return prefix

    # English: plain for Joint Training, input-only codeswitched for PreAlign; En-Clone: cloned.
    for stage in ["warm"] + [f"p{k}" for k in range(1, cfg.periods + 1)]:
        english = paths[f"{stage}_en"]
        paths[f"{stage}_en_prefix"] = preprocess(f"{stage}_en", english, ["--codeswitch-mode", "none"])
        paths[f"{stage}_en_cs_prefix"] = preprocess(f"{stage}_en_cs", english, codeswitch)
        source = paths["warm_clone_src"] if stage == "warm" else paths[f"{stage}_enclone"]
        paths[f"{stage}_clone_prefix"] = clone(f"{stage}_enclone", source)
    log(f"data: {len(facts)} facts ({cfg.periods} periods x frequencies {list(cfg.frequencies)} x en / enclone "
        f"x {cfg.facts_per_cell}), warm-up {cfg.warmup_docs} + {n_clone} documents")
    return paths


def data_path(paths: Dict, stage: str, prealign: bool) -> List[str]:
    """The stage's English and En-Clone datasets, weighted by their token counts (each read
    about once per period); the warm-up mix is the demo's 95 / 5."""
    english = paths[f"{stage}_en_cs_prefix" if prealign else f"{stage}_en_prefix"]
    clone = paths[f"{stage}_clone_prefix"]
    if stage == "warm":
        return ["0.95", english, "0.05", clone]
    en, cl = _token_count(english), _token_count(clone)
    return [f"{en / (en + cl):.6f}", english, f"{cl / (en + cl):.6f}", clone]


def train_config(cfg: DynamicsConfig, paths: Dict, run_dir: str, prealign: bool, period: int) -> "TrainConfig":
    from megatron_prealign.training import arguments

    ckpt = os.path.join(run_dir, "ckpt")
    total = cfg.period_end(period) if period else cfg.warmup_iters
    settings = dict(
        num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, num_attention_heads=cfg.heads,
        seq_length=cfg.seq_length, max_position_embeddings=cfg.seq_length,
        hidden_dropout=0.0, attention_dropout=0.0,
        micro_batch_size=cfg.micro_batch_size, global_batch_size=cfg.global_batch_size,
        # Constant after warm-up: every period learns at the same rate (the run is extended per period).
        lr=cfg.lr, lr_decay_style="constant", lr_warmup_iters=max(1, cfg.prealign_iters // 2),
        weight_decay=0.01, seed=cfg.seed,
        data_path=data_path(paths, f"p{period}" if period else "warm", prealign),
        split="100,0,0", tokenizer_type="SentencePieceTokenizer", tokenizer_model=paths["spm"],
        enclone_mapping=paths["mapping"], save=ckpt, save_interval=cfg.period_iters,
        log_json=os.path.join(run_dir, "log.jsonl"), log_interval=max(1, min(10, cfg.period_iters)),
    )
    if period:
        settings.update(load=ckpt)
    if prealign:
        settings.update(alignment_table=paths["table"], alignment_languages=["enclone"],
                        prealign_iters=cfg.prealign_iters, train_iters=total - cfg.prealign_iters,
                        alignment_words_per_batch=cfg.alignment_words_per_batch)
    else:
        settings.update(train_iters=total)
    return arguments.config(**settings)


def train(cfg: DynamicsConfig, paths: Dict, run_dir: str, prealign: bool):
    from megatron_prealign.training import loop

    for period in range(0, cfg.periods + 1):
        reached = loop.run(train_config(cfg, paths, run_dir, prealign, period))
        expected = cfg.period_end(period) if period else cfg.warmup_iters
        if reached != expected:  # e.g. a stop signal: the period checkpoints would be missing
            raise SystemExit(f"[demo] training stopped at iteration {reached}, not {expected} (period {period})")


def _contains(row, pattern) -> bool:
    n = len(pattern)
    return any(row[i:i + n] == pattern for i in range(len(row) - n + 1))


def measure_exposures(cfg: DynamicsConfig, paths: Dict, run_dir: str, prealign: bool) -> Dict[str, int]:
    """How often each fact was actually read in its period: the LM samples of the period's
    iterations, rebuilt as training built them (same flags, megatron-core's blended dataset,
    the sampler's positions), that contain the person's name and the fact's object (either in
    its English or its En-Clone ids: codeswitching may switch either)."""
    from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.enclone import EncloneMapping
    from megatron_prealign.training.batches import build_datasets

    facts = [json.loads(line) for line in open(paths["facts"], encoding="utf-8")]
    mapping = EncloneMapping.load(paths["mapping"])
    counts = {}
    for period in range(1, cfg.periods + 1):
        config = train_config(cfg, paths, run_dir, prealign, period)
        tokenizer = build_tokenizer_from_spec(config.tokenizer.spec())
        encoder = TextEncoder(tokenizer)
        end = cfg.period_end(period)
        train, _, _ = build_datasets(config, tokenizer, [end * cfg.global_batch_size, 1, 1])
        first = (end - cfg.period_iters) * cfg.global_batch_size
        rows = [train[i % len(train)]["tokens"].tolist() for i in range(first, end * cfg.global_batch_size)]

        def forms(word):
            ids = [int(v) for v in encoder.encode_array(word)]
            return ids, [int(v) for v in mapping.clone(ids)]

        for fact in (f for f in facts if f["period"] == period):
            names, objects = forms(fact["name"]), forms(fact["object"])
            counts[fact["name"]] = sum(
                1 for row in rows if any(_contains(row, n) for n in names) and any(_contains(row, o) for o in objects))
    return counts


def exposure_table(facts: List[Dict], counts: Dict[str, int]) -> Dict:
    """{train_language: {frequency: {mean, min, max, never}}} over all periods."""
    out = {}
    for language in dyn.LANGUAGES:
        for frequency in sorted({f["frequency"] for f in facts}):
            values = [counts[f["name"]] for f in facts if (f["train_language"], f["frequency"]) == (language, frequency)]
            out.setdefault(language, {})[str(frequency)] = {
                "mean": sum(values) / len(values), "min": min(values), "max": max(values),
                "never": sum(v == 0 for v in values), "facts": len(values)}
    return out


def evaluate(cfg: DynamicsConfig, paths: Dict, run_dir: str, name: str) -> Dict:
    return _evaluate(["clka-dynamics", "--load", os.path.join(run_dir, "ckpt"), "--tokenizer-type",
                      "SentencePieceTokenizer", "--tokenizer-model", paths["spm"], "--input", paths["items"],
                      "--enclone-mapping", paths["mapping"], "--label", RUN_LABELS[name],
                      "--period-iterations", *[str(cfg.period_end(k)) for k in range(1, cfg.periods + 1)],
                      "--output", os.path.join(run_dir, "clka_dynamics.json")])


def table(results: Dict[str, Dict]) -> str:
    """Pooled accuracy per combination and frequency, runs side by side."""
    first = next(iter(results.values()))
    freqs = first["frequencies"]
    lines = ["| taught -> asked | run | " + " | ".join(f"f = {f}" for f in freqs) + " |",
             "|---|---|" + "---|" * len(freqs)]
    for combination in first["combinations"]:
        for name, result in results.items():
            cells = [result["pooled"][combination][str(f)] for f in freqs]
            lines.append(f"| {combination} | {RUN_LABELS.get(name, name)} | " + " | ".join(
                f"{100 * c['accuracy']:.0f}% ({100 * c['ci95'][0]:.0f}-{100 * c['ci95'][1]:.0f})" for c in cells) + " |")
    return "\n".join(lines)


def run_dynamics(cfg: DynamicsConfig, output_dir: str) -> Dict:
    from megatron_prealign.evaluation import clka_dynamics
    from megatron_prealign.evaluation.common import write_json

    cfg.validate()
    start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    work = fresh_directory(os.path.join(output_dir, "work"))
    paths = prepare_data(cfg, work)
    timings = {"data_s": time.time() - start}
    results, exposures = {}, {}
    for name in ("joint", "prealign"):
        run_dir = os.path.join(work, name)
        os.makedirs(run_dir)
        t0 = time.time()
        log(f"training {name}: warm-up {cfg.warmup_iters} iterations, then {cfg.periods} periods of {cfg.period_iters}")
        train(cfg, paths, run_dir, name == "prealign")
        timings[f"train_{name}_s"] = time.time() - t0
        t0 = time.time()
        results[name] = evaluate(cfg, paths, run_dir, name)
        timings[f"evaluate_{name}_s"] = time.time() - t0
        exposures[name] = measure_exposures(cfg, paths, run_dir, name == "prealign")
    plot = clka_dynamics.plot({RUN_LABELS[n]: r for n, r in results.items()},
                              os.path.join(output_dir, "clka_dynamics.png"),
                              f"CLKA right after each {cfg.period_iters}-step period (PreAlign Fig. 4 in miniature)")
    facts = [json.loads(line) for line in open(paths["facts"], encoding="utf-8")]
    margins = {c: {str(f): results["prealign"]["pooled"][c][str(f)]["accuracy"]
                   - results["joint"]["pooled"][c][str(f)]["accuracy"] for f in cfg.frequencies}
               for c in clka_dynamics.COMBINATIONS}
    record = {
        "runs": {name: {k: v for k, v in r.items() if k not in ("outcomes",)} for name, r in results.items()},
        "prealign_minus_joint_pooled": margins,
        # Samples of each fact's period that contained it (see measure_exposures).
        "exposures": {name: exposure_table(facts, counts) for name, counts in exposures.items()},
        "exposures_per_fact": exposures,
        "config": dataclasses.asdict(cfg),
        "timings_s": {**timings, "total_s": time.time() - start},
        "plot": os.path.basename(plot),
    }
    write_json(os.path.join(output_dir, "clka_dynamics.json"), record)
    print("\nCLKA after each period, pooled over periods (95% Wilson intervals; chance "
          f"{100 * results['joint']['chance']:.0f}%):\n" + table(results), flush=True)
    log("samples that contained a fact in its period (mean, min-max), Joint Training: " + "; ".join(
        f"{lang} f={f}: {v['mean']:.1f} ({v['min']}-{v['max']})" for lang, row in record["exposures"]["joint"].items()
        for f, v in row.items()))
    log(f"results -> {os.path.join(output_dir, 'clka_dynamics.json')} ({record['timings_s']['total_s']:.0f} s)")
    return record
