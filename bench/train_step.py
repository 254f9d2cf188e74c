"""CPU step time of PreAlign's pretraining stage (input-only codeswitched data with stored loss
masks) over Joint Training's (the same English without codeswitching) on the same model, in one
run: the training driver's own step, the two data sources interleaved, fastest of N each.

    .venv/bin/python bench/train_step.py [--repeats 7]

The last line is JSON: {"metric", "value", "target"}.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()

    import torch

    from megatron_prealign import runtime
    from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
    from megatron_prealign.training import arguments
    from megatron_prealign.training.batches import LMBatches, build_datasets
    from megatron_prealign.training.loop import Trainer
    from megatron_prealign.testing import pretrain_case

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench_train_step_")
    data = pretrain_case.prepare_data(work)
    iterations = 2 * options.repeats + 2
    argv = pretrain_case.base_argv(data, work, train_iters=iterations, data_path=[data["en_cs"]])
    for flag, value in (("--num-layers", "4"), ("--hidden-size", "128"), ("--seq-length", "128"),
                        ("--max-position-embeddings", "128"), ("--global-batch-size", "16")):
        argv[argv.index(flag) + 1] = value
    config = arguments.parse_config(argv)
    trainer = Trainer(config)
    tokenizer = build_tokenizer_from_spec(config.tokenizer.spec())
    plain_config = arguments.replace(config, data_path=[data["en"]])
    plain, _, _ = build_datasets(plain_config, tokenizer, [iterations * config.schedule.global_batch_size, 1, 0])
    sources = {"prealign": trainer.lm_batches, "joint": LMBatches(plain, config.schedule.micro_batch_size, 0, 1)}
    times = {name: [] for name in sources}
    for repeat in range(options.repeats + 1):
        for name, batches in sources.items():
            trainer.lm_batches = batches
            start = time.perf_counter()
            trainer._step("pretrain")
            if repeat:  # the first step of each source warms up
                times[name].append(time.perf_counter() - start)
    runtime.shutdown()
    best = {name: min(values) for name, values in times.items()}
    for name in sources:
        print(f"{name:9s} step: fastest {best[name] * 1e3:.1f} ms, median {statistics.median(times[name]) * 1e3:.1f} ms")
    ratio = best["prealign"] / best["joint"]
    print(json.dumps({"metric": "prealign_over_joint_step_time", "value": round(ratio, 3), "target": 1.03,
                      "prealign_ms": round(best["prealign"] * 1e3, 1), "joint_ms": round(best["joint"] * 1e3, 1)}))


if __name__ == "__main__":
    main()
