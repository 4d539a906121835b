import json
import math

import pytest
import torch

from sparsecircuits.circuits.cleanup import remove_idle_nodes
from sparsecircuits.circuits.masks import NodeMasks, heaviside
from sparsecircuits.circuits.nodes import compute_mean_activations, node_groups
from sparsecircuits.circuits.prune import (
    Measured,
    fit_calibration,
    margin_loss,
    rank_nodes,
    smallest_k_meeting_target,
)
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.circuits.sweep import next_k_coef
from sparsecircuits.circuits.task_data import split_by_shares
from sparsecircuits.circuits.trim import Drop, trim_circuit, trim_order
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
    means = compute_mean_activations(model, [TOKENS], node_groups(model.config))
    space = CircuitSpace(model, means)
    plain = model(TOKENS)
    with model.hooks(space.hooks(~space.empty())):
        kept = model(TOKENS)
    torch.testing.assert_close(kept, plain)
    with model.hooks(space.hooks(space.empty())):
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
    space = CircuitSpace(model)
    mlp_in, neurons, mlp_out = ([0, 1, 2, 3, 4, 5], [7, 8, 9], [10, 11])
    keep = space.keep_of(
        [(1, "mlp_in", i) for i in mlp_in]
        + [(1, "mlp_neuron", i) for i in neurons]
        + [(1, "mlp_out", i) for i in mlp_out]
    )
    fc, proj = model.blocks[1].mlp.fc.weight, model.blocks[1].mlp.proj.weight
    expected = int((fc[neurons][:, mlp_in] != 0).sum() + (proj[mlp_out][:, neurons] != 0).sum())
    edges = space.edges(keep)
    assert len(edges) == expected == space.count_edges(keep) > 0
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
    # Dropping node 3 leaves node 4 idle (the clean-up removes it with 3).
    def measure(keep: torch.Tensor) -> Measured:
        keep = keep.clone()
        keep[4] &= bool(keep[3])
        loss = 0.1 if (keep[2] and keep[5]) or keep[7] else 0.6
        # Each node dropped costs a little loss, as in a real circuit.
        return Measured(keep, loss + 0.001 * (10 - int(keep.sum())), calibration=None)

    keep = torch.zeros(20, dtype=torch.bool)
    keep[:10] = True
    order = list(range(10))  # node 7 is tried before it is the only way left
    result = trim_circuit(measure, measure(keep), order, 0.15, margin=0.01)
    assert result.circuit.keep.nonzero().flatten().tolist() == [7]
    assert [drop.nodes for drop in result.drops] == [[0], [1], [2], [3, 4], [5], [6], [8], [9]]
    assert [round(drop.need, 6) for drop in result.drops][2:4] == [0.001, 0.002]
    assert result.tried == 9  # node 4 left with node 3, so it was never tried on its own
    assert keep.sum() == 10  # the caller's circuit is left as it was
    # A drop must leave the loss `margin` below the target (or no higher than it was).
    strict = trim_circuit(measure, measure(keep), order, 0.15, margin=0.06)
    assert strict.circuit.keep.sum() == 10 and strict.drops == []


def test_verification_grows_back_the_most_needed_drops_first_then_by_ranking():
    trimmed = torch.zeros(8, dtype=torch.bool)
    trimmed[[0, 1]] = True
    ranking = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    drops = [Drop([2], need=0.01), Drop([5, 6], need=0.05)]
    chain = GrowthChain(trimmed, drops, ranking)
    links = [chain[i].nonzero().flatten().tolist() for i in range(len(chain))]
    assert links == [
        [0, 1],
        [0, 1, 5, 6],  # the drop that raised the loss most comes back first, whole
        [0, 1, 2, 5, 6],
        [0, 1, 2, 3, 5, 6],  # then the rest by ranking
        [0, 1, 2, 3, 4, 5, 6],
        list(range(8)),
    ]
    assert GrowthChain(trimmed, [], ranking)[0].equal(trimmed)


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
    space = CircuitSpace(model)
    keep = space.empty()
    keep[: sum(group.width for group in space.groups[:4])] = True
    degrees = space.degrees(keep)
    edges = space.edges(keep)
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


