"""Circuits over SAE latents: node groups whose nodes are latents, an error node that keeps or
replaces a whole vector, and the links through an SAE's weights. Fixtures are hand-set."""

import torch

from sparsecircuits.circuits.masks import blend_hook
from sparsecircuits.circuits.nodes import NodeGroup, mean_activations


def test_a_one_node_group_of_a_wider_hook_keeps_or_replaces_the_whole_vector():
    group = NodeGroup(0, "mlp_sae_error", "blocks.0.mlp.hook_post.hook_sae_error", 1, channels=4)
    x = torch.arange(24.0).view(2, 3, 4)
    mean = mean_activations([{group.hook: x}], [group])[group.hook]
    assert torch.equal(mean, x.flatten(0, 1).mean(dim=0))  # one mean per channel
    kept = blend_hook(group, torch.ones(1), mean)(x, None)
    replaced = blend_hook(group, torch.zeros(1), mean)(x, None)
    assert torch.equal(kept, x) and torch.equal(replaced, mean.expand_as(x))


def transcoder_space():
    """A 2-layer model with a transcoder replacing layer 1's MLP: latent j reads MLP input
    channel j and writes MLP output channel j (4 latents), so its edges are known."""
    from sparsecircuits.circuits.space import CircuitSpace
    from sparsecircuits.model import GPT, GPTConfig
    from sparsecircuits.sae import SAEConfig, build_sae
    from sparsecircuits.sae.splice import splice_sae

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, n_layer=2, d_model=16, n_head=2, n_ctx=8)
    model = GPT(config).eval()
    hooks = {"hook": "blocks.1.hook_mlp_in", "out_hook": "blocks.1.hook_mlp_out"}
    sae = build_sae(SAEConfig("relu", 16, 4, l1_coef=0.0, d_out=16, **hooks))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        for j in range(4):
            sae.W_enc[j, j], sae.W_dec[j, j] = 1.0, 2.0
    splice_sae(model, sae)
    space = CircuitSpace(model)  # a space to count in
    groups = {(g.layer, g.kind): g for g in space.groups}
    replacements = {g.hook: torch.zeros(g.hook_width) for g in space.groups}
    replacements[groups[(1, "mlp_out_sae")].hook] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    replacements[groups[(1, "mlp_out_sae_error")].hook] = torch.linspace(-1, 1, 16)
    return model, sae, CircuitSpace(model, replacements)


def test_a_transcoders_latents_and_error_replace_the_neurons_of_its_layer():
    model, sae, space = transcoder_space()
    kinds = [(g.layer, g.kind, g.width) for g in space.groups if g.layer == 1]
    assert (1, "mlp_out_sae", 4) in kinds and (1, "mlp_out_sae_error", 1) in kinds
    assert (1, "mlp_neuron", model.config.d_mlp) not in kinds
    assert (0, "mlp_neuron", model.config.d_mlp) in [
        (g.layer, g.kind, g.width) for g in space.groups
    ]
    nodes = [(1, "mlp_in", 0), (1, "mlp_in", 1)]
    nodes += [(1, "mlp_out_sae", j) for j in range(3)] + [(1, "mlp_out", j) for j in range(3)]
    keep = space.keep_of(nodes)
    assert space.count_edges(keep) == 2 + 3  # W_enc: inputs 0,1 -> latents 0,1; W_dec: 3
    with_error = space.keep_of(nodes + [(1, "mlp_out_sae_error", 0)])
    assert space.count_edges(with_error) == 5 + 2 + 3  # the error reaches every kept channel
    assert {e.source for e in space.edges(keep)} >= {"1.mlp_in.0", "1.mlp_out_sae.0"}


def test_a_circuit_without_latents_and_error_runs_the_layer_on_their_means():
    model, sae, space = transcoder_space()
    keep = space.empty()
    keep[space.span(space.group(1, "mlp_out"))] = True  # only the output channels
    tokens = torch.tensor([[1, 7, 3, 9], [5, 5, 0, 8]])
    with model.hooks(space.hooks(keep)), model.cache("blocks.1.hook_mlp_out") as cache:
        model(tokens)
    with torch.no_grad():
        expected = sae.decode(torch.tensor([1.0, 2.0, 3.0, 4.0])) + torch.linspace(-1, 1, 16)
    assert torch.allclose(cache["blocks.1.hook_mlp_out"], expected.expand(2, 4, 16), atol=1e-5)


def test_prune_sae_finds_a_circuit_over_a_transcoders_latents(quote_run, tmp_path):
    """The mechanics end to end: the circuit file's layer-1 nodes are latents and the error
    node, never neurons, and it reads back (what the circuit holds is the model's business)."""
    import json

    from cli_runner import run_in_process
    from sparsecircuits.circuits.circuit_file import read_circuit
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae import SAEConfig, build_sae, save_sae

    run = load_run(quote_run)
    hooks = {"hook": "blocks.1.hook_mlp_in", "out_hook": "blocks.1.hook_mlp_out"}
    torch.manual_seed(0)
    width = run.model_config.d_model
    sae = build_sae(
        SAEConfig("topk", width, 64, k=8, d_out=width, model_sha256=run.weights_sha256, **hooks)
    )
    save_sae(sae, tmp_path / "transcoder")
    circuit_file = tmp_path / "circuit.json"
    arguments = ["prune", str(quote_run), "--task", "single_double_quote", "--target-loss", "0.3"]
    arguments += ["--sae", str(tmp_path / "transcoder"), "--steps", "60", "--sweep", "1"]
    result = run_in_process(*arguments, "--out", str(circuit_file), "--json")
    assert result.returncode == 0, result.stderr
    record = read_circuit(circuit_file)
    assert record["sae"]["kind"] == "mlp_out_sae" and record["sae"]["layer"] == 1
    kinds = {(node["layer"], node["kind"]) for node in record["nodes"]}
    assert (1, "mlp_neuron") not in kinds
    assert json.loads(result.stdout)["edges"] == len(record["edges"])
    refused = run_in_process(*arguments, "--method", "eap")
    assert refused.returncode != 0 and "--sae goes with --method prune" in refused.stderr
