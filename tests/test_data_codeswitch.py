"""Codeswitching of single documents against independently computed expectations."""

import json
import math
import re

import numpy as np
import pytest

from megatron_prealign.data.alignment_table import TableEntry, read_table
from megatron_prealign.data.codeswitch import Codeswitcher, word_uniforms


def process_many(switcher, texts, doc_indices, key_index=0):
    """(token ids, loss mask or None when nothing was switched, counts) of each document, cut
    out of one :meth:`Codeswitcher.process_batch`."""
    batch = switcher.process_batch(texts, doc_indices, key_index)
    cuts = np.cumsum(batch.lengths)[:-1].tolist()
    ids_split = np.split(batch.ids, cuts)
    mask_split = np.split(batch.mask, cuts) if batch.mask is not None else [None] * len(texts)
    results = []
    for d, (ids, m) in enumerate(zip(ids_split, mask_split)):
        stats = batch.doc_stats(d)
        results.append((ids, m if m is not None and stats.switched else None, stats))
    return results


def process(switcher, text, doc_index, key_index=0):
    """:func:`process_many` of one document."""
    return process_many(switcher, [text], [doc_index], key_index)[0]


@pytest.fixture(scope="session")
def docs(assets):
    with open(assets["en"], encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


@pytest.fixture(scope="session")
def single_table(assets):
    """German only, one translation per word, so which translation is used is known."""
    entries = read_table(assets["table"])
    return [
        TableEntry(e.word, e.count, {"de": e.translations["de"][:1]})
        for e in entries
        if "de" in e.translations
    ]


def expected_switch_all(text, table):
    """Independent re-implementation of ratio=1 switching with single translations."""
    translation = {e.word: e.translations["de"][0] for e in table}
    out, pos, switched, eligible, first_at_start = [], 0, [], 0, False
    for m in re.finditer(r"[^\W_]+(?:-[^\W_]+)*", text):
        word = m.group()
        before = text[m.start() - 1] if m.start() else ""
        key = None
        for candidate, case in ((word, "lower"), (word.lower(), "title"), (word.lower(), "upper")):
            if case == "lower" and candidate in translation:
                key = (candidate, case)
            elif case == "title" and word == word[:1].upper() + word[1:].lower() and candidate in translation:
                key = key or (candidate, case)
            elif case == "upper" and word == word.upper() and candidate in translation:
                key = key or (candidate, case)
        if key is None or not (before == "" or before.isspace()):
            continue
        eligible += 1
        t = translation[key[0]]
        t = t.upper() if key[1] == "upper" and word != word[:1].upper() + word[1:].lower() else (
            t[:1].upper() + t[1:] if key[1] in ("title", "upper") else t)
        out.append(text[pos : m.start()])
        out.append(t)
        first_at_start |= m.start() == 0
        switched.append(t)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), switched, eligible, first_at_start


def mask_runs(ids, mask):
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m == 0:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def test_ratio_one_switches_every_eligible_word_and_masks_exactly_them(encoder, docs, single_table):
    cs = Codeswitcher(single_table, ["de"], 1.0, "input-only", seed=3, encoder=encoder)
    for doc_index, text in enumerate(docs[:40]):
        ids, mask, stats = process(cs, text, doc_index)
        ids = ids.tolist()
        expected_text, switched, eligible, _ = expected_switch_all(text, single_table)
        assert stats.eligible == eligible == stats.switched
        assert ids == encoder.encode(expected_text)
        assert mask.dtype == np.uint8 and len(mask) == len(ids)
        # Masked tokens are exactly the running-text tokens of the switched words, in order.
        runs = [encoder.decode(r).strip() for r in mask_runs(ids, mask)]
        joined_expected = " ".join(switched)
        assert " ".join(runs) == joined_expected
        assert not any("\n" in encoder.decode(r) for r in mask_runs(ids, mask))
        # Without line breaks every switched word follows a space (or starts the document)
        # and has exactly its running-text form's tokens masked.
        flat = text.replace("\n", " ")
        ids, mask, _ = process(cs, flat, doc_index)
        _, switched, _, first_at_start = expected_switch_all(flat, single_table)
        n_expected = sum(len(encoder.form_ids(t)) for t in switched)
        if first_at_start:  # no space before it: tokens as at text start
            n_expected += len(encoder.encode(switched[0])) - len(encoder.form_ids(switched[0]))
        assert int((mask == 0).sum()) == n_expected


