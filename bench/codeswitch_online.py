"""The cost of online (per-sample) codeswitching against the preprocessed mode, in one run.

* Preprocessing: ``tools/preprocess_data.py`` (in-process) on a generated English corpus of about
  --mb MB, with input-only codeswitching (what the preprocessed mode needs) and with
  ``--codeswitch-mode none`` (what the online mode needs), alternated, median of --repeats.
* Data time: reading --samples samples of --data-seq-length tokens (the DataLoader's work, one
  process): ``MaskedGPTDataset`` over the switched data against ``OnlineCodeswitchGPTDataset``
  over the plain data (ratio 0.3, German, as the switched data), alternated, fastest of
  --repeats.
* Step time: the training driver's own pretraining step (4 layers, hidden 128, sequence 128,
  global batch 16, --num-workers 0 so the data time is inside the step) fed by either source,
  interleaved, fastest of --repeats.

    .venv/bin/python bench/codeswitch_online.py [--mb 4] [--repeats 5]

The last line is JSON: {"metric": "online_over_preprocessed_step_time", "value", "target", ...}
with the data-time and preprocessing-time ratios beside it.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _corpus(path, mb, seed=0):
    from megatron_prealign.data.synthetic import english_document, write_jsonl

    rng = random.Random(seed)
    texts, size = [], 0
    while size < mb * 1e6:
        texts.append(english_document(rng, rng.randint(3, 12)))
        size += len(texts[-1]) + 12
    return write_jsonl(path, texts)


def _preprocess_times(data, corpus, work, repeats):
    from megatron_prealign.cli import preprocess_data

    common = ["--input", corpus, "--json-keys", "text", "--tokenizer-type", "SentencePieceTokenizer",
              "--tokenizer-model", data["sp"], "--append-eod", "--no-progress", "--workers", "1"]
    modes = {
        "preprocessed": ["--alignment-table", data["table"], "--codeswitch-languages", "de",
                         "--codeswitch-ratio", "0.3", "--codeswitch-mode", "input-only"],
        "online": ["--codeswitch-mode", "none"],
    }
    times = {name: [] for name in modes}
    for _ in range(repeats):
        for name, extra in modes.items():
            start = time.perf_counter()
            assert preprocess_data.main([*common, "--output-prefix", os.path.join(work, name), *extra]) == 0
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _data_times(sources, samples, repeats):
    times = {name: [] for name in sources}
    for _ in range(repeats + 1):
        for name, dataset in sources.items():
            start = time.perf_counter()
            for idx in range(samples):
                dataset[idx]
            times[name].append((time.perf_counter() - start) / samples)
    return {name: min(values[1:]) for name, values in times.items()}  # the first round warms up


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size for the preprocessing times")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--data-seq-length", type=int, default=2048)
    options = parser.parse_args()

    import torch

    from megatron_prealign import runtime
    from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
    from megatron_prealign.training import arguments
    from megatron_prealign.training.batches import LMBatches, build_datasets
    from megatron_prealign.training.loop import Trainer
    from megatron_prealign.testing import pretrain_case

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench_codeswitch_online_")
    data = pretrain_case.prepare_data(work)
    corpus = _corpus(os.path.join(work, "corpus.jsonl"), options.mb)
    preprocess = _preprocess_times(data, corpus, work, options.repeats)
    outputs = {name: os.path.join(work, f"{name}_text_document") for name in preprocess}

    online_flags = dict(codeswitch_online=True, alignment_table=data["table"], codeswitch_languages=["de"],
                        codeswitch_ratio=0.3, num_workers=0)

    def argv_for(prefix, seq_length, iterations, online):
        argv = pretrain_case.base_argv(data, work, train_iters=iterations, data_path=[prefix],
                                       **(online_flags if online else {"num_workers": 0}))
        for flag, value in (("--num-layers", "4"), ("--hidden-size", "128"), ("--seq-length", str(seq_length)),
                            ("--max-position-embeddings", str(seq_length)), ("--global-batch-size", "16")):
            argv[argv.index(flag) + 1] = value
        at = argv.index("--data-path")
        del argv[at : at + 5]  # base_argv's blend; --data-path [prefix] comes last
        return argv

    def dataset(prefix, seq_length, samples, online):
        config = arguments.parse_config(argv_for(prefix, seq_length, 1, online))
        return build_datasets(config, build_tokenizer_from_spec(config.tokenizer.spec()), [samples, 1, 0])[0]

    sources = {"preprocessed": dataset(outputs["preprocessed"], options.data_seq_length, options.samples, False),
               "online": dataset(outputs["online"], options.data_seq_length, options.samples, True)}
    data_time = _data_times(sources, options.samples, options.repeats)

    iterations = 2 * options.repeats + 2
    config = arguments.parse_config(argv_for(outputs["online"], 128, iterations, True))
    trainer = Trainer(config)
    batches = {"online": trainer.lm_batches,
               "preprocessed": LMBatches(dataset(outputs["preprocessed"], 128, iterations * 16, False),
                                         config.schedule.micro_batch_size, 0, 1)}
    step = {name: [] for name in batches}
    for repeat in range(options.repeats + 1):
        for name, source in batches.items():
            trainer.lm_batches = source
            start = time.perf_counter()
            trainer._step("pretrain")
            if repeat:  # the first step of each source warms up
                step[name].append(time.perf_counter() - start)
    runtime.shutdown()
    best = {name: min(values) for name, values in step.items()}

    for name in preprocess:
        print(f"{name:12s} preprocessing {preprocess[name]:.2f} s ({options.mb:g} MB, median), "
              f"data {data_time[name] * 1e3:.3f} ms/sample of {options.data_seq_length} tokens, "
              f"step {best[name] * 1e3:.1f} ms (fastest)")
    print(json.dumps({
        "metric": "online_over_preprocessed_step_time", "value": round(best["online"] / best["preprocessed"], 3),
        "target": 1.05,
        "data_time_ratio": round(data_time["online"] / data_time["preprocessed"], 3),
        "data_ms_per_sample": {k: round(v * 1e3, 3) for k, v in data_time.items()},
        "preprocess_time_ratio": round(preprocess["online"] / preprocess["preprocessed"], 3),
        "preprocess_s": {k: round(v, 2) for k, v in preprocess.items()},
        "step_ms": {k: round(v * 1e3, 1) for k, v in best.items()},
    }))


if __name__ == "__main__":
    main()
