"""Build instruction-tuning data (x-LLaMA CoIT / MuIT, Alpaca, chat) as megatron-core indexed datasets.

Writes ``{output_prefix}_text_document.{bin,idx}`` (token ids, one record a document) and the
``..._text_document_loss_mask`` sibling (uint8): 1 on the response tokens and the EOD that ends
them, 0 on the prompt. Train on it with ``--sft`` / ``--sft-packing``. See docs/instruction_tuning.md.

Examples:
    # one source
    python tools/build_instruction_data.py --format alpaca --input alpaca_en.json --lang en \\
        --output-prefix data/alpaca_en --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model tok.model --seq-length 512
    # x-LLaMA-zh (CoIT): English + Chinese Alpaca + English->Chinese translation pairs
    python tools/build_instruction_data.py --recipe coit --target-lang zh \\
        --instruction-data en=alpaca_en.json zh=alpaca_zh.json \\
        --translation-data en-zh=news-commentary.en-zh.jsonl en-zh=WikiMatrix.en-zh \\
        --translation-pairs 100000 --output-prefix data/coit_zh \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model --workers 8
"""

import argparse
import os
import sys

from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.tokenizer import add_tokenizer_args, spec_from_args
from megatron_prealign.errors import describe_os_error
from megatron_prealign.instruct.build import (
    LONG_RECORDS,
    BuildSettings,
    format_summary,
    parse_assignments,
    run_build,
)
from megatron_prealign.instruct.sources import FORMATS, make_source
from megatron_prealign.instruct.templates import ALPACA, PromptTemplate, TemplateError

