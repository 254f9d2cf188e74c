"""The fine-tuning stage: SFT samples and packing, packed == unpacked (TP=2, PP=2), prompt tokens
contribute nothing, a short CoIT run, fine-tuning from a PreAlign checkpoint saved at another
layout, and the exact resume of a fine-tuning run after kill -9."""

import json
import os

import numpy as np
import pytest
import torch

from megatron_prealign.data.indexed_writer import PairedIndexedWriter
from megatron_prealign.instruct.dataset import InstructionRecords, InstructionSamples
from megatron_prealign.testing import pretrain_case
from tests import instruct_case
from tests.dist_utils import run_distributed

SEQ = 32


def write_records(prefix, n=23, vocab=64, seed=0):
    """Random records (3..20 tokens; a prompt of 1..5 tokens with mask 0, the rest targets)."""
    rng = np.random.default_rng(seed)
    records = []
    with PairedIndexedWriter(prefix, vocab) as writer:
        for _ in range(n):
            length = int(rng.integers(3, 21))
            ids = rng.integers(1, vocab, length)
            mask = np.ones(length, dtype=np.uint8)
            mask[: int(rng.integers(1, 6))] = 0
            writer.add_document(ids, mask)
            records.append((ids, mask))
        writer.commit()
    return records


def test_samples_hold_every_record_once_per_epoch(tmp_path):
    prefix = str(tmp_path / "records")
    records = write_records(prefix)
    source = InstructionRecords(prefix, SEQ)
    for pack in (False, True):
        samples = InstructionSamples([(source, np.arange(len(source)))], SEQ, seed=3, pack=pack)
        rows = samples.rows_in_epochs(1)
        seen = []
        for index in range(rows):
            sample = samples[index]
            segments = sample["segment_ids"] if pack else torch.where(sample["loss_mask"] > -1, 0, 0)
            for segment in (segments.unique().tolist() if pack else [0]):
                if segment < 0:
                    continue
                where = (segments == segment) if pack else (torch.arange(SEQ) < (sample["tokens"] != 0).sum())
                tokens = sample["tokens"][where]
                assert sample["position_ids"][where].tolist() == list(range(len(tokens)))  # restart
                full = tokens.tolist() + [int(sample["labels"][where][-1])]
                seen.append(full)
                match = next(r for r in records if r[0].tolist() == full)
                assert sample["loss_mask"][where].tolist() == match[1][1:].tolist()  # mask of the label
        assert sorted(seen) == sorted(r[0].tolist() for r in records)
        if pack:
            assert rows < len(records)  # packing saves rows
    again = InstructionSamples([(source, np.arange(len(source)))], SEQ, seed=3, pack=True)
    assert all(torch.equal(again[i]["tokens"], samples[i]["tokens"]) for i in range(rows))


def test_blend_weights_set_each_source_share(tmp_path):
    write_records(str(tmp_path / "a"), n=10, seed=1)
    write_records(str(tmp_path / "b"), n=30, seed=2)
    a, b = InstructionRecords(str(tmp_path / "a"), SEQ), InstructionRecords(str(tmp_path / "b"), SEQ)
    samples = InstructionSamples([(a, np.arange(10)), (b, np.arange(30))], SEQ, 0, False, weights=[0.5, 0.5])
    assert samples.per_epoch == [20, 20]  # the small source repeats, the large one is subsampled
    sources = [int(source) for index in range(samples.rows_in_epochs(1)) for source, _, _ in samples.row(index)]
    assert sources.count(0) == 20 and sources.count(1) == 20


# --------------------------------------------------------------------------- packed == unpacked


