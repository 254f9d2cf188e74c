"""Training throughput of --sft-packing over --sft on the same instruction records with an
x-LLM-like length distribution: record tokens (prompt + response + EOD, no padding) per second
of the training driver's own step, both modes interleaved in one run on the same model (median
of the per-step rates). The baseline pads every record to --seq-length (fixed shapes, as the
pipeline schedule needs); the reference code pads each batch to its longest record instead, so
its own gain from packing would be smaller than this ratio.

Records (token ids, no tokenizer needed): half Alpaca-like (prompt ~ lognormal, median 45
tokens; response ~ lognormal, median 70, long tail), half translation pairs (instruction +
source ~ 50, target ~ 35), cut at --seq-length 512 as tools/build_instruction_data.py does.

    .venv/bin/python bench/sft_packing.py [--repeats 5] [--records 4000]

The last line is JSON: {"metric", "value", "target"}.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VOCAB = 4096
SEQ = 512


def write_records(prefix, count, seed=0):
    from megatron_prealign.data.indexed_writer import PairedIndexedWriter

    rng = np.random.default_rng(seed)
    lengths = []
    with PairedIndexedWriter(prefix, VOCAB) as writer:
        for index in range(count):
            if index % 2:  # Alpaca-like
                prompt = int(np.clip(rng.lognormal(np.log(45), 0.5), 25, 400))
                response = int(np.clip(rng.lognormal(np.log(70), 0.9), 2, 600))
            else:  # translation pair
                prompt = int(np.clip(rng.lognormal(np.log(50), 0.3), 30, 300))
                response = int(np.clip(rng.lognormal(np.log(35), 0.4), 3, 300))
            total = min(prompt + response + 1, SEQ)
            mask = np.zeros(total, dtype=np.uint8)
            mask[min(prompt, total - 1):] = 1
            writer.add_document(rng.integers(1, VOCAB - 1, total), mask)
            lengths.append(total)
        writer.commit()
    return np.array(lengths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--records", type=int, default=4000)
    options = parser.parse_args()

    import torch

    from megatron_prealign import runtime
    from megatron_prealign.instruct.finetune import FinetuneData
    from megatron_prealign.training import arguments
    from megatron_prealign.training.batches import LMBatches
    from megatron_prealign.training.loop import Trainer

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench_sft_packing_")
    prefix = os.path.join(work, "records")
    lengths = write_records(prefix, options.records)
    print(f"{options.records} records: mean {lengths.mean():.0f} tokens, median {np.median(lengths):.0f}, "
          f"p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}")
    common = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
              "--seq-length", str(SEQ), "--micro-batch-size", "4", "--global-batch-size", "8",
              "--train-iters", str(4 * options.repeats + 4), "--lr", "1e-4", "--seed", "1",
              "--data-path", prefix, "--split", "100,0,0", "--tokenizer-type", "NullTokenizer",
              "--vocab-size", str(VOCAB), "--log-interval", "1000"]
    # One trainer (model, optimizer, schedule); the two modes differ only in their samples.
    trainer = Trainer(arguments.parse_config(common + ["--sft-packing"]))
    sft_config = arguments.parse_config(common + ["--sft"])
    sft = FinetuneData(sft_config.data.data_path, sft_config.data.split, sft_config.model.seq_length,
                       sft_config.schedule.seed, packing=False).train
    sft.extend_to(trainer.plan.total_iters * 8)
    sources = {"sft": LMBatches(sft, 4, 0, 1), "sft-packing": trainer.lm_batches}
    tokens = {mode: 0 for mode in sources}
    seconds = {mode: 0.0 for mode in sources}
    rows = {mode: 0 for mode in sources}
    step_rates = {mode: [] for mode in sources}
    for repeat in range(options.repeats + 1):
        for mode, batches in sources.items():
            trainer.lm_batches = batches
            samples = batches.dataset
            first = batches.consumed_samples
            start = time.perf_counter()
            trainer._step("finetune")
            elapsed = time.perf_counter() - start
            last = batches.consumed_samples
            if repeat:  # the first step of each mode warms up
                step_tokens = sum(int(samples.sources[s][0].positions(int(r))) + 1
                                  for i in range(first, last) for s, r, _ in samples.row(i))
                seconds[mode] += elapsed
                rows[mode] += last - first
                tokens[mode] += step_tokens
                step_rates[mode].append(step_tokens / elapsed)
    runtime.shutdown()
    # The median of the per-step rates: robust to a step slowed down by other load.
    rate = {mode: statistics.median(step_rates[mode]) for mode in sources}
    for mode in sources:
        print(f"--{mode:12s} {rows[mode]} sequences, {tokens[mode]} record tokens "
              f"({tokens[mode] / (rows[mode] * SEQ):.0%} of the positions) in {seconds[mode]:.2f} s: "
              f"{tokens[mode] / seconds[mode]:.0f} tokens/s (median step {rate[mode]:.0f})")
    print(json.dumps({"metric": "sft_packing_over_sft_tokens_per_sec",
                      "value": round(rate["sft-packing"] / rate["sft"], 3), "target": 1.5,
                      "sft_tokens_per_sec": round(rate["sft"]), "packed_tokens_per_sec": round(rate["sft-packing"])}))


if __name__ == "__main__":
    main()
