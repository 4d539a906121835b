import json
import math

import pytest
import torch

from sparsecircuits.circuits.edges import circuit_edges
from sparsecircuits.circuits.masks import NodeMasks, fixed_mask_hooks, heaviside
from sparsecircuits.circuits.nodes import compute_mean_activations, node_groups
from sparsecircuits.circuits.pipeline import DEFAULT_SWEEP, next_setting
from sparsecircuits.circuits.prune import fit_calibration, margin_loss, smallest_k_meeting_target
from sparsecircuits.circuits.task_data import split_by_shares
from sparsecircuits.circuits.trim import node_degrees, trim_circuit, trim_order
from sparsecircuits.circuits.verify import GrowthChain
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.train.weight_sparsity import project_to_density


def make_model(**options) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_ctx=16, vocab_size=50, **options))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


TOKENS = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(3))


def test_heaviside_steps_forward_and_uses_the_sigmoid_slope_backward():
    tau = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    out = heaviside(tau, temperature=1.0)
    assert out.tolist() == [0.0, 0.0, 1.0]
    out.sum().backward()
    sigmoid = torch.sigmoid(tau.detach())
    torch.testing.assert_close(tau.grad, sigmoid * (1 - sigmoid))


def test_node_groups_cover_every_prunable_site():
    config = GPTConfig(n_layer=2, d_model=32, n_ctx=16, vocab_size=50)
    groups = node_groups(config)
    assert len(groups) == 2 * 8 + 1
    assert sum(g.width for g in groups) == 2 * (7 * 32 + 128) + 32
    model = GPT(config)
    assert all(g.hook in model.hook_names for g in groups)


def test_keeping_every_node_leaves_the_model_unchanged_and_dropping_all_uses_the_means():
    model = make_model(afrac=0.5)
    groups = node_groups(model.config)
    means = compute_mean_activations(model, [TOKENS], groups)
    total = sum(g.width for g in groups)
    plain = model(TOKENS)
    with model.hooks(fixed_mask_hooks(groups, torch.ones(total, dtype=torch.bool), means)):
        kept = model(TOKENS)
    torch.testing.assert_close(kept, plain)
    with model.hooks(fixed_mask_hooks(groups, torch.zeros(total, dtype=torch.bool), means)):
        ablated = model(TOKENS)
    # With every node replaced by a constant, the output no longer depends on the input.
    torch.testing.assert_close(ablated[0], ablated[1])
    expected = model.lm_head(means["hook_final_norm"])
    torch.testing.assert_close(ablated[0, 0], expected)


def test_mean_activations_are_the_mean_over_positions_and_sequences():
    model = make_model()
    groups = node_groups(model.config)
    means = compute_mean_activations(model, [TOKENS[:2], TOKENS[2:]], groups)
    _, cache = model.run_with_cache(TOKENS, ["blocks.1.mlp.hook_post", "blocks.0.attn.hook_k"])
    torch.testing.assert_close(
        means["blocks.1.mlp.hook_post"], cache["blocks.1.mlp.hook_post"].mean(dim=(0, 1))
    )
    torch.testing.assert_close(
        means["blocks.0.attn.hook_k"], cache["blocks.0.attn.hook_k"].flatten(2).mean(dim=(0, 1))
    )


def test_training_masks_receive_gradients_through_the_surrogate():
    model = make_model()
    for param in model.parameters():
        param.requires_grad_(False)
    groups = node_groups(model.config)
    means = compute_mean_activations(model, [TOKENS], groups)
    masks = NodeMasks(groups, means, generator=torch.Generator().manual_seed(0))
    assert int(masks.active_count()) == sum(g.width for g in groups)
    with model.hooks(masks.hooks()):
        loss = model(TOKENS)[:, -1, 3].sum() + 1e-3 * masks.active_count()
    loss.backward()
    assert all(tau.grad is not None and tau.grad.abs().sum() > 0 for tau in masks.tau)


def test_edges_are_nonzero_weights_between_kept_nodes():
    model = make_model()
    project_to_density(model, 0.25)
    groups = node_groups(model.config)
    total = sum(g.width for g in groups)
    keep = torch.zeros(total, dtype=torch.bool)
    offsets, start = {}, 0
    for g in groups:
        offsets[(g.layer, g.kind)] = start
        start += g.width
    mlp_in, neurons, mlp_out = ([0, 1, 2, 3, 4, 5], [7, 8, 9], [10, 11])
    for kind, indices in (("mlp_in", mlp_in), ("mlp_neuron", neurons), ("mlp_out", mlp_out)):
        for i in indices:
            keep[offsets[(1, kind)] + i] = True
    fc, proj = model.blocks[1].mlp.fc.weight, model.blocks[1].mlp.proj.weight
    expected = int((fc[neurons][:, mlp_in] != 0).sum() + (proj[mlp_out][:, neurons] != 0).sum())
    edges = circuit_edges(model, groups, keep)
    assert len(edges) == expected
    for edge in edges:
        assert edge.weight != 0
        assert edge.source.startswith("1.") and edge.target.startswith("1.")


def test_the_k_search_finds_the_smallest_k_despite_a_non_monotone_loss():
    # Loss meets 0.15 from k = 37 to 60, fails again up to 500, and meets it from 501.
    def loss(k: int) -> float:
        return 0.1 if 37 <= k <= 60 or k > 500 else 0.4

    assert smallest_k_meeting_target(loss, total=4000, target_loss=0.15) == 37
    assert smallest_k_meeting_target(lambda k: 0.5 - k / 10000, 4000, 0.01) == 4000


