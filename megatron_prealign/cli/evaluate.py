"""`tools/evaluate.py SUBCOMMAND`: perplexity, alignment, clka, clka-dynamics, mixed-script,
translation, qa, representation, zs-clt, word-perplexity.

Every subcommand loads a training checkpoint (``--load``, any TP/PP layout) at the evaluation's
own layout, runs on the CPU or a GPU through ``megatron_prealign.runtime`` (under ``torchrun``
for TP/PP > 1), writes its JSON result atomically to ``--output`` (rank 0) and prints a summary.
Bad input (another architecture, a table or data of another tokenizer, an empty set): a message
and exit status 2. The generation-based subcommands (translation, qa) score a file of existing
outputs instead with ``--predictions`` (no checkpoint needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from megatron_prealign.cli.options import add_checkpoint_args, add_generation_args
from megatron_prealign.errors import report

# The evaluations (torch, megatron-core) are imported where they run, after the arguments are
# parsed: --help and a wrong flag answer at once.

SUBCOMMANDS = ("perplexity", "alignment", "clka", "clka-dynamics", "mixed-script", "translation", "qa", "representation",
               "zs-clt", "word-perplexity")
GENERATION_BASED = ("translation", "qa")


_common = add_checkpoint_args  # every subcommand's checkpoint / layout / tokenizer flags


def _language_names(parser: argparse.ArgumentParser):
    parser.add_argument("--language-name", nargs="+", default=[], metavar="CODE=NAME",
                        help="English names of language codes the templates do not know")


def _protocol(parser: argparse.ArgumentParser):
    from megatron_prealign.evaluation.protocols import PROTOCOLS

    parser.add_argument("--protocol", default="default", choices=sorted(PROTOCOLS),
                        help="default: this project's (a newline ends an answer; --max-new-tokens "
                        "256 / 64 for translation / qa); xllama: x-LLaMA's released evaluation "
                        "exactly (x-LLM prompts, greedy until EOS up to 512 tokens, spBLEU "
                        "flores101, containment match); see docs/evaluation.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("perplexity", help="token-level perplexity per language / source")
    _common(p, tokenizer_required=False)
    p.add_argument("--data-path", nargs="+", default=[], metavar="[NAME=]PREFIX",
                   help="indexed datasets (prefix without .bin/.idx)")
    p.add_argument("--jsonl", nargs="+", default=[], metavar="[NAME=]PATH", help="JSON lines of text")
    p.add_argument("--json-key", default="text")
    p.add_argument("--enclone-mapping", help="shift --jsonl text into the En-Clone id range")
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens per source")

    p = sub.add_parser("alignment", help="per-layer similarity of aligned vs random word pairs")
    _common(p, tokenizer_required=True)
    p.add_argument("--alignment-table", required=True)
    p.add_argument("--alignment-languages", nargs="+")
    p.add_argument("--alignment-held-out-fraction", type=float, default=0.0,
                   help="as the training run's flag: which words were held out of pre-alignment")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--words-per-batch", type=int, default=64)
    p.add_argument("--plot", help="PNG of the per-layer similarities")

    p = sub.add_parser("word-perplexity", help="test perplexity of words seen / held out in pre-alignment "
                       "and not in the table (PreAlign Figure 6)")
    _common(p, tokenizer_required=True)
    p.add_argument("--jsonl", required=True, help="JSON lines of test text")
    p.add_argument("--json-key", default="text")
    p.add_argument("--language", required=True, help="the text's language: its table forms are looked up "
                   "(en: the table's head words)")
    p.add_argument("--alignment-table", required=True)
    p.add_argument("--alignment-held-out-fraction", type=float, default=0.0,
                   help="as the training run's flag: which words were held out of pre-alignment")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, help="score at most this many tokens")
    p.add_argument("--plot", help="PNG: perplexity per word group")

    p = sub.add_parser("clka", help="multiple-choice knowledge test by likelihood")
    _common(p, tokenizer_required=True)
    p.add_argument("--input", required=True, help="JSON lines: {choices, answer} or {true, distractors}")
    p.add_argument("--enclone-mapping", help="ask the questions in En-Clone")
    p.add_argument("--normalize", action="store_true", help="mean log-likelihood per token")

    p = sub.add_parser("clka-dynamics", help="CLKA per training period x fact frequency x (training, test) "
                       "language, at each period's checkpoint (PreAlign Figure 4)")
    _common(p, tokenizer_required=True)
    p.add_argument("--input", required=True, help="JSON lines: CLKA items with 'period', 'frequency' and "
                   "'train_language' (en / enclone)")
    p.add_argument("--period-iterations", type=int, nargs="+", required=True, metavar="ITER",
                   help="the checkpoint iteration at the end of each period, in period order")
    p.add_argument("--enclone-mapping", required=True, help="En-Clone id mapping: items are asked in "
                   "English and in En-Clone")
    p.add_argument("--normalize", action="store_true", help="mean log-likelihood per token")
    p.add_argument("--plot", help="PNG: accuracy vs frequency per period, one panel per language pair")
    p.add_argument("--label", default="this run", help="this run's name in the plot")
    p.add_argument("--compare", nargs="+", default=[], metavar="LABEL=RESULT.json",
                   help="earlier clka-dynamics results drawn in the same plot (e.g. Joint Training)")

    p = sub.add_parser("mixed-script", help="share of continuations with other-language tokens")
    _common(p, tokenizer_required=True)
    p.add_argument("--input", required=True, help="JSON lines of prompts")
    p.add_argument("--json-key", default="text")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--enclone-mapping", help="En-Clone: languages are the two id ranges")
    p.add_argument("--prompt-language", choices=["en", "enclone"], default="en")
    p.add_argument("--other-token-pattern", help="regex on token text marking the other language")

    p = sub.add_parser("translation", help="BLEU / chrF++ (/ spBLEU / COMET) of generated translations")
    _common(p, tokenizer_required=False, load_required=False)
    p.add_argument("--src", help="source sentences, one a line (Flores style)")
    p.add_argument("--ref", help="reference translations, line-aligned with --src")
    p.add_argument("--jsonl", help="JSON lines with a key per language ({\"en\": ..., \"de\": ...})")
    p.add_argument("--flores-dir", help="unpacked flores101_dataset or flores200_dataset directory "
                   "(files <split>/<code>.<split>)")
    p.add_argument("--flores-split", default="devtest", choices=["dev", "devtest"])
    p.add_argument("--direction", nargs="+", required=True, metavar="SRC-TGT",
                   help="language pair(s), e.g. en-de (several only with --jsonl or --flores-dir)")
    p.add_argument("--predictions", help="score these outputs instead of generating: JSON lines "
                   "{\"output\"} (as tools/generate.py writes; with \"direction\" for several) or "
                   "plain text, one translation a line")
    p.add_argument("--spm-model", help="local Flores SentencePiece model for spBLEU (sacrebleu's "
                   "flores101 / flores200 tokenizer model)")
    p.add_argument("--spm-tokenizer", choices=["flores101", "flores200"],
                   help="sacrebleu tokenizer whose model --spm-model is (default flores101)")
    _protocol(p)
    p.add_argument("--comet-model", help="local COMET checkpoint (needs unbabel-comet)")
    _language_names(p)
    add_generation_args(p, max_new_tokens=None)

    p = sub.add_parser("qa", help="XQuAD / MLQA: containment accuracy and MLQA EM / F1")
    _common(p, tokenizer_required=False, load_required=False)
    p.add_argument("--input", help="SQuAD-format JSON (XQuAD / MLQA file)")
    p.add_argument("--xquad-dir", help="directory of XQuAD's xquad.<lang>.json files (instead of --input)")
    p.add_argument("--mlqa-dir", help="MLQA_V1 directory: reads <split>/<split>-context-<language>-"
                   "question-<question-language>.json (instead of --input)")
    p.add_argument("--mlqa-split", default="test", choices=["dev", "test"])
    p.add_argument("--question-language", help="MLQA question language (default: --language)")
    p.add_argument("--language", required=True, help="language of the contexts and answers (e.g. zh)")
    p.add_argument("--qa-metric", default="auto", choices=["auto", "squad-v1.1", "mlqa"],
                   help="exact match / F1 definition; auto: MLQA's for MLQA files, SQuAD v1.1's "
                   "(XTREME's XQuAD scoring) otherwise")
    _protocol(p)
    p.add_argument("--predictions", help="score these answers instead of generating: SQuAD-style "
                   "JSON {id: answer} or JSON lines {\"id\", \"output\"}")
    p.add_argument("--qa-instruction", help="instruction for a language without the reference prompt")
    p.add_argument("--qa-input-template", help="its input, with {context} and {question}")
    add_generation_args(p, max_new_tokens=None)

    p = sub.add_parser("representation", help="per-layer similarity / retrieval of parallel sentences")
    _common(p, tokenizer_required=True)
    p.add_argument("--jsonl", help="JSON lines of parallel sentences ({\"en\": ..., \"de\": ...})")
    p.add_argument("--src", help="source sentences, one a line")
    p.add_argument("--tgt", help="their translations, line-aligned")
    p.add_argument("--src-lang", default="en")
    p.add_argument("--tgt-lang", required=True)
    p.add_argument("--plot", help="PNG of the per-layer measures")

    p = sub.add_parser("zs-clt", help="zero-shot cross-lingual transfer on XNLI-style data")
    _common(p, tokenizer_required=True)
    p.add_argument("--test", nargs="+", required=True, metavar="LANG=FILE",
                   help="test sets (TSV or JSON lines); a multi-language TSV may repeat: ar=xnli.test.tsv")
    p.add_argument("--train", help="English training split: its labels are the label words; "
                   "written as instruction records next to --output for the fine-tuning stage")
    p.add_argument("--label-words", nargs="+", help="default: the training labels, else XNLI's")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune --load on --train through the instruction-tuning stage (kept in "
                   "--finetune-dir), then score the fine-tuned model (the transfer variant)")
    p.add_argument("--finetune-dir", help="default: <output without .json>.finetuned")
    p.add_argument("--finetune-epochs", type=float, default=3.0)
    p.add_argument("--finetune-lr", type=float, default=2e-5)
    p.add_argument("--finetune-global-batch-size", type=int, default=128)
    p.add_argument("--finetune-micro-batch-size", type=int, default=4)
    p.add_argument("--finetune-seq-length", type=int, help="default: --seq-length")
    p.add_argument("--template", help="instruction template JSON (default: Alpaca / x-LLM)")
    return parser


def _named(values: List[str]) -> List[tuple]:
    out = []
    for value in values:
        name, _, path = value.rpartition("=")
        out.append((name or os.path.basename(path), path))
    return out


def _compared_results(values: List[str]) -> dict:
    """--compare LABEL=RESULT.json: earlier clka-dynamics results (checked before any loading)."""
    from megatron_prealign.errors import EvaluationError

    out = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise EvaluationError(f"--compare {value}: expected LABEL=RESULT.json")
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError) as error:
            raise EvaluationError(f"--compare {path}: cannot read it ({error})") from error
        if record.get("command") != "clka-dynamics":
            raise EvaluationError(f"--compare {path} is not a clka-dynamics result")
        out[label] = record
    return out


def _run_clka_dynamics(args, tokenizer) -> dict:
    """One model load per period checkpoint; items and --compare files are checked first."""
    from megatron_prealign import runtime
    from megatron_prealign.errors import EvaluationError
    from megatron_prealign.evaluation import clka_dynamics, common
    from megatron_prealign.generation.model_loading import load_for

    if args.iteration is not None:
        raise EvaluationError("clka-dynamics loads the checkpoints of --period-iterations; drop --iteration")
    items = clka_dynamics.parse_dynamics_items(common.read_jsonl(args.input, "--input"), args.input)
    clka_dynamics.check_periods(items, args.period_iterations)
    compared = _compared_results(args.compare)
    frequencies = sorted({item["frequency"] for item in items})
    periods = [str(p) for p in sorted({item["period"] for item in items})]
    for label, record in compared.items():  # the plot draws every run on the same cells
        if record.get("frequencies") != frequencies or sorted(record.get("periods", {}), key=int) != periods:
            raise EvaluationError(f"--compare {label}: its periods / frequencies differ from --input's "
                                  f"({periods} / {frequencies}); compare runs on the same items")
    state = {}

    def load_at(iteration):
        state["model"] = model = load_for(args, iteration)
        if "to_ids" not in state:
            state["to_ids"] = common.TextToIds(tokenizer, model.vocab_size, args.enclone_mapping, args.add_bos)
        return model

    start = time.time()
    first = load_at(args.period_iterations[0])  # vocabulary checks before the long part
    # The run's save directory: the result covers every period's checkpoint in it.
    result = {"command": args.command, "checkpoint": args.load,
              "architecture": first.run_state.get("architecture"), "input": args.input,
              "seq_length": first.seq_length}
    loaded = {args.period_iterations[0]: first}
    result.update(clka_dynamics.evaluate(
        lambda it: loaded.pop(it) if it in loaded else load_at(it), items, args.period_iterations,
        state["to_ids"], args.normalize, args.micro_batch_size))
    result["elapsed_s"] = time.time() - start
    if args.plot and runtime.rank_zero():
        result["plot"] = clka_dynamics.plot({**compared, args.label: result}, args.plot)
    return result


def run(args) -> dict:
    """Run one evaluation in this process (a rank under torchrun); returns the result dict."""
    from megatron_prealign import runtime
    from megatron_prealign.evaluation import alignment_similarity, clka, common, mixed_script, perplexity
    from megatron_prealign.errors import EvaluationError
    from megatron_prealign.generation.model_loading import load_for, tokenizer_for

    if args.command in ("translation", "qa", "representation", "zs-clt"):
        from megatron_prealign.evaluation import downstream

        result = downstream.run(args)
        if runtime.rank_zero():
            common.write_json(args.output, result)
        return result
    if args.command == "clka-dynamics":
        result = _run_clka_dynamics(args, tokenizer_for(args))
        if runtime.rank_zero():
            common.write_json(args.output, result)
        return result
    start = time.time()
    if args.command == "perplexity" and not (args.data_path or args.jsonl):
        raise EvaluationError("give --data-path and/or --jsonl: nothing to evaluate")
    tokenizer = tokenizer_for(args, required=args.command != "perplexity" or bool(args.jsonl))
    model = load_for(args)
    result = {"command": args.command, "checkpoint": model.directory,
              "iteration": model.run_state.get("iteration"),
              "architecture": model.run_state.get("architecture"),
              "layout": {"tensor_model_parallel_size": args.tensor_model_parallel_size,
                         "pipeline_model_parallel_size": args.pipeline_model_parallel_size},
              "seq_length": model.seq_length}
    if args.command == "perplexity":
        sources = {}
        for name, prefix in _named(args.data_path):
            tokens, mask = perplexity.indexed_stream(prefix, args.max_tokens)
            sources[name] = perplexity.evaluate_stream(model, tokens, mask, args.max_tokens, args.micro_batch_size)
        if args.jsonl:
            to_ids = common.TextToIds(tokenizer, model.vocab_size, args.enclone_mapping, args.add_bos)
            for name, path in _named(args.jsonl):
                texts = [str(r.get(args.json_key, "")) for r in common.read_jsonl(path, "--jsonl")]
                tokens, mask = perplexity.text_stream(texts, to_ids, args.max_tokens)
                sources[name] = perplexity.evaluate_stream(model, tokens, mask, args.max_tokens, args.micro_batch_size)
        result["sources"] = sources
    elif args.command == "alignment":
        result.update(alignment_similarity.evaluate_alignment(
            model, tokenizer, args.alignment_table, args.alignment_languages,
            args.alignment_held_out_fraction, args.split_seed, args.words_per_batch, args.seed))
        if args.plot and runtime.rank_zero():
            result["plot"] = alignment_similarity.plot_alignment(result, args.plot)
    elif args.command == "word-perplexity":
        from megatron_prealign.data.alignment_table import read_table
        from megatron_prealign.data.bad_input import BadInputError
        from megatron_prealign.evaluation import word_perplexity

        try:
            entries = read_table(args.alignment_table)
        except (BadInputError, FileNotFoundError) as error:
            raise EvaluationError(str(error)) from error
        lookup = word_perplexity.word_groups(entries, args.language, args.alignment_held_out_fraction,
                                             args.split_seed)
        texts = [str(r.get(args.json_key, "")) for r in common.read_jsonl(args.jsonl, "--jsonl")]
        to_ids = common.TextToIds(tokenizer, model.vocab_size, None, args.add_bos)
        result.update({"language": args.language, "table": args.alignment_table,
                       "held_out_fraction": args.alignment_held_out_fraction, "split_seed": args.split_seed})
        result.update(word_perplexity.evaluate(model, texts, to_ids, lookup, args.max_tokens, args.micro_batch_size))
        if args.plot and runtime.rank_zero():
            result["plot"] = word_perplexity.plot(result, args.plot)
    elif args.command == "clka":
        to_ids = common.TextToIds(tokenizer, model.vocab_size, args.enclone_mapping, args.add_bos)
        items = clka.parse_items(common.read_jsonl(args.input, "--input"), args.input)
        result.update(clka.evaluate_clka(model, items, to_ids, args.normalize, args.micro_batch_size))
    else:
        to_ids = common.TextToIds(tokenizer, model.vocab_size, args.enclone_mapping, args.add_bos)
        if to_ids.mapping is None and args.prompt_language == "enclone":
            raise EvaluationError("--prompt-language enclone needs --enclone-mapping")
        records = common.read_jsonl(args.input, "--input")
        in_enclone = args.prompt_language != "en"  # "en" prompts stay English with a mapping
        prompts = [to_ids(str(r.get(args.json_key, "")), clone=in_enclone) for r in records]
        is_other = mixed_script.other_language_predicate(
            to_ids.mapping, args.prompt_language, args.other_token_pattern,
            lambda ids: to_ids.encoder.decode(ids))
        allowed = to_ids.mapping.vocab_size if to_ids.mapping else to_ids.encoder.vocab_size
        continuations = mixed_script.generate(
            model, prompts, args.max_new_tokens, greedy=not args.sample, temperature=args.temperature,
            top_k=args.top_k, seed=args.seed, eod=to_ids.eod, allowed_vocab=allowed)
        result.update(mixed_script.mixed_script_ratio(continuations, is_other))
        result["decoding"] = "sample" if args.sample else "greedy"
        result["continuations"] = continuations
    result["elapsed_s"] = time.time() - start
    if runtime.rank_zero():
        common.write_json(args.output, result)
    return result


def summary(result: dict) -> str:
    command = result["command"]
    if command in ("translation", "qa", "representation", "zs-clt"):
        from megatron_prealign.evaluation import downstream

        return downstream.summary(result)
    if command == "perplexity":
        return "\n".join(f"{name}: perplexity {v['perplexity']:.3f} over {v['tokens']} tokens"
                         for name, v in result["sources"].items())
    if command == "alignment":
        lines = []
        for name, split in result["splits"].items():
            if split["aligned"]:
                fmt = lambda vals: " ".join("  -  " if v is None else f"{v:5.3f}" for v in vals)  # noqa: E731
                lines.append(f"{name:6s} ({split['words']} words) aligned: {fmt(split['aligned'])}")
                lines.append(f"{'':6s} {'':>{len(str(split['words'])) + 8}} random:  {fmt(split['random'])}")
        return "\n".join(lines)
    if command == "word-perplexity":
        return "\n".join(f"{group:12s} perplexity {v['perplexity']:.3f} over {v['tokens']} tokens "
                         f"({v['words']} distinct words)" if v["perplexity"] is not None else f"{group:12s} no tokens"
                         for group, v in result["groups"].items())
    if command == "clka-dynamics":
        from megatron_prealign.evaluation import clka_dynamics

        return clka_dynamics.summary(result)
    if command == "clka":
        low, high = result["ci95"]
        return (f"CLKA accuracy {100 * result['accuracy']:.1f}% ({result['correct']}/{result['items']}), "
                f"95% CI [{100 * low:.1f}, {100 * high:.1f}], chance {100 * result['chance']:.1f}%")
    return (f"mixed-script ratio {100 * result['mixed_ratio']:.1f}% ({result['mixed']}/{result['prompts']}), "
            f"other-language token share {100 * result['other_token_share']:.1f}%")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_prealign import runtime
    from megatron_prealign.errors import EvaluationError

    try:
        result = run(args)
    except (EvaluationError, FileNotFoundError) as error:
        return report(str(error), f"evaluate.py {args.command}")
    finally:
        runtime.shutdown()
    if runtime.rank_zero():
        print(summary(result))
        print(f"results -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
