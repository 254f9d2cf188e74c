"""Distributed checkpoints: resharding across TP/PP layouts and exact resume."""

import os

import pytest
import torch

from tests import parallel_lm
from tests.dist_utils import run_distributed


def _scheduler(optimizer):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=1e-2, min_lr=1e-3, lr_warmup_steps=2, lr_decay_steps=10,
        lr_decay_style="cosine", start_wd=0.0, end_wd=0.0, wd_incr_steps=10, wd_incr_style="constant",
    )


def _full_logits(chunks, tokens):
    """Logits of the last stage, gathered over TP, broadcast to every rank."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region
    from megatron.core.pipeline_parallel import get_forward_backward_func

    outputs = []

    def forward_step(iterator, model):
        batch = next(iterator)
        logits = model(batch, torch.arange(batch.shape[1]).expand_as(batch), None)

        def keep(output):
            outputs.append(gather_from_tensor_model_parallel_region(output).detach())
            return output.sum() * 0, torch.tensor(1), {}

        return logits, keep

    get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter([tokens]), model=chunks,
        num_microbatches=1, seq_length=tokens.shape[1], micro_batch_size=tokens.shape[0],
        forward_only=True,
    )
    last = parallel_state.get_pipeline_model_parallel_last_rank()
    logits = outputs[0] if outputs else None  # GPTModel returns [batch, seq, vocab]
    shape = (tokens.shape[0], tokens.shape[1], parallel_lm.VOCAB)
    logits = logits if logits is not None else torch.empty(shape)
    torch.distributed.broadcast(logits, src=last, group=parallel_state.get_pipeline_model_parallel_group())
    return logits


def _train_and_save(root, tp, pp):
    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing

    runtime.initialize(tp, pp, seed=11)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(parallel_lm.tiny_args())
    parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())
    checkpointing.save_checkpoint(root, 1, chunks, optimizer)
    return {"logits": _full_logits(chunks, parallel_lm.global_batch(5)[:2, :-1])}


def _load_and_eval(root, tp, pp):
    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing

    runtime.initialize(tp, pp, seed=99)  # a different seed: everything must come from the file
    chunks, optimizer = parallel_lm.make_model_and_optimizer(parallel_lm.tiny_args())
    run_state = checkpointing.load_checkpoint(root, chunks, optimizer)
    return {"logits": _full_logits(chunks, parallel_lm.global_batch(5)[:2, :-1]),
            "iteration": run_state["iteration"]}


def test_tp2_checkpoint_loads_at_pp2_with_the_same_logits(tmp_path):
    saved = run_distributed(_train_and_save, 2, str(tmp_path), 2, 1)[0]
    loaded = run_distributed(_load_and_eval, 2, str(tmp_path), 1, 2)
    for result in loaded:
        assert result["iteration"] == 1
        torch.testing.assert_close(result["logits"], saved["logits"], rtol=1e-5, atol=1e-5)
    assert open(tmp_path / "latest_checkpointed_iteration.txt").read() == "1"


def _resume_run(root, steps_before, steps_after, load, use_distributed_optimizer):
    """Train `steps_before` (saving at the end) or load, then train `steps_after`, with dropout
    on so that the RNG state matters."""
    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing

    runtime.initialize(1, 1, seed=5)
    args = parallel_lm.tiny_args(hidden_dropout=0.1, attention_dropout=0.1)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(args, use_distributed_optimizer)
    scheduler = _scheduler(optimizer)
    losses = []
    if load:
        checkpointing.load_checkpoint(root, chunks, optimizer, scheduler)
    for _ in range(steps_before):
        losses.append(parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())[0])
        scheduler.step(1)
    if steps_before:
        checkpointing.save_checkpoint(root, steps_before, chunks, optimizer, scheduler)
    for _ in range(steps_after):
        losses.append(parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())[0])
        scheduler.step(1)
    return {"losses": losses, "lr": optimizer.param_groups[0]["lr"]}


@pytest.mark.parametrize("use_distributed_optimizer", [False, True], ids=["adam", "distopt"])
def test_resume_is_exact(tmp_path, use_distributed_optimizer):
    # The uninterrupted run saves after its first 2 steps (and goes on); a new process loads that
    # checkpoint and takes the last 2 steps.
    straight = run_distributed(_resume_run, 2, str(tmp_path), 2, 2, False, use_distributed_optimizer)
    assert open(tmp_path / "latest_checkpointed_iteration.txt").read() == "2"
    resumed = run_distributed(_resume_run, 2, str(tmp_path), 0, 2, True, use_distributed_optimizer)
    for rank in range(2):
        assert resumed[rank]["losses"] == straight[rank]["losses"][2:], "resumed losses differ"
        assert resumed[rank]["lr"] == straight[rank]["lr"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from megatron_prealign.training import checkpointing

    with pytest.raises(ValueError, match="nothing to resume from"):
        checkpointing.load_checkpoint(str(tmp_path), chunks=None)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")
    with pytest.raises(ValueError, match="iter_0000007.*no complete checkpoint"):
        checkpointing.load_checkpoint(str(tmp_path), chunks=None)
    assert not os.path.exists(tmp_path / "iter_0000007")


def _save_under(root):
    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing

    runtime.initialize(1, 1, seed=11)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(parallel_lm.tiny_args())
    try:
        checkpointing.save_checkpoint(root, 1, chunks, optimizer)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "saved"


def test_a_save_failing_on_rank_zero_fails_on_every_rank(tmp_path):
    # Rank 0 cannot create the staging directory (the root is a file): every rank raises at
    # once instead of the others waiting at a barrier.
    root = tmp_path / "not_a_directory"
    root.write_text("")
    results = run_distributed(_save_under, 2, str(root), timeout=120)
    assert results[0].startswith("NotADirectoryError"), results[0]
    assert "prepare_staging failed on rank 0" in results[1], results[1]


@pytest.mark.parametrize("variant", ["adam", "distopt"])
def test_checkpoint_of_the_megatron_core_016_release_resumes_exactly(tmp_path, variant):
    """A checkpoint written by the previous release (megatron-core 0.16.1, Python 3.11; see
    tests/legacy_checkpoint.py) resumes on the current stack with the losses and learning rate
    the old stack itself computed after loading it."""
    import json
    import shutil

    from tests import legacy_checkpoint

    source = os.path.join(os.path.dirname(__file__), "data", "mcore016_checkpoint")
    expected = json.load(open(os.path.join(source, "expected.json")))
    assert expected["megatron_core"].startswith("0.16")
    root = shutil.copytree(os.path.join(source, variant), tmp_path / variant)  # loading writes nothing; a copy keeps it so
    resumed = run_distributed(legacy_checkpoint.run, 2, str(root), True, legacy_checkpoint.VARIANTS[variant])
    for rank in range(2):
        assert [float(x) for x in resumed[rank]["losses"]] == expected[variant][rank]["losses"]
        assert float(resumed[rank]["lr"]) == expected[variant][rank]["lr"]