def test_trimming_drops_every_node_the_target_does_not_need_and_keeps_the_rest():
    # The task needs nodes 2 and 5 together, or node 7 alone; the top-k circuit kept 0-9.
    def loss(keep: torch.Tensor) -> float:
        return 0.1 if (keep[2] and keep[5]) or keep[7] else 0.6

    keep = torch.zeros(20, dtype=torch.bool)
    keep[:10] = True
    order = list(range(10))  # node 7 is tried before it is the only way left
    result = trim_circuit(loss, keep, order, 0.15, deadline=float("inf"), loss=0.1)
    assert result.keep.nonzero().flatten().tolist() == [7]
    assert result.drops == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert (result.tried, result.finished) == (10, True)
    assert keep.sum() == 10  # the caller's circuit is left as it was
    stopped = trim_circuit(loss, keep, order, 0.15, deadline=0.0, loss=0.1)
    assert not stopped.finished and stopped.keep.equal(keep)


def test_verification_grows_back_by_undoing_the_last_drops_first_then_by_mask_score():
    trimmed = torch.zeros(8, dtype=torch.bool)
    trimmed[[0, 1]] = True
    scores = torch.tensor([8.0, 7, 6, 5, 4, 3, 2, 1])
    chain = GrowthChain(trimmed, drops=[2, 5], scores=scores)
    links = [chain[i].nonzero().flatten().tolist() for i in range(len(chain))]
    assert links == [
        [0, 1],
        [0, 1, 5],  # trimming dropped 5 last: it comes back first
        [0, 1, 2, 5],
        [0, 1, 2, 3, 5],  # then the rest by score
        [0, 1, 2, 3, 4, 5],
        [0, 1, 2, 3, 4, 5, 6],
        list(range(8)),
    ]
    assert GrowthChain(trimmed, [], scores)[0].equal(trimmed)


def test_pairs_split_in_proportion_and_no_part_is_ever_empty():
    from types import SimpleNamespace

    batch = SimpleNamespace(n_pairs=10, subset=lambda rows: list(rows))
    assert [len(part) for part in split_by_shares(batch, (2, 1, 1, 1))] == [4, 2, 2, 2]
    batch.n_pairs = 5
    assert split_by_shares(batch, (2, 1, 1, 1)) == [[0, 1], [2], [3], [4]]
    batch.n_pairs = 4  # shares would round parts down to nothing
    assert [len(part) for part in split_by_shares(batch, (6, 1, 1, 1))] == [1, 1, 1, 1]
    batch.n_pairs = 3
    with pytest.raises(UserError, match="at least 4"):
        split_by_shares(batch, (2, 1, 1, 1))


def test_trimming_tries_low_scores_first_and_then_the_most_connected_nodes():
    model = make_model()
    groups = node_groups(model.config)
    keep = torch.zeros(sum(g.width for g in groups), dtype=torch.bool)
    keep[: groups[0].width + groups[1].width + groups[2].width + groups[3].width] = True
    degrees = node_degrees(model, groups, keep)
    edges = circuit_edges(model, groups, keep)
    assert int(degrees.sum()) == 2 * len(edges) > 0
    assert int(degrees[~keep].sum()) == 0
    scores = torch.ones(keep.numel())
    scores[5] = 0.2
    order = trim_order(keep, scores, degrees)
    assert order[0] == 5 and sorted(order) == keep.nonzero().flatten().tolist()
    rest = [degrees[i] for i in order[1:]]
    assert rest == sorted(rest, reverse=True)


def test_calibration_removes_a_constant_bias_toward_one_answer():
    from types import SimpleNamespace

    torch.manual_seed(0)
    n = 200
    correct = torch.tensor([5] * n + [9] * n)
    wrong = torch.tensor([9] * n + [5] * n)
    signal = 1.0 + 1.5 * torch.randn(2 * n)
    # The circuit prefers token 5 by 3 logits whatever the prompt: B prompts look wrong.
    margin = signal + torch.where(correct == 5, 3.0, -3.0)
    batch = SimpleNamespace(correct=correct, wrong=wrong)
    before = float(margin_loss(margin).mean())
    calibration = fit_calibration(margin, batch)
    after = float(margin_loss(calibration.apply(margin, batch)).mean())
    assert before > 1.0 and after < 0.5 * before
    bias = (calibration.shift[5] - calibration.shift[9]) / calibration.scale
    assert math.isclose(bias, -3.0, abs_tol=0.7)
    assert json.loads(json.dumps(calibration.to_dict()))["scale"] == pytest.approx(
        calibration.scale
    )


def setting_result(k_coef: float, nodes: int, active: int, met: bool = True) -> dict:
    return {"k_coef": k_coef, "nodes": nodes, "active_after_training": active, "met": met}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # Pruned too hard (the circuit needed nodes the masks switched off): weaker penalty.
        ([setting_result(1e-3, 3716, 17)], 3e-4),
        ([setting_result(1e-3, 5000, 20, met=False)], 3e-4),
        ([setting_result(1e-3, 3716, 17), setting_result(3e-4, 4000, 30)], 1e-4),
        # A good setting: try a stronger penalty for a smaller circuit.
        ([setting_result(1e-3, 54, 242)], 3e-3),
        ([setting_result(1e-3, 104, 348), setting_result(3e-3, 107, 195)], 1e-2),
        # Nothing left between a good penalty and one known to be too strong.
        ([setting_result(1e-3, 54, 242), setting_result(3e-3, 3507, 16)], None),
        ([setting_result(1e-3, 3716, 17), setting_result(3e-4, 129, 199)], None),
    ],
)
def test_the_sweep_steers_the_node_penalty_by_what_each_setting_did(history, expected):
    chosen = next_setting(DEFAULT_SWEEP, history)
    assert (chosen and chosen["k_coef"]) == expected
