"""The training driver: every stage configuration runs and logs the documented keys, masked
tokens contribute nothing, a killed run resumes bit-exactly, and bad input fails before training."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

LOG_KEYS = {"iteration", "stage", "lm_loss", "alignment_loss", "alignment_similarity", "lr",
            "grad_norm", "tokens_per_sec", "elapsed_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("pretrain_data")))


CONFIGS = {
    "joint": ({}, ["pretrain"] * 3),
    "prealign": ({"prealign_iters": 2}, ["prealign"] * 2 + ["pretrain"] * 3),
    "on_the_fly": ({"alignment_during_pretraining": True}, ["pretrain"] * 3),
    "postalign": ({"postalign_iters": 1}, ["pretrain"] * 3 + ["postalign"]),
    "original_codeswitching": ({"codeswitch_mode": "original"}, ["pretrain"] * 3),
    "prealign_bf16": ({"prealign_iters": 1, "bf16": True}, ["prealign"] + ["pretrain"] * 3),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stage_configuration_runs_and_logs(data, tmp_path, name):
    flags, stages = CONFIGS[name]
    flags = dict(flags)
    if any(k in flags for k in ("prealign_iters", "postalign_iters", "alignment_during_pretraining")):
        flags.update(pretrain_case.alignment_flags(data))
    save = str(tmp_path / "checkpoints") if name == "prealign" else None
    if save:
        flags["save"] = save
    argv = pretrain_case.base_argv(data, str(tmp_path), **flags)
    assert run_distributed(pretrain_case.run_pretrain, 1, argv)[0]["iteration"] == len(stages)
    if save:  # no --save-interval: saved at the end of pre-alignment and at the end
        assert sorted(os.listdir(save)) == ["iter_0000002", "iter_0000005", "latest_checkpointed_iteration.txt"]
    records = pretrain_case.read_log(str(tmp_path))
    assert [r["stage"] for r in records] == stages
    for record in records:
        assert LOG_KEYS <= set(record), LOG_KEYS - set(record)
        assert record["lm_loss"] > 0 and record["tokens_per_sec"] > 0
        aligned = record["stage"] != "pretrain" or flags.get("alignment_during_pretraining")
        if aligned:
            assert record["alignment_loss"] > 0
            assert len(record["alignment_similarity"]) == 2 + 2  # embeddings, 2 layers, LM head
        else:
            assert record["alignment_loss"] is None


def _masked_loss_rank():
    """Changing the targets of masked positions changes neither the loss nor any gradient."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_prealign import runtime
    from megatron_prealign.model import ModelArgs, build_model
    from megatron_prealign.training.loop import _lm_forward_step
    from tests.full_state import gather_full_tensors

    runtime.initialize(1, 1, seed=3)
    args = ModelArgs(vocab_size=64, seq_length=8, num_layers=2, hidden_size=32, num_attention_heads=4,
                     hidden_dropout=0.0, attention_dropout=0.0)
    chunks = build_model(args)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 64, (2, 8), generator=generator)
    mask = torch.ones(2, 8)
    mask[0, 2:4] = 0
    mask[1, 5] = 0

    def loss_and_grads(labels):
        chunks[0].zero_grad_buffer()
        batch = {"tokens": tokens, "labels": labels, "loss_mask": mask,
                 "position_ids": torch.arange(8).expand(2, 8)}
        out = get_forward_backward_func()(
            forward_step_func=lambda it, model: _lm_forward_step(next(it), model),
            data_iterator=iter([batch]), model=chunks, num_microbatches=1, seq_length=8,
            micro_batch_size=2, forward_only=False,
        )
        return out[0]["lm_sum_count"], gather_full_tensors(chunks, "grad")

    labels = torch.randint(0, 64, (2, 8), generator=generator)
    changed = labels.clone()
    changed[mask == 0] = (changed[mask == 0] + 17) % 64
    unmasked_changed = labels.clone()
    unmasked_changed[0, 0] = (unmasked_changed[0, 0] + 17) % 64
    reference, reference_grads = loss_and_grads(labels)
    same, same_grads = loss_and_grads(changed)
    other, _ = loss_and_grads(unmasked_changed)
    return {
        "reference": reference, "same": same, "other": other,
        "grads_equal": all(torch.equal(reference_grads[k], same_grads[k]) for k in reference_grads),
    }


def test_masked_tokens_contribute_nothing():
    result = run_distributed(_masked_loss_rank, 1)[0]
    assert torch.equal(result["reference"], result["same"])
    assert result["reference"][1] == 16 - 3  # the count is the number of unmasked targets
    assert result["grads_equal"]
    assert not torch.equal(result["reference"], result["other"]), "the test must be able to fail"


