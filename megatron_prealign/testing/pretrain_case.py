"""Shared setup for the training-driver tests and benchmarks: built-in synthetic data prepared
with the real tools (tokenizer, alignment table, codeswitched and plain indexed datasets), and a
small argument list for `megatron_prealign.pretrain`."""

import json
import os

from megatron_prealign.cli import preprocess_data
from megatron_prealign.data.synthetic import make_assets


def prepare_data(directory: str) -> dict:
    """Assets (corpus, SentencePiece model, table) plus: English codeswitched input-only (ratio
    0.3 so that masks matter even in a few steps), the same English without codeswitching, and
    German."""
    assets = make_assets(os.path.join(directory, "assets"))
    done = os.path.join(directory, "prepared.json")
    if os.path.exists(done):
        with open(done) as handle:
            return json.load(handle)
    common = ["--json-keys", "text", "--tokenizer-type", "SentencePieceTokenizer",
              "--tokenizer-model", assets["sp"], "--append-eod", "--no-progress"]
    outputs = {}
    for name, source, extra in (
        ("en_cs", assets["en"], ["--alignment-table", assets["table"], "--codeswitch-languages", "de",
                                 "--codeswitch-ratio", "0.3", "--codeswitch-mode", "input-only"]),
        ("en", assets["en"], ["--codeswitch-mode", "none"]),
        ("de", assets["de"], ["--codeswitch-mode", "none"]),
    ):
        prefix = os.path.join(directory, name)
        status = preprocess_data.main(["--input", source, "--output-prefix", prefix, *common, *extra])
        if status != 0:
            raise RuntimeError(f"preprocessing {source} into {prefix} exited with {status}")
        outputs[name] = prefix + "_text_document"
    paths = {**assets, **outputs}
    with open(done, "w") as handle:
        json.dump(paths, handle)
    return paths


def base_argv(data: dict, work: str, train_iters: int = 3, **flags) -> list:
    argv = [
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "32", "--max-position-embeddings", "32",
        "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", str(train_iters),
        "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "1", "--seed", "7",
        "--data-path", "0.8", data["en_cs"], "0.2", data["de"], "--split", "90,10,0",
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", data["sp"],
        "--log-json", os.path.join(work, "log.jsonl"), "--log-interval", "1",
    ]
    for flag, value in flags.items():
        argv.append("--" + flag.replace("_", "-"))
        if value is not True:
            argv.extend(value if isinstance(value, list) else [str(value)])
    return argv


def alignment_flags(data: dict, words: int = 4) -> dict:
    return dict(alignment_table=data["table"], alignment_languages=["de"], alignment_words_per_batch=words)


def read_log(work: str) -> list:
    with open(os.path.join(work, "log.jsonl")) as handle:
        return [json.loads(line) for line in handle if "stage" in line]


def run_pretrain(argv):
    """Rank body (tests/dist_utils.run_distributed): the driver's own entry, in-process."""
    from megatron_prealign.training import arguments, loop  # torch and megatron-core: in the rank only

    return {"iteration": loop.run(arguments.parse_config(argv))}
