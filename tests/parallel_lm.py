"""A tiny LM training step on any parallel layout, shared by the parallel and checkpoint tests.

Every layout starts from the same full weights (loaded through dist_checkpointing, i.e. by
resharding a TP=1 x PP=1 checkpoint) and sees the same global batch, so losses and full
gradients can be compared with a single-process run.
"""

import torch
from megatron.core import parallel_state
from megatron.core.distributed import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_prealign import runtime
from megatron_prealign.training import checkpointing
from megatron_prealign.training.loop import _lm_forward_step
from tests.full_state import gather_full_tensors
from megatron_prealign.model import ModelArgs, build_model

VOCAB, SEQ, MICRO, GLOBAL = 64, 16, 2, 8


def tiny_args(family="gpt2", **overrides) -> ModelArgs:
    defaults = dict(
        vocab_size=VOCAB, seq_length=SEQ, family=family, num_layers=4, hidden_size=32,
        num_attention_heads=4, hidden_dropout=0.0, attention_dropout=0.0,
    )
    return ModelArgs(**{**defaults, **overrides})


def global_batch(seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (GLOBAL, SEQ + 1), generator=generator)


def _microbatches(batch):
    """This DP rank's microbatches of the global batch (contiguous slices, as Megatron does)."""
    dp_size = parallel_state.get_data_parallel_world_size()
    dp_rank = parallel_state.get_data_parallel_rank()
    local = batch.chunk(dp_size)[dp_rank]
    return list(local.split(MICRO))


def lm_batch(sample: torch.Tensor) -> dict:
    """A (B, S + 1) tensor of ids as the driver's LM batch: every target counts."""
    tokens, labels = sample[:, :-1], sample[:, 1:]
    return {"tokens": tokens, "labels": labels, "loss_mask": torch.ones_like(tokens),
            "position_ids": torch.arange(tokens.shape[1]).expand_as(tokens)}


def _forward_step(data_iterator, model):
    # The driver's own LM step: (sum, count) per microbatch, megatron-core divides by the
    # global token count (calculate_per_token_loss), so the result is the global-batch mean.
    return _lm_forward_step(lm_batch(next(data_iterator)), model)


def make_model_and_optimizer(args, use_distributed_optimizer=False, lr=1e-2):
    chunks = build_model(args, use_distributed_optimizer=use_distributed_optimizer)
    config = chunks[0].config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = chunks[0].no_sync
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam", lr=lr, min_lr=lr / 10, weight_decay=0.0, bf16=args.bf16, clip_grad=0.0,
            use_distributed_optimizer=use_distributed_optimizer,
        ),
        chunks,
    )
    return chunks, optimizer


def train_step(chunks, optimizer, batch, step_optimizer=True):
    """One global batch: forward/backward through megatron's schedule; returns the mean loss
    (on every rank) and leaves the reduced gradients in the grad buffers."""
    for chunk in chunks:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    micro = _microbatches(batch)
    losses = get_forward_backward_func()(
        forward_step_func=_forward_step,
        data_iterator=iter(micro),
        model=chunks,
        num_microbatches=len(micro),
        seq_length=SEQ,
        micro_batch_size=MICRO,
        forward_only=False,
    )
    summed = torch.zeros(2)
    if losses:  # only the last pipeline stage computes losses
        summed = torch.stack([x["lm_sum_count"] for x in losses]).sum(0)
    torch.distributed.all_reduce(summed)  # over all ranks: DP shards add up, other stages add 0
    mean = (summed[0] / summed[1]).item()  # TP ranks repeat both sum and count
    grads = gather_full_tensors(chunks, "grad")
    if step_optimizer:
        optimizer.step()
    return mean, grads


def save_weights(chunks, directory):
    checkpointing.save_checkpoint(directory, 0, chunks)


def load_weights(chunks, directory):
    checkpointing.load_checkpoint(directory, chunks, load_rng=False)


def run_layout(tp, pp, weights_dir, use_distributed_optimizer=False, steps=3, family="gpt2", **arg_overrides):
    """Rank body: build at (tp, pp), load the reference weights, train `steps` global batches."""
    runtime.initialize(tp, pp, seed=7)
    args = tiny_args(family, **arg_overrides)
    chunks, optimizer = make_model_and_optimizer(args, use_distributed_optimizer)
    load_weights(chunks, weights_dir)
    optimizer.reload_model_params()  # main (fp32) params follow the loaded weights
    losses, first_grads = [], None
    for step in range(steps):
        loss, grads = train_step(chunks, optimizer, global_batch())
        losses.append(loss)
        first_grads = first_grads or grads
    return {"losses": losses, "grads": first_grads}