def test_switch_rate_matches_ratio(encoder, docs, assets):
    table = read_table(assets["table"])
    ratio = 0.3
    cs = Codeswitcher(table, ["de", "zh"], ratio, "input-only", seed=11, encoder=encoder)
    eligible = switched = 0
    for doc_index, text in enumerate(docs):
        _, _, stats = process(cs, text, doc_index)
        eligible += stats.eligible
        switched += stats.switched
    assert eligible > 2000
    sigma = math.sqrt(ratio * (1 - ratio) / eligible)
    assert abs(switched / eligible - ratio) < 4 * sigma


def test_languages_and_translations_are_all_used(encoder, docs, assets):
    table = {e.word: e for e in read_table(assets["table"])}
    cs = Codeswitcher(list(table.values()), ["de", "zh"], 1.0, "input-only", seed=5, encoder=encoder)
    runs = []
    for doc_index, text in enumerate(docs[:60]):
        ids, mask, _ = process(cs, text, doc_index)
        runs += [" " + encoder.decode([int(t) for t in r]).strip() + " " for r in mask_runs(ids, mask)]
    switched_text = "|".join(runs)  # adjacent switched words share a run
    bank = table["bank"].translations
    for form in bank["de"] + bank["zh"]:
        assert f" {form} " in switched_text, form


def test_original_mode_same_tokens_full_mask(encoder, docs, assets):
    table = read_table(assets["table"])
    a = Codeswitcher(table, ["de"], 0.2, "input-only", seed=1, encoder=encoder)
    b = Codeswitcher(table, ["de"], 0.2, "original", seed=1, encoder=encoder)
    for doc_index, text in enumerate(docs[:30]):
        ids_a, mask_a, stats_a = process(a, text, doc_index)
        ids_b, mask_b, stats_b = process(b, text, doc_index)
        assert ids_a.tolist() == ids_b.tolist() and stats_a.switched == stats_b.switched
        assert mask_b is None or mask_b.all()


def test_none_mode_is_plain_tokenization(encoder, docs, assets):
    cs = Codeswitcher(read_table(assets["table"]), ["de"], 0.5, "none", seed=1, encoder=encoder)
    for doc_index, text in enumerate(docs[:10]):
        ids, mask, stats = process(cs, text, doc_index)
        assert ids.tolist() == encoder.encode(text) and mask is None and stats.switched == 0


def test_decisions_depend_only_on_seed_document_and_position(encoder, single_table):
    cs = Codeswitcher(single_table, ["de"], 0.5, "input-only", seed=7, encoder=encoder)
    text = " ".join(["the bank"] * 40)
    base = process(cs, text, 4)[0].tolist()
    assert process(cs, text, 4)[0].tolist() == base  # repeatable
    assert process(cs, text, 5)[0].tolist() != base  # another document index draws differently
    other_seed = Codeswitcher(single_table, ["de"], 0.5, "input-only", 8, encoder)
    assert process(other_seed, text, 4)[0].tolist() != base
    # Changing words after position k does not change decisions before k.
    prefix_words = 20
    changed = " ".join(["the bank"] * 10) + " zzz" + " the bank" * 30
    u_all = word_uniforms(7, 4, 0, range(2 * prefix_words))
    assert np.array_equal(u_all[:prefix_words], word_uniforms(7, 4, 0, range(prefix_words)))
    ids_a, mask_a, _ = process(cs, text, 4)
    ids_b, mask_b, _ = process(cs, changed, 4)
    ids_a, ids_b = ids_a.tolist(), ids_b.tolist()
    k = encoder.encode(" ".join(["the bank"] * 10))
    n = len(k) - 2
    assert ids_a[:n] == ids_b[:n] and list(mask_a[:n]) == list(mask_b[:n])


def test_ineligible_positions_and_casing(encoder):
    table = [TableEntry("bank", 5, {"de": ["ufer"]})]
    cs = Codeswitcher(table, ["de"], 1.0, "input-only", seed=0, encoder=encoder)
    text = "bank (bank) x-bank bank-x Bank BANK bAnk bank."
    ids, mask, stats = process(cs, text, 0)
    ids = ids.tolist()
    assert stats.eligible == 4  # first word, "Bank", "BANK", and "bank." ; not "(bank", hyphenated, "bAnk"
    assert ids == encoder.encode("ufer (bank) x-bank bank-x Ufer UFER bAnk ufer.")
    runs = [encoder.decode(r).strip() for r in mask_runs(ids, mask)]
    assert " ".join(runs) == "ufer Ufer UFER ufer"  # adjacent switched words form one run


