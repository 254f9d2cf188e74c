"""GPU readiness, as far as the CPU can see it: the device check mode catches misplaced tensors
and the whole training driver (pre-alignment, pretraining, validation, signals, save) runs
under it at TP / PP / DP; the DataLoader's read-ahead, the overlap flags and the attention-path
decision keep results exact. Tests marked `cuda` run the same on a GPU (skipped without one)."""

import json
import os

import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("gpu_readiness_data")))


def _losses(work):
    return [(r["iteration"], r["lm_loss"], r.get("alignment_loss")) for r in pretrain_case.read_log(work)]


# -- the check mode itself -------------------------------------------------------------------


def _misplaced_rank():
    from megatron_prealign import runtime
    from megatron_prealign.compat import device_check
    from megatron_prealign.model import ModelArgs, build_model

    runtime.initialize(seed=1)
    errors = {}
    with device_check.enabled():
        on_device = torch.ones(2, device=runtime.device())
        torch.distributed.all_reduce(on_device)  # fine
        derived = (on_device * 2).sum()
        torch.distributed.all_reduce(derived)  # fine: derived from a device tensor
        moved = torch.tensor([3.0]).to(runtime.device())
        torch.distributed.all_reduce(moved)  # fine: moved
        for name, make in (
            ("factory", lambda: torch.tensor([1.0])),
            ("zeros", lambda: torch.zeros(2)),
            ("cpu", lambda: on_device.cpu()),
            ("host_arithmetic", lambda: torch.tensor([1.0]) * 2),
        ):
            try:
                torch.distributed.all_reduce(make())
            except device_check.DeviceCheckError as error:
                errors[name] = str(error)
        chunks = build_model(ModelArgs(vocab_size=64, seq_length=8, num_layers=1, hidden_size=16,
                                       num_attention_heads=2), wrap_with_ddp=False)
        tokens = torch.zeros(1, 8, dtype=torch.long)
        positions = torch.arange(8)[None]
        try:
            chunks[0](tokens, positions, None)
        except device_check.DeviceCheckError as error:
            errors["model_input"] = str(error)
        loader = torch.utils.data.DataLoader([torch.ones(8, dtype=torch.long)] * 2, batch_size=1)
        batch = next(iter(loader))
        try:
            chunks[0](batch, positions.to(runtime.device()), None)
        except device_check.DeviceCheckError as error:
            errors["loader_batch"] = str(error)
        output = chunks[0](runtime.to_device(batch), runtime.to_device(positions), None)
        errors["moved_batch_ran"] = list(output.shape)
    torch.distributed.all_reduce(torch.tensor([1.0]))  # the mode is off again
    return errors


def test_check_mode_catches_misplaced_tensors():
    errors = run_distributed(_misplaced_rank, 1)[0]
    for name in ("factory", "zeros", "cpu", "host_arithmetic"):
        assert "torch.distributed.all_reduce: a host tensor" in errors.get(name, ""), name
    assert "GPTModel.forward input" in errors["model_input"]
    assert "host tensor" in errors["loader_batch"]
    assert errors["moved_batch_ran"] == [1, 8, 64]


# -- the driver under the check mode ---------------------------------------------------------


def _checked_run(argv):
    os.environ["PREALIGN_DEVICE_CHECK"] = "1"
    from megatron_prealign.compat import device_check

    result = pretrain_case.run_pretrain(argv)
    result["checked"] = device_check.requested()
    return result


def test_training_step_passes_the_device_check(data, tmp_path):
    """Pre-alignment, pretraining, validation, the signal flag and a save at TP=2 x PP=2, with
    every collective and model input checked."""
    argv = pretrain_case.base_argv(data, str(tmp_path), train_iters=2, prealign_iters=1,
                                   eval_interval=3, eval_iters=1, save=str(tmp_path / "ckpt"),
                                   tensor_model_parallel_size=2, pipeline_model_parallel_size=2,
                                   **pretrain_case.alignment_flags(data))
    results = run_distributed(_checked_run, 4, argv, timeout=900)
    assert all(r["checked"] and r["iteration"] == 3 for r in results)
    log = pretrain_case.read_log(str(tmp_path))
    assert [r["stage"] for r in log] == ["prealign", "pretrain", "pretrain"]
    assert all(r["lm_loss"] is not None for r in log) and log[0]["alignment_loss"] is not None


OVERLAP = dict(use_distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True,
               num_workers=2)


