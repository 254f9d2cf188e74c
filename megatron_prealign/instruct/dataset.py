"""Fine-tuning samples over instruction data (``--sft`` / ``--sft-packing``).

Each sequence of the indexed dataset (one record: prompt + response + EOD, written by
tools/build_instruction_data.py) is one record; its stored ``_loss_mask`` marks the targets. A
record of n tokens fills n - 1 positions: inputs ``ids[:-1]``, labels ``ids[1:]``, loss mask
``stored[1:]`` (the EOD is a target, never an input); records longer than ``seq_length + 1``
tokens are cut to it. A sample (one row of ``seq_length`` positions) holds:

* ``--sft``: one record, right-padded; padding is no target, and the causal mask keeps real
  tokens from ever seeing it (no ``segment_ids``: the ordinary causal path, on any layer);
* ``--sft-packing``: several records, placed first-fit (:func:`megatron_prealign.data.packing.pack_layout`,
  the packing PreAlign's alignment words use), with ``position_ids`` restarting per record and
  ``segment_ids`` for the block-diagonal mask / ``cu_seqlens``.

Epochs: epoch e takes from every source its share of records (all of them without weights; with
``weights``, ``round(w_s / sum(w) * total records)`` drawn from the source's own reshuffled
stream, so a small source repeats and a large one is subsampled), shuffles the pool with
``(seed, e)`` and packs it. Everything depends only on the seed, so a resumed run (which
stores the number of consumed samples) sees exactly the samples it would have seen.

Train / validation / test records: a permutation of each source's records seeded by ``seed``,
cut by the ``--split`` weights, so validation is held-out instruction data from every source.
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data.indexed_writer import loss_mask_prefix
from megatron_prealign.data.lm_dataset import open_loss_mask
from megatron_prealign.data.packing import pack_layout
from megatron_prealign.errors import ConfigError


class InstructionRecords:
    """The records (sequences) of one dataset prefix and their loss masks."""

    def __init__(self, prefix: str, seq_length: int):
        self.prefix = prefix
        self.tokens = IndexedDataset(prefix)
        self.mask = open_loss_mask(prefix, self.tokens)
        if self.mask is None:  # without it every prompt token would silently become a target
            raise ConfigError(f"--data-path {prefix}: no loss mask ({loss_mask_prefix(prefix)}.bin/.idx); "
                              "--sft / --sft-packing train on the responses only: copy the mask "
                              "files along with the data, or rebuild it with build_instruction_data.py")
        self.max_tokens = seq_length + 1
        self.lengths = np.minimum(self.tokens.sequence_lengths.astype(np.int64), self.max_tokens)
        self._refuse_cut_targets(seq_length)
        # A single-token record has no (input, label) pair: it cannot be trained on.
        self.usable = np.flatnonzero(self.lengths >= 2)

    def _refuse_cut_targets(self, seq_length: int) -> None:
        """Refuse records whose cut to ``seq_length + 1`` tokens leaves no target (data built
        at a longer --seq-length): they would train on nothing. Only cut records are read."""
        cut = np.flatnonzero(self.tokens.sequence_lengths > self.max_tokens)
        empty = [int(i) for i in cut if not self.mask[int(i)][1:self.max_tokens].any()]
        if empty:
            # a record whose mask has no target at all (none anywhere) has no length to suggest
            need = max((int(np.argmax(self.mask[i])) for i in empty if self.mask[i].any()), default=None)
            longer = (f"longer, up to {need} tokens): rebuild the data with build_instruction_data.py "
                      f"--seq-length {seq_length}, or train with --seq-length >= {need}") if need else (
                      "or have no target token at all): rebuild the data with build_instruction_data.py")
            raise ConfigError(
                f"--data-path {self.prefix}: {len(empty)} of {len(self.tokens.sequence_lengths)} "
                f"records have no target token within --seq-length {seq_length} (their prompts are {longer}")

    def __len__(self) -> int:
        return len(self.usable)

    def record(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(ids, stored mask) of usable record ``index``, cut to ``seq_length + 1`` tokens."""
        sequence = int(self.usable[index])
        ids = self.tokens[sequence][: self.max_tokens].astype(np.int64)
        return ids, self.mask[sequence][: self.max_tokens]

    def positions(self, index: int) -> int:
        return int(self.lengths[self.usable[index]]) - 1

    def split(self, weights: Sequence[float], seed: int) -> List[np.ndarray]:
        """Record indices of each split (Megatron-LM's ``--split`` weights), over a seeded
        permutation so every split samples the whole file."""
        total = float(sum(weights))
        if total <= 0:
            raise ValueError("--split weights must add up to more than 0")
        order = np.random.default_rng([seed, len(self)]).permutation(len(self))
        bounds = np.round(np.cumsum([0.0, *weights]) / total * len(self)).astype(int)
        return [np.sort(order[bounds[i]:bounds[i + 1]]) for i in range(len(weights))]


