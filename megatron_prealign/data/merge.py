"""Merging megatron-core indexed datasets together with their ``_loss_mask`` siblings.

Used by ``tools/merge_datasets.py`` to join the partitions that several machines preprocessed
(``tools/preprocess_data.py --partitions``). Everything is checked before anything is written:

* every input has its ``.bin`` and ``.idx``;
* all token datasets have the same dtype (megatron-core's builder cannot mix them);
* every input has its loss-mask sibling (unless ``with_loss_mask=False``, which merges tokens
  only and writes no sibling), and each mask matches its tokens: uint8, the same sequence lengths
  and document boundaries (:func:`megatron_prealign.data.lm_dataset.open_loss_mask`, the check
  training applies).

The merge itself is megatron-core's ``IndexedDatasetBuilder.add_index`` (numpy's version in
:mod:`.indexed_writer`, byte-identical) for the tokens and for
the masks, written atomically by :class:`~megatron_prealign.data.indexed_writer.PairedIndexedWriter`
(temporary names, renamed when complete). The result's bytes are the inputs' bytes in order.
"""

from __future__ import annotations

import glob
import os
from typing import List, Sequence

import numpy as np

from megatron_prealign.data.indexed_writer import PairedIndexedWriter, loss_mask_prefix
from megatron_prealign.errors import MergeError


def expand_prefixes(patterns: Sequence[str]) -> List[str]:
    """Dataset prefixes from prefixes or globs over prefixes (``'data/en-part*_text_document'``;
    loss-mask siblings are not inputs of their own). Globs are sorted (partition order)."""
    prefixes: List[str] = []
    for pattern in patterns:
        if pattern.endswith((".bin", ".idx")):
            pattern = pattern[:-4]
        if glob.has_magic(pattern):
            found = sorted(
                p[: -len(".idx")] for p in glob.glob(pattern + ".idx")
                if not p[: -len(".idx")].endswith(loss_mask_prefix(""))
            )
            if not found:
                raise MergeError(f"--input {pattern!r} matches no dataset (no {pattern}.idx)")
            prefixes.extend(found)
        else:
            prefixes.append(pattern)
    return prefixes


def check_inputs(prefixes: Sequence[str], with_loss_mask: bool = True) -> np.dtype:
    """Raises :class:`MergeError` unless the inputs can be merged; returns their token dtype."""
    # megatron-core takes seconds to import: not at tools/merge_datasets.py --help
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.data.lm_dataset import LossMaskMismatchError, open_loss_mask

    if not prefixes:
        raise MergeError("no input datasets")
    if len(set(prefixes)) != len(prefixes):
        raise MergeError("an input dataset is given twice: " +
                         ", ".join(sorted({p for p in prefixes if prefixes.count(p) > 1})))
    dtype, first = None, None
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            if not os.path.isfile(prefix + ext):
                raise MergeError(f"{prefix}{ext}: not found")
        tokens = IndexedDataset(prefix, mmap=True)
        this = np.dtype(tokens.index.dtype)
        if dtype is None:
            dtype, first = this, prefix
        elif this != dtype:
            raise MergeError(
                f"dtype mismatch: {prefix}.idx holds {this.name} token ids, {first}.idx holds "
                f"{dtype.name}; preprocess all partitions with the same tokenizer and table "
                "(the vocabulary size decides the dtype)"
            )
        if with_loss_mask:
            try:
                mask = open_loss_mask(prefix, tokens)
            except LossMaskMismatchError as err:
                raise MergeError(f"loss mask does not match its tokens: {err}") from None
            if mask is None:
                raise MergeError(
                    f"{loss_mask_prefix(prefix)}.{{bin,idx}}: missing loss-mask sibling of "
                    f"{prefix}; every input needs one (re-run tools/preprocess_data.py for it), "
                    "or pass --no-loss-mask to merge the token data only"
                )
    return dtype


def merge_datasets(prefixes: Sequence[str], output_prefix: str, with_loss_mask: bool = True,
                   progress: bool = False) -> dict:
    """Merge ``prefixes`` (in order) into ``output_prefix``; returns a summary."""
    out = os.path.abspath(output_prefix)
    if any(os.path.abspath(p) == out for p in prefixes):
        raise MergeError(f"--output-prefix {output_prefix} is also an input")
    if not os.path.isdir(os.path.dirname(out)):
        raise MergeError(f"--output-prefix: directory does not exist: {os.path.dirname(out)}")
    dtype = check_inputs(prefixes, with_loss_mask)
    from tqdm import tqdm  # not at tools/merge_datasets.py --help (start-up time)

    writer = PairedIndexedWriter(output_prefix, 0, with_loss_mask=with_loss_mask, dtype=dtype.type)
    with writer:
        for prefix in tqdm(prefixes, desc="merge", unit=" datasets", disable=not progress):
            writer.add_index(prefix)
        writer.commit()
    return {"output": output_prefix, "inputs": len(prefixes), "documents": writer.documents,
            "tokens": writer.tokens, "dtype": dtype.name, "loss_mask": with_loss_mask}
