"""Reliability (docs/reliability.md): nothing lost on relaunch, a kill mid-save or a wrong launch;
checkpoints move across DP / TP layouts; bad input stops before compute with a message.
Each test fails on the code before the corresponding fix."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests import parallel_lm
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("reliability_data")))


def _run_all(argvs):
    """Rank body: run the driver on each argv in turn (one process start for several runs);
    per run the final iteration, or the ConfigError message."""
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.training import arguments, loop

    results = []
    base_port = int(os.environ.get("MASTER_PORT", "0"))
    for index, argv in enumerate(argvs):
        if index and base_port:  # a new rendezvous port per run: gloo may not rebind the last one at once
            os.environ["MASTER_PORT"] = str(base_port + index)
        try:
            results.append({"iteration": loop.run(arguments.parse_config(argv)), "error": ""})
        except ConfigError as error:
            results.append({"iteration": -1, "error": str(error)})
    return results


def _log(work):
    return pretrain_case.read_log(str(work))


# -- 2: atomic saves, fallback on an incomplete checkpoint, a finished run relaunched ----------

def _kill_during_resave(root):
    from megatron.core import dist_checkpointing

    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing

    runtime.initialize(1, 1, seed=3)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(parallel_lm.tiny_args())
    parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())
    checkpointing.save_checkpoint(root, 1, chunks, optimizer)
    parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch(1))
    checkpointing.save_checkpoint(root, 2, chunks, optimizer)
    saved = {k: v.clone() for k, v in chunks[0].state_dict().items() if isinstance(v, torch.Tensor)}

    real_save = dist_checkpointing.save

    def killed_midway(state, directory, *args, **kwargs):  # some files written, then the kill
        torch.save({"partial": True}, os.path.join(directory, "__0_0.distcp"))
        raise KeyboardInterrupt("killed")

    checkpointing.dist_checkpointing.save = killed_midway
    try:
        parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch(2))
        checkpointing.save_checkpoint(root, 2, chunks, optimizer)  # the relaunch re-save of iteration 2
    except KeyboardInterrupt:
        pass
    finally:
        checkpointing.dist_checkpointing.save = real_save

    def disk_full(state, directory, *args, **kwargs):
        raise OSError(28, "No space left on device")

    checkpointing.dist_checkpointing.save = disk_full
    try:
        checkpointing.save_checkpoint(root, 3, chunks, optimizer)
        full_disk_error = ""
    except ValueError as error:
        full_disk_error = str(error)
    finally:
        checkpointing.dist_checkpointing.save = real_save

    fresh, fresh_optimizer = parallel_lm.make_model_and_optimizer(parallel_lm.tiny_args())
    state = checkpointing.load_checkpoint(root, fresh, fresh_optimizer)
    same = all(torch.equal(saved[k], v) for k, v in fresh[0].state_dict().items() if k in saved)
    # The pointer names an iteration whose directory is gone: fall back, saying so.
    with open(os.path.join(root, checkpointing.LATEST), "w") as handle:
        handle.write("3")
    fallback = checkpointing.load_checkpoint(root, fresh, fresh_optimizer)["iteration"]
    chosen = checkpointing.load_checkpoint(root, fresh, fresh_optimizer, iteration=1)["iteration"]
    try:
        checkpointing.load_checkpoint(root, fresh, fresh_optimizer, iteration=5)
        missing_error = ""
    except ValueError as error:
        missing_error = str(error)
    return {"iteration": state["iteration"], "same": same, "fallback": fallback, "chosen": chosen,
            "missing_error": missing_error, "full_disk_error": full_disk_error}


def test_kill_during_a_resave_leaves_a_loadable_checkpoint(tmp_path, capfd):
    result = run_distributed(_kill_during_resave, 1, str(tmp_path))[0]
    assert result["iteration"] == 2 and result["same"]
    assert result["fallback"] == 2 and "newest complete checkpoint, iteration 2" in capfd.readouterr().out
    assert result["chosen"] == 1
    assert "no space left" in result["full_disk_error"] and "iter_0000003.partial" in result["full_disk_error"]
    assert "--load-iteration 5" in result["missing_error"] and "[1, 2]" in result["missing_error"]


@pytest.mark.slow
def test_relaunch_keeps_schedule_and_is_a_no_op_when_finished(data, tmp_path):
    """--save ckpt --load ckpt on a fresh run (11); --no-load-optim keeps the schedule and the
    iteration (6); a finished run relaunched writes nothing (2); switching the distributed
    optimizer names --no-load-optim (7)."""
    ckpt = str(tmp_path / "ckpt")
    common = dict(train_iters=5, save=ckpt, load=ckpt, save_interval=2)
    first = pretrain_case.base_argv(data, str(tmp_path), exit_interval=3, **common)
    resumed = pretrain_case.base_argv(data, str(tmp_path), no_load_optim=True, **common)
    switched = pretrain_case.base_argv(data, str(tmp_path), use_distributed_optimizer=True, **common)
    marker = os.path.join(ckpt, "iter_0000005", "metadata.json")

    def run(argvs):
        return run_distributed(_run_all, 1, argvs)[0]

    results = run([first, resumed])
    assert [r["iteration"] for r in results] == [3, 5], results
    records = _log(tmp_path)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5]
    assert records[-1]["lr"] == pytest.approx(3e-4)  # decayed to --min-lr at the last iteration
    before = os.stat(marker).st_mtime_ns
    results = run([resumed, switched])
    assert results[0]["iteration"] == 5 and os.stat(marker).st_mtime_ns == before
    assert sorted(os.listdir(ckpt)) == ["iter_0000002", "iter_0000003", "iter_0000004", "iter_0000005",
                                        "latest_checkpointed_iteration.txt"]
    assert "--use-distributed-optimizer" in results[1]["error"] and "--no-load-optim" in results[1]["error"]
    assert [r["iteration"] for r in _log(tmp_path)] == [1, 2, 3, 4, 5]


# -- 3: launcher detection, one run per --save ---------------------------------------------------

def test_launcher_detection():
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.runtime import detect_launcher

    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
           "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[07-08,11]"}
    before = dict(env)
    launch = detect_launcher(env)
    assert (launch.launcher, launch.rank, launch.world_size, launch.local_rank) == ("slurm", 5, 8, 1)
    assert (launch.master_addr, launch.master_port) == ("gpu07", 24242)
    assert env == before  # the environment is read, never edited
    assert detect_launcher({**env, "MASTER_ADDR": "head", "MASTER_PORT": "1234"}).master_addr == "head"
    torchrun = detect_launcher({**env, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (torchrun.launcher, torchrun.rank) == ("torchrun", 1)
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}  # no srun step
    assert detect_launcher(batch_script).world_size == 1
    with pytest.raises(ConfigError, match="torchrun"):
        detect_launcher({"OMPI_COMM_WORLD_SIZE": "2"})


@pytest.mark.slow
def test_two_unlaunched_runs_cannot_share_a_save_directory(data, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in list(env):
        if name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") or name.startswith("SLURM_"):
            env.pop(name)

    def start(work, iters):
        os.makedirs(work, exist_ok=True)
        argv = pretrain_case.base_argv(data, work, train_iters=iters, save=ckpt)
        return subprocess.Popen([sys.executable, "-m", "megatron_prealign.pretrain", *argv], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = start(str(tmp_path / "a"), 500)
    log = tmp_path / "a" / "log.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text()) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    second = start(str(tmp_path / "b"), 2)
    output, _ = second.communicate(timeout=300)
    first.send_signal(signal.SIGTERM)
    first_output, _ = first.communicate(timeout=300)
    assert second.returncode == 2 and "is in use by another run" in output, output[-2000:]
    assert first.returncode == 0, first_output[-2000:]
    assert not os.path.exists(os.path.join(ckpt, ".prealign-save.lock"))  # released at the end


def test_stale_lock_is_replaced(tmp_path):
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.training.save_lock import LOCK_NAME, SaveLock

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock_path = tmp_path / LOCK_NAME
    import socket

    lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}))
    with pytest.raises(ConfigError, match=f"pid {sleeper.pid}"):
        SaveLock(str(tmp_path)).acquire()
    sleeper.kill()
    sleeper.wait()
    notes = []
    lock = SaveLock(str(tmp_path))
    lock.acquire(announce=lambda *a, **k: notes.append(a[0]))
    assert json.loads(lock_path.read_text())["pid"] == os.getpid() and "stale" in notes[0]
    lock.release()
    assert not lock_path.exists()
    # Two runs replacing the same stale lock: the later one must not delete the live lock the
    # earlier one has just taken (it re-checks what it removes), and no private file stays behind.
    stale = {"host": socket.gethostname(), "pid": sleeper.pid}
    live = {"host": "elsewhere", "pid": 1}
    lock_path.write_text(json.dumps(live))
    SaveLock(str(tmp_path))._remove_if_still(stale, str(lock_path) + ".stale")
    assert json.loads(lock_path.read_text()) == live
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]


# -- 4, 5: resume into another DP / TP layout -----------------------------------------------------

@pytest.mark.slow
def test_resume_into_other_data_and_tensor_parallel_layouts(data, tmp_path):
    one, two = str(tmp_path / "dp1"), str(tmp_path / "dp2")
    work = {name: str(tmp_path / name) for name in ("a", "b", "c", "d")}
    for path in work.values():
        os.makedirs(path)
    flags = dict(train_iters=4, hidden_dropout=0.1, attention_dropout=0.1)
    run_distributed(_run_all, 1, [pretrain_case.base_argv(data, work["a"], save=one, exit_interval=2, **flags)])
    results = run_distributed(_run_all, 2, [
        pretrain_case.base_argv(data, work["b"], load=one, save=two, exit_interval=3, **flags),  # DP 1 -> 2
        pretrain_case.base_argv(data, work["c"], load=one, tensor_model_parallel_size=2, **flags),  # TP 1 -> 2
    ])
    assert [r["iteration"] for r in results[0]] == [3, 4], results[0]
    results = run_distributed(_run_all, 1, [pretrain_case.base_argv(data, work["d"], load=two, **flags)])  # DP 2 -> 1
    assert results[0][0]["iteration"] == 4, results
    for name, first in (("b", 3), ("c", 3), ("d", 4)):
        records = _log(work[name])
        assert [r["iteration"] for r in records][0] == first
        assert all(0 < r["lm_loss"] < 10 for r in records)


def test_padded_vocab_size_errors():
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.training.vocab import padded_vocab_size

    assert padded_vocab_size(600, 2, checkpoint=640) == 640  # the checkpoint's TP=1 padding kept
    assert padded_vocab_size(600, 2) == 768
    with pytest.raises(ConfigError, match="--padded-vocab-size 50257 .* e.g. 50432"):
        padded_vocab_size(50257, 2, requested=50257)
    with pytest.raises(ConfigError, match=r"resume at a TP that divides it \(1, 2, 4, 8"):
        padded_vocab_size(600, 3, checkpoint=640)


# -- 8, 10, 12: bad input stopped before compute ---------------------------------------------------

def test_bad_input_is_stopped_with_a_message(data, tmp_path):
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.training import arguments, checkpointing

    def check(message, **flags):
        with pytest.raises(ConfigError, match=message):
            arguments.validate(arguments.parse_config(pretrain_case.base_argv(data, str(tmp_path), **flags)), 1)

    truncated = str(tmp_path / "cut_text_document")
    for suffix in (".bin", ".idx"):
        shutil.copy(data["en"] + suffix, truncated + suffix)
    with open(truncated + ".bin", "r+b") as handle:
        handle.truncate(os.path.getsize(truncated + ".bin") - 10)
    check("cut_text_document.bin has .* truncated", data_path=[truncated])
    check("--tensor-model-parallel-size must be >= 1", tensor_model_parallel_size=0)
    check("--micro-batch-size must be >= 1", micro_batch_size=0)
    check("--log-interval must be >= 1", log_interval=0)
    check("--split 'abc'", split="abc")
    check("--split '0,0,0'", split="0,0,0")
    check("--eval-iters must be >= 1", eval_interval=1, eval_iters=0)
    check("--tokenizer-model .* does not exist", tokenizer_model=str(tmp_path / "none.model"))
    check("--load .* is not a directory", load=str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="max_position_embeddings: checkpoint 32 vs run 64"):
        checkpointing.check_architecture({"num_layers": 2, "max_position_embeddings": 32},
                                         {"num_layers": 2, "max_position_embeddings": 64}, "--load ckpt")


def test_only_configuration_errors_become_one_line_messages(monkeypatch, capsys):
    from megatron_prealign import pretrain
    from megatron_prealign.errors import ConfigError
    from megatron_prealign.training import loop

    argv = pretrain_case.base_argv({"en_cs": "a", "de": "b", "sp": "c"}, "work")

    def raise_config(args):
        raise ConfigError("--flag is wrong")

    monkeypatch.setattr(loop, "run", raise_config)
    assert pretrain.main(argv) == 2 and "--flag is wrong" in capsys.readouterr().err

    def raise_internal(args):
        raise ValueError("inside megatron-core")

    monkeypatch.setattr(loop, "run", raise_internal)
    with pytest.raises(ValueError, match="inside megatron-core"):
        pretrain.main(argv)


def test_log_is_truncated_to_the_resumed_iteration(tmp_path):
    from megatron_prealign.training.logger import _truncate_log

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "stage": "pretrain"}) + "\n" for i in (1, 2, 3, 4))
                    + '{"iteration": 5, "sta')  # a line cut by the kill
    _truncate_log(str(path), 2)
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2]
