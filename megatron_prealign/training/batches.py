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

from megatron_prealign import runtime
from megatron_prealign.alignment import AlignmentBatch
from megatron_prealign.alignment.attention_path import BLOCK_MASK, ONE_FORM_PER_ROW
from megatron_prealign.alignment.microbatch import forms_of, one_form_per_row, pack_forms
from megatron_prealign.data.lm_dataset import MaskedGPTDataset, lm_dataset_config
from megatron_prealign.data.online_codeswitch import OnlineCodeswitchGPTDataset, online_settings
from megatron_prealign.data.packing import thd_boundaries


def build_datasets(cfg, tokenizer, num_samples: List[int], data_path=None):
    """[train, valid, test] of the TrainConfig ``cfg`` over `data_path` (default --data-path).
    In "original" codeswitch mode the stored masks are ignored: plain GPTDataset, every token a
    target. With --codeswitch-online the samples are codeswitched as they are read
    (data/online_codeswitch.py)."""
    data, seed = cfg.data, cfg.schedule.seed
    config = lm_dataset_config(
        tokenizer, cfg.model.seq_length, seed, data_path=data_path or data.data_path,
        split=data.split, path_to_cache=data.data_cache_path,
    )
    dataset_class = MaskedGPTDataset if data.codeswitch_mode == "input-only" else GPTDataset
    if data.codeswitch_online:
        # not part of the index cache key: same samples
        config.codeswitch_online = online_settings(
            cfg.tokenizer.spec(), cfg.alignment.alignment_table, data.codeswitch_languages,
            data.codeswitch_ratio, data.codeswitch_mode, seed)
        dataset_class = OnlineCodeswitchGPTDataset
    return BlendedMegatronDatasetBuilder(dataset_class, num_samples, lambda: True, config).build()


def _collate(samples) -> dict:
    batch = {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}
    if "segment_ids" in batch:  # --sft-packing: THD boundaries here, on the host (packing.py)
        batch.update(thd_boundaries(batch["segment_ids"]))
    return batch


class _RankSampler(torch.utils.data.Sampler):
    """Megatron-LM's pretraining sampler as a batch sampler: from sample `consumed` on, this
    rank's block of `micro` indices of every `micro x dp` slice (wrapping around the dataset)."""

    def __init__(self, size: int, micro: int, dp_rank: int, dp_size: int, consumed: int):
        self.size, self.micro, self.dp_rank, self.dp_size, self.consumed = size, micro, dp_rank, dp_size, consumed

    def __iter__(self):
        consumed = self.consumed
        while True:
            start = consumed + self.dp_rank * self.micro
            yield [i % self.size for i in range(start, start + self.micro)]
            consumed += self.micro * self.dp_size


class LMBatches:
    """This rank's LM microbatches, step after step, on `runtime.device()`.

    A torch DataLoader reads ahead (`num_workers` processes, pinned memory on CUDA, copies
    without blocking); the order is fixed by the sampler alone, so results and exact resume do
    not depend on the number of workers. `consumed_samples` counts the samples of the steps
    handed out (what a checkpoint stores), not the ones read ahead."""

    def __init__(self, dataset, micro_batch_size: int, dp_rank: int, dp_size: int,
                 consumed_samples: int = 0, num_workers: int = 0):
        self.dataset = dataset
        self.micro = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.consumed_samples = consumed_samples
        self.num_workers = num_workers
        self._iterator = None

    def _loader_iterator(self):
        sampler = _RankSampler(len(self.dataset), self.micro, self.dp_rank, self.dp_size, self.consumed_samples)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, collate_fn=_collate, num_workers=self.num_workers,
            pin_memory=runtime.cuda_in_use(),
            # Its own generator: a DataLoader iterator otherwise draws its base seed from the
            # global RNG, which a resumed run has just restored (dropout would then differ).
            generator=torch.Generator().manual_seed(0),
        )
        return iter(loader)

    def next_step(self, num_microbatches: int) -> List[dict]:
        """This rank's microbatches of the next global batch, on the device."""
        if self._iterator is None:
            self._iterator = self._loader_iterator()
        microbatches = []
        for _ in range(num_microbatches):
            microbatches.append(runtime.to_device(next(self._iterator)))
            self.consumed_samples += self.micro * self.dp_size
        return microbatches

    def close(self):
        """Stop the reading workers (also done when the object is collected)."""
        self._iterator = None


def alignment_microbatch(word_batch, rows: int, seq_length: int, layout: str = BLOCK_MASK,
                         tensor_parallel: int = 1, fp8: bool = False) -> AlignmentBatch:
    """The step's word forms as one alignment microbatch in the `layout` the model's attention
    needs (alignment/attention_path.py): packed into exactly `rows` sequences of `seq_length`
    (pipeline stages exchange fixed [seq, micro batch, hidden] activations), or one form per
    row."""
    batch = AlignmentBatch.of(word_batch)
    if layout == ONE_FORM_PER_ROW:
        return one_form_per_row(forms_of(batch), batch.form_group.tolist(), row_multiple=tensor_parallel,
                                rows_multiple=16 if fp8 else 1, bucketed=True)
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
