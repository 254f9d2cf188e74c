"""examples/pretrain_{150m,400m,1.3b,2.7b}.sh, slurm_pretrain.sbatch and docker_run.sh.

* `--dry-run` of every size script: the printed parameter count equals (within 1%) the parameter
  count of the GPTModel the builder constructs, and the layout is valid for every node count the
  script names (checked here from the printed layout, not trusted from the helper).
  The models are built on the CPU in a spawned rank through `runtime.initialize`: the 150M
  model in full; for every size (150M too) with 1 and 2 layers, which gives the exact per-layer
  and the outside-the-layers (embeddings, final norm) counts, extrapolated to the named depth
  (building 1.3B / 2.7B in full would take 5-11 GB of RAM here).
* The 150M script itself runs end to end on 2 CPU ranks with tiny overrides through its
  environment variables (pre-alignment then pretraining, checkpoint, validation): the path users
  take, with data prepared by the real tools (megatron_prealign.testing.pretrain_case.prepare_data).
* SIGUSR1 to the launcher (what docker's signal proxy delivers) reaches the training processes,
  which save and exit cleanly.
* The SLURM script with stand-in `srun` / `scontrol`, the Docker wrapper's command, and the fp8
  refusal with pre-alignment.
"""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from megatron_prealign.model import MODEL_SIZES
from tests.dist_utils import free_port, run_distributed
from megatron_prealign.testing.pretrain_case import prepare_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SCRIPTS = {"150M": "pretrain_150m.sh", "400M": "pretrain_400m.sh", "1.3B": "pretrain_1.3b.sh",
           "2.7B": "pretrain_2.7b.sh"}
LAUNCH_VARIABLES = ("NNODES", "NODE_RANK", "GPUS_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "TP", "PP",
                    "FP8", "PREALIGN_ITERS", "TRAIN_ITERS", "ALIGNMENT_WORDS_PER_BATCH", "RUN_DIR")


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def node_counts(script: str) -> list:
    text = open(os.path.join(EXAMPLES, script)).read()
    match = re.search(r"^NODE_COUNTS=\(([\d ]+)\)", text, re.M)
    assert match, f"{script} names no NODE_COUNTS"
    return [int(n) for n in match.group(1).split()]


@functools.lru_cache(maxsize=None)
def dry_run(size: str) -> tuple:
    """(stdout, plan) of `NNODES=<largest named> examples/pretrain_<size>.sh --dry-run`."""
    script = SCRIPTS[size]
    nodes = max(node_counts(script))
    result = subprocess.run(["bash", os.path.join(EXAMPLES, script), "--dry-run"], env=_env(NNODES=nodes),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("plan (JSON): "))
    return result.stdout, json.loads(line[len("plan (JSON): "):])


@pytest.mark.parametrize("size", list(SCRIPTS))
def test_dry_run_prints_command_and_valid_layouts(size):
    out, plan = dry_run(size)
    nodes = max(node_counts(SCRIPTS[size]))
    # the resolved torchrun command, one invocation with the rendezvous from the environment
    command = out.splitlines()[1]
    assert "-m torch.distributed.run --nnodes " + str(nodes) + " --node-rank 0 --master-addr 127.0.0.1" in command
    assert "--nproc-per-node 8 -m megatron_prealign.pretrain --model-size " + size in command
    assert "--prealign-iters 500" in command and "--train-iters 20000" in command
    assert "--bf16" in command and "--transformer-impl transformer_engine" in command
    assert "--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather" in command
    for label in ("parameters:", "layout:", "tokens per step:", "FLOPs per step:", "memory per GPU, pretraining",
                  "memory per GPU, pre-alignment", "expected step time"):
        assert label in out
    assert plan["tokens_per_step"] == 1024 * 1024  # the paper's ~1M tokens per step
    named = node_counts(SCRIPTS[size])
    assert sorted(int(n) for n in plan["node_counts"]) == named
    heads, layers = MODEL_SIZES[size]["num_attention_heads"], MODEL_SIZES[size]["num_layers"]
    for n, layout in plan["node_counts"].items():
        assert "invalid" not in layout, (n, layout)
        world, tp, pp, dp = 8 * int(n), layout["tp"], layout["pp"], layout["dp"]
        assert layout["world"] == world and world % (tp * pp) == 0 and dp == world // (tp * pp)
        assert heads % tp == 0 and layers % pp == 0
        assert layout["global_batch"] % (layout["micro_batch"] * dp) == 0
        assert layout["memory_gib"] < 0.75 * 80, f"{size} on {n} nodes leaves too little headroom"