def setting_result(k_coef: float, k: int, active: int, met: bool = True) -> dict:
    return {"k_coef": k_coef, "k": k, "active_after_training": active, "met": met}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # Pruned too hard (the circuit needed nodes the masks switched off): weaker penalty.
        ([setting_result(1e-3, 3716, 17)], 3e-4),
        ([setting_result(1e-3, 5000, 20, met=False)], 3e-4),
        ([setting_result(1e-3, 3716, 17), setting_result(3e-4, 4000, 30)], 1e-4),
        # A good setting: try a stronger penalty for a smaller circuit.
        ([setting_result(1e-4, 54, 242)], 3e-4),
        ([setting_result(1e-4, 104, 348), setting_result(3e-4, 107, 195)], 1e-3),
        # Nothing left between a good penalty and one known to be too strong.
        ([setting_result(1e-4, 54, 242), setting_result(3e-4, 3507, 16)], None),
        ([setting_result(1e-3, 3716, 17), setting_result(3e-4, 129, 199)], None),
    ],
)
def test_the_sweep_steers_the_node_penalty_by_what_each_setting_did(history, expected):
    assert next_k_coef(history) == expected


def test_ranking_breaks_ties_of_tau_by_mean_tau_then_at_random():
    tau = torch.tensor([1.0, 1.0, 1.0, 0.5, -1.0, -1.0])
    mean_tau = torch.tensor([0.2, 0.9, 0.2, 0.0, -0.5, -0.5])
    orders = {
        tuple(rank_nodes(tau, mean_tau, torch.Generator().manual_seed(seed)).tolist())
        for seed in range(20)
    }
    assert all(order[0] == 1 and set(order[1:3]) == {0, 2} and order[3] == 3 for order in orders)
    assert len(orders) == 4  # exact ties (0/2, 4/5) go either way, by the seed


def sparse_space(**options) -> tuple[GPT, CircuitSpace]:
    model = make_model(**options)
    project_to_density(model, 0.25)
    means = compute_mean_activations(model, [TOKENS], node_groups(model.config))
    return model, CircuitSpace(model, means)


@pytest.mark.parametrize("options", [{}, {"attention_sink": True}, {"afrac": 0.5}])
def test_the_exact_clean_up_rules_leave_the_output_as_it_was(options):
    model, space = sparse_space(**options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        keep = torch.rand(space.size, generator=generator) < 0.3
        cleaned = remove_idle_nodes(space, keep, exact_only=True)
        if "afrac" in options:  # AbsTopK couples the channels of a site: nothing is exact
            assert cleaned.equal(keep)
        assert cleaned.sum() < keep.sum() or "afrac" in options
        assert not (cleaned & ~keep).any()
        assert remove_idle_nodes(space, cleaned, exact_only=True).equal(cleaned)  # a fixed point
        outputs = []
        for circuit in (keep, cleaned):
            with torch.no_grad(), model.hooks(space.hooks(circuit)):
                outputs.append(model(TOKENS))
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)


def test_the_full_clean_up_changes_the_output_far_less_than_random_removals():
    model, space = sparse_space()
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        keep = torch.rand(space.size, generator=generator) < 0.3
        cleaned = remove_idle_nodes(space, keep)
        removed = int(keep.sum() - cleaned.sum())
        assert removed > int(keep.sum() - remove_idle_nodes(space, keep, exact_only=True).sum())
        others = keep.nonzero().flatten()
        at_random = keep.clone()
        at_random[others[torch.randperm(len(others), generator=generator)[:removed]]] = False
        with torch.no_grad(), model.hooks(space.hooks(keep)):
            before = model(TOKENS)
        change = []
        for circuit in (cleaned, at_random):
            with torch.no_grad(), model.hooks(space.hooks(circuit)):
                change.append(float((model(TOKENS) - before).abs().mean()))
        assert change[0] < 0.5 * change[1]


def test_clean_up_follows_each_rule():
    model, space = sparse_space()
    fc = model.blocks[0].mlp.fc.weight
    proj = model.blocks[0].mlp.proj.weight
    neuron = int((fc != 0).sum(1).argmax())  # a neuron with inputs
    source = int((fc[neuron] != 0).nonzero()[0])
    target = int((proj[:, neuron] != 0).nonzero()[0])
    chain = [(0, "mlp_in", source), (0, "mlp_neuron", neuron), (0, "mlp_out", target)]
    reader = (1, "attn_in", target)
    # A read -> neuron -> write chain whose write nothing later reads: all of it goes.
    assert remove_idle_nodes(space, space.keep_of(chain)).sum() == 0
    # Read by the final norm: it stays, and an unused read beside it goes.
    final = (2, "final_norm", target)
    kept = remove_idle_nodes(space, space.keep_of([*chain, final, reader]))
    assert kept.equal(space.keep_of([*chain, final]))
    # An MLP output channel whose neuron is gone equals its mean: it goes, and so does what
    # only fed it.
    assert remove_idle_nodes(space, space.keep_of([chain[2], final])).equal(space.keep_of([final]))
