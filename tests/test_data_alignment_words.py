"""Alignment-word batches: forms, packing invariants, determinism, data-parallel slices."""

import pytest
import torch

from megatron_prealign.data.alignment_table import TableEntry, read_table, write_table
from megatron_prealign.data.alignment_words import AlignmentWordDataset, encode_groups
from megatron_prealign.data.packing import block_diagonal_causal_mask


def dataset(assets, encoder, **kwargs):
    args = dict(languages=["de", "zh"], words_per_batch=8, seq_length=24, seed=1)
    args.update(kwargs)
    return AlignmentWordDataset.from_table(assets["table"], encoder, **args)


def unpack(batch):
    """Forms of a batch as {form index: token list}, read back from segment ids."""
    forms = {}
    for row in range(batch.tokens.shape[0]):
        for col in range(batch.tokens.shape[1]):
            seg = int(batch.segment_ids[row, col])
            if seg >= 0:
                forms.setdefault(seg, []).append((int(batch.position_ids[row, col]), int(batch.tokens[row, col])))
    return {k: [t for _, t in v] for k, v in forms.items()}, forms


@pytest.mark.parametrize("pack", [True, False])
def test_batch_holds_exactly_the_groups_forms(assets, encoder, pack):
    ds = dataset(assets, encoder, pack=pack)
    table = {e.word: e for e in read_table(assets["table"])}
    batch = ds.batch(0)
    assert batch.tokens.dtype == torch.long and batch.tokens.shape[1] == 24
    assert len(batch.group_words) == 8 == len(set(batch.group_words))
    forms, positioned = unpack(batch)
    assert sorted(forms) == list(range(batch.n_forms))
    for index, ids in forms.items():
        # Positions restart at 0 and run contiguously for every form.
        assert [p for p, _ in positioned[index]] == list(range(len(ids)))
        group = int(batch.form_group[index])
        word = batch.group_words[group]
        lang = batch.form_language[index]
        expected = {word} if lang == "en" else set(table[word].translations[lang])
        # The form's tokens are the running-text tokens of the English word or a translation.
        assert any(encoder.form_ids(text) == ids for text in expected), (word, lang)
    # Every group has its English form and all translations that encode to distinct ids.
    for group, word in enumerate(batch.group_words):
        langs = [batch.form_language[i] for i in range(batch.n_forms) if int(batch.form_group[i]) == group]
        texts = [word] + [t for lang in ("de", "zh") for t in table[word].translations.get(lang, [])]
        assert langs[0] == "en" and len(langs) == len({tuple(encoder.form_ids(t)) for t in texts})
    if not pack:
        assert batch.tokens.shape[0] == batch.n_forms and torch.all(batch.segment_ids[:, 0] >= 0)
    else:
        assert batch.tokens.shape[0] < batch.n_forms


def test_deterministic_per_seed_and_epochs_cover_all_groups(assets, encoder):
    a, b, c = dataset(assets, encoder), dataset(assets, encoder), dataset(assets, encoder, seed=2)
    for step in range(3):
        x, y = a.batch(step), b.batch(step)
        assert torch.equal(x.tokens, y.tokens) and x.group_words == y.group_words
    assert a.batch(0).group_words != c.batch(0).group_words
    words = [w for step in range(a.steps_per_epoch) for w in a.batch(step).group_words]
    assert len(words) == len(set(words)) == a.steps_per_epoch * 8


def test_data_parallel_slices_partition_the_global_batch(assets, encoder):
    ds = dataset(assets, encoder)
    full = ds.batch(5)
    parts = [ds.batch(5, dp_rank=r, dp_size=2) for r in range(2)]
    assert parts[0].group_words + parts[1].group_words == full.group_words
    groups = torch.cat([p.form_group for p in parts])
    assert torch.equal(groups, full.form_group)
    assert parts[1].form_group.min() == 4  # global group ids
    with pytest.raises(ValueError, match="divisible"):
        ds.batch(0, dp_rank=0, dp_size=3)


def test_attention_mask_is_block_diagonal_causal(assets, encoder):
    batch = dataset(assets, encoder).batch(0)
    mask = block_diagonal_causal_mask(batch.segment_ids)
    n, length = batch.tokens.shape
    assert mask.shape == (n, 1, length, length) and mask.dtype == torch.bool
    seg = batch.segment_ids
    for row in range(n):
        for i in range(length):
            for j in range(length):
                allowed = (j <= i and seg[row, i] == seg[row, j] and seg[row, i] >= 0) or i == j
                assert bool(mask[row, 0, i, j]) == (not allowed)


def test_single_form_groups_dropped_and_long_forms_rejected(encoder, tmp_path):
    entries = [
        TableEntry("bank", 1, {"de": ["Ufer"]}),
        TableEntry("river", 1, {"de": ["Fluss"]}),
        TableEntry("water", 1, {"fr": ["eau"]}),  # nothing in the requested language
        TableEntry("tree", 1, {"de": ["tree"]}),  # translation identical to the English form
    ]
    groups, dropped = encode_groups(entries, encoder, languages=["de"])
    assert [g.word for g in groups] == ["bank", "river"] and dropped == ["water", "tree"]
    long = [TableEntry("bank", 1, {"de": ["Donaudampfschifffahrtsgesellschaftskapitän" * 3]})] + entries[1:2]
    table = str(tmp_path / "t.jsonl")
    write_table(table, long)
    with pytest.raises(ValueError, match="more than seq_length=8"):
        AlignmentWordDataset.from_table(table, encoder, ["de"], words_per_batch=2, seq_length=8)


def test_token_id_forms_and_held_out_words(assets, encoder, tmp_path):
    entries = [TableEntry(e.word, e.count, {"enclone": [e.word]}, {"enclone": [[1000 + i]]})
               for i, e in enumerate(read_table(assets["table"]))]
    table = str(tmp_path / "clone.jsonl")
    write_table(table, entries)
    ds = AlignmentWordDataset.from_table(table, encoder, words_per_batch=4, seq_length=16,
                                         held_out_fraction=0.3)
    assert ds.held_out_words and set(ds.held_out_words).isdisjoint(ds.words)
    assert len(ds.held_out_words) + len(ds.words) == len(entries)
    batch = ds.batch(0)
    forms, _ = unpack(batch)
    by_word = {e.word: e.token_ids["enclone"][0] for e in entries}
    for index, ids in forms.items():
        if batch.form_language[index] == "enclone":
            assert ids == by_word[batch.group_words[int(batch.form_group[index])]]
