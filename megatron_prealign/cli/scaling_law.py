"""x-LLaMA's translation-data scaling law: fit it per language, allocate a budget with it, and
prepare the sweep that measures it.

  fit       points (CSV with a header, or JSON lines: language, pairs, score) -> per-language fit
            of f(x) = a*log(g*x + b) (default) and/or c - k*x^(-e) (--forms log power), with
            standard errors and R^2; JSON and a PNG (points, curves, extrapolation, 95% band)
  allocate  fitted laws + --budget C [+ --cap LANG=N] [+ --weight LANG=W] -> the allocation that
            maximises the weighted sum of predicted scores, against the uniform split
  sweep     the instruction datasets for a list of translation-data sizes (through
            tools/build_instruction_data.py --translation-pairs N) and the fine-tune / evaluate
            commands of each size

Examples:
    python tools/scaling_law.py fit --input points.csv --forms log power --output laws.json
    python tools/scaling_law.py allocate --fits laws.json --budget 200000 \\
        --cap zh=150000 --cap tr=60000 --output allocation.json
    python tools/scaling_law.py sweep --language zh --sizes 1000 4000 16000 64000 \\
        --output-dir sweep_zh --base ckpt/base -- --recipe coit --target-lang zh \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model spm.model ...
See docs/xllama.md.
"""

import argparse
import json
import os
import sys

from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.xllama import scaling_law as sl


def _named_numbers(values, flag):
    table = {}
    for value in values or []:
        name, sep, number = value.partition("=")
        try:
            table[name] = float(number)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise sl.ScalingLawError(f"{flag} {value!r}: expected LANG=NUMBER")
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit the law per language")
    p.add_argument("--input", nargs="+", required=True, help="points: CSV (header row) or .jsonl files")
    p.add_argument("--forms", nargs="+", default=["log"], choices=sorted(sl.FORMS))
    p.add_argument("--output", required=True, help="fit results (JSON)")
    p.add_argument("--plot", help="PNG (default: OUTPUT with .png)")
    p.add_argument("--extrapolate", type=float, default=4.0, help="plot up to this multiple of the largest size")
    p.add_argument("--language-key", default="language")
    p.add_argument("--size-key", default="pairs")
    p.add_argument("--score-key", default="score")

    p = sub.add_parser("allocate", help="split a translation-data budget over languages")
    p.add_argument("--fits", required=True, help="output of `fit`")
    p.add_argument("--form", default="log", choices=[*sorted(sl.FORMS), "better"],
                   help="law to use (better: each language's better-fitting form)")
    p.add_argument("--budget", type=float, required=True, help="total translation pairs C")
    p.add_argument("--cap", action="append", metavar="LANG=N", help="pairs available in LANG (default: no cap)")
    p.add_argument("--weight", action="append", metavar="LANG=W", help="weight of LANG's score (default 1)")
    p.add_argument("--languages", nargs="+", help="default: every fitted language")
    p.add_argument("--continuous", action="store_true", help="report real-valued sizes (no rounding)")
    p.add_argument("--output", help="allocation (JSON)")

    p = sub.add_parser("sweep", help="datasets and commands for a data-size sweep",
                       description="Arguments after `--` go to tools/build_instruction_data.py.")
    p.add_argument("--language", required=True, help="target language code (labels the runs)")
    p.add_argument("--sizes", nargs="+", type=int, required=True, help="translation-pair counts")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--base", default="BASE_CHECKPOINT", help="pretrained checkpoint to fine-tune ({base})")
    p.add_argument("--finetune-command", default=sl.DEFAULT_FINETUNE,
                   help="template; fields {base} {data} {run} {size} {language}")
    p.add_argument("--evaluate-command", default=sl.DEFAULT_EVALUATE, help="template, same fields")
    p.add_argument("--dry-run", action="store_true", help="write the plan and commands, build nothing")
    p.add_argument("build_args", nargs=argparse.REMAINDER, help="-- then tools/build_instruction_data.py arguments")
    return parser


