"""Shared pieces of the evaluations: atomic JSON results, Wilson intervals, reading JSON lines,
and turning text into model token ids (optionally into the En-Clone id range)."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.data.enclone import EncloneMapping
from megatron_prealign.data.lines import iter_json_objects
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.errors import BadInputError
from megatron_prealign.errors import EvaluationError
from megatron_prealign.stats import proportion_interval


def write_json(path: str, record: dict) -> str:
    """Write ``record`` to ``path`` atomically (temporary sibling, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_text_writer(path) as handle:
        json.dump(record, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    return path


def wilson_interval(successes: int, total: int) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion, 95% (megatron_prealign.stats)."""
    return proportion_interval(successes, total)


def read_jsonl(path: str, what: str) -> List[dict]:
    if not os.path.isfile(path):
        raise EvaluationError(f"{what} {path} does not exist")
    try:
        records = [record for _, record in iter_json_objects(path)]
    except BadInputError as error:  # FILE:LINE: what is wrong
        raise EvaluationError(str(error)) from None
    if not records:
        raise EvaluationError(f"{what} {path} is empty: nothing to evaluate")
    return records


class TextToIds:
    """Text -> model token ids with the evaluation's tokenizer; with an En-Clone mapping the ids
    are shifted into the clone range (the text is then "in En-Clone")."""

    def __init__(self, tokenizer, model_vocab_size: int, enclone_mapping: Optional[str] = None,
                 add_bos: bool = False):
        self.encoder = TextEncoder(tokenizer)
        self.bos = self.encoder.bos if add_bos else None
        if add_bos and self.bos is None:
            raise EvaluationError("--add-bos: the tokenizer defines no beginning-of-sequence token")
        self.mapping = None
        if enclone_mapping:
            self.mapping = EncloneMapping.load(enclone_mapping)
            if self.mapping.original_vocab_size != self.encoder.vocab_size:
                raise EvaluationError(
                    f"--enclone-mapping {enclone_mapping} was made for a vocabulary of "
                    f"{self.mapping.original_vocab_size}, the tokenizer has {self.encoder.vocab_size}")
        needed = self.mapping.vocab_size if self.mapping else self.encoder.vocab_size
        if needed > model_vocab_size:
            raise EvaluationError(
                f"the tokenizer{' (with En-Clone)' if self.mapping else ''} needs a vocabulary of "
                f"{needed}, the checkpoint's model has {model_vocab_size}: another tokenizer was "
                "used for training")
        self.eod = self.encoder.eod

    def __call__(self, text: str, clone: bool = True, bos: bool = True) -> np.ndarray:
        """The ids the model reads: in En-Clone unless ``clone`` is False; BOS first with
        ``--add-bos`` unless ``bos`` is False (a continuation, not a text of its own)."""
        ids = self.encoder.encode_array(text)
        if self.mapping is not None and clone:
            ids = self.mapping.clone(ids)
        if self.bos is None or not bos:
            return ids
        return np.concatenate([[self.bos], ids]).astype(np.int64)

    def map_ids(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return self.mapping.clone(ids) if self.mapping is not None else ids


def write_jsonl(path: str, records: Sequence[dict]) -> str:
    """JSON lines written atomically (temporary sibling, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_text_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
