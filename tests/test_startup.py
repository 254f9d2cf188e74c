"""Every entry point parses its arguments before importing torch, megatron-core or transformers:
``--help`` and a wrong flag never import them (timing-free; bench/startup.py measures the time)."""

import importlib.util
import os
import re

import pytest

from bench.startup import MODULES, ROOT, entry_points, heavy_imports

POINTS = entry_points()


@pytest.mark.parametrize("name", sorted(POINTS))
def test_help_imports_no_heavy_package(name):
    code, heavy = heavy_imports(POINTS[name], ("--help",))
    assert code == 0
    assert heavy == [], f"{name} --help imported {heavy}"


@pytest.mark.parametrize("name", sorted(POINTS))
def test_wrong_flag_imports_no_heavy_package(name):
    code, heavy = heavy_imports(POINTS[name], ("--no-such-flag",))
    assert code == 2  # argparse's usage error
    assert heavy == [], f"{name} with a wrong flag imported {heavy}"


def test_every_console_script_is_checked():
    """Each console script of setup.py is a tools/ wrapper's module or one of bench/startup.py's
    MODULES, so a new entry point cannot escape the tests above."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        scripts = re.findall(r'"prealign-[\w-]+=([\w.]+):main"', f.read())
    assert scripts
    wrapped = set()
    for path in POINTS.values():  # tools/ wrappers and `python -m` modules that import a main
        file = path[0] if path[0] != "-m" else importlib.util.find_spec(path[1]).origin
        with open(file) as f:
            wrapped.update(re.findall(r"^from ([\w.]+) import main", f.read(), re.M))
    runnable = wrapped | set(MODULES) | {m + ".__main__" for m in MODULES}
    assert sorted(set(scripts) - runnable) == []


# A run of a tool's main in a fresh interpreter that reports the heavy packages imported in the
# main process and in each worker process (recorded where the workers do their work).
_RUN_AND_REPORT = r"""
import json, os, sys
HEAVY = ("torch", "megatron", "transformers")
def heavy():
    return sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY})
import importlib
worker_module = importlib.import_module(sys.argv[1])
original = getattr(worker_module, sys.argv[2])
seen = {}
def recording(*args, **kwargs):
    with open(os.path.join(sys.argv[3], f"worker-{os.getpid()}.json"), "w") as f:
        json.dump(heavy(), f)
    return original(*args, **kwargs)
recording.__module__, recording.__qualname__ = original.__module__, original.__qualname__
setattr(worker_module, sys.argv[2], recording)  # forked workers resolve it by name
code = importlib.import_module(sys.argv[4]).main(sys.argv[5:])
workers = {}
for name in os.listdir(sys.argv[3]):
    if name.startswith("worker-"):
        with open(os.path.join(sys.argv[3], name)) as f:
            workers[name] = json.load(f)
print(json.dumps({"code": code, "main": heavy(), "workers": workers, "pid": os.getpid()}))
"""


def _run_and_report(tmp_path, worker_module, worker_fn, cli_module, argv):
    import json
    import subprocess
    import sys

    report_dir = tmp_path / "report"
    report_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, worker_module, worker_fn, str(report_dir),
         cli_module, *argv],
        cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _family_flags(family, assets, tmp_path):
    from megatron_prealign.data.tokenizer_training import write_gpt2_files, write_tiktoken_vocab

    if family == "sp":
        return ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"]]
    if family == "hf":
        return ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", assets["hf"]]
    if family == "gpt2bpe":
        vocab, merges = write_gpt2_files(assets["hf"], str(tmp_path / "gpt2"))
        return ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges]
    path = str(tmp_path / "tiktoken.json")
    size = write_tiktoken_vocab(assets["hf"], path)
    return ["--tokenizer-type", "TikTokenizer", "--tokenizer-model", path, "--vocab-size", str(1000 + size)]


@pytest.mark.parametrize("family", ["sp", "hf", "gpt2bpe", "tiktoken"])
def test_preprocessing_imports_no_heavy_package(assets, tmp_path, family):
    """Each tokenizer family, codeswitching, 2 workers: neither the main process nor a worker
    imports torch, megatron-core or transformers."""
    out = tmp_path / "out"
    report = _run_and_report(tmp_path, "megatron_prealign.data.preprocess", "_process_block",
                             "megatron_prealign.cli.preprocess_data", [
                                 "--input", assets["en"], "--output-prefix", str(out),
                                 *_family_flags(family, assets, tmp_path), "--append-eod",
                                 "--alignment-table", assets["table"], "--workers", "2",
                                 "--no-progress"])
    assert report["code"] == 0
    assert report["main"] == []
    assert report["workers"] and all(v == [] for v in report["workers"].values())
    assert f"worker-{report['pid']}.json" not in report["workers"]  # ran in worker processes
    assert os.path.getsize(str(out) + "_text_document_loss_mask.idx") > 0


def test_table_building_imports_no_heavy_package(assets, tmp_path):
    report = _run_and_report(tmp_path, "megatron_prealign.data.table_builder", "_count_block",
                             "megatron_prealign.cli.build_alignment_table", [
                                 "--input", assets["en"], "--dictionary",
                                 f"de={assets['dict_de']}", "--min-count", "3",
                                 "--output", str(tmp_path / "table.jsonl"), "--workers", "2"])
    assert report["code"] == 0
    assert report["main"] == []
    assert report["workers"] and all(v == [] for v in report["workers"].values())


def test_sentencepiece_text_equals_megatron_core_tokenizer(assets):
    """The preprocessing path's SentencePiece tokenizer gives megatron-core's ids, special ids,
    vocabulary size and text."""
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import (
        SentencePieceText,
        build_text_tokenizer,
        build_tokenizer,
        tokenizer_spec,
    )

    spec = tokenizer_spec(tokenizer_type="SentencePieceTokenizer", tokenizer_model=assets["sp"])
    ours, theirs = build_text_tokenizer(spec), build_tokenizer(**spec)
    assert isinstance(ours, SentencePieceText)
    assert (ours.vocab_size, ours.eod, ours.bos) == (theirs.vocab_size, theirs.eod, theirs.bos)
    with open(assets["en"], encoding="utf-8") as f:
        texts = [next(f) for _ in range(20)]
    texts += ["", " ", "  two  spaces\tand\ttabs\n\nnew lines ", "银行 naïve Straße 12 km!", "<s></s>"]
    for text in texts:
        ids = ours.tokenize(text)
        assert ids == list(theirs.tokenize(text)), text
        assert ours.detokenize(ids) == theirs.detokenize(ids)
    a, b = TextEncoder(ours), TextEncoder(theirs)
    assert a.supports_offsets and b.supports_offsets
    assert (a.vocab_size, a.eod, a.bos) == (b.vocab_size, b.eod, b.bos)
    legacy = dict(spec, tokenizer_sentencepiece_legacy=True)
    assert not isinstance(build_text_tokenizer(legacy), SentencePieceText)