def parse_split(split: str) -> List[float]:
    parts = [float(p) for p in split.replace("/", ",").split(",") if p.strip()]
    while len(parts) < 3:
        parts.append(0.0)
    if len(parts) != 3 or any(p < 0 for p in parts):
        raise ValueError(f"--split {split!r}: expected three weights like 90,10,0")
    return parts


class InstructionSamples:
    """Rows of ``seq_length`` positions over the records of one or more sources; see the module
    docstring. ``len()`` covers ``min_samples`` (whole epochs, at least one)."""

    def __init__(self, sources: Sequence[Tuple[InstructionRecords, np.ndarray]], seq_length: int,
                 seed: int, pack: bool, weights: Optional[Sequence[float]] = None,
                 min_samples: int = 0, pad_token_id: int = 0):
        self.sources = [(records, np.asarray(ids, dtype=np.int64)) for records, ids in sources]
        if not any(len(ids) for _, ids in self.sources):
            raise ValueError("no instruction records to train on (empty data or split)")
        self.seq_length = seq_length
        self.seed = seed
        self.pack = pack
        self.pad_token_id = pad_token_id
        sizes = [len(ids) for _, ids in self.sources]
        if weights is None:
            self.per_epoch = sizes
        else:
            total = sum(sizes)
            # A source with a weight and records contributes at least one record per epoch.
            self.per_epoch = [max(1, int(round(w / sum(weights) * total))) if size and w > 0 else 0
                              for w, size in zip(weights, sizes)]
            if not any(self.per_epoch):
                raise ValueError("the --data-path weights give no source any records: give a positive weight "
                                 "to a source that has records")
        self._epochs: List[List[np.ndarray]] = []  # per epoch: rows of [(source, record, start)]
        self._ends: List[int] = []  # cumulative rows at the end of each epoch
        self.extend_to(max(1, min_samples))

    # -- epochs ---------------------------------------------------------------------------

    def _stream(self, source: int, start: int, count: int) -> np.ndarray:
        """Positions [start, start + count) of a source's record stream (reshuffled per pass)."""
        ids = self.sources[source][1]
        out = []
        while count > 0:
            cycle, offset = divmod(start, len(ids))
            order = ids[np.random.default_rng([self.seed, source, cycle]).permutation(len(ids))]
            taken = order[offset:offset + count]
            out.append(taken)
            start += len(taken)
            count -= len(taken)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _build_epoch(self, epoch: int) -> List[np.ndarray]:
        pool = [(s, r) for s, n in enumerate(self.per_epoch) for r in self._stream(s, epoch * n, n)]
        order = np.random.default_rng([self.seed, 1 << 20, epoch]).permutation(len(pool))
        pool = [pool[i] for i in order]
        lengths = [self.sources[s][0].positions(r) for s, r in pool]
        if self.pack:
            placement = pack_layout(lengths, self.seq_length)
        else:
            placement = [(i, 0) for i in range(len(pool))]
        rows: List[list] = [[] for _ in range(1 + max(row for row, _ in placement))]
        for (source, record), (row, start) in zip(pool, placement):
            rows[row].append((source, record, start))
        return [np.asarray(row, dtype=np.int64) for row in rows]

    def extend_to(self, samples: int) -> None:
        while not self._ends or self._ends[-1] < samples:
            rows = self._build_epoch(len(self._epochs))
            self._epochs.append(rows)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(rows))

    def rows_in_epochs(self, epochs: int) -> int:
        while len(self._epochs) < epochs:
            self.extend_to(self._ends[-1] + 1)
        return self._ends[epochs - 1]

    def __len__(self) -> int:
        return self._ends[-1]

    # -- samples --------------------------------------------------------------------------

    def row(self, index: int) -> np.ndarray:
        epoch = bisect.bisect_right(self._ends, index)
        if epoch >= len(self._epochs):
            raise IndexError(f"sample {index} is beyond the {len(self)} built samples")
        start = self._ends[epoch - 1] if epoch else 0
        return self._epochs[epoch][index - start]

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        s = self.seq_length
        tokens = np.full(s, self.pad_token_id, dtype=np.int64)
        labels = np.full(s, self.pad_token_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        positions = np.zeros(s, dtype=np.int64)
        segments = np.full(s, -1, dtype=np.int64)
        for segment, (source, record, start) in enumerate(self.row(index)):
            ids, mask = self.sources[source][0].record(int(record))
            end = start + ids.size - 1
            tokens[start:end], labels[start:end] = ids[:-1], ids[1:]
            loss_mask[start:end] = mask[1:]
            positions[start:end] = np.arange(end - start)
            segments[start:end] = segment
        sample = {"tokens": tokens, "labels": labels, "loss_mask": loss_mask, "position_ids": positions}
        if self.pack:
            sample["segment_ids"] = segments
        return {key: torch.from_numpy(value) for key, value in sample.items()}
