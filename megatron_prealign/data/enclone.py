"""En-Clone: a synthetic "second language" that is English with its token ids shifted.

Token id ``t`` of the original vocabulary (size V) becomes ``t + V`` in the clone, so the
vocabulary doubles (model vocab >= 2V). Ids listed in ``shared_ids`` (by default the tokenizer's
end-of-document id) are *not* shifted: EOD must stay the id megatron-core's GPTDataset knows
(``eod_mask_loss``, ``reset_position_ids``) in both languages.

Three artefacts (``tools/make_enclone.py``):

* the clone copy of an indexed dataset (and of its ``_loss_mask`` sibling, unchanged);
* the En-Clone alignment table: each English word with the single form of language
  ``"enclone"``; since a clone form is not a string of the original tokenizer, the table line
  carries its ids under ``token_ids`` (the running-text form " bank", shifted)::

      {"word": "bank", "count": 893, "translations": {"enclone": ["bank"]},
       "token_ids": {"enclone": [[687]]}}

  The alignment-word dataset and codeswitching use ``token_ids`` as given;
* the mapping JSON for the paper's "perfect alignment" initialisation (copy embedding / output
  rows ``orig`` to ``clone``)::

      {"format": "prealign-enclone/1", "original_vocab_size": V, "offset": V,
       "vocab_size": 2V, "shared_ids": [2],
       "rule": "clone_id = id + offset for every id < original_vocab_size not in shared_ids"}

  :meth:`EncloneMapping.pairs` returns the ``(orig, clone)`` id arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple
from megatron_prealign.errors import ConfigError

import numpy as np

from megatron_prealign.data.alignment_table import TableEntry
from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.data.indexed_writer import PairedIndexedWriter, loss_mask_prefix
from megatron_prealign.data.text_encoder import TextEncoder

ENCLONE = "enclone"
FORMAT = "prealign-enclone/1"


@dataclass
class EncloneMapping:
    original_vocab_size: int
    shared_ids: List[int] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return self.original_vocab_size

    @property
    def vocab_size(self) -> int:
        return 2 * self.original_vocab_size

    def clone(self, ids) -> np.ndarray:
        """Clone ids of original ids (shared ids unchanged)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.original_vocab_size):
            raise ConfigError(
                f"token id outside the original vocabulary [0, {self.original_vocab_size})"
            )
        out = ids + self.offset
        if self.shared_ids:
            shared = np.isin(ids, np.asarray(self.shared_ids, dtype=np.int64))
            out[shared] = ids[shared]
        return out

    def pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(orig, clone)`` id arrays: for perfect alignment, rows ``clone`` := rows ``orig``."""
        orig = np.setdiff1d(np.arange(self.original_vocab_size), np.asarray(self.shared_ids, dtype=np.int64))
        return orig, orig + self.offset

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "original_vocab_size": self.original_vocab_size,
            "offset": self.offset,
            "vocab_size": self.vocab_size,
            "shared_ids": sorted(self.shared_ids),
            "rule": "clone_id = id + offset for every id < original_vocab_size not in shared_ids",
        }

    def save(self, path: str) -> None:
        with atomic_text_writer(path) as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.write("\n")

    @classmethod
    def load(cls, path: str) -> "EncloneMapping":
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        if record.get("format") != FORMAT:
            raise ConfigError(f"{path}: not an En-Clone mapping (format {record.get('format')!r})")
        mapping = cls(int(record["original_vocab_size"]), [int(i) for i in record["shared_ids"]])
        if record.get("offset") != mapping.offset:
            raise ConfigError(f"{path}: offset {record.get('offset')} != original_vocab_size")
        return mapping


def clone_table(
    entries: Iterable[TableEntry], encoder: TextEncoder, mapping: EncloneMapping
) -> List[TableEntry]:
    """The En-Clone alignment table of an English table (see the module docstring)."""
    result = []
    for entry in entries:
        ids = mapping.clone(encoder.form_ids(entry.word)).tolist()
        result.append(
            TableEntry(
                word=entry.word,
                count=entry.count,
                translations={ENCLONE: [entry.word]},
                token_ids={ENCLONE: [ids]},
            )
        )
    return result


def default_shared_ids(encoder: TextEncoder, extra: Optional[Iterable[int]] = None) -> List[int]:
    shared = set(extra or [])
    if encoder.eod is not None:
        shared.add(int(encoder.eod))
    return sorted(shared)


def clone_indexed_dataset(
    input_prefix: str, output_prefix: str, mapping: EncloneMapping, progress=None
) -> dict:
    """Write the clone copy of the indexed dataset at ``input_prefix`` (and its loss mask).

    Document boundaries and sequence lengths are kept; outputs are atomic
    (:class:`~megatron_prealign.data.indexed_writer.PairedIndexedWriter`).
    """
    # megatron-core (and lm_dataset, which imports it) takes seconds to import: only here, so
    # that tools/make_enclone.py --help and the table-only paths stay fast
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens = IndexedDataset(input_prefix)
    mask_ds = None
    if IndexedDataset.exists(loss_mask_prefix(input_prefix)):
        from megatron_prealign.data.lm_dataset import open_loss_mask

        mask_ds = open_loss_mask(input_prefix, tokens)
    doc_index = tokens.document_indices
    n_tokens = 0
    with PairedIndexedWriter(output_prefix, mapping.vocab_size, mask_ds is not None) as writer:
        for d in range(len(doc_index) - 1):
            seqs = range(int(doc_index[d]), int(doc_index[d + 1]))
            parts = [tokens[s] for s in seqs]
            ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            mask = np.concatenate([mask_ds[s] for s in seqs]) if mask_ds is not None and parts else None
            writer.add_document(mapping.clone(ids), mask, [len(p) for p in parts])
            n_tokens += int(ids.size)
            if progress is not None:
                progress.update(1)
        writer.commit()
    return {"documents": len(doc_index) - 1, "tokens": n_tokens, "loss_mask": mask_ds is not None}
