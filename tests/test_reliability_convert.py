"""Reliability of convert_checkpoint.py (issue #31): staging unique to the run, token ids that
fit the exported vocabulary."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

from megatron_prealign.data.atomic import run_tag
from tests.dist_utils import run_distributed

VOCAB = 640


def _import(hf_dir, save):
    from megatron_prealign.hf.convert import import_hf

    import_hf(hf_dir, save, progress=False)


def _convert(argv):
    from megatron_prealign.cli import convert_checkpoint

    return convert_checkpoint.main([*argv, "--no-progress"])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny GPT-2 with a 640-token vocabulary (its config keeps GPT-2's BOS/EOS 50256)."""
    root = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(root / "hf")
    return str(root / "hf")


@pytest.fixture(scope="module")
def checkpoint(hf_dir):
    save = os.path.join(os.path.dirname(hf_dir), "ckpt")
    run_distributed(_import, 1, hf_dir, save)
    return save


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_export_stages_in_a_directory_of_its_own(checkpoint, tmp_path):
    parent = tmp_path / "exports"
    parent.mkdir()
    # What a concurrent run staging under the old shared name (PARENT/..incomplete for "x/") and a
    # live run of ours hold; a killed run's staging (same host, process gone) is cleaned.
    shared = parent / "..incomplete"
    shared.mkdir()
    (shared / "other-run.safetensors").write_text("x")
    live = parent / f".x.incomplete-{run_tag()}-abc123"
    live.mkdir()
    host = run_tag().rpartition("-")[0]
    killed = parent / f".x.incomplete-{host}-{_dead_pid()}-k1ll3d"
    killed.mkdir()
    (killed / "model-00001-of-00001.safetensors").write_text("partial")
    code = run_distributed(_convert, 1, ["export-hf", "--load", checkpoint, "--out", str(parent) + "/x/"])[0]
    assert code == 0
    assert (parent / "x" / "config.json").is_file()
    assert (shared / "other-run.safetensors").is_file(), "another run's staging was touched"
    assert live.is_dir() and not killed.exists()
    assert sorted(os.listdir(parent)) == sorted(["..incomplete", "x", live.name])


def test_export_gives_the_tokenizer_token_ids_not_gpt2s(checkpoint, tmp_path, assets, capsys):
    code = run_distributed(_convert, 1, ["export-hf", "--load", checkpoint, "--out", str(tmp_path / "tok"),
                                         "--tokenizer-type", "SentencePieceTokenizer",
                                         "--tokenizer-model", assets["sp"]])[0]
    assert code == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    config = json.load(open(tmp_path / "tok" / "config.json"))
    generation = json.load(open(tmp_path / "tok" / "generation_config.json"))
    assert tokenizer.eos_token_id is not None and tokenizer.eos_token_id < VOCAB
    for found in (config, generation):
        assert found["eos_token_id"] == tokenizer.eos_token_id, found
        assert found["bos_token_id"] == tokenizer.bos_token_id, found
    # Without a tokenizer no id is known: none beyond the vocabulary is claimed.
    code = run_distributed(_convert, 1, ["export-hf", "--load", checkpoint, "--out", str(tmp_path / "bare")])[0]
    assert code == 0
    config = json.load(open(tmp_path / "bare" / "config.json"))
    assert config.get("eos_token_id") is None and config.get("bos_token_id") is None
    assert "within the vocabulary" not in capsys.readouterr().err  # transformers' warning on 50256


def _broken(hf_dir, directory, name):
    target = directory / name
    shutil.copytree(hf_dir, target)
    return target


