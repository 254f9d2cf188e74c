"""Online (per-sample) codeswitching against the preprocessed mode: replaced tokens are never
targets in either, online draws change between epochs and samples but not between runs with the
same seed, a resumed run reads exactly the same batches, and bad configurations fail early."""

import difflib

import numpy as np
import pytest
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data import online_codeswitch
from megatron_prealign.data.lm_dataset import MaskedGPTDataset
from megatron_prealign.data.online_codeswitch import OnlineCodeswitchGPTDataset
from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
from megatron_prealign.errors import ConfigError
from megatron_prealign.training import arguments
from megatron_prealign.training.batches import LMBatches, build_datasets
from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

RATIO = 0.3  # the preprocessed en_cs data's ratio (megatron_prealign/testing/pretrain_case.py)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("online_cs_data")))


def online_argv(data, work, prefix=None, **flags):
    flags = {"codeswitch_online": True, "alignment_table": data["table"], "codeswitch_languages": ["de"],
             "codeswitch_ratio": RATIO, **flags}
    argv = pretrain_case.base_argv(data, str(work), **flags)
    at = argv.index("--data-path")
    argv[at + 1 : at + 5] = [prefix or data["en"]]  # one prefix, no blend
    return argv


def datasets(argv, num_samples=(64, 8, 1)):
    cfg = arguments.parse_config(argv)
    arguments.validate(cfg, 1)
    return build_datasets(cfg, build_tokenizer_from_spec(cfg.tokenizer.spec()), list(num_samples))


def plain_stream(dataset, idx, count):
    """Megatron-core's unswitched tokens from sample ``idx``'s first token on (from its own
    indices, not the online code's reader)."""
    j = int(dataset.shuffle_index[idx])
    pos, off = (int(v) for v in dataset.sample_index[j])
    out = []
    while sum(map(len, out)) < count and pos < len(dataset.document_index):
        out.append(dataset.dataset.get(int(dataset.document_index[pos]), offset=off))
        pos, off = pos + 1, 0
    return np.concatenate(out)[:count].tolist()


def changed_positions(original, switched):
    """Positions of ``switched`` that no alignment with ``original`` explains: replaced tokens."""
    changed = set()
    matcher = difflib.SequenceMatcher(None, original, switched, autojunk=False)
    for op, _, _, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "insert"):
            changed.update(range(j1, j2))
    return changed


def replaced_targets(samples_and_text):
    """(label positions whose token is a replacement but which are targets, replaced labels)."""
    leaks, replaced = 0, 0
    for sample, changed in samples_and_text:
        for t in range(len(sample["labels"])):
            if t + 1 in changed:  # label t is token t + 1 of the window
                replaced += 1
                leaks += int(sample["loss_mask"][t] != 0)
    return leaks, replaced


def online_checks(dataset, n=48):
    found = []
    for idx in range(n):
        sample = dataset[idx]
        window = sample["tokens"].tolist() + sample["labels"][-1:].tolist()
        original = plain_stream(dataset, idx, 3 * len(window))
        # Everything up to the last matching token of the window explains the switches.
        found.append((sample, changed_positions(original, window)))
    return replaced_targets(found)


@pytest.mark.parametrize("mode", ["input-only", "original"])
def test_online_replaced_tokens_are_inputs_only(data, tmp_path, mode):
    train, _, _ = datasets(online_argv(data, tmp_path, codeswitch_mode=mode))
    assert isinstance(train, OnlineCodeswitchGPTDataset)
    leaks, replaced = online_checks(train)
    assert replaced > 20  # ratio 0.3: many switched words in 48 samples
    if mode == "input-only":
        assert leaks == 0, f"{leaks} of {replaced} replaced tokens are prediction targets"
    else:  # the check has teeth: in original mode the replacements are targets
        assert leaks == replaced


def test_preprocessed_replaced_tokens_are_inputs_only(data, tmp_path):
    """The stored switches: en_cs document d is en document d with words replaced."""
    plain, switched = IndexedDataset(data["en"]), IndexedDataset(data["en_cs"])
    changed = {d: changed_positions(plain[d].tolist(), switched[d].tolist()) for d in range(len(plain))}
    argv = pretrain_case.base_argv(data, str(tmp_path))
    base = arguments.parse_config(argv)
    tokenizer = build_tokenizer_from_spec(base.tokenizer.spec())
    results = {}
    for name, mode in (("masked", "input-only"), ("plain", "original")):
        cfg = arguments.replace(base, codeswitch_mode=mode)
        train, _, _ = build_datasets(cfg, tokenizer, [64, 8, 1], data_path=[data["en_cs"]])
        assert type(train) is (MaskedGPTDataset if mode == "input-only" else GPTDataset)
        found = []
        for idx in range(48):
            j = int(train.shuffle_index[idx])
            pos, off = (int(v) for v in train.sample_index[j])
            _, doc_ids, lengths = GPTDataset._query_document_sample_shuffle_indices(train, idx)
            positions, start = set(), 0
            for k, (doc, n) in enumerate(zip(doc_ids, lengths)):
                first = off if k == 0 else 0
                positions.update(start + p - first for p in changed[int(doc)] if first <= p < first + n)
                start += n
            found.append((train[idx], positions))
        results[name] = replaced_targets(found)
    assert results["masked"][1] > 20
    assert results["masked"][0] == 0
    assert results["plain"][0] == results["plain"][1]  # GPTDataset ignores the masks


def _fully_inside(dataset, idx):
    """{document id: its switched tokens} of the documents entirely inside sample ``idx``."""
    text, doc_ids, lengths, _ = dataset.switched_window(idx)
    out, start = {}, 0
    for k, (doc, n) in enumerate(zip(doc_ids, lengths)):
        if 0 < k < len(lengths) - 1:
            out[int(doc)] = tuple(text[start : start + n].tolist())
        start += n
    return out


