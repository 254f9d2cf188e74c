"""The training LM dataset: megatron-core's GPTDataset plus the stored ``_loss_mask`` sibling.

:class:`MaskedGPTDataset` is a ``GPTDataset`` (same samples, same cache files, same blending via
``BlendedMegatronDatasetBuilder``) whose ``loss_mask`` is additionally multiplied by the stored
mask of the *label* tokens: label position t predicts stored token t+1, so it uses mask[t+1].
megatron-core's own masking (EOD with ``eod_mask_loss``, padding, the all-zero batch-padding
sample) is kept. Prefixes without a sibling behave exactly like ``GPTDataset`` (all-ones mask),
so plain Megatron data mixes in freely.

The mask is read through a shallow copy of the dataset whose low-level dataset is the mask
sibling, with megatron-core's own ``_query_document_sample_shuffle_indices``: tokens and mask
are cut by the same code from the same document/sample/shuffle indices, so they cannot drift
apart even across megatron-core versions.

Training code builds the splits with megatron-core's builder::

    config = lm_dataset_config(tokenizer, seq_length=..., seed=..., data_path=[...], split="98,2,0")
    train_ds, valid_ds, test_ds = BlendedMegatronDatasetBuilder(
        MaskedGPTDataset, [n_train, n_valid, n_test], lambda: True, config).build()
"""

from __future__ import annotations

import copy
import os
from typing import Optional, Sequence

import numpy
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset, _IndexReader
from megatron.core.datasets.utils import Split, get_blend_from_list

from megatron_prealign.data.indexed_writer import loss_mask_prefix
from megatron_prealign.errors import ConfigError, LossMaskMismatchError


def open_loss_mask(
    dataset_path: Optional[str], tokens: IndexedDataset, mmap: bool = True
) -> Optional[IndexedDataset]:
    """The loss-mask sibling of ``dataset_path`` if it exists, checked against ``tokens``."""
    if dataset_path is None:
        return None
    mask_path = loss_mask_prefix(dataset_path)
    if not IndexedDataset.exists(mask_path):
        return None
    mask = IndexedDataset(mask_path, mmap=mmap)
    files = f"{dataset_path}.{{bin,idx}} and {mask_path}.{{bin,idx}}"
    if mask.index.dtype != numpy.uint8:
        raise LossMaskMismatchError(f"{mask_path}.idx: loss mask dtype must be uint8, not "
                                    f"{numpy.dtype(mask.index.dtype).name}")
    if len(mask.sequence_lengths) != len(tokens.sequence_lengths) or not numpy.array_equal(
        mask.sequence_lengths, tokens.sequence_lengths
    ):
        raise LossMaskMismatchError(f"sequence lengths differ between {files}")
    if not numpy.array_equal(mask.document_indices, tokens.document_indices):
        raise LossMaskMismatchError(f"document boundaries differ between {files}")
    return mask


class MaskedGPTDataset(GPTDataset):
    """``GPTDataset`` whose ``loss_mask`` also honours the stored ``_loss_mask`` sibling."""

    def __init__(
        self,
        indexed_dataset: IndexedDataset,
        dataset_path: Optional[str],
        indexed_indices: numpy.ndarray,
        num_samples: Optional[int],
        index_split: Split,
        config: GPTDatasetConfig,
    ) -> None:
        super().__init__(
            indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
        )
        self.loss_mask_dataset = open_loss_mask(dataset_path, indexed_dataset, config.mmap_bin_files)
        self._mask_view = None
        if self.loss_mask_dataset is not None:
            view = copy.copy(self)
            view.dataset = self.loss_mask_dataset
            view._pad_token_id = 0  # padding positions are never targets
            self._mask_view = view

    def stored_mask(self, idx: Optional[int]) -> Optional[torch.Tensor]:
        """The stored mask of the sample's ``sequence_length + 1`` tokens (None: no sibling)."""
        if self._mask_view is None:
            return None
        mask = GPTDataset._query_document_sample_shuffle_indices(
            self._mask_view, 0 if idx is None else idx
        )[0]  # (token ids, document ids, document lengths)
        return torch.from_numpy(mask)

    def __getitem__(self, idx: Optional[int]):
        sample = super().__getitem__(idx)
        stored = self.stored_mask(idx)
        return sample if stored is None else apply_token_mask(sample, stored, self.config)


def apply_token_mask(sample: dict, token_mask: torch.Tensor, config) -> dict:
    """Multiply ``sample["loss_mask"]`` by a per-token mask: label position t predicts token
    t+1, so it takes the mask of token t+1 (a 0 token is an input, never a target)."""
    if config.add_extra_token_to_sequence:
        label_mask = token_mask[1:]
    else:  # labels are the tokens rolled by one; the last label is padding
        label_mask = torch.roll(token_mask, shifts=-1, dims=0)
        label_mask[-1] = 0
    sample["loss_mask"] = sample["loss_mask"] * label_mask.to(sample["loss_mask"].dtype)
    return sample


def lm_dataset_config(
    tokenizer,
    seq_length: int,
    seed: int,
    data_path: Optional[Sequence[str]] = None,
    split: Optional[str] = "969,30,1",
    per_split_data_paths: Optional[Sequence[Optional[Sequence[str]]]] = None,
    path_to_cache: Optional[str] = None,
    reset_position_ids: bool = False,
    reset_attention_mask: bool = False,
    eod_mask_loss: bool = False,
    create_attention_mask: bool = False,
    **kwargs,
) -> GPTDatasetConfig:
    """A ``GPTDatasetConfig`` from Megatron-LM style arguments.

    ``data_path`` is Megatron-LM's ``--data-path`` list (``[prefix ...]`` or
    ``[weight prefix weight prefix ...]``); ``per_split_data_paths`` is
    ``[--train-data-path, --valid-data-path, --test-data-path]`` instead of a split.
    """
    if per_split_data_paths is not None:
        blend, blend_per_split, split = None, [get_blend_from_list(p) for p in per_split_data_paths], None
    else:
        blend, blend_per_split = get_blend_from_list(list(data_path) if data_path else None), None
    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=blend,
        blend_per_split=blend_per_split,
        split=split,
        path_to_cache=path_to_cache,
        tokenizer=tokenizer,
        reset_position_ids=reset_position_ids,
        reset_attention_mask=reset_attention_mask,
        eod_mask_loss=eod_mask_loss,
        create_attention_mask=create_attention_mask,
        **kwargs,
    )


def check_indexed_files(prefix: str) -> None:
    """Raise ConfigError when ``prefix.bin`` (or its ``_loss_mask`` sibling's) is shorter than its
    ``.idx`` says (an interrupted copy): found at start, naming the file, not at the first read."""
    for path in (prefix, loss_mask_prefix(prefix)):
        if path != prefix and not IndexedDataset.exists(path):
            continue
        try:
            index = _IndexReader(path + ".idx", multimodal=False)
        except Exception as error:  # struct / numpy errors of a damaged header
            raise ConfigError(f"--data-path: {path}.idx cannot be read ({error}); re-create it with "
                              "tools/preprocess_data.py") from error
        expected = 0
        if len(index.sequence_lengths):
            expected = int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * index.dtype_size
        actual = os.path.getsize(path + ".bin")
        if actual < expected:
            raise ConfigError(f"--data-path: {path}.bin has {actual} bytes but {path}.idx describes "
                              f"{expected}: the file is truncated; copy or preprocess it again")