def _torchrun(argv, nproc, log_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "megatron_prealign.pretrain", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _kill_tree(process):
    """SIGKILL the launcher and all its descendants (torchrun starts ranks in new sessions)."""
    import psutil

    parent = psutil.Process(process.pid)
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _kill_after_a_save(process, pointer: str, total: int, log_path) -> int:
    """kill -9 the run (launcher and ranks) as soon as it has published a checkpoint; return the
    iteration the pointer names then. Tiny models train several iterations per poll, so a later
    save may already be published: any iteration before the last is a kill mid-run."""
    deadline = time.time() + 600
    while not os.path.exists(pointer) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(pointer), open(log_path).read()
    _kill_tree(process)
    saved = int(open(pointer).read())
    assert saved < total, "the run finished before it was killed: give it more iterations"
    return saved


def _losses(work):
    return {r["iteration"]: r["lm_loss"] for r in pretrain_case.read_log(work)}


@pytest.mark.parametrize("tp,pp,nproc", [(1, 1, 1), (2, 2, 4)], ids=["tp1", "tp2xpp2"])
def test_killed_run_resumes_bit_exactly(data, tmp_path, tp, pp, nproc):
    # Checkpoint every 3 iterations of 12 (the first: the end of pre-alignment) and kill after
    # one of them.
    n = 3
    layout = dict(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, use_distributed_optimizer=True,
                  hidden_dropout=0.1, attention_dropout=0.1, prealign_iters=n,
                  **pretrain_case.alignment_flags(data))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    total = 12  # 3 pre-alignment + 9 pretraining iterations
    argv = pretrain_case.base_argv(data, str(straight), train_iters=total - n, **layout)
    assert _torchrun(argv, nproc, straight / "out.txt").wait(timeout=600) == 0, (straight / "out.txt").read_text()

    checkpoints = str(killed / "checkpoints")
    argv = pretrain_case.base_argv(data, str(killed), train_iters=total - n, save=checkpoints,
                                   save_interval=n, **layout)
    process = _torchrun(argv, nproc, killed / "out.txt")
    saved = _kill_after_a_save(process, os.path.join(checkpoints, "latest_checkpointed_iteration.txt"),
                               total, killed / "out.txt")

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    argv = pretrain_case.base_argv(data, str(resumed), train_iters=total - n, load=checkpoints, **layout)
    assert _torchrun(argv, nproc, resumed / "out.txt").wait(timeout=600) == 0, (resumed / "out.txt").read_text()
    expected, got = _losses(str(straight)), _losses(str(resumed))
    assert sorted(got) == list(range(saved + 1, total + 1))
    for iteration in got:
        assert got[iteration] == expected[iteration], f"iteration {iteration}: {got[iteration]} != {expected[iteration]}"


def _error_of(argv):
    from megatron_prealign.training import arguments, loop

    try:
        loop.run(arguments.parse_config(argv))
    except (ValueError, FileNotFoundError) as error:
        return {"error": str(error)}
    return {"error": ""}


def _errors_of(steps):
    """Rank body: ("error", argv) -> the run's error message ("" when it ran); ("train", argv)
    -> a run that must succeed ("")."""
    from megatron_prealign import runtime

    messages = []
    for kind, argv in steps:
        if kind == "train":
            pretrain_case.run_pretrain(argv)
            messages.append("")
        else:
            messages.append(_error_of(argv)["error"])
            runtime.shutdown()  # no-op when loop.run already did (it shuts down in any case)
    return messages


def test_bad_input_fails_before_training(data, tmp_path):
    work = str(tmp_path)
    cases = [
        (pretrain_case.base_argv(data, work, data_path=[data["en"] + "_missing"]), "does not exist"),
        (pretrain_case.base_argv(data, work, prealign_iters=2), "need --alignment-table"),
        (pretrain_case.base_argv(data, work, **pretrain_case.alignment_flags(data)), "no stage aligns"),
        (pretrain_case.base_argv(data, work, enclone_init=True), "--enclone-mapping"),
        (pretrain_case.base_argv(data, work, tensor_model_parallel_size=3), "not divisible"),
        (pretrain_case.base_argv(data, work, global_batch_size=3), "--global-batch-size"),
        (pretrain_case.base_argv(data, work, train_iters=1), "--lr-warmup-iters"),
    ]
    from megatron_prealign.training import arguments

    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            arguments.validate(arguments.parse_config(argv), 1)


def test_bad_data_and_checkpoints_are_clear_errors(data, tmp_path):
    # A mask file whose lengths disagree with its token file.
    import shutil

    bad = str(tmp_path / "bad_text_document")
    for suffix in (".bin", ".idx"):
        shutil.copy(data["en_cs"] + suffix, bad + suffix)
        shutil.copy(data["de"] + "_loss_mask" + suffix, bad + "_loss_mask" + suffix)
    bad_mask = pretrain_case.base_argv(data, str(tmp_path), data_path=[bad])

    # A table the tokenizer cannot turn into any word group.
    table = tmp_path / "table.jsonl"
    table.write_text(json.dumps({"word": "bank", "count": 30, "translations": {"de": ["bank"]}}) + "\n")
    bad_table = pretrain_case.base_argv(data, str(tmp_path), prealign_iters=1, alignment_table=str(table),
                                        alignment_words_per_batch=2)

    # A checkpoint of another architecture.
    saved = str(tmp_path / "ckpt")
    save = pretrain_case.base_argv(data, str(tmp_path), train_iters=2, save=saved)
    other = pretrain_case.base_argv(data, str(tmp_path), train_iters=2, load=saved)
    other[other.index("--hidden-size") + 1] = "64"

    # One process runs the four in turn (each run shuts its runtime down; the checkpoint is on disk).
    errors = run_distributed(_errors_of, 1, [("error", bad_mask), ("error", bad_table), ("train", save),
                                             ("error", other)])[0]
    assert "loss_mask" in errors[0]
    assert "word groups" in errors[1]
    assert errors[2] == "" and os.path.exists(os.path.join(saved, "latest_checkpointed_iteration.txt"))
    assert "another architecture" in errors[3] and "hidden_size" in errors[3]


def test_sigterm_saves_and_exits_cleanly(data, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    argv = pretrain_case.base_argv(data, str(tmp_path), train_iters=500, save=checkpoints)
    process = subprocess.Popen([sys.executable, "-m", "megatron_prealign.pretrain", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    saved = int(open(os.path.join(checkpoints, "latest_checkpointed_iteration.txt")).read())
    assert 2 <= saved < 500 and "exiting at iteration" in output
