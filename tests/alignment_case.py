"""A tiny training step mixing LM and alignment microbatches, runnable on any parallel layout
(rank body for tests/dist_utils.run_distributed), shared by the alignment tests and the bench.

Every layout loads the same full weights (generated per tensor name, see `full_weights`) and
sees the same global batch, so losses and full gradients compare with a single process.
"""

import zlib
from typing import Dict, List, Sequence

import torch
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import unwrap_model

from megatron_prealign import runtime
from megatron_prealign.alignment import AlignmentBatch, AlignmentPass, is_alignment_batch
from megatron_prealign.testing.random_batches import data_parallel_batches
from megatron_prealign.model import ModelArgs, build_model
from megatron_prealign.training.loop import _lm_forward_step
from tests.full_state import gather_full_tensors
from tests.parallel_lm import lm_batch

VOCAB, SEQ, MICRO = 64, 16, 2
NUM_ALIGNMENT_MICROBATCHES = 2
GROUPS_PER_RANK = 4
LOSS_WEIGHT = 0.5
TEMPERATURE = 0.1

RECOMPUTE = {
    "none": {},
    "full": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=2),
    "selective": dict(recompute_granularity="selective"),
}


def concatenate(batches: Sequence[AlignmentBatch]) -> AlignmentBatch:
    """Rows of several batches in one batch (form indices renumbered): e.g. the single-process
    equivalent of the data-parallel ranks' microbatches."""
    tokens, positions, segments, groups, offset = [], [], [], [], 0
    for batch in batches:
        tokens.append(batch.tokens)
        positions.append(batch.position_ids)
        segments.append(torch.where(batch.segment_ids >= 0, batch.segment_ids + offset, -1))
        groups.append(batch.form_group)
        offset += batch.num_forms
    return AlignmentBatch(torch.cat(tokens), torch.cat(positions), torch.cat(segments), torch.cat(groups))


def tiny_args(family="gpt2", **overrides) -> ModelArgs:
    defaults = dict(
        vocab_size=VOCAB, seq_length=SEQ, family=family, num_layers=4, hidden_size=32,
        num_attention_heads=4, hidden_dropout=0.0, attention_dropout=0.0,
    )
    return ModelArgs(**{**defaults, **overrides})


def _full_tensor(key: str, shape) -> torch.Tensor:
    """Deterministic per name, so every layout builds the same model."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    noise = torch.randn(shape, generator=generator)
    if "norm" in key and key.endswith("weight"):
        return 1.0 + 0.2 * noise
    if key.endswith("bias"):
        return 0.1 * noise
    return 0.3 * noise


def _sharded_items(chunks):
    for chunk in unwrap_model(list(chunks)):
        sharded = chunk.sharded_state_dict()
        apply_factories(sharded)
        for item in nested_values(sharded):
            if isinstance(item, ShardedTensor) and not item.key.endswith("_extra_state"):
                yield item


def load_full_weights(chunks):
    """Write every rank's shard of the generated full tensors into the model."""
    with torch.no_grad():
        for item in _sharded_items(chunks):
            full = _full_tensor(item.key, item.global_shape)
            view = full
            extra = len(item.global_shape) - item.data.dim()
            for axis, offset in enumerate(item.global_offset):
                length = 1 if axis < extra else item.data.shape[axis - extra]
                view = view.narrow(axis, offset, length)
            item.data.copy_(view.reshape(item.data.shape))


def full_weights(family="gpt2", **overrides) -> Dict[str, torch.Tensor]:
    """The generated full tensors by name (for the plain-PyTorch reference)."""
    runtime.initialize(1, 1, seed=3)
    chunks = build_model(tiny_args(family, **overrides), wrap_with_ddp=False)
    load_full_weights(chunks)
    return gather_full_tensors(chunks, "param")


def global_alignment_microbatches(dp_size: int):
    """Per alignment microbatch: one batch per DP rank (disjoint groups)."""
    return [
        data_parallel_batches(dp_size, GROUPS_PER_RANK, VOCAB, SEQ, MICRO, seed=index, max_form_length=4)
        for index in range(NUM_ALIGNMENT_MICROBATCHES)
    ]


def global_lm_batch(dp_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(99)
    return torch.randint(0, VOCAB, (MICRO * dp_size, SEQ + 1), generator=generator)


def run_step(chunks, alignment: AlignmentPass, microbatches: List, total_lm_tokens: int):
    """One forward/backward over mixed microbatches; returns (statistics, full grads)."""
    for chunk in chunks:
        chunk.zero_grad_buffer()
    num_alignment = sum(1 for m in microbatches if is_alignment_batch(m))

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        if is_alignment_batch(batch):
            return alignment.forward_step(batch, model)
        return _lm_forward_step(lm_batch(batch), model)

    alignment.begin_step(num_alignment, total_lm_tokens=total_lm_tokens)
    get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(microbatches),
        model=chunks,
        num_microbatches=len(microbatches),
        seq_length=SEQ,
        micro_batch_size=microbatches[0].tokens.shape[0] if is_alignment_batch(microbatches[0]) else MICRO,
        forward_only=False,
    )
    statistics = alignment.end_step()
    return statistics, gather_full_tensors(chunks, "grad")


