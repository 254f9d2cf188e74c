"""En-Clone "perfect alignment" initialisation: every clone token's embedding row (and LM-head
row when untied) starts as a copy of its English original's row."""

import torch
from megatron_prealign.errors import ConfigError
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.utils import unwrap_model

from megatron_prealign.data.enclone import EncloneMapping


def _copy_rows(weight: torch.Tensor, mapping: EncloneMapping):
    """`weight` is this TP rank's vocab-parallel slice [vocab / tp, hidden]."""
    group = parallel_state.get_tensor_model_parallel_group()
    slices = [torch.empty_like(weight.data) for _ in range(dist.get_world_size(group))]
    dist.all_gather(slices, weight.data.contiguous(), group=group)
    full = torch.cat(slices)
    original, clone = (torch.as_tensor(x) for x in mapping.pairs())
    if clone.max() >= full.shape[0]:
        raise ConfigError(
            f"the model vocabulary ({full.shape[0]}) is smaller than the En-Clone vocabulary "
            f"({mapping.vocab_size}): set --padded-vocab-size >= {mapping.vocab_size}"
        )
    full[clone] = full[original]
    start = parallel_state.get_tensor_model_parallel_rank() * weight.shape[0]
    with torch.no_grad():
        weight.data.copy_(full[start : start + weight.shape[0]])


def apply(chunks, mapping_path: str):
    mapping = EncloneMapping.load(mapping_path)
    for model in unwrap_model(list(chunks)):
        if model.pre_process:
            _copy_rows(model.embedding.word_embeddings.weight, mapping)
        # The untied LM head, or the last stage's copy of a tied embedding under PP.
        if model.post_process and (not model.share_embeddings_and_output_weights or not model.pre_process):
            _copy_rows(model.output_layer.weight, mapping)
