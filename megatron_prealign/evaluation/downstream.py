"""The downstream subcommands of ``tools/evaluate.py``: translation, qa, representation, zs-clt.

Every input is read and checked before a checkpoint is loaded (bad input costs no compute);
generation-based subcommands score ``--predictions`` without loading a model.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List

from megatron_prealign.evaluation import benchmarks, common, protocols, qa, translation
from megatron_prealign.errors import EvaluationError
from megatron_prealign.generation.prompts import load_template

# Model loading and decoding (torch, megatron-core) are imported inside the subcommands that
# run a model: scoring --predictions and checking input do without them.


def _names(args) -> Dict[str, str]:
    names = {}
    for value in getattr(args, "language_name", []) or []:
        code, sep, name = value.partition("=")
        if not sep or not code or not name:
            raise EvaluationError(f"--language-name {value!r}: give CODE=Name")
        names[code] = name
    return names


def _model_and_ids(args):
    from megatron_prealign.generation.model_loading import load_for, tokenizer_for

    if not args.load:
        raise EvaluationError("give --load CHECKPOINT to generate, or --predictions FILE to score existing outputs")
    tokenizer = tokenizer_for(args, required=True)
    model = load_for(args)
    return model, common.TextToIds(tokenizer, model.vocab_size, add_bos=args.add_bos)


def _header(args, model=None) -> dict:
    result = {"command": args.command}
    if model is not None:
        result.update({"checkpoint": model.directory, "iteration": model.run_state.get("iteration"),
                       "layout": {"tensor_model_parallel_size": args.tensor_model_parallel_size,
                                  "pipeline_model_parallel_size": args.pipeline_model_parallel_size},
                       "seq_length": model.seq_length})
    return result


def _read_predictions(path: str, what: str) -> List[dict]:
    """JSON lines (objects) or, for other files, plain text lines as {"output": line}."""
    if path.endswith((".jsonl", ".json")):
        return common.read_jsonl(path, "--predictions")

    return [{"output": line} for line in translation.read_lines(path, "--predictions")]


def _prediction_text(record: dict, path: str, number: int) -> str:
    for key in ("output", "prediction", "hypothesis"):
        if key in record:
            return str(record[key])
    raise EvaluationError(f"--predictions {path}: record {number} has no 'output' (or 'prediction')")


def _decoding(args) -> dict:
    return {"decoding": "sample" if args.sample else "greedy", "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}


# -- translation --------------------------------------------------------------------------------


def run_translation(args) -> dict:
    directions = []
    for value in args.direction:
        src, sep, tgt = value.partition("-")
        if not sep or not src or not tgt:
            raise EvaluationError(f"--direction {value!r}: give SRC-TGT language codes, e.g. en-de")
        directions.append((src, tgt))
    protocol = protocols.resolve(args)
    spm_tokenizer = protocol.spm_tokenizer or args.spm_tokenizer or "flores101"
    files = {}
    if args.flores_dir:
        if args.src or args.ref or args.jsonl:
            raise EvaluationError("give --flores-dir or --src / --ref or --jsonl, not several")
        for s, t in directions:
            files[f"{s}-{t}"] = {lang: benchmarks.flores_file(args.flores_dir, lang, args.flores_split)
                                 for lang in (s, t)}
        data = {}
        for d, f in files.items():
            s, t = d.split("-", 1)
            data[d] = translation.read_pairs(f[s][0], f[t][0], None, s, t)
    else:
        if len(directions) > 1 and not args.jsonl:
            raise EvaluationError("several --direction values need --jsonl (one file with every language) "
                                  "or --flores-dir")
        data = {f"{s}-{t}": translation.read_pairs(args.src, args.ref, args.jsonl, s, t) for s, t in directions}
    names = _names(args)
    template = load_template(args.template)
    prompts = {d: translation.prompts(v["sources"], *d.split("-", 1), template, names, protocol.prompt_style)
               for d, v in data.items()}
    if protocol.translation_metric == "spbleu" and not args.spm_model:
        raise EvaluationError(translation.missing_spm_message(spm_tokenizer, f"--protocol {protocol.name}"))
    if args.spm_model and not os.path.isfile(args.spm_model):
        raise EvaluationError(translation.missing_spm_message(
            spm_tokenizer, f"--spm-model {args.spm_model} does not exist; spBLEU"))
    if args.comet_model and not os.path.exists(args.comet_model):
        raise EvaluationError(f"--comet-model {args.comet_model} does not exist (a local checkpoint path)")

    model = None
    if args.predictions:
        records = _read_predictions(args.predictions, "translation")
        hypotheses = {d: [] for d in data}
        for number, record in enumerate(records, 1):
            direction = record.get("direction", next(iter(data)) if len(data) == 1 else None)
            if direction not in hypotheses:
                raise EvaluationError(f"--predictions {args.predictions}: record {number} has direction "
                                      f"{direction!r}, not one of {list(data)}")
            hypotheses[direction].append(_prediction_text(record, args.predictions, number))
        for d, v in data.items():
            if len(hypotheses[d]) != len(v["references"]):
                raise EvaluationError(f"--predictions {args.predictions} has {len(hypotheses[d])} outputs "
                                      f"for {d} but there are {len(v['references'])} references")
    else:
        from megatron_prealign.generation.decoding import generate_texts

        model, to_ids = _model_and_ids(args)
        order = list(data)
        flat = [p for d in order for p in prompts[d]]
        texts, _ = generate_texts(model, to_ids, flat, args, stop=list(protocol.stop))
        hypotheses, position = {}, 0
        for d in order:
            hypotheses[d] = [t.strip() for t in texts[position:position + len(prompts[d])]]
            position += len(prompts[d])
    result = _header(args, model)
    result["directions"] = {}
    for d, v in data.items():
        scores = translation.score(hypotheses[d], v["references"], d.split("-", 1)[1], args.spm_model,
                                   args.comet_model, v["sources"], spm_tokenizer)
        headline = protocol.translation_metric
        scores["metric"] = {"name": headline, "score": scores[headline],
                            "tokenizer": spm_tokenizer if headline == "spbleu"
                            else translation.bleu_tokenizer(d.split("-", 1)[1]),
                            "signature": scores.get(f"{headline}_signature")}
        if d in files:
            scores["files"] = {lang: {"path": path, "flores": version} for lang, (path, version) in files[d].items()}
        result["directions"][d] = {**scores, "predictions": hypotheses[d]}
    result["protocol"] = protocols.record(protocol, args)
    if not args.predictions:
        result.update(_decoding(args))
    result["predictions_file"] = args.predictions
    return result


# -- qa -----------------------------------------------------------------------------------------


def run_qa(args) -> dict:
    protocol = protocols.resolve(args)
    given = [flag for flag, value in (("--input", args.input), ("--xquad-dir", args.xquad_dir),
                                      ("--mlqa-dir", args.mlqa_dir)) if value]
    if len(given) != 1:
        raise EvaluationError("give one of --input FILE, --xquad-dir DIR, --mlqa-dir DIR"
                              + (f" (not {' and '.join(given)})" if given else ""))

    if args.xquad_dir:
        args.input = benchmarks.xquad_file(args.xquad_dir, args.language)
    elif args.mlqa_dir:
        args.input = benchmarks.mlqa_file(args.mlqa_dir, args.language, args.question_language or args.language,
                                          args.mlqa_split)
    metric = qa.metric_for(args.input, args.qa_metric)
    items = qa.read_squad(args.input)
    if not args.predictions:  # checked before a model is loaded
        prompts = qa.prompts(items, args.language, load_template(args.template), args.qa_instruction,
                             args.qa_input_template)
    model = None
    if args.predictions:
        path = args.predictions
        if path.endswith(".jsonl"):
            predictions = {}
            for number, record in enumerate(common.read_jsonl(path, "--predictions"), 1):
                if "id" not in record:
                    raise EvaluationError(f"--predictions {path}: record {number} has no 'id'")
                predictions[str(record["id"])] = _prediction_text(record, path, number)
        else:
            try:
                with open(path, encoding="utf-8") as handle:
                    predictions = json.load(handle)
            except (OSError, json.JSONDecodeError) as error:
                raise EvaluationError(f"--predictions {path}: {error}") from error
            if not isinstance(predictions, dict):
                raise EvaluationError(f"--predictions {path}: expected a JSON object {{id: answer}}")
            predictions = {str(k): str(v) for k, v in predictions.items()}
    else:
        from megatron_prealign.generation.decoding import generate_texts

        model, to_ids = _model_and_ids(args)
        texts, _ = generate_texts(model, to_ids, prompts, args, stop=list(protocol.stop))
        predictions = {item["id"]: text.strip() for item, text in zip(items, texts)}
    result = _header(args, model)
    result.update(qa.score(items, predictions, args.language, metric))
    result["protocol"] = protocols.record(protocol, args)
    result["metric"] = {"name": protocol.qa_metric, "score": result[protocol.qa_metric]}
    if not args.predictions:
        result.update(_decoding(args))
    result["input"] = args.input
    return result


# -- representation -----------------------------------------------------------------------------


def run_representation(args) -> dict:
    from megatron_prealign.evaluation import representation

    pairs = translation.read_pairs(args.src, args.tgt, args.jsonl, args.src_lang, args.tgt_lang)
    if len(pairs["sources"]) < 2:
        raise EvaluationError("need at least two sentence pairs (random pairs and retrieval)")
    model, to_ids = _model_and_ids(args)
    result = _header(args, model)
    result.update({"src_lang": args.src_lang, "tgt_lang": args.tgt_lang})
    result.update(representation.evaluate_representation(
        model, to_ids, pairs["sources"], pairs["references"], args.micro_batch_size))
    from megatron_prealign import runtime

    if args.plot and runtime.rank_zero():
        result["plot"] = representation.plot_representation(
            result, args.plot, f"{args.src_lang}-{args.tgt_lang} sentence representations")
    return result


# -- zs-clt -------------------------------------------------------------------------------------


def run_zs_clt(args) -> dict:
    from megatron_prealign.evaluation import classification

    tests = {}
    for language, path in classification.named_paths(args.test, "--test"):
        tests[language] = classification.read_examples(path, "--test", language)
    train = classification.read_examples(args.train, "--train", None) if args.train else None
    label_words = classification.label_words_from(train, args.label_words)
    classification.check_labels(label_words, {f"--test {k}": v for k, v in tests.items()})
    if train is not None:
        classification.check_labels(label_words, {f"--train {args.train}": train})
    template = load_template(args.template)
    if args.finetune and train is None:
        raise EvaluationError("--finetune needs --train (the English training split)")
    records_path = None
    if train is not None:
        records_path = os.path.splitext(args.output)[0] + ".train_records.jsonl"
        from megatron_prealign import runtime

        if runtime.detect_launcher().rank == 0:
            classification.write_instruction_records(records_path, train, label_words)
    finetuned = None
    if args.finetune:
        from megatron_prealign.generation.model_loading import read_architecture

        read_architecture(args.load, args.iteration, trusted=args.trusted_checkpoint)  # a bad --load fails before any work
        seq_length = args.finetune_seq_length or args.seq_length
        if not seq_length:
            raise EvaluationError("--finetune needs --finetune-seq-length (or --seq-length)")
        finetuned = classification.finetune(args, records_path, seq_length)
        args.load, args.iteration = finetuned, None
    model, to_ids = _model_and_ids(args)
    result = _header(args, model)
    result.update({"variant": "fine-tuned on --train (transfer)" if finetuned else "prompt-only",
                   "finetuned_checkpoint": finetuned, "label_words": label_words,
                   "train_records": records_path, "languages": {}})
    for language, examples in tests.items():
        result["languages"][language] = classification.evaluate_language(
            model, examples, label_words, to_ids, template, args.micro_batch_size)
    return result


RUNNERS = {"translation": run_translation, "qa": run_qa, "representation": run_representation,
           "zs-clt": run_zs_clt}


def run(args) -> dict:
    start = time.time()
    result = RUNNERS[args.command](args)
    result["elapsed_s"] = time.time() - start
    return result


def _fmt(value) -> str:
    return f"{value:7.2f}" if isinstance(value, (int, float)) else "    n/c"


def summary(result: dict) -> str:
    command = result["command"]
    if command == "translation":
        lines = [f"{'direction':10s} {'BLEU':>7s} {'chrF++':>7s} {'spBLEU':>7s} {'COMET':>7s}  segments"]
        for d, v in result["directions"].items():
            lines.append(f"{d:10s} {_fmt(v['bleu'])} {_fmt(v['chrf++'])} {_fmt(v['spbleu'])} "
                         f"{_fmt(v['comet'])}  {v['segments']}")
        protocol = result.get("protocol", {})
        return "\n".join(lines + ["(n/c: not computed; see the JSON for why)",
                                  f"protocol {protocol.get('name')}: headline {protocol.get('headline_metric')}"])
    if command == "qa":
        return (f"{result['language']}: containment accuracy {result['containment_accuracy']:.1f}, "
                f"EM {result['exact_match']:.1f}, F1 {result['f1']:.1f} ({result['em_f1_definition']}) "
                f"({result['questions']} questions; protocol {result['protocol']['name']})")
    if command == "representation":
        return "\n".join(f"{name:24s} aligned {a:6.3f} random {r:6.3f} acc@1 {h:5.3f}" for name, a, r, h in
                         zip(result["states"], result["aligned"], result["random"], result["retrieval_acc@1"]))
    lines = [f"{result['variant']}; label words {result['label_words']}"]
    for language, v in result["languages"].items():
        low, high = v["ci95"]
        lines.append(f"{language:6s} accuracy {100 * v['accuracy']:5.1f}% ({v['correct']}/{v['examples']}), "
                     f"95% CI [{100 * low:.1f}, {100 * high:.1f}], chance {100 * v['chance']:.1f}%")
    return "\n".join(lines)
