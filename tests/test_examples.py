"""examples/cpu_smoke.sh end to end: the path users take (data prepared by the real tools, then
torchrun with pre-alignment and pretraining), here on 2 ranks with tensor parallelism."""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_smoke_script_trains_through_both_stages(tmp_path, synthetic_script_data):
    shutil.copytree(synthetic_script_data, tmp_path / "data")  # prepared once by the same function
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path), "NPROC": "2", "TP": "2",
           "PREALIGN_ITERS": "4", "TRAIN_ITERS": "6", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", os.path.join(ROOT, "examples", "cpu_smoke.sh"), "--log-interval", "1"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    stages = [r["stage"] for r in records if "stage" in r]
    assert stages == ["prealign"] * 4 + ["pretrain"] * 6
    assert any("validation_lm_loss" in r for r in records)
    assert open(tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt").read() == "10"
