import os
import sys
import warnings

import pytest

# Keep megatron-core's import-time warnings (no apex, no TE) out of every test's output.
warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
