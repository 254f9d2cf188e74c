"""TP, PP, DP (distributed optimizer) and TP x PP give the single-process loss and gradients."""

import pytest

from tests import parallel_lm
from tests.dist_utils import run_distributed


def _reference(weights_dir, family, steps=3, **overrides):
    from megatron_prealign import runtime

    runtime.initialize(1, 1, seed=7)
    args = parallel_lm.tiny_args(family, **overrides)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(args)
    parallel_lm.save_weights(chunks, weights_dir)
    losses, first = [], None
    for step in range(steps):
        loss, grads = parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())
        losses.append(loss)
        first = first or grads
    return {"losses": losses, "grads": first}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def reference(request, tmp_path_factory):
    weights = str(tmp_path_factory.mktemp(f"weights_{request.param}"))
    result = run_distributed(_reference, 1, weights, request.param)[0]
    return request.param, weights, result


def _assert_close(actual, expected, rtol=1e-5, what=""):
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual - expected).abs().max() / scale
    assert error <= rtol, f"{what}: max error {error:.3e} relative to max |value| (rtol {rtol})"


def check_against_reference(results, reference_result):
    ref_losses = reference_result["losses"]
    ref_grads = reference_result["grads"]
    for rank, result in enumerate(results):
        assert result["losses"][0] == pytest.approx(ref_losses[0], rel=1e-5), f"rank {rank} loss"
        assert set(result["grads"]) == set(ref_grads), f"rank {rank} parameter names"
        for name, grad in ref_grads.items():
            assert grad.abs().max() > 0, f"reference gradient of {name} is zero"
            _assert_close(result["grads"][name], grad, what=f"rank {rank} grad {name}")
        # A few optimizer steps lower the loss the same way.
        assert result["losses"] == pytest.approx(ref_losses, rel=1e-4), f"rank {rank} losses"
    assert ref_losses[-1] < ref_losses[0]


@pytest.mark.parametrize(
    "tp,pp,world,distributed_optimizer",
    [(2, 1, 2, False), (1, 2, 2, False), (1, 1, 2, True), (2, 2, 4, True)],
    ids=["tp2", "pp2", "dp2-distopt", "tp2xpp2"],
)
def test_layout_matches_single_process(reference, tp, pp, world, distributed_optimizer):
    family, weights, ref = reference
    if family == "llama" and tp * pp == 1:
        pytest.skip("DP-only layouts do not depend on the family; covered by gpt2")
    results = run_distributed(
        parallel_lm.run_layout, world, tp, pp, weights, distributed_optimizer, 3, family
    )
    check_against_reference(results, ref)


def test_sequence_parallel_matches_single_process(reference):
    family, weights, ref = reference
    results = run_distributed(
        parallel_lm.run_layout, 2, 2, 1, weights, False, 3, family, sequence_parallel=True
    )
    check_against_reference(results, ref)
