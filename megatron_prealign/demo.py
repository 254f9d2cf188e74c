"""`make demo` (foundation stage): a short CPU training smoke run of the model builder.

This is NOT yet the PreAlign demo (that lands with the evaluation / demo issue). It trains a
tiny GPT-2 style model on built-in synthetic token data through megatron-core's schedule,
optimizer and DDP, saves a distributed checkpoint, reloads it and checks the logits match.
"""

import argparse
import os
import tempfile
import time

import torch

from megatron.core.distributed import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_prealign import platform
from megatron_prealign.model import ModelArgs, build_model
from megatron_prealign.training import checkpointing


def synthetic_batches(vocab, seq, batch, seed):
    """Repeating arithmetic token patterns: learnable, so the loss visibly falls."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        start = torch.randint(0, vocab, (batch, 1), generator=generator)
        step = torch.randint(1, 4, (batch, 1), generator=generator)
        yield (start + step * torch.arange(seq + 1)) % vocab


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-iters", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    runtime = platform.initialize(1, 1, seed=args.seed)
    print(f"[demo] foundation smoke run on {runtime.device} ({runtime.backend}); "
          f"CPU patches: {', '.join(runtime.cpu_patches) or 'none'}")
    model_args = ModelArgs(vocab_size=128, seq_length=32, num_layers=2, hidden_size=64,
                           num_attention_heads=4, hidden_dropout=0.0, attention_dropout=0.0)
    model_args.validate(runtime.world_size)
    chunks = build_model(model_args)
    config = chunks[0].config
    config.finalize_model_grads_func = finalize_model_grads
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=3e-3, clip_grad=1.0), chunks)
    batches = synthetic_batches(model_args.vocab_size, model_args.seq_length, 8, args.seed)

    def forward_step(iterator, model):
        sample = next(iterator)
        tokens, labels = sample[:, :-1], sample[:, 1:]
        output = model(tokens, torch.arange(tokens.shape[1]).expand_as(tokens), None, labels=labels)
        return output, lambda loss: (loss.sum(), torch.tensor(loss.numel()), {"lm loss": loss.mean().detach()})

    start = time.time()
    losses = []
    for iteration in range(1, args.train_iters + 1):
        chunks[0].zero_grad_buffer()
        optimizer.zero_grad()
        out = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=batches, model=chunks, num_microbatches=1,
            seq_length=model_args.seq_length, micro_batch_size=8, forward_only=False,
        )
        optimizer.step()
        losses.append(out[0]["lm loss"].item())
        if iteration % 10 == 0 or iteration == 1:
            print(f"[demo] iteration {iteration:4d} | lm loss {losses[-1]:.4f} | {time.time() - start:.1f}s")

    with tempfile.TemporaryDirectory() as root:
        checkpointing.save_checkpoint(root, args.train_iters, chunks, optimizer)
        reloaded = build_model(model_args)
        checkpointing.load_checkpoint(root, reloaded, load_rng=False)
        probe = next(batches)[:, :-1]
        positions = torch.arange(probe.shape[1]).expand_as(probe)
        with torch.no_grad():
            same = torch.equal(chunks[0](probe, positions, None), reloaded[0](probe, positions, None))
    print(f"[demo] loss {losses[0]:.3f} -> {losses[-1]:.3f}; checkpoint round trip "
          f"{'gives identical logits' if same else 'CHANGED THE LOGITS'}")
    platform.shutdown()
    if not same or not losses[-1] < losses[0]:
        raise SystemExit("[demo] smoke run failed")


if __name__ == "__main__":
    main()