def test_unreadable_weights_and_configs_are_one_line_errors(hf_dir, tmp_path, capsys):
    from megatron_prealign.cli import convert_checkpoint

    cases = {}
    target = _broken(hf_dir, tmp_path, "truncated")
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cases["truncated"] = (target, "model.safetensors is not a readable safetensors file (truncated")
    target = _broken(hf_dir, tmp_path, "garbage")
    (target / "model.safetensors").write_bytes(b"\xff" * 64)
    cases["garbage"] = (target, "model.safetensors is not a readable safetensors file")
    target = _broken(hf_dir, tmp_path, "index")
    (target / "model.safetensors.index.json").write_text('{"metadata": {"total_size": 1}}')
    cases["index"] = (target, "model.safetensors.index.json: no 'weight_map'")
    for name, edit in (("layers", {"n_layer": 0}), ("positions", {"n_positions": -1})):
        target = _broken(hf_dir, tmp_path, name)
        config = json.load(open(target / "config.json"))
        config.update(edit)
        json.dump(config, open(target / "config.json", "w"))
        key, value = next(iter(edit.items()))
        cases[name] = (target, f"config.json: {key}: {value}; these sizes must be whole numbers >= 1")
    for case, (hf, message) in cases.items():
        save = tmp_path / f"out_{case}"
        code = convert_checkpoint.main(["import-hf", "--hf-dir", str(hf), "--save", str(save), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (case, err)
        assert not save.exists() and not [f for f in os.listdir(tmp_path) if "incomplete" in f], case


def _export_code(argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = _convert(argv)
    return code, err.getvalue()


def test_bad_latest_pointer_falls_back_and_a_truncated_shard_is_one_line(checkpoint, tmp_path, capsys):
    from megatron_prealign.generation.model_loading import read_architecture
    from megatron_prealign.training.checkpointing import LATEST

    for name, pointer in (("garbage", "garbage"), ("dangling", "9")):
        copy = tmp_path / name
        shutil.copytree(checkpoint, copy)
        (copy / LATEST).write_text(pointer)
        assert read_architecture(str(copy))["directory"] == str(copy / "iter_0000000")
        err = capsys.readouterr().err
        assert "using the newest complete checkpoint, iteration 0 (choose another with --iteration)" in err
    code, err = run_distributed(_export_code, 1, ["export-hf", "--load", str(tmp_path / "dangling"),
                                                  "--out", str(tmp_path / "hf")])[0]
    assert code == 0 and "(choose another with --ckpt-step)" in err and (tmp_path / "hf" / "config.json").exists()
    truncated = tmp_path / "truncated"
    shutil.copytree(checkpoint, truncated)
    shard = next((truncated / "iter_0000000").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, err = run_distributed(_export_code, 1, ["export-hf", "--load", str(truncated), "--out", str(tmp_path / "t")])[0]
    errors = [line for line in err.splitlines() if "error" in line.lower() and "Warning" not in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("convert_checkpoint.py: error: cannot load the weights of")
    assert "(rank 0: " in errors[0] and not (tmp_path / "t").exists()


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_crafted_item_behind_clean_metadata_is_read_weights_only_unless_trusted(tmp_path):
    """torch's reader unpickles non-tensor items (the common state) with weights_only=False; a
    checkpoint whose .metadata is plain but whose common state is a payload must not run it."""
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    from megatron_prealign.generation.model_loading import EvaluationError, read_architecture

    directory = tmp_path / "crafted" / "iter_0000001"
    directory.mkdir(parents=True)
    witness = tmp_path / "code-ran"
    key = ShardedObject("common_state", None, (1,), (0,)).unique_key  # what 0.19 reads first
    dcp.save({key: _Exploit(str(witness))}, checkpoint_id=str(directory), no_dist=True)
    (directory / "metadata.json").write_text('{"sharded_backend": "torch_dist", "sharded_backend_version": 1}')
    (tmp_path / "crafted" / "latest_checkpointed_iteration.txt").write_text("1")
    with pytest.raises(EvaluationError, match="cannot read the checkpoint's run state .*not plain data"):
        read_architecture(str(tmp_path / "crafted"))
    assert not witness.exists()
    with pytest.raises(BaseException):  # trusted: torch unpickles it as it is, then finds no run state
        read_architecture(str(tmp_path / "crafted"), trusted=True)
    assert witness.exists(), "the test must be able to fail: the payload runs when trusted"


def test_crafted_metadata_is_not_unpickled_unless_trusted(checkpoint, tmp_path):
    import pickle

    from megatron_prealign.generation.model_loading import EvaluationError, read_architecture

    crafted = tmp_path / "crafted"
    shutil.copytree(checkpoint, crafted)
    witness = tmp_path / "code-ran"
    with open(crafted / "iter_0000000" / ".metadata", "wb") as handle:
        pickle.dump(_Exploit(str(witness)), handle)
    with pytest.raises(EvaluationError, match=r"\.metadata names os\.makedirs, which checkpoint metadata "
                       r"never needs: not loaded .*pass --trusted-checkpoint"):
        read_architecture(str(crafted))
    assert _convert(["export-hf", "--load", str(crafted), "--out", str(tmp_path / "hf")]) == 2
    assert not witness.exists() and not (tmp_path / "hf").exists()
    assert read_architecture(checkpoint)["architecture"]  # a real checkpoint passes the check
    # --trusted-checkpoint skips the check: torch's reader unpickles the payload (which runs),
    # then fails on what it built (the common state lives in the torch_dist files).
    with pytest.raises(BaseException):  # torch's CheckpointException is a BaseException
        read_architecture(str(crafted), trusted=True)
    assert witness.exists()