@pytest.mark.slow
def test_overlap_and_read_ahead_keep_results_and_exact_resume(data, tmp_path):
    """DP=2 with the distributed optimizer: --overlap-grad-reduce, --overlap-param-gather and two
    DataLoader workers (under the device check) give the losses of the plain run; killed after
    its checkpoint at iteration 2 and resumed, such a run logs the same losses bit for bit."""
    common = dict(train_iters=3, prealign_iters=1, hidden_dropout=0.0, attention_dropout=0.0,
                  **pretrain_case.alignment_flags(data))
    runs = {}
    checkpoints = tmp_path / "ckpt"
    for name, flags in (("plain", dict(use_distributed_optimizer=True)),
                        ("overlap", dict(OVERLAP, eval_interval=2, eval_iters=1, save=str(checkpoints),
                                         save_interval=2)),
                        ("resumed", dict(OVERLAP, load=str(checkpoints)))):
        if name == "resumed":  # as if killed right after the checkpoint of iteration 2
            (checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
        work = tmp_path / name
        work.mkdir()
        argv = pretrain_case.base_argv(data, str(work), **common, **flags)
        run_distributed(_checked_run if name == "overlap" else pretrain_case.run_pretrain, 2, argv, timeout=900)
        runs[name] = _losses(str(work))
    assert [i for i, _, _ in runs["overlap"]] == [1, 2, 3, 4]
    for (_, plain_lm, plain_alignment), (_, lm, alignment) in zip(runs["plain"], runs["overlap"]):
        assert lm == pytest.approx(plain_lm, rel=1e-5)
        assert (alignment is None) == (plain_alignment is None)
        assert alignment is None or alignment == pytest.approx(plain_alignment, rel=1e-5)
    assert [i for i, _, _ in runs["resumed"]] == [3, 4]
    assert runs["resumed"] == runs["overlap"][2:]


# -- the alignment attention path -----------------------------------------------------------


def _ignore_masks(chunks):
    """Make every layer's core attention plain causal, ignoring the mask it is given (what
    Transformer Engine's causal attention and the fused softmax do)."""
    from megatron.core.utils import unwrap_model

    for gpt_model in unwrap_model(list(chunks)):
        for layer in gpt_model.decoder.layers:
            core = layer.self_attention.core_attention
            original = core.forward

            def causal_only(query, key, value, attention_mask, *args, _original=original, **kwargs):
                s = query.shape[0]
                causal = torch.ones(s, s, dtype=torch.bool, device=query.device).triu(1)[None, None]
                return _original(query, key, value, causal, *args, **kwargs)

            core.forward = causal_only


def _attention_path_rank():
    from megatron_prealign import runtime
    from megatron_prealign.alignment import AlignmentPass
    from megatron_prealign.alignment.microbatch import forms_of, one_form_per_row
    from megatron_prealign.testing.random_batches import data_parallel_batches
    from megatron_prealign.model import build_model
    from tests import alignment_case

    runtime.initialize(1, 1, seed=3)
    packed = data_parallel_batches(1, 4, alignment_case.VOCAB, alignment_case.SEQ, alignment_case.MICRO,
                                   seed=5, max_form_length=4)[0]
    per_row = one_form_per_row(forms_of(packed), packed.form_group.tolist())
    lm = alignment_case.global_lm_batch(1)
    results = {}

    def run(batch, ignore_masks=False):
        chunks = build_model(alignment_case.tiny_args(), wrap_with_ddp=True)
        alignment_case.load_full_weights(chunks)
        chunks[0].config.finalize_model_grads_func = alignment_case.finalize_model_grads
        if ignore_masks:
            _ignore_masks(chunks)
        alignment = AlignmentPass(chunks, alignment_case.TEMPERATURE)
        try:
            statistics, grads = alignment_case.run_step(chunks, alignment, [lm, batch], total_lm_tokens=lm.numel())
        finally:
            alignment.remove()
        return alignment.attention_path, statistics.as_log_dict(), grads

    results["packed"] = run(packed)
    results["per_row"] = run(per_row)
    results["per_row_causal"] = run(per_row, ignore_masks=True)
    try:
        run(packed, ignore_masks=True)
        results["packed_causal_error"] = ""
    except RuntimeError as error:
        results["packed_causal_error"] = str(error)
    results["rows"] = list(per_row.tokens.shape)
    results["packed_rows"] = list(packed.tokens.shape)
    return results


def test_one_form_per_row_matches_the_block_mask_and_a_maskless_attention_is_caught():
    """The two layouts give the same alignment loss and gradients; one form per row stays exact
    under an attention that ignores masks (TE / fused softmax), while the packed layout under such
    an attention is refused by AlignmentPass's check instead of silently mixing forms."""
    r = run_distributed(_attention_path_rank, 1)[0]
    path, log, grads = r["packed"]
    assert path == "block_diagonal_mask"
    assert r["rows"][0] > r["packed_rows"][0] and r["rows"][1] <= 4 < r["packed_rows"][1]
    for name in ("per_row", "per_row_causal"):
        _, other_log, other_grads = r[name]
        assert other_log["alignment_loss"] == pytest.approx(log["alignment_loss"], rel=1e-5)
        assert other_log["alignment_similarity"] == pytest.approx(log["alignment_similarity"], rel=1e-5)
        for key in grads:
            torch.testing.assert_close(other_grads[key], grads[key], rtol=1e-5, atol=1e-6, msg=key)
    assert "does not honour the alignment microbatch's attention mask" in r["packed_causal_error"]


def test_attention_path_choice():
    from megatron_prealign.alignment import attention_path

    class Config:
        masked_softmax_fusion, bf16, fp16 = False, True, False

    class Layer:
        class self_attention:  # noqa: N801 - mimics the module attribute
            core_attention = None

    class Model:
        config = Config()

        class decoder:  # noqa: N801
            layers = [Layer()]

    from megatron.core.transformer.dot_product_attention import DotProductAttention

    Layer.self_attention.core_attention = DotProductAttention.__new__(DotProductAttention)
    assert attention_path.choose([Model()], 2) == attention_path.BLOCK_MASK
    Config.masked_softmax_fusion = True  # fused softmax in bf16: the kernel may drop the mask
    assert attention_path.choose([Model()], 1) == attention_path.ONE_FORM_PER_ROW
    # under pipeline parallelism too: the pass exchanges the microbatch shapes (issue #26 item 7)
    assert attention_path.choose([Model()], 2) == attention_path.ONE_FORM_PER_ROW
    Config.masked_softmax_fusion = False
    Layer.self_attention.core_attention = object()  # e.g. TEDotProductAttention
    assert attention_path.choose([Model()], 1) == attention_path.ONE_FORM_PER_ROW


# -- read-ahead -------------------------------------------------------------------------------


class _CountingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 37

    def __getitem__(self, index):
        import numpy as np

        return {"tokens": np.full(4, index, dtype=np.int64), "loss_mask": np.ones(4, dtype=np.float32)}


def test_lm_batches_read_ahead_keeps_order_and_resume():
    """Workers reading ahead hand out the same samples as reading in place, and a loader
    restarted from `consumed_samples` continues exactly (what a resumed run does)."""
    from megatron_prealign.training.batches import LMBatches

    def take(batches, steps):
        return [[m["tokens"][:, 0].tolist() for m in batches.next_step(2)] for _ in range(steps)]

    in_place = LMBatches(_CountingDataset(), 3, dp_rank=1, dp_size=2)
    expected = take(in_place, 8)
    assert expected[0] == [[3, 4, 5], [9, 10, 11]] and expected[6][0] == [75 % 37, 76 % 37, 77 % 37]
    ahead = LMBatches(_CountingDataset(), 3, dp_rank=1, dp_size=2, num_workers=2)
    rng = torch.get_rng_state()
    first = take(ahead, 3)
    # The global RNG (dropout) is untouched: a resumed run restores it before the loader starts.
    assert torch.equal(torch.get_rng_state(), rng)
    consumed = ahead.consumed_samples
    ahead.close()
    assert consumed == 3 * 2 * 3 * 2
    resumed = LMBatches(_CountingDataset(), 3, dp_rank=1, dp_size=2, consumed_samples=consumed, num_workers=2)
    assert first + take(resumed, 5) == expected
    resumed.close()


# -- with a GPU (skipped without one; not run by this project: no GPU was available) ----------


def _cuda_run(argv):
    """The driver on CUDA under the device check; optionally counts host synchronisations
    (torch.cuda sync debug mode) during pretraining steps that neither log nor save."""
    import warnings

    os.environ["PREALIGN_DEVICE_CHECK"] = "1"
    from megatron_prealign.training import arguments, loop

    config = arguments.parse_config(argv)
    trainer = loop.Trainer(config)
    syncs = []
    original_step = trainer._step

    def counted_step(stage):
        quiet = stage == "pretrain" and trainer.iteration % config.logging.log_interval and trainer.iteration > 2
        if not quiet:
            return original_step(stage)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                result = original_step(stage)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append(len([w for w in caught if "synchroniz" in str(w.message)]))
        return result

    trainer._step = counted_step
    try:
        iteration = trainer.train()
    finally:
        from megatron_prealign import runtime

        runtime.shutdown()
    return {"iteration": iteration, "syncs": syncs,
            "fused": trainer.chunks[0].config.bias_dropout_fusion,  # (exact GeLU runs unfused)
            "attention_path": trainer.alignment.attention_path if trainer.alignment else None}


@pytest.mark.cuda
def test_cuda_step_on_device_with_fusions_and_no_host_sync(data, tmp_path):
    """One GPU, bf16, TE when importable: the step passes the device check, the fusions are on
    with TE, the alignment pass takes one form per row under TE, and pretraining steps between
    log intervals synchronise with the host at most as often as megatron-core's optimizer does
    (none with --clip-grad 0 in bf16)."""
    from megatron_prealign import runtime

    impl = "transformer_engine" if runtime.transformer_engine_available() else "local"
    argv = pretrain_case.base_argv(data, str(tmp_path), train_iters=8, prealign_iters=2, bf16=True,
                                   transformer_impl=impl, clip_grad=0, log_interval=5,
                                   use_distributed_optimizer=True, overlap_grad_reduce=True,
                                   overlap_param_gather=True, **pretrain_case.alignment_flags(data))
    argv[argv.index("--num-attention-heads") + 1] = "2"  # head dim 16: TE's fused kernels want >= 16
    result = run_distributed(_cuda_run, 1, argv, timeout=900)[0]
    assert result["iteration"] == 10
    assert result["syncs"] and max(result["syncs"]) == 0, result["syncs"]
    if impl == "transformer_engine":
        assert result["fused"] and result["attention_path"] == "one_form_per_row"


def _cuda_mask_probe_rank():
    from megatron_prealign import runtime
    from megatron_prealign.alignment import attention_path
    from megatron_prealign.alignment.microbatch import block_diagonal_causal_mask, forms_of, one_form_per_row
    from megatron_prealign.testing.random_batches import data_parallel_batches
    from megatron_prealign.model import ModelArgs, build_model

    runtime.initialize(seed=1)
    chunks = build_model(ModelArgs(vocab_size=128, seq_length=64, num_layers=1, hidden_size=64,
                                   num_attention_heads=4, bf16=True, transformer_impl="transformer_engine"),
                         wrap_with_ddp=False)
    gpt_model = chunks[0].module
    packed = data_parallel_batches(1, 8, 128, 64, 4, seed=1, max_form_length=4)[0]
    per_row = one_form_per_row(forms_of(packed), packed.form_group.tolist(), rows_multiple=16)
    outcome = {}
    for name, batch in (("packed", packed), ("per_row", per_row)):
        batch = batch.to(runtime.device())
        try:
            attention_path.check_mask_honoured(gpt_model, block_diagonal_causal_mask(batch.segment_ids),
                                               batch.segment_ids)
            outcome[name] = "honoured"
        except RuntimeError:
            outcome[name] = "ignored"
    return outcome


@pytest.mark.cuda
def test_cuda_te_attention_ignores_the_block_mask_and_one_form_per_row_is_safe():
    from megatron_prealign import runtime

    if not runtime.transformer_engine_available():
        pytest.skip("needs Transformer Engine")
    outcome = run_distributed(_cuda_mask_probe_rank, 1)[0]
    assert outcome == {"packed": "ignored", "per_row": "honoured"}


# -- examples/gpu_check.sh ---------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_script_cpu_dry_run(tmp_path, synthetic_script_data):
    """The script's whole logic on the CPU: data, uninterrupted / stopped / resumed runs, the
    evaluation, the summary as the last line (JSON), exit status 0. The data directory is the
    session's copy made by the same examples/synthetic_data.sh function (the script reuses it)."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(synthetic_script_data, tmp_path / "data")

    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", os.path.join(ROOT, "examples", "gpu_check.sh"), "--cpu-dry"], env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["metric"] == "gpu_check_mfu" and summary["failures"] == []
    single = summary["layouts"]["single"]
    assert single["exact_resume"] and single["tokens_per_sec"] > 0 and single["tflops"] > 0
    assert single["mfu"] is None and summary["peak_memory_mib"] is None  # no GPU: no peak, no memory
    assert set(single["evaluation"]) == {"en", "de"}
    assert single["with_prealignment"]["tokens_per_sec"] > 0
    assert set(summary["skipped"]) == {"tp2", "tp2xpp2", "fp8_prealign"} and summary["short_runs"] == {}
    assert "gpu_check: skipped tp2xpp2: needs 4 GPUs, 1 visible" in result.stderr
    # import-hf -> --sft-packing fine-tuning -> export-hf: transformers' logits equal ours (fp32
    # on the CPU), and differ from the model before fine-tuning
    round_trip = summary["hf_round_trip"]
    assert round_trip["ok"] and round_trip["precision"] == "float32" and round_trip["transformer_impl"] == "local"
    assert round_trip["relative_difference"] <= 1e-4 < round_trip["changed_by_finetuning"]
    assert round_trip["exported_class"] == "LlamaForCausalLM"


def test_gpu_check_summary_fails_on_a_resume_mismatch_and_computes_mfu(tmp_path):
    from megatron_prealign import gpu_check
    from megatron_prealign.cli import gpu_check as cli

    def write(directory, losses):
        directory.mkdir()
        with open(directory / "log.jsonl", "w") as handle:
            for iteration, loss in enumerate(losses, 1):
                handle.write(json.dumps({"iteration": iteration, "stage": "pretrain", "lm_loss": loss,
                                         "alignment_loss": None, "tokens_per_sec": 1000.0 * iteration}) + "\n")

    write(tmp_path / "straight", [3.0, 2.5, 2.0, 1.5])
    write(tmp_path / "good", [3.0, 2.5, 2.0, 1.5])
    write(tmp_path / "bad", [3.0, 2.5, 2.0, 1.5000001])
    (tmp_path / "eval.json").write_text(json.dumps({"sources": {"en": {"perplexity": 5.0}}}))
    (tmp_path / "smi.csv").write_text("0, 1000\n1, 2500\n0, 1800\n")
    flags = pretrain_case.base_argv({"en_cs": "en", "de": "de", "sp": "absent.model"}, str(tmp_path))
    per_token = gpu_check.flops_per_token(flags)
    common = ["--resume-iteration", "2", "--memory-samples", str(tmp_path / "smi.csv"), "--gpu-name",
              "NVIDIA H100 80GB HBM3", "--", *flags]
    layout = ["--layout", "single", str(tmp_path / "straight")]
    tail = [str(tmp_path / "eval.json"), "1"]
    assert cli.main([*layout, str(tmp_path / "good"), *tail, *common]) == 0
    assert cli.main([*layout, str(tmp_path / "bad"), *tail, *common]) == 1
    # a short run (fp8 with pre-alignment) must log finite pre-alignment losses
    for name, loss in (("fp8_good", 2.0), ("fp8_nan", float("nan"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text(json.dumps(
            {"iteration": 1, "stage": "prealign", "lm_loss": 3.0, "alignment_loss": loss}) + "\n")
    skipped = ["--skipped", "tp2", "needs 2 GPUs"]
    for name, code in (("fp8_good", 0), ("fp8_nan", 1), ("missing", 1)):
        argv = [*layout, str(tmp_path / "good"), *tail, "--short-run", "fp8", str(tmp_path / name), *skipped, *common]
        assert cli.main(argv) == code, name
    # the Hugging Face round trip: its comparison must exist and be ok
    (tmp_path / "rt_good.json").write_text(json.dumps({"ok": True, "relative_difference": 1e-7}))
    (tmp_path / "rt_bad.json").write_text(json.dumps({"ok": False, "relative_difference": 0.5}))
    for name, code in (("rt_good.json", 0), ("rt_bad.json", 1), ("rt_missing.json", 1)):
        argv = [*layout, str(tmp_path / "good"), *tail, "--hf-round-trip", str(tmp_path / name), *common]
        assert cli.main(argv) == code, name
    # tokens/s: median of 2000, 3000, 4000 (the first record is warm-up)
    assert gpu_check.throughput(gpu_check.read_log(str(tmp_path / "straight")), per_token, 1, 989.0)["mfu"] == \
        pytest.approx(3000.0 * per_token / 1e12 / 989.0)
    assert gpu_check.peak_memory_mib(str(tmp_path / "smi.csv")) == 2500.0
    assert per_token > 6 * 2 * 12 * 32 * 32  # at least 6 x the layers' matmul parameters
    # Peaks by nvidia-smi's name: the PCIe and NVL parts are not their SXM siblings.
    names = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
             "NVIDIA H200": 989.0, "NVIDIA H200 NVL": 835.0, "NVIDIA A100-SXM4-80GB": 312.0,
             "NVIDIA A100 80GB PCIe": 312.0, "Tesla V100-SXM2-32GB": None}
    assert {name: gpu_check.peak_tflops(name) for name in names} == names
