"""Packing, masks, pooling, the contrastive loss and metrics on their own; bad input."""

import math
from typing import Optional, Tuple

import pytest
import torch

from megatron_prealign.alignment.microbatch import (
    AlignmentBatch,
    block_diagonal_causal_mask,
    forms_of,
    pack_forms,
)
from megatron_prealign.alignment.contrastive import DEFAULT_TEMPERATURE, anchor_terms, count_anchors
from megatron_prealign.alignment.metrics import AlignmentStatistics, pair_similarity_sums
from megatron_prealign.alignment.pooling import spread_to_tokens, sum_by_form
from tests.alignment_case import concatenate


def supervised_contrastive_loss(
    vectors: torch.Tensor,
    groups: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    valid: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The loss of :func:`anchor_terms` over the whole batch at once (the alignment pass splits
    it into row shares): (loss, number of anchors) as 0-d tensors, for ``vectors [N, h]`` and
    ``groups [N]``. ``valid [N]`` (bool) excludes rows entirely (padding of a gathered batch)."""
    if valid is None:
        valid = torch.ones(vectors.shape[-2], dtype=torch.bool, device=vectors.device)
    terms, anchors = anchor_terms(vectors, groups, temperature, valid, slice(None))
    num_anchors = anchors.sum()
    return terms.sum(dim=-1) / num_anchors.clamp(min=1), num_anchors


def test_pack_forms_layout():
    batch = pack_forms([[5, 6, 7], [8], [9, 10], [11, 12, 13]], [0, 0, 1, 1], seq_length=5, num_sequences=2)
    assert batch.tokens.tolist() == [[5, 6, 7, 8, 0], [9, 10, 11, 12, 13]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 0], [0, 1, 0, 1, 2]]
    assert batch.segment_ids.tolist() == [[0, 0, 0, 1, -1], [2, 2, 3, 3, 3]]
    assert batch.form_lengths().tolist() == [3, 1, 2, 3]
    assert forms_of(batch) == [[5, 6, 7], [8], [9, 10], [11, 12, 13]]


def test_mask_is_block_diagonal_causal_and_true_means_masked():
    segments = torch.tensor([[0, 0, 1, 1, -1]])
    mask = block_diagonal_causal_mask(segments)
    assert mask.shape == (1, 1, 5, 5) and mask.dtype == torch.bool
    visible = (~mask[0, 0]).int().tolist()
    assert visible == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding sees only itself: no empty softmax row
    ]


@pytest.mark.parametrize(
    "forms,groups,message",
    [
        ([[1, 2], []], [0, 0], "empty"),
        ([[1] * 9], [0], "more than the packing length"),
        ([[1] * 4, [2] * 4, [3] * 4], [0, 0, 1], "do not fit"),
        ([[1]], [0, 1], "group ids"),
    ],
)
def test_pack_forms_rejects_bad_input(forms, groups, message):
    with pytest.raises(ValueError, match=message):
        pack_forms(forms, groups, seq_length=8, num_sequences=1)


def test_batch_validation():
    good = pack_forms([[1, 2], [3]], [0, 0], seq_length=4, num_sequences=1)
    with pytest.raises(ValueError, match="restart"):
        AlignmentBatch(good.tokens, torch.arange(4)[None], good.segment_ids, good.form_group)
    with pytest.raises(ValueError, match="no tokens"):
        AlignmentBatch(good.tokens, good.position_ids, good.segment_ids, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="contiguous"):
        AlignmentBatch(good.tokens, torch.tensor([[0, 0, 1, 0]]), torch.tensor([[0, 1, 0, -1]]), good.form_group)
    with pytest.raises(ValueError, match="shape"):
        AlignmentBatch(good.tokens[:, :3], good.position_ids, good.segment_ids, good.form_group)


def test_concatenate_renumbers_forms():
    a = pack_forms([[1], [2]], [0, 0], 4, 1)
    b = pack_forms([[3, 4]], [1], 4, 1)
    both = concatenate([a, b])
    assert both.segment_ids.tolist() == [[0, 1, -1, -1], [2, 2, -1, -1]]
    assert both.form_group.tolist() == [0, 0, 1]


def test_pooling_and_its_transpose():
    states = torch.arange(12.0).view(3, 2, 2)  # [s=3, b=2, h=2]
    index = torch.tensor([[0, 1], [0, -1], [2, 1]])
    sums = sum_by_form(states, index, 3)
    assert sums.tolist() == [[0 + 4, 1 + 5], [2 + 10, 3 + 11], [8, 9]]
    per_form = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    spread = spread_to_tokens(per_form, index, torch.float32)
    # <spread, states> == <per_form, sums>: the adjoint of pooling
    assert torch.dot(spread.flatten(), states.flatten()) == torch.dot(per_form.flatten(), sums.flatten())
    assert spread[1, 1].tolist() == [0.0, 0.0]


def test_contrastive_loss_by_hand():
    # Two groups of two, orthogonal pairs: write Eq. 2 out for tau = 0.5.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss, anchors = supervised_contrastive_loss(z, torch.tensor([0, 0, 1, 1]), temperature=0.5)
    expected = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(0)))
    assert anchors == 4 and loss.item() == pytest.approx(expected, rel=1e-6)


def test_singleton_groups_are_negatives_but_not_anchors():
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    groups = torch.tensor([0, 0, 1, 2, 2])
    loss, anchors = supervised_contrastive_loss(z, groups, 0.1)
    assert anchors == 4
    # dropping the singleton changes the denominators: it was used as a negative
    without, _ = supervised_contrastive_loss(z[[0, 1, 3, 4]], groups[[0, 1, 3, 4]], 0.1)
    assert loss.item() != pytest.approx(without.item())


def test_no_anchor_no_nan():
    z = torch.randn(3, 4, requires_grad=True)
    loss, anchors = supervised_contrastive_loss(z, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert anchors == 0 and loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    single, _ = supervised_contrastive_loss(torch.randn(1, 4), torch.tensor([0]), 0.1)
    assert single.item() == 0.0


def test_padding_rows_and_zero_vectors_never_nan():
    z = torch.zeros(4, 3, requires_grad=True)  # e.g. an all-zero state
    valid = torch.tensor([True, True, True, False])
    loss, anchors = supervised_contrastive_loss(z, torch.tensor([0, 0, 1, 1]), 0.1, valid)
    loss.backward()
    assert anchors == 2 and torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan")])
def test_temperature_must_be_positive(tau):
    with pytest.raises(ValueError, match="temperature"):
        supervised_contrastive_loss(torch.randn(2, 2), torch.tensor([0, 0]), tau)


def test_similarity_statistics():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sums = pair_similarity_sums(z, torch.tensor([0, 0, 1]), torch.ones(3, dtype=torch.bool))
    assert sums.tolist() == [2.0, 2.0, 0.0, 4.0]  # ordered pairs
    stats = AlignmentStatistics(2)
    stats.add(0, torch.tensor(1.5), torch.tensor(2), sums)
    stats.add(1, torch.tensor(0.5), torch.tensor(0), torch.tensor([0.0, 0.0, 1.0, 2.0]))
    log = stats.reduce().as_log_dict()
    assert log["alignment_loss"] == 2.0
    assert log["alignment_similarity"] == [1.0, None]  # undefined, not NaN
    assert log["random_similarity"] == [0.0, 0.5]


def test_batched_states_and_row_shares_match_the_plain_loss():
    """Several states at once, and the loss split into per-rank row shares (as under data
    parallelism), equal the per-state loss over the whole batch."""
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(3, 7, 5, generator=generator)  # 3 states, 7 forms
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3])  # groups 1 and 3: no positive
    valid = torch.tensor([True] * 6 + [False])
    anchors = count_anchors(groups, valid)
    assert anchors == 5
    shares = sum(
        anchor_terms(z, groups, 0.1, valid, rows)[0].sum(-1) / anchors
        for rows in (slice(0, 3), slice(3, 7))
    )
    for state in range(3):
        expected, _ = supervised_contrastive_loss(z[state], groups, 0.1, valid)
        assert shares[state].item() == pytest.approx(expected.item(), rel=1e-6)
    pair_sums = pair_similarity_sums(z, groups, valid, slice(0, 3)) + pair_similarity_sums(z, groups, valid, slice(3, 7))
    assert torch.allclose(pair_sums[1], pair_similarity_sums(z[1], groups, valid))


class _FakeLayer(torch.nn.Module):
    def __init__(self, layer_number):
        super().__init__()
        self.layer_number = layer_number

    def forward(self, hidden, attention_mask=None):
        return hidden + 1.0, None


class _FakeGPT(torch.nn.Module):
    """What the capture hooks touch of a GPTModel chunk: embedding, decoder layers, final norm."""

    def __init__(self, num_layers=2):
        super().__init__()
        self.pre_process = True
        self.embedding = torch.nn.Identity()
        self.decoder = torch.nn.Module()
        self.decoder.layers = torch.nn.ModuleList(_FakeLayer(i + 1) for i in range(num_layers))
        self.decoder.final_layernorm = torch.nn.Identity()

    def forward(self, hidden, mask):
        hidden = self.embedding(hidden)
        for layer in self.decoder.layers:
            hidden, _ = layer(hidden, attention_mask=mask)
        return self.decoder.final_layernorm(hidden)

    def hook_count(self):
        return sum(len(m._forward_hooks) for m in self.modules())


def _fake_microbatch(needs_backward=False):
    from megatron_prealign.alignment.capture import MicrobatchContext

    segments = torch.tensor([[0, 0, 1, -1]])
    mask = block_diagonal_causal_mask(segments)
    context = MicrobatchContext(segments, 2, mask, num_layers=2, sequence_parallel=False,
                                needs_backward=needs_backward)
    return context, torch.ones(4, 1, 3), mask  # hidden states [s, b, h]


def test_capture_session_owns_its_hooks_and_microbatches():
    from megatron_prealign.alignment.capture import CaptureSession

    model = _FakeGPT()
    with CaptureSession([model]) as session:
        assert model.hook_count() == 4  # embedding, two layers, final norm
        context, hidden, mask = _fake_microbatch()
        with session.running(context):
            model(hidden, mask)
        # states 0 (embedding), 1 (layer 1) and 2 (after the final norm, not layer 2's output)
        assert sorted(context.slots) == [0, 1, 2]
        assert context.slots[1].sums[:, 0].tolist() == [4.0, 2.0]
        assert context.slots[2].sums[:, 0].tolist() == [6.0, 3.0]
        assert session.pending() == 0  # no backward pass needed: nothing kept

        later, hidden, mask = _fake_microbatch()
        model(hidden, mask)  # outside running(): not captured
        assert later.slots == {}

        kept, hidden, mask = _fake_microbatch(needs_backward=True)
        with session.running(kept):
            model(hidden, mask)
        assert session.pending() == 1 and not kept.pooling
        with pytest.raises(RuntimeError, match="already running"):
            with session.running(kept):
                with session.running(kept):
                    pass
        session.clear()
        assert session.pending() == 0
    assert model.hook_count() == 0
    session.remove()  # idempotent


def test_capture_sessions_on_one_model_are_independent():
    from megatron_prealign.alignment.capture import CaptureSession

    model = _FakeGPT()
    first, second = CaptureSession([model]), CaptureSession([model])
    try:
        context, hidden, mask = _fake_microbatch(needs_backward=True)
        with first.running(context):
            model(hidden, mask)
        assert first.pending() == 1 and second.pending() == 0
        assert context.slots[1].sums[:, 0].tolist() == [4.0, 2.0]  # pooled once, not twice
    finally:
        first.remove()
        second.remove()
    assert model.hook_count() == 0
