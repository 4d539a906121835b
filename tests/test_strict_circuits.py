"""The circuit alone, strictly: embedding nodes, the top-k after the ablation, frozen norm
scales (docs/circuits.md). Each behaviour is fixed by hand-set weights and means, not by what a
trained model happens to do."""

from __future__ import annotations

import json

import pytest
import torch

from sparsecircuits.circuits.circuit_file import read_circuit, strict_options_of
from sparsecircuits.circuits.cleanup import remove_idle_nodes
from sparsecircuits.circuits.config import PruneConfig, parse_strict
from sparsecircuits.circuits.draw import circuit_svg
from sparsecircuits.circuits.masks import NodeMasks, blend_hook
from sparsecircuits.circuits.nodes import compute_mean_activations, node_groups, norm_scale_groups
from sparsecircuits.circuits.space import CircuitSpace
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT, GPTConfig

TOKENS = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(3))


def random_model(**options) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_ctx=16, vocab_size=50, **options))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def means_of(model: GPT, embedding_nodes: bool = False, scales: bool = False) -> dict:
    groups = node_groups(model.config, embedding_nodes)
    groups += norm_scale_groups(model.config) if scales else []
    return compute_mean_activations(model, [TOKENS], groups)


# --- every option off: today's ablation, bit for bit ----------------------------------------


@pytest.mark.parametrize("options", [{}, {"afrac": 0.5}, {"attention_sink": True}])
def test_with_every_option_off_the_hooks_are_the_paper_ablation_exactly(options):
    model = random_model(**options)
    means = means_of(model)
    space = CircuitSpace(model, means)
    keep = torch.rand(space.size, generator=torch.Generator().manual_seed(1)) < 0.5
    # The ablation as it was written before the options: each group blended at its own hook.
    paper = [
        (group.hook, blend_hook(group, keep[space.span(group)].float(), means[group.hook]))
        for group in node_groups(model.config)
    ]
    with torch.no_grad():
        with model.hooks(paper):
            expected = model(TOKENS)
        with model.hooks(space.hooks(keep)):
            assert torch.equal(model(TOKENS), expected)
    assert [name for name, _ in space.hooks(keep)] == [name for name, _ in paper]
    # Mask training too: the masks at each group's own hook, as NodeMasks placed them.
    masks = NodeMasks(space.groups, space.replacements)
    with torch.no_grad():
        with model.hooks(masks.hooks()):
            expected = model(TOKENS)
        with model.hooks(space.blend_hooks(masks.switches())):
            assert torch.equal(model(TOKENS), expected)


def test_without_abstopk_the_topk_option_changes_nothing():
    model = random_model()
    means = means_of(model)
    keep = torch.rand(sum(g.width for g in node_groups(model.config))) < 0.5
    outputs = []
    for strict in (False, True):
        space = CircuitSpace(model, means, topk_after_ablation=strict)
        with torch.no_grad(), model.hooks(space.hooks(keep)):
            outputs.append(model(TOKENS))
    assert torch.equal(outputs[0], outputs[1])


def test_parse_strict_names_every_switch_and_refuses_others_in_one_line():
    assert (
        parse_strict("all")
        == PruneConfig(
            embedding_nodes=True, topk_after_ablation=True, frozen_norm_scale=True
        ).strict_options()
    )
    assert parse_strict("norm, embedding") == {
        "embedding_nodes": True,
        "topk_after_ablation": False,
        "frozen_norm_scale": True,
    }
    for text in ("bogus", "topk,bogus", ""):
        with pytest.raises(UserError) as error:
            parse_strict(text)
        assert "\n" not in str(error.value) and "embedding, topk, norm or all" in str(error.value)


# --- the top-k after the ablation -------------------------------------------------------------