def test_long_and_nested_table_words(encoder):
    """Forms of many tokens (looked up by hash, then compared token by token) and table words
    that begin other table words: at a position the longest eligible one is the word."""
    words = ["counterrevolutionaries", "counter", "supercalifragilisticexpialidocious", "super", "bank"]
    table = [TableEntry(w, 5, {"de": [w[::-1]]}) for w in words]
    cs = Codeswitcher(table, ["de"], 1.0, "input-only", seed=0, encoder=encoder)
    assert max(len(encoder.form_ids(w.upper())) for w in words) > 8
    text = ("Counterrevolutionaries counter SUPERCALIFRAGILISTICEXPIALIDOCIOUS supercalifragilistic "
            "super-bank counter bank\nsupercalifragilisticexpialidocious. Super")
    expected_text, switched, eligible, _ = expected_switch_all(text, table)
    ids, mask, stats = process(cs, text, 0)
    assert stats.eligible == eligible == len(switched) == 7
    assert ids.tolist() == encoder.encode(expected_text)
    assert " ".join(encoder.decode(r).strip() for r in mask_runs(ids.tolist(), mask)) == " ".join(switched)


def test_token_id_forms_replace_the_word_tokens(encoder):
    clone = [999_000 + i for i in range(2)]
    table = [TableEntry("bank", 5, {"enclone": ["bank"]}, {"enclone": [clone]})]
    cs = Codeswitcher(table, ["enclone"], 1.0, "original", seed=0, encoder=encoder)
    ids, mask, stats = process(cs, "the bank is by the river", 0)
    ids = ids.tolist()
    assert mask is None  # original mode: nothing masked
    the = encoder.encode("the")
    rest = encoder.encode("the bank is by the river")
    assert stats.switched == 1
    assert ids[: len(the)] == the and ids[len(the) : len(the) + 2] == clone
    assert ids[len(the) + 2 :] == rest[len(the) + len(encoder.form_ids("bank")) :]


def test_enclone_forms_keep_the_casing_of_the_matched_word(encoder):
    """At ratio 1 every eligible spelling of a table word becomes the clone of its own tokens,
    i.e. the output equals cloning the switched positions of the original tokens."""
    from megatron_prealign.data.enclone import EncloneMapping, clone_table, default_shared_ids

    mapping = EncloneMapping(encoder.vocab_size, default_shared_ids(encoder))
    table = clone_table([TableEntry("bank", 5, {}), TableEntry("river", 3, {})], encoder, mapping)
    cs = Codeswitcher(table, ["enclone"], 1.0, "input-only", seed=0, encoder=encoder)
    text = "Bank and river.\nBANK by the River, bank"
    ids, mask, stats = process(cs, text, 0)
    original = np.asarray(encoder.encode(text))
    assert stats.switched == 5 and len(ids) == len(original)
    switched = mask == 0
    assert ids[~switched].tolist() == original[~switched].tolist()
    assert ids[switched].tolist() == mapping.clone(original[switched]).tolist()


def test_many_documents_at_once_equals_one_by_one(encoder, docs, assets):
    cs = Codeswitcher(read_table(assets["table"]), ["de", "zh"], 0.2, "input-only", seed=4, encoder=encoder)
    chunk = docs[:50] + ["", "bank", "the bank"]
    indices = list(range(100, 100 + len(chunk)))
    many = process_many(cs, chunk, indices)
    for text, index, (ids, mask, stats) in zip(chunk, indices, many):
        one_ids, one_mask, one_stats = process(cs, text, index)
        assert ids.tolist() == one_ids.tolist() and stats == one_stats
        assert (mask is None and one_mask is None) or mask.tolist() == one_mask.tolist()


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """Where numba finds no writable cache location (read-only install, no home directory), the
    loops are compiled in the process instead of failing at import."""
    import numba.core.caching

    from megatron_prealign.data import codeswitch

    def add_one(x):
        return x + 1

    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(add_one)
    assert codeswitch._njit(add_one)(41) == 42