def build(args: ModelArgs, use_distributed_optimizer: bool, per_token_loss: bool):
    if per_token_loss:
        chunks = build_model(args, use_distributed_optimizer=use_distributed_optimizer)
    else:
        # megatron's DDP fixes its gradient averaging from the config when it is built.
        chunks = build_model(args, wrap_with_ddp=False)
        chunks[0].config.calculate_per_token_loss = False
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=use_distributed_optimizer
        )
        chunks = [DistributedDataParallel(chunks[0].config, ddp_config, chunks[0])]
    config = chunks[0].config
    assert config.calculate_per_token_loss == per_token_loss
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = chunks[0].no_sync
    load_full_weights(chunks)
    return chunks


def run_layout(tp: int, pp: int, variants: List[dict], family: str = "gpt2",
               use_distributed_optimizer: bool = False, with_lm: bool = True,
               single_process_batches: bool = False):
    """Rank body. Each variant: dict(name, recompute in RECOMPUTE, per_token_loss, and ModelArgs
    overrides). With ``single_process_batches`` this one process takes the whole global batch
    of `dp_size` ranks (the reference); otherwise its own DP share."""
    runtime.initialize(tp, pp, seed=11)
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    results = {}
    for variant in variants:
        variant = dict(variant)
        name = variant.pop("name")
        recompute = variant.pop("recompute", "none")
        per_token_loss = variant.pop("per_token_loss", True)
        global_dp = variant.pop("global_dp", dp_size)
        max_forms = variant.pop("max_forms_per_rank", None)
        args = tiny_args(family, **RECOMPUTE[recompute], **variant)
        chunks = build(args, use_distributed_optimizer, per_token_loss)
        alignment = AlignmentPass(chunks, temperature=TEMPERATURE, loss_weight=LOSS_WEIGHT,
                                  max_forms_per_rank=max_forms)
        alignment_batches = global_alignment_microbatches(global_dp)
        lm = global_lm_batch(global_dp)
        if single_process_batches:
            microbatches = [concatenate(per_rank) for per_rank in alignment_batches]
            lm_share = lm
        else:
            microbatches = [per_rank[dp_rank] for per_rank in alignment_batches]
            lm_share = lm.chunk(dp_size)[dp_rank]
        total_lm_tokens = 0
        if with_lm:
            microbatches.insert(1, lm_share)
            total_lm_tokens = lm.shape[0] * SEQ
        layer_calls = []
        first_layer = unwrap_model(chunks[0]).decoder.layers[0]
        counter = first_layer.register_forward_pre_hook(lambda *_: layer_calls.append(1))
        statistics, grads = run_step(chunks, alignment, microbatches, total_lm_tokens)
        counter.remove()
        alignment.remove()
        results[name] = {
            "alignment_loss": statistics.loss(),
            "per_state_loss": torch.tensor(statistics.per_state_loss()),
            "aligned_similarity": torch.tensor(statistics.aligned_similarity()),
            "random_similarity": torch.tensor(statistics.random_similarity()),
            "grads": grads,
            # forward calls of this rank's first layer (recompute runs it twice per microbatch)
            "layer_calls_per_microbatch": len(layer_calls) / len(microbatches),
        }
    return results


def run_degenerate(family="gpt2"):
    """Rank body: microbatches without any anchor (every group a single form) and an
    evaluation pass without gradients. Returns statistics and gradients."""
    from megatron_prealign.testing.random_batches import random_alignment_batch

    runtime.initialize(1, 1, seed=11)
    chunks = build(tiny_args(family), False, True)
    alignment = AlignmentPass(chunks, temperature=TEMPERATURE, loss_weight=LOSS_WEIGHT)
    singletons = random_alignment_batch(6, VOCAB, SEQ, MICRO, forms_per_group=(1, 1), seed=5)
    statistics, grads = run_step(chunks, alignment, [singletons], total_lm_tokens=0)
    evaluation_batch = global_alignment_microbatches(1)[0][0]
    alignment.begin_step(1)
    with torch.no_grad():
        output, _ = alignment.forward_step(evaluation_batch, chunks[0])
    registered = alignment.capture_session.pending()  # microbatches kept for a backward pass
    evaluation = alignment.end_step()
    return {
        "singleton_log": statistics.as_log_dict(),
        "singleton_grads": grads,
        "evaluation_log": evaluation.as_log_dict(),
        "registered_during_evaluation": registered,
    }