def _packed_vs_unpacked_rank(prefix, tp, pp, family):
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_prealign import runtime
    from megatron_prealign.training.loop import _lm_forward_step
    from tests.full_state import gather_full_tensors
    from tests.parallel_lm import make_model_and_optimizer, tiny_args

    runtime.initialize(tp, pp, seed=7)
    # A larger init than usual so that attention depends on the context clearly (the check that
    # attending across records changes the loss must be able to fail).
    chunks, _ = make_model_and_optimizer(tiny_args(family, seq_length=SEQ, num_layers=2, init_method_std=0.1))
    source = InstructionRecords(prefix, SEQ)
    micro = 2  # more than one row per microbatch: cu_seqlens / masks of every row count

    def run(samples, drop_segments=False):
        rows = [samples[i] for i in range(samples.rows_in_epochs(1))]
        if len(rows) % micro:  # an all-padding row: no targets, attends only to itself
            empty = {k: torch.zeros_like(v) for k, v in rows[0].items()}
            if "segment_ids" in empty:
                empty["segment_ids"] -= 1
            rows.append(empty)
        batches = [{k: torch.stack([r[k] for r in rows[i:i + micro]]) for k in rows[0]}
                   for i in range(0, len(rows), micro)]
        if drop_segments:
            batches = [{k: v for k, v in b.items() if k != "segment_ids"} for b in batches]
        for chunk in chunks:
            chunk.zero_grad_buffer()
        outputs = get_forward_backward_func()(
            forward_step_func=lambda it, model: _lm_forward_step(next(it), model),
            data_iterator=iter(batches), model=chunks, num_microbatches=len(batches),
            seq_length=SEQ, micro_batch_size=micro, forward_only=False,
        )
        sums = torch.zeros(2, dtype=torch.float64)
        for out in outputs or []:
            sums += out["lm_sum_count"].double()
        torch.distributed.all_reduce(sums)
        return (sums[0] / sums[1]).item(), sums[1].item(), gather_full_tensors(chunks, "grad"), len(rows)

    ids = np.arange(len(source))
    unpacked = run(InstructionSamples([(source, ids)], SEQ, 5, pack=False))
    packed = run(InstructionSamples([(source, ids)], SEQ, 5, pack=True))
    across = run(InstructionSamples([(source, ids)], SEQ, 5, pack=True), drop_segments=True)
    return {"unpacked": unpacked, "packed": packed, "across": across[0]}


@pytest.mark.parametrize("tp,pp,family", [(2, 1, "gpt2"), (1, 2, "llama")], ids=["tp2", "pp2"])
def test_packed_and_unpacked_give_the_same_loss(tmp_path, tp, pp, family):
    prefix = str(tmp_path / "records")
    write_records(prefix)
    result = run_distributed(_packed_vs_unpacked_rank, 2, prefix, tp, pp, family)[0]
    (loss_u, count_u, grads_u, rows_u), (loss_p, count_p, grads_p, rows_p) = result["unpacked"], result["packed"]
    assert rows_p < rows_u and count_u == count_p
    assert abs(loss_u - loss_p) < 1e-5, (loss_u, loss_p)
    for name in grads_u:
        torch.testing.assert_close(grads_p[name], grads_u[name], rtol=1e-4, atol=1e-6, msg=name)
    assert abs(result["across"] - loss_p) > 1e-4, ("attention across records must change the loss",
                                                   result["across"], loss_p)


# --------------------------------------------------------------------------- the driver


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("instruct_train"))
    paths = instruct_case.prepare(directory)
    lm = pretrain_case.prepare_data(directory)  # same assets directory: the same tokenizer
    return {**paths, **lm}  # lm's "de" is the German dataset prefix


def finetune_argv(data, work, **flags):
    argv = [
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "96", "--max-position-embeddings", "96", "--hidden-dropout", "0.0",
        "--attention-dropout", "0.0", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-fraction", "0.1", "--weight-decay", "0.0",
        "--seed", "7", "--data-path", data["coit"], "--split", "90,10,0",
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", data["sp"],
        "--log-json", os.path.join(work, "log.jsonl"), "--log-interval", "1",
    ]
    for flag, value in flags.items():
        argv.append("--" + flag.replace("_", "-"))
        if value is not True:
            argv.extend([str(value)])
    return argv