def run_fit(args) -> dict:
    for path in args.input:
        if not os.path.isfile(path):
            raise sl.ScalingLawError(f"--input {path}: no such file")
    points = sl.read_points(args.input, args.language_key, args.size_key, args.score_key)
    result = sl.fit_points(points, args.forms)
    result["inputs"] = list(args.input)
    plot = args.plot or os.path.splitext(args.output)[0] + ".png"
    result["plot"] = sl.plot_fits(result, plot, args.extrapolate)
    sl.write_json(args.output, result)
    for language, entry in result["languages"].items():
        for form, fit in entry["fits"].items():
            params = ", ".join(
                f"{k}={v:.4g}" + ("" if fit["stderr"][k] is None else f"±{fit['stderr'][k]:.2g}")
                for k, v in fit["params"].items())
            print(f"{language:>8} {form:>5}: {fit['formula']}  {params}  R^2={fit['r2']:.4f}  "
                  f"({fit['n_points']} points){'  <- better' if form == entry['better'] and len(entry['fits']) > 1 else ''}")
    print(f"fits -> {args.output}, plot -> {plot}")
    return result


def run_allocate(args) -> dict:
    with open(args.fits, encoding="utf-8") as handle:
        try:
            fits = json.load(handle)
        except json.JSONDecodeError as error:
            raise sl.ScalingLawError(f"--fits {args.fits}: invalid JSON ({error.msg})") from None
    laws = sl.laws_from_fits(fits, args.form, args.languages)
    caps, weights = _named_numbers(args.cap, "--cap"), _named_numbers(args.weight, "--weight")
    for flag, table in (("--cap", caps), ("--weight", weights)):
        unknown = sorted(set(table) - set(laws))
        if unknown:
            raise sl.ScalingLawError(f"{flag} names language(s) {unknown} without a law; "
                                     f"languages: {', '.join(laws)}")
    result = sl.allocate(laws, args.budget, caps, weights, integer=not args.continuous)
    print(sl.allocation_table(result))
    result["warnings"] = sl.allocation_warnings(result, fits)
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if result["lambda"] is None and any(v > 0 for v in result["allocation"].values()):
        print("note: the caps bind before the budget: every language gets all it has")
    if args.output:
        sl.write_json(args.output, {**result, "fits": args.fits})
        print(f"allocation -> {args.output}")
    return result


def run_sweep(args) -> dict:
    build_args = args.build_args[1:] if args.build_args[:1] == ["--"] else args.build_args
    plan = sl.sweep_plan(args.sizes, args.output_dir, args.language, build_args, args.base,
                         args.finetune_command, args.evaluate_command, python=sys.executable)
    os.makedirs(os.path.join(args.output_dir, "data"), exist_ok=True)
    if not args.dry_run:
        from tqdm import tqdm

        from megatron_prealign.cli import build_instruction_data  # in this process: one import for every size

        for entry in tqdm(plan, desc="building datasets", unit=" size", file=sys.stderr):
            try:
                status = build_instruction_data.main(entry["build"][3:])
            except SystemExit as exit_:  # argparse errors
                status = exit_.code
            if status:
                raise sl.ScalingLawError(f"building {entry['pairs']} pairs failed (status {status}): "
                                         f"{' '.join(entry['build'])}")
    commands = sl.write_commands(plan, os.path.join(args.output_dir, "commands.sh"))
    record = {"language": args.language, "sizes": sorted(args.sizes), "built": not args.dry_run, "runs": plan}
    sl.write_json(os.path.join(args.output_dir, "plan.json"), record)
    print(f"{len(plan)} sizes {sorted(args.sizes)}: {'datasets in ' + args.output_dir + '/data, ' if not args.dry_run else ''}"
          f"commands -> {commands}, plan -> {os.path.join(args.output_dir, 'plan.json')}")
    return record


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"fit": run_fit, "allocate": run_allocate, "sweep": run_sweep}[args.command](args)
    except (sl.ScalingLawError, BadInputError, FileNotFoundError) as error:
        print(f"scaling_law.py {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
