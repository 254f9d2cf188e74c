"""Per-step microbatches: LM samples from megatron-core datasets and alignment word batches.

LM sampling follows Megatron-LM's pretraining sampler: global sample indices advance by the
global batch size each step, and data-parallel rank r takes the r-th block of every
`micro_batch_size x dp` slice. The position is the number of consumed samples, which the
checkpoint stores, so a resumed run continues with exactly the samples it would have seen.
"""

from typing import List
from megatron_prealign.errors import ConfigError

import torch

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset

from megatron_prealign.alignment import AlignmentBatch
from megatron_prealign.alignment.batch import forms_of, pack_forms
from megatron_prealign.data.lm_dataset import MaskedGPTDataset, lm_dataset_config


def build_datasets(args, tokenizer, num_samples: List[int], data_path=None):
    """[train, valid, test] over `data_path` (default --data-path). In "original" codeswitch
    mode the stored masks are ignored: plain GPTDataset, every token a target."""
    config = lm_dataset_config(
        tokenizer, args.seq_length, args.seed, data_path=data_path or args.data_path,
        split=args.split, path_to_cache=args.data_cache_path,
    )
    dataset_class = MaskedGPTDataset if args.codeswitch_mode == "input-only" else GPTDataset
    return BlendedMegatronDatasetBuilder(dataset_class, num_samples, lambda: True, config).build()


def _collate(samples) -> dict:
    return {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}


class LMBatches:
    def __init__(self, dataset, micro_batch_size: int, dp_rank: int, dp_size: int, consumed_samples: int = 0):
        self.dataset = dataset
        self.micro = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.consumed_samples = consumed_samples

    def next_step(self, num_microbatches: int) -> List[dict]:
        """This rank's microbatches of the next global batch."""
        microbatches = []
        for _ in range(num_microbatches):
            start = self.consumed_samples + self.dp_rank * self.micro
            indices = range(start, start + self.micro)
            microbatches.append(_collate([self.dataset[i % len(self.dataset)] for i in indices]))
            self.consumed_samples += self.micro * self.dp_size
        return microbatches


def alignment_microbatch(word_batch, rows: int, seq_length: int) -> AlignmentBatch:
    """The step's word forms as one alignment microbatch of exactly `rows` sequences (pipeline
    stages exchange fixed [seq, micro batch, hidden] activations)."""
    batch = AlignmentBatch.of(word_batch)
    if batch.num_sequences == rows:
        return batch
    try:
        return pack_forms(forms_of(batch), batch.form_group.tolist(), seq_length, rows)
    except ValueError as error:
        raise ConfigError(
            f"{error}: the alignment words of one step do not fit into --micro-batch-size {rows} "
            f"rows of --seq-length {seq_length}; lower --alignment-words-per-batch or raise "
            "--micro-batch-size"
        ) from error
