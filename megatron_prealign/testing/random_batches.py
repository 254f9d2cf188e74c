"""A stand-in source of alignment microbatches (random word groups) for tests and benchmarks.

Real batches come from ``megatron_prealign.data.alignment_words``; this generator only needs
the vocabulary size, so tests do not depend on a tokenizer or an alignment table.
"""

from typing import List, Sequence, Tuple

import torch

from megatron_prealign.alignment.microbatch import AlignmentBatch, pack_forms


def random_groups(
    num_groups: int,
    vocab_size: int,
    max_form_length: int,
    forms_per_group: Tuple[int, int] = (2, 3),
    seed: int = 0,
    first_group: int = 0,
) -> Tuple[List[List[int]], List[int]]:
    """(forms, group of each form): ``num_groups`` groups of ``forms_per_group`` (inclusive
    range) forms of 1..max_form_length random tokens, groups numbered from ``first_group``."""
    generator = torch.Generator().manual_seed(seed)
    forms, groups = [], []
    for group in range(first_group, first_group + num_groups):
        count = int(torch.randint(forms_per_group[0], forms_per_group[1] + 1, (), generator=generator))
        for _ in range(count):
            length = int(torch.randint(1, max_form_length + 1, (), generator=generator))
            forms.append(torch.randint(0, vocab_size, (length,), generator=generator).tolist())
            groups.append(group)
    return forms, groups


def random_alignment_batch(
    num_groups: int,
    vocab_size: int,
    seq_length: int,
    num_sequences: int,
    max_form_length: int = 4,
    forms_per_group: Tuple[int, int] = (2, 3),
    seed: int = 0,
    first_group: int = 0,
) -> AlignmentBatch:
    forms, groups = random_groups(num_groups, vocab_size, max_form_length, forms_per_group, seed, first_group)
    return pack_forms(forms, groups, seq_length, num_sequences)


def data_parallel_batches(
    dp_size: int, groups_per_rank: int, vocab_size: int, seq_length: int, num_sequences: int,
    seed: int = 0, **kwargs,
) -> Sequence[AlignmentBatch]:
    """One microbatch per DP rank, with disjoint (globally numbered) groups."""
    return [
        random_alignment_batch(
            groups_per_rank, vocab_size, seq_length, num_sequences, seed=seed * 1000 + rank,
            first_group=rank * groups_per_rank, **kwargs,
        )
        for rank in range(dp_size)
    ]
