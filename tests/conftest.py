import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# megatron-core's import-time notes (no apex, no TE) and the others the tools silence
from megatron_prealign.cli import quiet_notes  # noqa: E402

quiet_notes()


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """The generated corpus, both test tokenizers and an alignment table (de + zh), shared by
    the data and tool tests."""
    from megatron_prealign.data.synthetic import make_assets

    return make_assets(str(tmp_path_factory.getbasetemp() / "data_assets"))


@pytest.fixture(scope="session", params=["sp", "hf"])
def encoder(request, assets):
    """A TextEncoder over the SentencePiece model and over the byte-level BPE."""
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import build_tokenizer

    if request.param == "sp":
        return TextEncoder(build_tokenizer("SentencePieceTokenizer", assets["sp"]))
    return TextEncoder(build_tokenizer("HuggingFaceTokenizer", assets["hf"]))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: skipped (and counted as skipped) without one."""
    import torch

    if torch.cuda.is_available() and os.environ.get("PREALIGN_FORCE_CPU", "0") != "1":
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_script_data(tmp_path_factory):
    """examples/synthetic_data.sh's prepare_synthetic_data, run once by the real tools (five
    interpreter starts) and shared by the tests of the scripts that source it (cpu_smoke.sh,
    gpu_check.sh): each copies the directory to WORK/data, where the function reuses it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    directory = tmp_path_factory.getbasetemp() / "synthetic_script_data"
    env = {**os.environ, "ROOT": root, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = 'source "${ROOT}/examples/synthetic_data.sh" && prepare_synthetic_data "$1"'
    result = subprocess.run(["bash", "-c", script, "prepare", str(directory)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("spm.model", "table.jsonl", "en_text_document.idx", "de_text_document.idx"):
        assert (directory / name).exists(), name
    return directory
