"""The fine-tuning stage's data for the training driver: instruction records of every
``--data-path`` prefix (a blend by weight when weights are given), split into train and held-out
validation records by ``--split``, as ``--sft`` or ``--sft-packing`` samples."""

import math
import os

from megatron_prealign.data.data_path import data_prefixes
from megatron_prealign.instruct.dataset import InstructionRecords, InstructionSamples, parse_split


def blend(data_path):
    """(prefixes, weights or None) of Megatron-LM's --data-path."""
    prefixes = data_prefixes(data_path)
    weighted = len(prefixes) != len(data_path)
    return prefixes, ([float(w) for w in data_path[0::2]] if weighted else None)


class FinetuneData:
    """The records of ``data_path`` (Megatron-LM's --data-path) split by ``split`` (--split), as
    samples of ``seq_length`` tokens: one record a sequence, or several with ``packing``
    (--sft-packing); ``seed`` (--seed) orders them."""

    def __init__(self, data_path, split: str, seq_length: int, seed: int, packing: bool):
        prefixes, weights = blend(data_path)
        fractions = parse_split(split)
        pack = bool(packing)
        self.records = [InstructionRecords(prefix, seq_length) for prefix in prefixes]
        splits = [records.split(fractions, seed) for records in self.records]
        for prefix, parts in zip(prefixes, splits):
            if not len(parts[0]):
                raise ValueError(f"--data-path {prefix}: no training records (of "
                                 f"{sum(len(p) for p in parts)}) under --split {split}")
        self.train = InstructionSamples(
            [(records, parts[0]) for records, parts in zip(self.records, splits)],
            seq_length, seed, pack, weights,
        )
        self.validation = {
            os.path.basename(prefix): InstructionSamples([(records, parts[1])], seq_length,
                                                         seed + 1, pack)
            for prefix, records, parts in zip(prefixes, self.records, splits) if len(parts[1])
        }

    def rows_per_run(self, epochs):
        """Training sequences of ``epochs`` passes (a fraction of the last epoch's rows)."""
        if epochs is None:
            return None
        whole = math.floor(epochs)
        rows = self.train.rows_in_epochs(whole) if whole else 0
        if epochs > whole:
            rows += math.ceil((epochs - whole) * (self.train.rows_in_epochs(whole + 1) - rows))
        return rows
