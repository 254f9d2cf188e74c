"""MaskedGPTDataset: loss_mask = megatron-core's mask AND the stored mask of the label tokens."""

import shutil

import numpy as np
import pytest
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset

from megatron_prealign.data.indexed_writer import PairedIndexedWriter
from megatron_prealign.data.lm_dataset import (
    LossMaskMismatchError,
    MaskedGPTDataset,
    lm_dataset_config,
)
from megatron_prealign.data.tokenizer import build_tokenizer

VOCAB = 70000
STRIDE = 64  # token id = 1 + doc * STRIDE + position: every token says where it came from



def build_lm_datasets(config, num_samples):
    """[train, valid, test] built as training builds them (megatron-core's builder, every rank)."""
    return BlendedMegatronDatasetBuilder(MaskedGPTDataset, num_samples, lambda: True, config).build()

@pytest.fixture(scope="module")
def tokenizer():
    # ids 0..VOCAB, EOD = VOCAB: megatron-core 0.19's NullTokenizer puts EOD at vocab_size - 1.
    return build_tokenizer("NullTokenizer", vocab_size=VOCAB + 1)


def stored_bit(doc, pos):
    return int((doc * 31 + pos * 17) % 5 != 0)


def write_data(prefix, n_docs=60, seed=0, with_mask=True, eod=VOCAB):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 40, size=n_docs)
    with PairedIndexedWriter(prefix, VOCAB + 1, with_loss_mask=with_mask) as writer:
        for d, n in enumerate(lengths):
            ids = [1 + d * STRIDE + p for p in range(n)] + [eod]
            mask = [stored_bit(d, p) for p in range(n)] + [1]
            writer.add_document(ids, np.array(mask, dtype=np.uint8) if with_mask else None)
        writer.commit()
    return prefix


def expected_label_mask(labels, tokens=None):
    """Stored bit of each label token (EOD: 1); with ``tokens``, also megatron-core's
    eod_mask_loss rule (no loss where the *input* token is EOD)."""
    out = []
    for t, label in enumerate(labels.tolist()):
        bit = 1.0
        if label != VOCAB:
            doc, pos = divmod(label - 1, STRIDE)
            bit = float(stored_bit(doc, pos))
        if tokens is not None and int(tokens[t]) == VOCAB:
            bit = 0.0
        out.append(bit)
    return torch.tensor(out)


@pytest.mark.parametrize("eod_mask_loss", [False, True])
def test_loss_mask_is_stored_mask_of_labels(tmp_path, tokenizer, eod_mask_loss):
    prefix = write_data(str(tmp_path / "d"))
    config = lm_dataset_config(tokenizer, seq_length=16, seed=3, data_path=[prefix],
                               split="80,20,0", path_to_cache=str(tmp_path / "cache"),
                               eod_mask_loss=eod_mask_loss)
    train, valid, test = build_lm_datasets(config, [200, 20, None])
    assert isinstance(train, MaskedGPTDataset) and test is None
    for ds in (train, valid):
        assert ds.loss_mask_dataset is not None
        for i in range(len(ds)):
            sample = ds[i]
            expected = expected_label_mask(
                sample["labels"], sample["tokens"] if eod_mask_loss else None
            )
            assert torch.equal(sample["loss_mask"], expected), i
            # ... i.e. the stored mask shifted by one (label t is stored token t+1).
            stored = ds.stored_mask(i).float()
            assert torch.equal(sample["loss_mask"] == 0, (stored[1:] == 0) | (expected == 0))
            assert torch.equal(sample["tokens"][1:], sample["labels"][:-1])


def test_tokens_identical_to_plain_gpt_dataset(tmp_path, tokenizer):
    prefix = write_data(str(tmp_path / "d"))
    config = lm_dataset_config(tokenizer, 16, 3, [prefix], split="100,0,0",
                               path_to_cache=str(tmp_path / "cache"))
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )

    masked = build_lm_datasets(config, [100, None, None])[0]
    plain = BlendedMegatronDatasetBuilder(GPTDataset, [100, None, None], lambda: True, config).build()[0]
    assert len(masked) == len(plain)
    for i in range(len(plain)):
        a, b = masked[i], plain[i]
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["loss_mask"], b["loss_mask"] * expected_label_mask(b["labels"]))


@pytest.fixture
def single_rank_group(tmp_path):
    """BlendedDataset's cache logic asks torch.distributed for the rank, as in training."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_no_sibling_means_plain_megatron_masks_and_blending_mixes(
    tmp_path, tokenizer, single_rank_group
):
    with_mask = write_data(str(tmp_path / "a"), seed=1)
    plain = write_data(str(tmp_path / "b"), seed=2, with_mask=False)
    config = lm_dataset_config(tokenizer, 16, 5, ["0.5", with_mask, "0.5", plain],
                               split="100,0,0", path_to_cache=str(tmp_path / "cache"))
    train = build_lm_datasets(config, [300, 0, 0])[0]
    assert isinstance(train, BlendedDataset)
    assert [d.loss_mask_dataset is not None for d in train.datasets] == [True, False]
    seen = set()
    for i in range(len(train)):
        sample = train[i]
        which = int(train.dataset_index[i])
        seen.add(which)
        if which == 0:
            assert torch.equal(sample["loss_mask"], expected_label_mask(sample["labels"]))
        else:
            assert torch.all(sample["loss_mask"] == 1)
    assert seen == {0, 1}


def test_mismatched_sibling_is_a_clear_error(tmp_path, tokenizer):
    prefix = write_data(str(tmp_path / "d"), seed=0)
    other = write_data(str(tmp_path / "e"), seed=7)
    for ext in (".bin", ".idx"):
        shutil.copy(other + "_loss_mask" + ext, prefix + "_loss_mask" + ext)
    config = lm_dataset_config(tokenizer, 16, 3, [prefix], split="100,0,0",
                               path_to_cache=str(tmp_path / "cache"))
    with pytest.raises(LossMaskMismatchError) as info:
        build_lm_datasets(config, [50, None, None])
    assert prefix + ".{bin,idx}" in str(info.value) and prefix + "_loss_mask.{bin,idx}" in str(info.value)
