"""Batches of word groups for the pre-alignment contrastive loss.

A *word group* is an English table word and its translations (the *forms* of the group). Every
form is tokenized as it appears in running text after a space (" bank", " Ufer", " 银行"), exactly
as preprocessing inserts translations (:meth:`TextEncoder.form_ids`); table forms given as token
ids (En-Clone) are used as they are.

Interface (what the alignment code calls)::

    ds = AlignmentWordDataset.from_table(
        "table.jsonl", tokenizer, languages=["de"], words_per_batch=64, seq_length=32, seed=1234,
        pack=True, held_out_fraction=0.1)
    batch = ds.batch(step, dp_rank=rank, dp_size=world)   # deterministic in (seed, step)

``WordFormBatch`` (all torch tensors int64 unless said otherwise):

* ``tokens [n_seq, seq_len]``: token ids, ``pad_id`` at padding.
* ``position_ids [n_seq, seq_len]``: restart at 0 for every form (0 at padding).
* ``segment_ids [n_seq, seq_len]``: index of the form (0..n_forms-1) a token belongs to, -1 for
  padding. Mean-pool a layer's states per form with it (``index_add_`` over segment ids).
* ``form_group [n_forms]``: the group of each form, a *global* group index within the step
  (0..words_per_batch-1), so forms of the same word share it across data-parallel ranks: the
  positives of the supervised contrastive loss are the forms with equal ``form_group``.
* ``form_language`` (list of str, "en" for the English word), ``group_words`` (list of str, the
  English word of each local group, in global group order of this rank's slice).
* The attention mask is ``packing.block_diagonal_causal_mask(segment_ids)``: bool
  ``[n_seq, 1, seq_len, seq_len]``, True = masked (megatron-core's convention), causal within a
  form, nothing across forms. With ``pack=False`` every row holds one form left-aligned, so the
  ordinary causal mask is already correct.

Groups: each step takes ``words_per_batch`` groups from a per-epoch permutation (seeded by
``(seed, epoch)``; a partial last epoch chunk is skipped so no group repeats in a step);
data-parallel rank r gets the r-th contiguous slice of ``words_per_batch / dp_size`` groups.
The number of forms per rank varies with the words drawn. Groups with fewer than two forms are
dropped at load time (``dropped_words``); a form longer than ``seq_length`` raises ValueError.
``held_out_fraction`` keeps a deterministic share of the table's words out of pre-alignment
(:func:`megatron_prealign.data.alignment_table.is_held_out`), listed in ``held_out_words``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple
from megatron_prealign.errors import ConfigError

import numpy as np
import torch

from megatron_prealign.data.alignment_table import TableEntry, is_held_out, read_table
from megatron_prealign.data.packing import fill_rows, pack_layout
from megatron_prealign.data.text_encoder import TextEncoder

ENGLISH = "en"


@dataclass
class WordForm:
    language: str
    text: str
    ids: List[int]


@dataclass
class WordGroup:
    word: str
    forms: List[WordForm]  # forms[0] is the English word


@dataclass
class WordFormBatch:
    """See the module docstring."""

    tokens: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    form_group: torch.Tensor
    form_language: List[str] = field(default_factory=list)
    group_words: List[str] = field(default_factory=list)

    @property
    def n_forms(self) -> int:
        return int(self.form_group.numel())


def encode_groups(
    entries: Sequence[TableEntry],
    encoder: TextEncoder,
    languages: Optional[Sequence[str]] = None,
    include_english: bool = True,
) -> Tuple[List[WordGroup], List[str]]:
    """Word groups of a table (forms tokenized), and the words dropped for having < 2 forms."""
    groups, dropped = [], []
    for entry in entries:
        langs = languages if languages is not None else sorted(entry.translations)
        forms = []
        if include_english:
            forms.append(WordForm(ENGLISH, entry.word, encoder.form_ids(entry.word)))
        for lang in langs:
            id_forms = entry.token_ids.get(lang)
            for k, text in enumerate(entry.translations.get(lang) or []):
                ids = list(id_forms[k]) if id_forms is not None else encoder.form_ids(text)
                forms.append(WordForm(lang, text, ids))
        unique, seen = [], set()
        for form in forms:  # two spellings with equal ids would be the same model input
            if tuple(form.ids) not in seen:
                seen.add(tuple(form.ids))
                unique.append(form)
        if len(unique) < 2:
            dropped.append(entry.word)
        else:
            groups.append(WordGroup(entry.word, unique))
    return groups, dropped


class AlignmentWordDataset:
    """Deterministic batches of word groups; see the module docstring."""

    def __init__(
        self,
        groups: Sequence[WordGroup],
        words_per_batch: int,
        seq_length: int,
        seed: int,
        pack: bool = True,
        pad_id: int = 0,
        dropped_words: Sequence[str] = (),
        held_out_words: Sequence[str] = (),
    ) -> None:
        if words_per_batch < 2:
            raise ConfigError("words_per_batch must be >= 2 (a contrastive batch needs negatives)")
        if len(groups) < words_per_batch:
            raise ConfigError(
                f"only {len(groups)} word groups for words_per_batch={words_per_batch}"
            )
        for group in groups:
            for form in group.forms:
                if len(form.ids) > seq_length:
                    raise ConfigError(
                        f"form {form.text!r} ({form.language}) of word {group.word!r} has "
                        f"{len(form.ids)} tokens, more than seq_length={seq_length}"
                    )
        self.groups = list(groups)
        self.words_per_batch = words_per_batch
        self.seq_length = seq_length
        self.seed = seed
        self.pack = pack
        self.pad_id = pad_id
        self.dropped_words = list(dropped_words)
        self.held_out_words = list(held_out_words)
        self.steps_per_epoch = len(self.groups) // words_per_batch

    @classmethod
    def from_table(
        cls,
        table_path: str,
        tokenizer,
        languages: Optional[Sequence[str]] = None,
        words_per_batch: int = 64,
        seq_length: int = 32,
        seed: int = 1234,
        pack: bool = True,
        held_out_fraction: float = 0.0,
        split_seed: int = 0,
        pad_id: int = 0,
    ) -> "AlignmentWordDataset":
        """Load a table; ``tokenizer`` is a megatron-core tokenizer or a :class:`TextEncoder`."""
        encoder = tokenizer if isinstance(tokenizer, TextEncoder) else TextEncoder(tokenizer)
        entries = read_table(table_path)
        seen = [e for e in entries if not is_held_out(e.word, held_out_fraction, split_seed)]
        held = [e.word for e in entries if is_held_out(e.word, held_out_fraction, split_seed)]
        groups, dropped = encode_groups(seen, encoder, languages)
        return cls(groups, words_per_batch, seq_length, seed, pack, pad_id, dropped, held)

    def max_forms_per_rank(self, dp_size: int = 1) -> int:
        """The most word forms any data-parallel rank's batch can hold (its groups the ones with
        the most forms): a static bound for the alignment pass's padded gather."""
        per_rank = self.words_per_batch // dp_size
        return sum(sorted((len(g.forms) for g in self.groups), reverse=True)[:per_rank])

    @property
    def words(self) -> List[str]:
        """The English words used for pre-alignment (the "seen" words)."""
        return [g.word for g in self.groups]

    def step_groups(self, step: int) -> List[int]:
        """Indices into ``groups`` of the ``words_per_batch`` groups of a step."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))
        return order[k * self.words_per_batch : (k + 1) * self.words_per_batch].tolist()

    def batch(self, step: int, dp_rank: int = 0, dp_size: int = 1) -> WordFormBatch:
        if self.words_per_batch % dp_size:
            raise ConfigError(f"words_per_batch={self.words_per_batch} not divisible by {dp_size}")
        per_rank = self.words_per_batch // dp_size
        chosen = self.step_groups(step)[dp_rank * per_rank : (dp_rank + 1) * per_rank]
        forms: List[WordForm] = []
        form_group: List[int] = []
        for local, index in enumerate(chosen):
            for form in self.groups[index].forms:
                forms.append(form)
                form_group.append(dp_rank * per_rank + local)
        lengths = [len(f.ids) for f in forms]
        placement = (pack_layout(lengths, self.seq_length) if self.pack
                     else [(i, 0) for i in range(len(forms))])
        tokens, positions, segments = fill_rows(
            [f.ids for f in forms], placement, self.seq_length, pad_value=self.pad_id)
        return WordFormBatch(
            tokens=tokens,
            position_ids=positions,
            segment_ids=segments,
            form_group=torch.tensor(form_group, dtype=torch.long),
            form_language=[f.language for f in forms],
            group_words=[self.groups[i].word for i in chosen],
        )