def _build_counts(vocabs: dict) -> dict:
    """Rank body: parameter counts of GPTModels built by the builder (TP = PP = 1)."""
    import torch

    from megatron_prealign import runtime
    from megatron_prealign.model import ModelArgs, build_gpt_model

    runtime.initialize(1, 1, seed=1)
    torch.set_num_threads(1)
    counts = {}
    for size, vocab in vocabs.items():
        depths = [1, 2] + ([MODEL_SIZES[size]["num_layers"]] if size == "150M" else [])
        for depth in depths:
            args = ModelArgs.named(size, vocab_size=vocab, seq_length=1024, family="gpt2", num_layers=depth)
            model = build_gpt_model(args)
            counts[f"{size}/{depth}"] = sum(p.numel() for p in model.parameters())
            del model
    return counts


def test_dry_run_parameter_counts_match_the_built_model():
    plans = {size: dry_run(size)[1] for size in SCRIPTS}
    counts = run_distributed(_build_counts, 1, {s: p["model"]["vocab"] for s, p in plans.items()}, timeout=600)[0]
    for size, plan in plans.items():
        per_layer = counts[f"{size}/2"] - counts[f"{size}/1"]
        outside = counts[f"{size}/1"] - per_layer  # embeddings, positions, final norm
        built = outside + MODEL_SIZES[size]["num_layers"] * per_layer
        printed = plan["parameters"]["total"]
        assert abs(printed - built) <= 0.01 * built, (size, printed, built)
        assert f"parameters: {printed:,} total" in dry_run(size)[0]
    assert counts["150M/12"] == plans["150M"]["parameters"]["total"]  # the full 150M model


def test_fp8_with_prealignment_plans_under_pipeline_parallelism():
    """Refused before issue #26 item 7: TE / fp8 layers now take one form per row at PP > 1."""
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "pretrain_1.3b.sh"), "--dry-run"],
                            env=_env(FP8=1, PP=2), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "needs PP=1" not in result.stderr and "--fp8-format hybrid" in result.stdout


@pytest.mark.parametrize("extra, world, flag", [
    (["--tensor-model-parallel-size", "3"], 16, "--tensor-model-parallel-size"),  # 16 GPUs
    (["--tensor-model-parallel-size", "8", "--num-query-groups", "4"], 16, "--num-query-groups"),
    (["--pipeline-model-parallel-size", "5"], 15, "--num-layers"),  # 24 layers
])
def test_plan_refuses_a_layout_the_model_check_refuses(extra, world, flag):
    """The planner runs the training run's own layout check (ModelArgs.validate_parallel_layout)."""
    from megatron_prealign import launch_plan

    argv = ["--model-size", "1.3B", "--seq-length", "1024", "--micro-batch-size", "1",
            "--global-batch-size", "240", "--train-iters", "10", "--data-path", "x",
            "--tokenizer-type", "NullTokenizer", "--padded-vocab-size", "50400", *extra]
    with pytest.raises(ValueError, match=flag):
        launch_plan.plan(argv, nnodes=1, gpus_per_node=world)


