import math

import pytest
import torch

from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.train.schedules import (
    kept_fraction,
    sharkfin_learning_rate,
    warmup_then_linear_decay,
)
from sparsecircuits.train.weight_sparsity import (
    is_embedding_or_bias,
    kept_count,
    project_to_density,
    topk_mask,
)


@pytest.mark.parametrize("rule", [None, "rows", "cols"])
def test_topk_mask_keeps_exactly_k_and_at_least_four_per_neuron(rule):
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    mask = topk_mask(weight, 0.125, rule)
    assert int(mask.sum()) == kept_count(weight.numel(), 0.125) == 384
    if rule == "rows":
        assert int(mask.sum(1).min()) >= 4
    if rule == "cols":
        assert int(mask.sum(0).min()) >= 4
    # Everything kept outside the protected entries is at least as large as anything dropped.
    if rule is None:
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


def test_the_per_neuron_minimum_wins_over_a_tiny_budget():
    weight = torch.randn(32, 32)
    mask = topk_mask(weight, 0.01, "rows")
    assert torch.all(mask.sum(1) == 4)
    assert int(mask.sum()) == 128


def test_projecting_a_model_sparsifies_every_group_and_spares_norms():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=64, n_ctx=16, vocab_size=128, bigram_table=True))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))  # no ties, no zeros
    project_to_density(model, 0.25)
    for name, param, rule in model.weight_sparsity_groups():
        assert int(param.count_nonzero()) == kept_count(param.numel(), 0.25), name
        if rule == "rows":
            assert int((param != 0).sum(1).min()) >= 4
    assert int(model.blocks[0].norm_attn.weight.count_nonzero()) == 64
    assert int(model.bigram.weight.count_nonzero()) == 128 * 128


def test_embeddings_unembedding_and_biases_may_keep_their_own_fraction():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, d_model=64, n_ctx=16, vocab_size=128, learned_positions=True))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    project_to_density(model, 0.0625, embedding_density=0.5)
    outer = {"wte.weight", "wpe.weight", "lm_head.weight", "lm_head.bias", "blocks.0.mlp.fc.bias"}
    seen = set()
    for name, param, _ in model.weight_sparsity_groups():
        kept = 0.5 if is_embedding_or_bias(name) else 0.0625
        assert int(param.count_nonzero()) == kept_count(param.numel(), kept), name
        seen |= {name} & outer
    assert seen == outer
    assert int(model.blocks[0].attn.q_proj.weight.count_nonzero()) == 64 * 64 // 16


def test_kept_fraction_anneals_linearly_then_holds():
    assert kept_fraction(0, 1000, 1 / 16) == 1.0
    assert kept_fraction(250, 1000, 1 / 16) == pytest.approx((1 + 1 / 16) / 2)
    assert kept_fraction(500, 1000, 1 / 16) == pytest.approx(1 / 16)
    assert kept_fraction(999, 1000, 1 / 16) == pytest.approx(1 / 16)
    assert kept_fraction(400, 1000, 0.01, anneal_end=0.8) > 0.01


def test_learning_rate_warms_up_decays_and_follows_the_sharkfin():
    total = 1000
    assert warmup_then_linear_decay(0, total) == pytest.approx(0.1)
    assert warmup_then_linear_decay(9, total) == pytest.approx(1.0)
    assert warmup_then_linear_decay(505, total) == pytest.approx(0.5, abs=0.01)
    assert warmup_then_linear_decay(total, total) == 0.0
    # Dense at the start: the learning rate is scaled down by sqrt(target).
    early = sharkfin_learning_rate(10, total, 1e-3, target=1 / 16, current=1.0)
    assert early == pytest.approx(1e-3 * warmup_then_linear_decay(10, total) * 0.25)
    late = sharkfin_learning_rate(600, total, 1e-3, target=1 / 16, current=1 / 16)
    assert late == pytest.approx(1e-3 * warmup_then_linear_decay(600, total))
    # A dense run (target 1) gets the plain schedule.
    assert math.isclose(
        sharkfin_learning_rate(5, 10, 1.0, 1.0, 1.0), warmup_then_linear_decay(5, 10)
    )