def _prompt_tokens_rank(data):
    from megatron_prealign import runtime
    from megatron_prealign.instruct.finetune import FinetuneData
    from megatron_prealign.training import arguments
    from megatron_prealign.training.loop import _lm_forward_step
    from tests.parallel_lm import make_model_and_optimizer, tiny_args

    runtime.initialize(1, 1, seed=7)
    cfg = arguments.parse_config(finetune_argv(data, "/tmp", sft_packing=True, train_iters=1))
    samples = FinetuneData(cfg.data.data_path, cfg.data.split, cfg.model.seq_length, cfg.schedule.seed,
                           cfg.finetune.sft_packing).train
    batch = {k: torch.stack([samples[i][k] for i in range(2)]) for k in samples[0]}
    chunks, _ = make_model_and_optimizer(tiny_args(vocab_size=640, seq_length=96, num_layers=2))

    def loss_and_grads(batch):
        for chunk in chunks:
            chunk.zero_grad_buffer()
        output, loss_func = _lm_forward_step(batch, chunks[0])
        total, count, _ = loss_func(output)
        total.backward()
        return total.detach(), count, [p.main_grad.clone() for p in chunks[0].parameters()]

    reference = loss_and_grads(batch)
    prompt = batch["loss_mask"] == 0
    changed = dict(batch, labels=torch.where(prompt, (batch["labels"] + 7) % 600, batch["labels"]))
    same = loss_and_grads(changed)
    target = dict(batch, labels=torch.where(~prompt, (batch["labels"] + 7) % 600, batch["labels"]))
    other = loss_and_grads(target)
    records = [samples.sources[s][0].record(int(r)) for i in range(2) for s, r, _ in samples.row(i)]
    return {"reference": reference[:2], "same": same[:2], "other": other[:2],
            "grads_equal": all(torch.equal(a, b) for a, b in zip(reference[2], same[2])),
            "targets": sum(int(mask[1:].sum()) for _, mask in records)}


def test_prompt_tokens_contribute_nothing(data):
    result = run_distributed(_prompt_tokens_rank, 1, data)[0]
    assert torch.equal(result["reference"][0], result["same"][0]) and result["grads_equal"]
    assert int(result["reference"][1]) == result["targets"]  # response tokens + EOD of each record
    assert not torch.equal(result["reference"][0], result["other"][0]), "the test must be able to fail"


def _finetune_rank(argv):
    return pretrain_case.run_pretrain(argv)


def test_short_coit_run_lowers_the_response_loss(data, tmp_path):
    argv = finetune_argv(data, str(tmp_path), sft_packing=True, train_epochs=2, eval_interval=10, eval_iters=1)
    run_distributed(_finetune_rank, 1, argv)
    log = pretrain_case.read_log(str(tmp_path))
    with open(os.path.join(str(tmp_path), "log.jsonl")) as handle:
        validation = [json.loads(line) for line in handle if "validation_lm_loss" in line]
    assert validation and set(validation[0]["validation_lm_loss"]) == {os.path.basename(data["coit"])}
    assert {r["stage"] for r in log} == {"finetune"} and set(pretrain_case_keys()) <= set(log[0])
    losses = [r["lm_loss"] for r in log]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 0.5, losses
    assert log[-1]["lr"] == pytest.approx(3e-4)  # cosine to --min-lr over the run the epochs define


def pretrain_case_keys():
    return ("iteration", "stage", "lm_loss", "lr", "grad_norm", "tokens_per_sec", "elapsed_s")


def _first_losses(work):
    return {r["iteration"]: r["lm_loss"] for r in pretrain_case.read_log(work)}