def test_plan_formulas():
    """The helper's memory and FLOPs against the formulas written out by hand (TP=2 + SP, PP=2)."""
    from megatron_prealign import launch_plan

    argv = ["--model-size", "1.3B", "--seq-length", "1024", "--micro-batch-size", "2",
            "--global-batch-size", "64", "--train-iters", "10", "--tensor-model-parallel-size", "2",
            "--pipeline-model-parallel-size", "2", "--sequence-parallel", "--use-distributed-optimizer",
            "--bf16", "--data-path", "x", "--tokenizer-type", "NullTokenizer", "--padded-vocab-size", "50432"]
    plan = launch_plan.plan(argv, nnodes=2, gpus_per_node=8)
    s, b, h, a, L, t, p, v = 1024, 2, 2048, 16, 24, 2, 2, 50432
    assert plan["layout"]["dp"] == 4 and plan["layout"]["microbatches"] == 8
    mem = plan["memory_gib"]
    layers = (L // p) * p * s * b * h / t * (34 + 7 * a * s / h)  # Korthikanti, SP; p microbatches in flight
    assert mem["activation_parts"]["layers"] == pytest.approx(layers / 2 ** 30)
    params = plan["parameters_per_gpu"]["max"]
    assert mem["weights"] + mem["gradients"] + mem["optimizer"] == pytest.approx(params * (6 + 12 / 4) / 2 ** 30)
    n_mm = plan["parameters"]["non_embedding"] + v * h
    tokens = 64 * s
    assert plan["flops_per_step"] == pytest.approx(6 * n_mm * tokens + 12 * L * s * h * tokens)
    assert plan["step_seconds"] == pytest.approx(plan["flops_per_step"] / (16 * 312e12 * 0.4))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_data(str(tmp_path_factory.mktemp("launch_data")))


def _tiny_env(data, run_dir, **overrides):
    return _env(
        NNODES=1, NODE_RANK=0, GPUS_PER_NODE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(),
        NUM_LAYERS=2, HIDDEN_SIZE=32, NUM_ATTENTION_HEADS=4, SEQ_LENGTH=32, MAX_POSITION_EMBEDDINGS=32,
        MICRO_BATCH_SIZE=2, GLOBAL_BATCH_SIZE=8, LR=3e-3, MIN_LR=3e-4, LR_WARMUP_ITERS=1,
        DATA_PATH=f"0.8 {data['en_cs']} 0.2 {data['de']}", SPLIT="90,10,0", TOKENIZER_MODEL=data["sp"],
        ALIGNMENT_TABLE=data["table"], ALIGNMENT_LANGUAGES="de", ALIGNMENT_WORDS_PER_BATCH=4,
        RUN_DIR=run_dir, LOG_INTERVAL=1, TRANSFORMER_IMPL="local",  # no Transformer Engine on the CPU
        **overrides,
    )


def test_size_script_runs_end_to_end_on_two_cpu_ranks(data, tmp_path):
    """The 150M script as users run it (bf16, distributed optimizer, torchrun with the rendezvous
    from the environment), shrunk through its variables: 2 pre-alignment + 3 pretraining steps."""
    run = tmp_path / "run dir"  # a space in the path: everything is quoted
    env = _tiny_env(data, str(run), PREALIGN_ITERS=2, TRAIN_ITERS=3, SAVE_INTERVAL=4, EVAL_INTERVAL=5, EVAL_ITERS=1)
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "pretrain_150m.sh")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in open(run / "logs" / "train.jsonl")]
    assert [r["stage"] for r in records if "stage" in r] == ["prealign"] * 2 + ["pretrain"] * 3
    assert any("validation_lm_loss" in r for r in records)
    assert (run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text() == "5"
    assert (run / "logs" / "tensorboard").is_dir()


def test_usr1_to_the_launcher_saves_and_exits(data, tmp_path):
    run = tmp_path / "run"
    env = _tiny_env(data, str(run), PREALIGN_ITERS=2, TRAIN_ITERS=5000, SAVE_INTERVAL=10000, EVAL_INTERVAL=0)
    proc = subprocess.Popen(["bash", os.path.join(EXAMPLES, "pretrain_150m.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run / "logs" / "train.jsonl"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (log.exists() and '"stage": "pretrain"' in log.read_text()):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "forwarding SIGUSR1" in out and "exiting at iteration" in out
    saved = int((run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())
    assert 3 <= saved < 5002


def test_slurm_script_launches_one_task_per_node(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n")
    (bin_dir / "srun").write_text('#!/bin/sh\necho "MASTER_ADDR=$MASTER_ADDR NNODES=$NNODES NODE_RANK=${NODE_RANK:-unset}"\n'
                                  'echo "srun $*"\n')
    for tool in ("scontrol", "srun"):
        os.chmod(bin_dir / tool, 0o755)
    env = _env(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES=2, SLURM_JOB_NODELIST="gpu-node-[07-08]",
               SLURM_SUBMIT_DIR=ROOT, NODE_RANK=5)
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "slurm_pretrain.sbatch"), "examples/pretrain_1.3b.sh",
                             "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MASTER_ADDR=gpu-node-07 NNODES=2 NODE_RANK=unset" in result.stdout
    assert "srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 bash examples/pretrain_1.3b.sh --dry-run" in result.stdout
    assert "#SBATCH --signal=USR1@120" in open(os.path.join(EXAMPLES, "slurm_pretrain.sbatch")).read()


def test_docker_wrapper_command(tmp_path):
    env = _env(DOCKER_DRY_RUN=1, DATA_DIR=str(tmp_path / "my data"), RUNS_ROOT=str(tmp_path / "runs"), NNODES=4,
               TRAIN_ITERS=7)
    result = subprocess.run(["bash", os.path.join(EXAMPLES, "docker_run.sh"), "examples/pretrain_2.7b.sh", "--dry-run"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("docker run --rm --gpus all --ipc=host --network host")
    assert f"-v {tmp_path}/my\\ data:/data" in out and f"-v {tmp_path}/runs:/runs" in out
    assert "-e NNODES=4" in out and "-e TRAIN_ITERS=7" in out and "-e DATA_DIR=/data" in out
    assert out.rstrip().endswith("megatron-prealign bash examples/pretrain_2.7b.sh --dry-run")