RECIPES = ("coit", "muit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    group = parser.add_argument_group("one source")
    group.add_argument("--format", choices=FORMATS, help="format of --input")
    group.add_argument("--input", nargs="+", help="files or globs (translation: JSON lines with "
                       "src/tgt, or the two aligned Moses files)")
    group.add_argument("--lang", help="language of --input records (alpaca / messages)")
    group.add_argument("--src-lang", help="translation: source language code")
    group.add_argument("--tgt-lang", help="translation: target language code")
    group.add_argument("--source-name", help="name of --input in --max-samples and the summary "
                       "(default: the format)")
    group = parser.add_argument_group("several sources and recipes (x-LLaMA)")
    group.add_argument("--recipe", choices=RECIPES,
                       help="coit: English + target-language instructions + English->target "
                       "translations; muit: the same for every --target-langs language")
    group.add_argument("--target-lang", help="--recipe coit: the target language")
    group.add_argument("--target-langs", nargs="+", help="--recipe muit: the target languages")
    group.add_argument("--instruction-data", nargs="+", metavar="LANG=FILES",
                       help="general instruction data per language (comma-separated files/globs)")
    group.add_argument("--instruction-format", choices=("alpaca", "messages"), default="alpaca")
    group.add_argument("--translation-data", nargs="+", metavar="SRC-TGT=FILES",
                       help="translation pairs per direction: JSON lines {src, tgt} or a Moses "
                       "pair (the two files, or their common prefix)")
    group = parser.add_argument_group("budgets")
    group.add_argument("--max-samples", nargs="+", metavar="SOURCE=N",
                       help="keep at most N records of a source (names as in the summary, e.g. "
                       "alpaca-en, translation-en-zh)")
    group.add_argument("--translation-pairs", type=int,
                       help="keep N pairs of every translation source (data-scale sweeps)")
    group.add_argument("--translation-sampling", choices=("first", "random"), default="first",
                       help="first N pairs (as the reference code) or a sample seeded by --seed")
    group.add_argument("--seed", type=int, default=1234)
    group = parser.add_argument_group("templates")
    group.add_argument("--template", help="JSON file with your own prompt strings "
                       "(prompt_input, prompt_no_input, response_suffix, chat_system, chat_user, "
                       "chat_turn_separator); default: the Alpaca / x-LLM prompt")
    group.add_argument("--language-name", nargs="+", metavar="CODE=Name", default=[],
                       help="names of language codes not in the built-in table")
    add_tokenizer_args(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--output-prefix", required=True)
    group.add_argument("--seq-length", type=int, default=512,
                       help="longest record in tokens (prompt + response + EOD); training uses "
                       "the same --seq-length")
    group.add_argument("--long-records", choices=LONG_RECORDS, default="truncate",
                       help="records longer than --seq-length whose prompt fits: cut the response "
                       "(the reference code's choice) or skip them; both are counted")
    group.add_argument("--skip-bad-lines", action="store_true",
                       help="skip and count bad records instead of stopping at the first one")
    group.add_argument("--add-bos", action="store_true",
                       help="begin every record with the tokenizer's beginning-of-sequence token, "
                       "as Hugging Face LLaMA tokenizers do (for models imported from HF; "
                       "evaluate and generate with --add-bos too)")
    group.add_argument("--workers", type=int, default=1)
    group.add_argument("--no-progress", action="store_true")
    return parser


def _files(value: str):
    return [part for part in value.split(",") if part]


def sources_from_args(args, parser):
    names = dict(parse_assignments(args.language_name, "--language-name"))
    sources = []
    if args.input or args.format:
        if not (args.input and args.format):
            parser.error("--input and --format go together")
        name = args.source_name or args.format
        sources.append(make_source(name, args.format, args.input, args.lang, args.src_lang,
                                   args.tgt_lang, names))
    instruction = parse_assignments(args.instruction_data, "--instruction-data")
    translation = parse_assignments(args.translation_data, "--translation-data")
    if args.recipe:
        targets = [args.target_lang] if args.recipe == "coit" else (args.target_langs or [])
        if args.recipe == "coit" and (not args.target_lang or args.target_langs):
            parser.error("--recipe coit needs --target-lang X (for several, use --recipe muit --target-langs)")
        if args.recipe == "muit" and (not args.target_langs or args.target_lang):
            parser.error("--recipe muit needs --target-langs X Y ...")
        wanted_instruction = ["en", *targets]
        wanted_translation = [f"en-{t}" for t in targets]
        for flag, given, wanted in (("--instruction-data", instruction, wanted_instruction),
                                    ("--translation-data", translation, wanted_translation)):
            keys = [k for k, _ in given]
            missing = [w for w in wanted if w not in keys]
            extra = [k for k in keys if k not in wanted]
            if missing or extra:
                parser.error(
                    f"--recipe {args.recipe} with target(s) {' '.join(targets)} needs {flag} "
                    f"{' '.join(w + '=FILES' for w in wanted)}"
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                    + (f"; not part of the recipe: {', '.join(extra)}" if extra else "")
                )
    elif args.target_lang or args.target_langs:
        parser.error("--target-lang / --target-langs go with --recipe")
    for lang, value in instruction:
        sources.append(make_source(f"{args.instruction_format}-{lang}", args.instruction_format,
                                   _files(value), lang=lang, extra_names=names))
    for direction, value in translation:
        src, sep, tgt = direction.partition("-")
        if not sep or not src or not tgt:
            parser.error(f"--translation-data expects SRC-TGT=FILES (e.g. en-zh=pairs.jsonl), got {direction!r}")
        sources.append(make_source(f"translation-{src}-{tgt}", "translation", _files(value),
                                   src_lang=src, tgt_lang=tgt, extra_names=names))
    if not sources:
        parser.error("no input: give --format and --input, or --instruction-data / --translation-data")
    merged = {}
    for source in sources:  # a name given twice (e.g. two en-zh corpora) is one source
        if source.name in merged:
            first = merged[source.name]
            if first.moses or source.moses:
                parser.error(f"source {source.name}: give aligned Moses files once per direction "
                             "(convert further corpora to JSON lines or concatenate them)")
            first.files.extend(source.files)
        else:
            merged[source.name] = source
    sources = list(merged.values())
    budgets = parse_assignments(args.max_samples, "--max-samples")
    for name, value in budgets:
        if name not in merged:
            parser.error(f"--max-samples {name}={value}: no such source; sources: {', '.join(merged)}")
        if not value.isdigit():
            parser.error(f"--max-samples {name}={value}: N must be a whole number >= 0")
        merged[name].limit = int(value)
    if args.translation_pairs is not None:
        if args.translation_pairs < 0:
            parser.error("--translation-pairs must be >= 0")
        for source in sources:
            if source.format == "translation" and source.limit is None:
                source.limit = args.translation_pairs
                if args.translation_sampling == "random":
                    source.sample_seed = args.seed
    return sources


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    out_dir = os.path.dirname(os.path.abspath(args.output_prefix))
    if not os.path.isdir(out_dir):
        parser.error(f"output directory does not exist: {out_dir}")
    try:
        template = PromptTemplate.from_file(args.template) if args.template else ALPACA
        sources = sources_from_args(args, parser)
        settings = BuildSettings(spec_from_args(args), sources, template, args.seq_length,
                                 args.long_records, args.skip_bad_lines, args.add_bos)
        summary = run_build(settings, args.output_prefix, workers=args.workers,
                            progress=not args.no_progress)
    except (BadInputError, FileNotFoundError, TemplateError, ValueError) as err:
        print(f"build_instruction_data.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk while writing: the outputs were removed
        message = describe_os_error(err, err.filename or args.output_prefix)
        print(f"build_instruction_data.py: error: {message}; nothing written", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
