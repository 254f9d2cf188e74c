"""The alignment pass on megatron-core (packed forms, hooks, injected gradients) against the
plain-PyTorch reference of Eq. 1-3: same loss and gradients within 1e-5 (fp32); bf16 close."""

import pytest
import torch

from megatron_prealign.alignment.microbatch import forms_of
from tests import alignment_case as case
from tests import alignment_reference as reference
from tests.dist_utils import run_distributed


def _megatron_run(family):
    weights = case.full_weights(family)
    variants = [
        {"name": "fp32"},
        {"name": "fp32-recompute", "recompute": "full"},
        {"name": "fp32-selective-recompute", "recompute": "selective"},
        {"name": "bf16", "bf16": True},
    ]
    results = case.run_layout(1, 1, variants, family, with_lm=False)
    return {"weights": weights, **results}


def _reference(weights, family):
    leaves = {name: tensor.clone().requires_grad_(True) for name, tensor in weights.items()}
    microbatches = []
    for per_rank in case.global_alignment_microbatches(1):
        batch = case.concatenate(per_rank)
        microbatches.append((forms_of(batch), batch.form_group.tolist()))
    args = case.tiny_args(family)
    objective = reference.alignment_objective(
        leaves, microbatches, family, args.num_layers, args.num_attention_heads,
        case.TEMPERATURE, case.LOSS_WEIGHT,
    )
    objective.backward()
    # Statistics report the unweighted loss (Eq. 3 averaged over microbatches).
    return objective.item() / case.LOSS_WEIGHT, {name: leaf.grad for name, leaf in leaves.items()}


def assert_close(actual, expected, rtol, what):
    scale = expected.abs().max().clamp_min(1e-12)
    error = ((actual - expected).abs().max() / scale).item()
    assert error <= rtol, f"{what}: max error {error:.3e} relative to max |value| (rtol {rtol})"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_matches_plain_pytorch_reference(family):
    result = run_distributed(_megatron_run, 1, family)[0]
    loss, grads = _reference(result["weights"], family)
    assert loss > 0
    for variant in ("fp32", "fp32-recompute", "fp32-selective-recompute"):
        got = result[variant]
        assert got["alignment_loss"] == pytest.approx(loss, rel=1e-5), variant
        assert set(got["grads"]) == set(grads)
        for name, grad in grads.items():
            assert grad.abs().max() > 0, f"reference gradient of {name} is zero"
            assert_close(got["grads"][name], grad, 1e-5, f"{variant} grad {name}")
    # bf16 activations and weights, fp32 loss math: close to fp32, finite.
    bf16 = result["bf16"]
    assert bf16["alignment_loss"] == pytest.approx(loss, rel=3e-2)
    for name, grad in grads.items():
        got = bf16["grads"][name]
        assert torch.isfinite(got).all(), name
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), grad.flatten(), dim=0)
        assert cosine > 0.98, f"bf16 grad {name}: cosine {cosine:.4f} to fp32"


def test_batches_without_anchors_and_evaluation():
    result = run_distributed(case.run_degenerate, 1)[0]
    log = result["singleton_log"]
    assert log["alignment_loss"] == 0.0 and all(n == 0 for n in log["alignment_anchors"])
    assert all(value is None for value in log["alignment_similarity"])  # no aligned pair
    assert all(value is not None for value in log["random_similarity"])
    for name, grad in result["singleton_grads"].items():
        assert torch.equal(grad, torch.zeros_like(grad)), name
    evaluation = result["evaluation_log"]
    assert evaluation["alignment_loss"] > 0 and len(evaluation["alignment_similarity"]) == 6
    assert result["registered_during_evaluation"] == 0
