"""Cost of the alignment pass: time of one training step with LM and alignment microbatches
over the same step with the LM microbatches alone (tiny model, CPU, one process).

Proportions: the paper's public code trains the alignment stage with 256 word groups per device
and step; its 1.3B configuration takes 16 x 1024-token sequences per microbatch and 8
microbatches per device and step (131,072 LM tokens). With ~3 forms of ~2 tokens per group
that is ~1,536 alignment tokens, 1.2% of the LM tokens. Scaled down here: 8 LM microbatches
of 8 x 128 tokens (8,192 tokens) and 16 word groups of 2-3 forms of 1-3 tokens (~80 tokens,
one packed row). Both steps run through megatron-core's schedule with the same model.

    .venv/bin/python bench/alignment_overhead.py [--repeats 7]

The last line is JSON: {"metric", "value", "target"}.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps of each kind (fastest)")
    parser.add_argument("--lm-microbatches", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--word-groups", type=int, default=16)
    options = parser.parse_args()
    torch.set_num_threads(1)

    from megatron.core.distributed import finalize_model_grads
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_prealign import runtime
    from megatron_prealign.alignment import AlignmentPass, is_alignment_batch
    from megatron_prealign.testing.random_batches import random_groups
    from megatron_prealign.alignment.microbatch import pack_forms
    from megatron_prealign.model import ModelArgs, build_model

    runtime.initialize(1, 1, seed=5)
    vocab, seq = 1024, options.seq_length
    args = ModelArgs(
        vocab_size=vocab, seq_length=seq, num_layers=4, hidden_size=64, num_attention_heads=4,
        hidden_dropout=0.0, attention_dropout=0.0,
    )
    chunks = build_model(args)
    config = chunks[0].config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = chunks[0].no_sync
    alignment = AlignmentPass(chunks, temperature=0.1, loss_weight=1.0)

    generator = torch.Generator().manual_seed(0)
    lm_batches = [
        torch.randint(0, vocab, (options.micro_batch_size, seq + 1), generator=generator)
        for _ in range(options.lm_microbatches)
    ]
    forms, groups = random_groups(options.word_groups, vocab, 3, forms_per_group=(2, 3), seed=1)
    rows = -(-sum(len(f) for f in forms) // seq)  # as few rows as the words need (PP = 1)
    word_batch = pack_forms(forms, groups, seq, rows)
    lm_tokens = options.lm_microbatches * options.micro_batch_size * seq

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        if is_alignment_batch(batch):
            return alignment.forward_step(batch, model)
        tokens, labels = batch[:, :-1], batch[:, 1:]
        positions = torch.arange(seq).expand_as(tokens)
        output = model(tokens, positions, None, labels=labels)

        def loss_func(per_token_loss):
            count = torch.tensor(per_token_loss.numel(), dtype=torch.int)
            return per_token_loss.float().sum(), count, {"lm loss": per_token_loss.detach().mean()}

        return output, loss_func

    def step(with_alignment: bool) -> float:
        microbatches = list(lm_batches) + ([word_batch] if with_alignment else [])
        for chunk in chunks:
            chunk.zero_grad_buffer()
        if with_alignment:
            alignment.begin_step(1, total_lm_tokens=lm_tokens)
        start = time.perf_counter()
        get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(microbatches), model=chunks,
            num_microbatches=len(microbatches), seq_length=seq,
            micro_batch_size=options.micro_batch_size, forward_only=False,
        )
        elapsed = time.perf_counter() - start
        if with_alignment:
            alignment.end_step()
        return elapsed

    step(False), step(True)  # warm-up
    lm_only, mixed = [], []
    for _ in range(options.repeats):  # interleaved, so load changes hit both alike
        lm_only.append(step(False))
        mixed.append(step(True))
    # The fastest of interleaved runs: on a shared CPU, other load only ever adds time.
    lm_time, mixed_time = min(lm_only), min(mixed)
    print(f"alignment tokens {int((word_batch.segment_ids >= 0).sum())} in {rows} row(s) of {seq}; "
          f"LM tokens {lm_tokens}")
    print(f"LM only: {lm_time * 1e3:.1f} ms; LM + alignment: {mixed_time * 1e3:.1f} ms (fastest of {options.repeats}; medians "
          f"{statistics.median(lm_only) * 1e3:.1f} / {statistics.median(mixed) * 1e3:.1f} ms)")
    print(json.dumps({"metric": "alignment_step_time_ratio", "value": round(mixed_time / lm_time, 4), "target": 1.10}))
    runtime.shutdown()


if __name__ == "__main__":
    main()