def topk_model(site: str) -> GPT:
    """One layer, d_model 4, one head of 4, AbsTopK keeping 1 channel at `site`; the token 0
    embedding is [3, 1, 0.2, 0.1] and q_proj the identity, so at either site channel 0 is the
    largest and channel 1 the next."""
    config = GPTConfig(
        vocab_size=2, n_layer=1, d_model=4, d_head=4, n_ctx=4, afrac=0.25, afrac_sites=[site]
    )
    model = GPT(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.zero_()
        model.wte.weight[0] = torch.tensor([3.0, 1.0, 0.2, 0.1])
        model.blocks[0].attn.q_proj.weight.copy_(torch.eye(4))
    return model.eval()


@pytest.mark.parametrize(("site", "hook"), [("attn_in", "hook_attn_in"), ("q", "attn.hook_q")])
def test_the_topk_after_the_ablation_lets_a_kept_channel_survive_an_ablated_larger_one(site, hook):
    model = topk_model(site)
    space = CircuitSpace(model)
    # Every node kept but channel 0 of the site, whose mean (0.5) is below channel 1's value.
    means = {group.hook: torch.zeros(group.width) for group in space.groups}
    means[space.group(0, site).hook][0] = 0.5
    keep = ~space.empty()
    keep[space.position(0, site, 0)] = False
    tokens = torch.zeros(1, 4, dtype=torch.long)
    read = {}
    for strict in (False, True):
        space = CircuitSpace(model, means, topk_after_ablation=strict)
        with torch.no_grad(), model.hooks(space.hooks(keep)), model.cache(f"blocks.0.{hook}") as c:
            model(tokens)
        read[strict] = c[f"blocks.0.{hook}"].flatten(2)[0, 0]
    # By default the whole stream chose: channel 0 won the top-k, then became its mean, and
    # the kept channel 1 was already zeroed.
    assert read[False].tolist() == [0.5, 0.0, 0.0, 0.0]
    # Ablated first, the top-k chose among the mean and the circuit's own values: channel 1.
    value = 1.0 / torch.tensor([9.0, 1.0, 0.04, 0.01]).mean().add(1e-6).sqrt()
    assert read[True][0] == 0 and read[True][2:].abs().sum() == 0
    torch.testing.assert_close(read[True][1], value)


def test_mask_training_blends_where_the_zero_one_path_does():
    model = random_model(afrac=0.5)
    means = means_of(model)
    space = CircuitSpace(model, means, topk_after_ablation=True)
    masks = NodeMasks(space.groups, space.replacements)
    trained = [name for name, _ in space.blend_hooks(masks.switches())]
    assert trained == [name for name, _ in space.hooks(~space.empty())]
    assert "blocks.0.attn.sparsify_q.hook_in" in trained and "blocks.0.attn.hook_q" not in trained
    assert "hook_final_norm" in trained  # no top-k there: its own hook
    # The soft masks reach the pre-top-k points with their surrogate gradient.
    with model.hooks(space.blend_hooks(masks.switches())):
        model(TOKENS).square().mean().backward()
    assert all(tau.grad is not None for tau in masks.tau)
    assert masks.tau[space.groups.index(space.group(0, "q"))].grad.abs().sum() > 0


# --- the norm scale -------------------------------------------------------------------------


def test_the_norm_scale_hook_is_the_fused_norm_computed_by_hand():
    model = random_model()
    plain = model(TOKENS)
    with model.cache("*.hook_scale") as cache:
        read = model(TOKENS)
    torch.testing.assert_close(read, plain, rtol=1e-5, atol=1e-5)
    assert len(cache) == 2 * 2 + 1 and cache["norm_final.hook_scale"].shape == (4, 16, 1)
    embedded = model.wte(TOKENS)
    rms = embedded.square().mean(-1, keepdim=True).add(model.config.norm_eps).sqrt()
    torch.testing.assert_close(cache["blocks.0.norm_attn.hook_scale"], rms)
    assert "norm_attn.hook_scale" not in " ".join(random_model(norm="layer").hook_names)


def test_a_frozen_norm_scale_closes_the_path_from_a_channel_outside_the_circuit():
    model = random_model()
    # Two inputs that differ only in residual channel 3, which no kept node reads.
    with torch.no_grad():
        model.wte.weight[1] = model.wte.weight[0]
        model.wte.weight[1, 3] += 5.0
    pair = torch.stack([torch.zeros(16, dtype=torch.long), torch.ones(16, dtype=torch.long)])
    means = means_of(model, scales=True)
    outputs = {}
    for frozen in (False, True):
        space = CircuitSpace(model, means, frozen_norm_scale=frozen)
        keep = ~space.empty()
        for layer, kind in [(0, "attn_in"), (0, "mlp_in"), (1, "attn_in"), (1, "mlp_in")]:
            keep[space.position(layer, kind, 3)] = False
        keep[space.position(2, "final_norm", 3)] = False
        with torch.no_grad(), model.hooks(space.hooks(keep)):
            outputs[frozen] = model(pair)
    # By default channel 3 still reaches the circuit through every norm's 1/rms ...
    assert (outputs[False][0] - outputs[False][1]).abs().max() > 1e-2
    # ... a constant divisor closes that path exactly.
    assert torch.equal(outputs[True][0], outputs[True][1])


def test_a_frozen_norm_scale_is_refused_in_one_line_for_layer_norm():
    with pytest.raises(UserError, match="needs RMSNorm; this model uses LayerNorm") as error:
        CircuitSpace(random_model(norm="layer"), frozen_norm_scale=True)
    assert "\n" not in str(error.value)


# --- embedding nodes --------------------------------------------------------------------------


def test_embedding_nodes_come_first_and_ablating_them_all_removes_the_tokens():
    model = random_model()
    space = CircuitSpace(model, means_of(model, embedding_nodes=True), embedding_nodes=True)
    assert space.groups[0].kind == "embed" and space.groups[0].hook == "hook_embed"
    assert space.size == CircuitSpace(model).size + 32
    assert space.node_ids[0] == "0.embed.0" and space.count_edges(~space.empty()) > 0
    keep = ~space.empty()
    keep[space.span(space.groups[0])] = False
    with torch.no_grad():
        plain = model(TOKENS)
    with torch.no_grad(), model.hooks(space.hooks(keep)):
        ablated = model(TOKENS)
    # Every embedding channel at its mean: no prompt differs from another any more.
    torch.testing.assert_close(ablated[0], ablated[1])
    with torch.no_grad(), model.hooks(space.hooks(~space.empty())):
        torch.testing.assert_close(model(TOKENS), plain)  # every node kept: the model itself


def test_clean_up_drops_the_embedding_channels_no_kept_read_takes():
    model = random_model()
    space = CircuitSpace(model, embedding_nodes=True)
    read, unread = (0, "embed", 5), (0, "embed", 6)
    kept = remove_idle_nodes(space, space.keep_of([read, unread, (2, "final_norm", 5)]))
    assert kept.equal(space.keep_of([read, (2, "final_norm", 5)]))
    assert remove_idle_nodes(space, space.keep_of([read])).sum() == 0


def circuit_record(**prune_config) -> dict:
    nodes = [
        {"id": "0.embed.5", "layer": 0, "kind": "embed", "index": 5},
        {"id": "2.final_norm.5", "layer": 2, "kind": "final_norm", "index": 5},
    ]
    return {
        "format": "sparsecircuits.circuit/1",
        "task": "single_double_quote",
        "target_loss": 0.15,
        "ablation": "mean",
        "model": {
            "path": "no/such/model",
            "sha256": "0" * 16,
            "n_layer": 2,
            "d_model": 32,
            "d_mlp": 128,
            "d_head": 16,
        },
        "nodes": [{**node, "mean": 0.5, "score": 1.0} for node in nodes],
        "edges": [],
        "calibration": {"scale": 1.0, "shift": {}},
        "prune_config": prune_config,
    }


def test_circuit_files_hold_embedding_nodes_only_when_pruned_with_them(tmp_path):
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(circuit_record(embedding_nodes=True, frozen_norm_scale=True)))
    record = read_circuit(path)
    assert strict_options_of(record) == {
        "embedding_nodes": True,
        "topk_after_ablation": False,
        "frozen_norm_scale": True,
    }
    svg = str(circuit_svg(record))
    assert "embedding" in svg and "0.embed.5 (embed)" in svg
    path.write_text(json.dumps(circuit_record()))  # old files: no switch recorded
    with pytest.raises(UserError, match=r"nodes\[0\].kind: an embedding node needs"):
        read_circuit(path)
    path.write_text(json.dumps(circuit_record(embedding_nodes="yes")))
    with pytest.raises(UserError, match="prune_config.embedding_nodes: expected true or false"):
        read_circuit(path)
    old = circuit_record()
    old["nodes"] = old["nodes"][1:]
    del old["prune_config"]
    path.write_text(json.dumps(old))
    assert strict_options_of(read_circuit(path)) == PruneConfig().strict_options()
    assert "embedding" not in str(circuit_svg(read_circuit(path)))


def test_eap_and_the_viewer_take_embedding_nodes(quote_run, tmp_path):
    from cli_runner import run_in_process as run_cli
    from sparsecircuits.viewer.circuit_data import circuit_details
    from sparsecircuits.viewer.links import Links
    from sparsecircuits.viewer.pages import circuit_page
    from sparsecircuits.viewer.site import Site

    circuit = tmp_path / "eap.json"
    arguments = ["prune", str(quote_run), "--task", "single_double_quote", "--target-loss", "0.3"]
    options = ["--method", "eap", "--strict", "embedding", "--no-trim", "--out", str(circuit)]
    result = run_cli(*arguments, *options)
    assert result.returncode == 0, result.stderr
    record = json.loads(circuit.read_text())
    embedded = [node["id"] for node in record["nodes"] if node["kind"] == "embed"]
    assert embedded  # EAP scores each embedding channel by its node attribution
    site = Site([quote_run], [circuit])
    node = circuit_details(site, site.circuit(0), 2000)["nodes"][embedded[0]]
    assert node["unit"] is None and node["kind"] == "embed"  # no unit page for an embedding
    assert isinstance(node["ablation_effect"], float) and len(node["activations"]) == 4
    assert embedded[0] in circuit_page(site, Links(), 0, 2000)
