"""The real-language demo (English -> German on Debian text) in its quick configuration: data
through the real tools, Joint Training and PreAlign, perplexity / word alignment / retrieval,
results.json and plots. Skipped with a message when the Debian packages are not installed."""

import json
import os

import pytest

from megatron_prealign.data import debian_text
from tests.dist_utils import run_distributed


def _packages_missing():
    try:
        debian_text.check_installed()
    except debian_text.MissingPackagesError as error:
        return str(error)
    return None


def _real_rank(output_dir):
    from megatron_prealign.demo.real import RealConfig, run_real

    record = run_real(RealConfig.quick(), output_dir, ["joint", "prealign"], [1234])
    return {key: [float(run["de_ppl"]), float(run["en_ppl"])] for key, run in record["runs"].items()}


@pytest.mark.slow
@pytest.mark.skipif(_packages_missing() is not None, reason=f"{_packages_missing()}")
def test_quick_real_demo(tmp_path):
    out = str(tmp_path / "real")
    result = run_distributed(_real_rank, 1, out, timeout=400)[0]
    assert set(result) == {"joint/1234", "prealign/1234"}
    with open(os.path.join(out, "results.json")) as f:
        record = json.load(f)
    for run in record["runs"].values():
        assert run["de_ppl"] > 1 and run["en_ppl"] > 1
        assert run["alignment_over_training"] and run["retrieval"]["pairs"] >= 10
        assert 0 <= min(run["retrieval"]["retrieval_acc@1"]) <= max(run["retrieval"]["retrieval_acc@1"]) <= 1
    prealign = record["runs"]["prealign/1234"]
    assert prealign["config"]["prealign_share"] > 0
    iterations = [p["iteration"] for p in prealign["alignment_over_training"]]
    assert iterations[0] == prealign["config"]["total_iters"] * prealign["config"]["prealign_share"]
    for name in ("real_alignment_over_training.png", "real_loss_curves.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    with open(os.path.join(out, "work", "data", "table_filtered.jsonl")) as f:
        table = [json.loads(line) for line in f]
    assert table and all(len(e["translations"]["de"]) == 1 for e in table)
    assert not {e["word"] for e in table} & {"the", "a", "is", "and"}
