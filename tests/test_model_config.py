"""Model configurations: named sizes, parameter counts, and clear errors before any compute."""

from unittest import mock

import pytest

from megatron_prealign import runtime
from megatron_prealign.model import MODEL_SIZES, ModelArgs, count_parameters


def _args(**overrides):
    defaults = dict(vocab_size=100, seq_length=16, num_layers=4, hidden_size=32, num_attention_heads=4)
    return ModelArgs(**{**defaults, **overrides})


@pytest.mark.parametrize(
    "overrides,world,flag",
    [
        (dict(tensor_model_parallel_size=2, pipeline_model_parallel_size=2), 6, "--tensor-model-parallel-size"),
        (dict(num_attention_heads=4, hidden_size=36, tensor_model_parallel_size=3), 3, "--num-attention-heads"),
        (dict(num_layers=3, pipeline_model_parallel_size=2), 2, "--num-layers"),
        (dict(bf16=True, fp16=True), 1, "--bf16"),
        (dict(fp8_format="hybrid"), 1, "--transformer-impl transformer_engine"),
        (dict(sequence_parallel=True), 1, "--sequence-parallel"),
        (dict(family="bert"), 1, "--model-family"),
        (dict(recompute_granularity="full"), 1, "--recompute-method"),
    ],
)
def test_invalid_configs_name_the_flag(overrides, world, flag):
    with pytest.raises(ValueError) as error:
        _args(**overrides).validate(world)
    assert flag in str(error.value)


def test_fp8_without_transformer_engine_or_gpu():
    args = _args(fp8_format="e4m3", transformer_impl="transformer_engine")
    with mock.patch.object(runtime, "transformer_engine_available", return_value=True), \
            mock.patch.object(runtime, "fp8_available", return_value=(False, "no CUDA device is in use")):
        with pytest.raises(ValueError, match="fp8-format e4m3 is unavailable: no CUDA device"):
            args.validate(1)
    if not runtime.transformer_engine_available():
        with pytest.raises(ValueError, match="Transformer Engine"):
            _args(transformer_impl="transformer_engine").validate(1)


def test_paper_sizes_have_the_papers_non_embedding_parameters():
    counts = {size: count_parameters(ModelArgs.named(size, vocab_size=50000, seq_length=1024))
              for size in MODEL_SIZES}
    assert counts["150M"]["non_embedding"] == pytest.approx(151e6, rel=0.02)
    assert counts["400M"]["non_embedding"] == pytest.approx(382e6, rel=0.02)
    assert counts["1.3B"]["total"] == pytest.approx(1.3e9, rel=0.05)
    with pytest.raises(ValueError, match="unknown model size"):
        ModelArgs.named("7B", vocab_size=10, seq_length=8)


def _count_built_rank(family):
    import torch

    from megatron_prealign.model import build_model

    runtime.initialize(1, 1, seed=1)
    args = _args(family=family, vocab_size=96)
    model = build_model(args, wrap_with_ddp=False)[0]
    return {"built": sum(p.numel() for p in model.parameters()), "formula": count_parameters(args)["total"],
            "ffn": torch.tensor(args.resolved_ffn_hidden_size())}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_parameter_formula_matches_the_built_model(family):
    from tests.dist_utils import run_distributed

    result = run_distributed(_count_built_rank, 1, family)[0]
    assert result["built"] == result["formula"]


def test_validation_sets_get_distinct_names():
    from megatron_prealign.data.data_path import prefix_names

    assert prefix_names(["data/en_text_document", "data/de_text_document"]) == [
        "en_text_document", "de_text_document"]
    assert prefix_names(["data/en/text_document", "data/de/text_document"]) == [
        "en/text_document", "de/text_document"]
    assert prefix_names(["a/text", "a/text"]) == ["a/text#0", "a/text#1"]