def test_online_draws_change_per_epoch_and_repeat_per_seed(data, tmp_path):
    argv = online_argv(data, tmp_path)
    for flag in ("--seq-length", "--max-position-embeddings"):  # whole documents (~95 tokens) inside
        argv[argv.index(flag) + 1] = "512"
    train, _, _ = datasets(argv, (120, 8, 1))  # about 3.5 epochs
    n_docs = len(train.indices)
    assert len(train.document_index) >= 2 * n_docs, "the samples must span two epochs"
    plain = IndexedDataset(data["en"])
    versions = {}
    for idx in range(len(train)):
        for doc, tokens in _fully_inside(train, idx).items():
            versions.setdefault(doc, set()).add(tokens)
    switched_docs = [doc for doc in versions if any(t != tuple(plain[doc].tolist()) for t in versions[doc])]
    differing = [doc for doc, v in versions.items() if len(v) > 1]
    assert len(switched_docs) > 10
    # A document read in several epochs is switched differently (fresh draws).
    assert len(differing) >= len(switched_docs) // 4, (len(differing), len(switched_docs))

    online_codeswitch._SWITCHERS.clear()  # a fresh process: the same seed gives the same samples
    again, _, _ = datasets(argv, (120, 8, 1))
    other, _, _ = datasets(argv + ["--seed", "8"], (120, 8, 1))
    for idx in range(0, 32):
        assert torch.equal(train[idx]["tokens"], again[idx]["tokens"])
        assert torch.equal(train[idx]["loss_mask"], again[idx]["loss_mask"])
    assert any(not torch.equal(train[i]["tokens"], other[i]["tokens"]) for i in range(32))


def test_online_batches_resume_exactly_with_any_workers(data, tmp_path):
    train, _, _ = datasets(online_argv(data, tmp_path))
    straight = LMBatches(train, 2, 0, 1, consumed_samples=0, num_workers=0)
    steps = [straight.next_step(2) for _ in range(4)]
    resumed = LMBatches(train, 2, 0, 1, consumed_samples=8, num_workers=2)  # after 2 steps of 4
    try:
        for expected in steps[2:]:
            for a, b in zip(expected, resumed.next_step(2)):
                for key in a:
                    assert torch.equal(a[key], b[key]), key
    finally:
        resumed.close()


def test_online_training_resumes_bit_exactly(data, tmp_path):
    straight, first, second = (tmp_path / name for name in ("straight", "first", "second"))
    for d in (straight, first, second):
        d.mkdir()
    ckpt = str(tmp_path / "ckpt")
    run_distributed(pretrain_case.run_pretrain, 1, online_argv(data, straight, train_iters=4))
    run_distributed(pretrain_case.run_pretrain, 1,
                    online_argv(data, first, train_iters=4, save=ckpt, exit_interval=2))
    run_distributed(pretrain_case.run_pretrain, 1, online_argv(data, second, train_iters=4, load=ckpt))
    expected = {r["iteration"]: r["lm_loss"] for r in pretrain_case.read_log(str(straight))}
    got = {r["iteration"]: r["lm_loss"] for r in pretrain_case.read_log(str(second))}
    assert sorted(got) == [3, 4]
    for iteration in got:
        assert got[iteration] == expected[iteration]


@pytest.mark.parametrize("flags,message", [
    ({"alignment_table": None}, "--codeswitch-online draws its words from --alignment-table"),
    ({"codeswitch_ratio": 1.5}, "--codeswitch-ratio must be in [0, 1]"),
    ({"codeswitch_languages": ["xx"]}, "--codeswitch-languages xx not in --alignment-table"),
    ({"codeswitch_online": False}, "--codeswitch-languages applies to --codeswitch-online only"),
    ({"prefix": "en_cs"}, "holds loss-mask zeros"),
])
def test_online_configuration_errors(data, tmp_path, flags, message):
    prefix = data[flags.pop("prefix")] if "prefix" in flags else None
    argv = online_argv(data, tmp_path, prefix=prefix, **{k: v for k, v in flags.items() if v not in (None, False)})
    for flag in (k for k, v in flags.items() if v in (None, False)):
        at = argv.index("--" + flag.replace("_", "-"))
        del argv[at : at + (1 if flag == "codeswitch_online" else 2)]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        arguments.validate(arguments.parse_config(argv), 1)


def test_online_codeswitching_same_losses_at_tp2_pp2(data, tmp_path):
    """Every rank draws the same switches (a hash of seed, sample and span), so TP=2 x PP=2 on
    4 gloo ranks trains on what one process trains on: from the same checkpoint (the layouts
    initialise their shards differently), the same losses up to reduction order."""
    ckpt = str(tmp_path / "ckpt")
    common = dict(hidden_dropout=0.0, attention_dropout=0.0)
    (tmp_path / "start").mkdir()
    run_distributed(pretrain_case.run_pretrain, 1,
                    online_argv(data, tmp_path / "start", train_iters=3, exit_interval=1, save=ckpt, **common))
    runs = {}
    for name, nproc, flags in (("single", 1, {}),
                               ("tp2pp2", 4, dict(tensor_model_parallel_size=2, pipeline_model_parallel_size=2))):
        work = tmp_path / name
        work.mkdir()
        run_distributed(pretrain_case.run_pretrain, nproc,
                        online_argv(data, work, train_iters=3, load=ckpt, **common, **flags), timeout=900)
        runs[name] = {r["iteration"]: r["lm_loss"] for r in pretrain_case.read_log(str(work))}
    assert sorted(runs["single"]) == [2, 3]
    assert runs["tp2pp2"] == pytest.approx(runs["single"], rel=1e-5)
