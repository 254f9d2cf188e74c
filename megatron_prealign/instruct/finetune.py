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
    def __init__(self, args):
        prefixes, weights = blend(args.data_path)
        split = parse_split(args.split)
        pack = bool(args.sft_packing)
        self.records = [InstructionRecords(prefix, args.seq_length) for prefix in prefixes]
        splits = [records.split(split, args.seed) for records in self.records]
        for prefix, parts in zip(prefixes, splits):
            if not len(parts[0]):
                raise ValueError(f"--data-path {prefix}: no training records (of "
                                 f"{sum(len(p) for p in parts)}) under --split {args.split}")
        self.train = InstructionSamples(
            [(records, parts[0]) for records, parts in zip(self.records, splits)],
            args.seq_length, args.seed, pack, weights,
        )
        self.validation = {
            os.path.basename(prefix): InstructionSamples([(records, parts[1])], args.seq_length,
                                                         args.seed + 1, pack)
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