@pytest.mark.slow
def test_finetune_from_prealign_checkpoint_at_another_layout_and_resume_after_kill(data, tmp_path):
    from tests.test_pretrain import _kill_after_a_save, _torchrun

    # A PreAlign run (pre-alignment + pretraining) saved at TP=2.
    pretrained_dir = str(tmp_path / "prealign")
    argv = pretrain_case.base_argv(data, str(tmp_path), train_iters=1, prealign_iters=1, save=pretrained_dir,
                                   seq_length=96, max_position_embeddings=96, tensor_model_parallel_size=2,
                                   hidden_dropout=0.0, attention_dropout=0.0,
                                   **pretrain_case.alignment_flags(data))
    run_distributed(_finetune_rank, 2, argv)

    def finetune(name, iters=6, pretrained=True, **flags):
        work = tmp_path / name
        work.mkdir()
        if pretrained:
            flags.update(pretrained_checkpoint=pretrained_dir, finetune=True)
        return str(work), finetune_argv(data, str(work), sft_packing=True, train_iters=iters, **flags)

    # Fine-tuning at PP=2 and on one process from the TP=2 checkpoint: same weights, same start.
    work_pp, argv_pp = finetune("pp2", pipeline_model_parallel_size=2)
    run_distributed(_finetune_rank, 2, argv_pp)
    work_one, argv_one = finetune("single", iters=1)
    run_distributed(_finetune_rank, 1, argv_one)
    work_fresh, argv_fresh = finetune("fresh", iters=1, pretrained=False)
    run_distributed(_finetune_rank, 1, argv_fresh)
    straight = _first_losses(work_pp)
    assert sorted(straight) == [1, 2, 3, 4, 5, 6]  # iteration 0: a new run, not the checkpoint's iteration 2
    assert straight[1] == pytest.approx(_first_losses(work_one)[1], rel=1e-4)
    assert abs(straight[1] - _first_losses(work_fresh)[1]) > 0.05, "the pretrained weights must matter"

    # The same run at PP=2, killed (-9) after a checkpoint (every 2 iterations), relaunched as is.
    work_killed, argv_killed = finetune("killed", pipeline_model_parallel_size=2)
    checkpoints = os.path.join(work_killed, "checkpoints")
    os.makedirs(checkpoints)  # as the launch scripts do: --load DIR must exist
    argv_killed += ["--save", checkpoints, "--load", checkpoints, "--save-interval", "2"]
    process = _torchrun(argv_killed, 2, os.path.join(work_killed, "out.txt"))
    saved = _kill_after_a_save(process, os.path.join(checkpoints, "latest_checkpointed_iteration.txt"),
                               6, os.path.join(work_killed, "out.txt"))
    os.remove(os.path.join(work_killed, "log.jsonl"))
    process = _torchrun(argv_killed, 2, os.path.join(work_killed, "out2.txt"))
    assert process.wait(timeout=600) == 0, open(os.path.join(work_killed, "out2.txt")).read()
    resumed = _first_losses(work_killed)
    assert sorted(resumed) == list(range(saved + 1, 7))
    for iteration in resumed:
        assert resumed[iteration] == straight[iteration], (iteration, resumed, straight)


@pytest.mark.parametrize("script", ["xllama_coit.sh", "xllama_muit.sh"])
def test_xllama_scripts_dry_run_with_the_reference_hyperparameters(script):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("TP", "PP", "NNODES")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", os.path.join(root, "examples", script), "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    command = result.stdout.splitlines()[1]
    for flags in ("--sft --pretrained-checkpoint", "--train-epochs 3 --lr 2e-5", "--lr-decay-style cosine",
                  "--lr-warmup-fraction 0.03 --weight-decay 0.0", "--global-batch-size 128", "--seq-length 512",
                  "--bf16", "--finetune"):
        assert flags in command, flags
    assert "TP=2 PP=1 DP=4" in result.stdout and "whole run: --train-epochs 3" in result.stdout
    # launching without a base model is a clear error, before anything starts
    result = subprocess.run(["bash", os.path.join(root, "examples", script)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "PRETRAINED_CHECKPOINT" in result.stderr
