import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT, GPTConfig, HookEditError, abs_topk


def make_model(**options) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, d_model=64, n_ctx=16, vocab_size=97, **options)
    model = GPT(config)
    # Random non-zero biases and gains so every path matters in the comparisons.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


TOKENS = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(1))
OPTIONS = [
    {},
    {"attention_sink": True},
    {"afrac": 0.25, "learned_positions": True, "bigram_table": True, "attention_sink": True},
    # The options imported models use: GPT-2's and OpenAI's circuit-sparsity models'.
    {"norm": "layer", "activation": "gelu_tanh", "tied_embeddings": True, "n_head": 3},
    {"afrac": 0.5, "afrac_sites": ["q", "resid_mid", "resid_post"], "activation": "relu"},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_caching_every_hook_leaves_the_forward_pass_unchanged(options):
    # In float64: caching switches to the explicit attention path, whose float32 rounding
    # differs from the fused kernel's by ~1e-7, enough to flip an AbsTopK choice between two
    # near-equal values on some CPUs (seen: 0.18 apart in one logit). In float64 the paths
    # agree to ~1e-15, far below any gap between the values a top-k compares.
    model = make_model(**options).double()
    plain = model(TOKENS)
    with model.cache("*") as cache:
        cached = model(TOKENS)
    torch.testing.assert_close(cached, plain, rtol=1e-10, atol=1e-10)
    assert set(cache) == set(model.hook_names)
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (3, model.config.n_head, 16, 16)
    assert torch.all(pattern.triu(1) == 0)
    row_sums = pattern.sum(-1)
    if options.get("attention_sink"):
        assert torch.all(row_sums < 1)
    else:
        torch.testing.assert_close(row_sums, torch.ones_like(row_sums))


def test_cache_records_only_what_was_asked():
    model = make_model()
    logits, cache = model.run_with_cache(TOKENS, names="blocks.*.hook_resid_post")
    assert sorted(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert cache.stacked("blocks.*.hook_resid_post").shape == (2, 3, 16, 64)
    assert logits.shape == (3, 16, 97)
    assert not any(point.active for point in model._hook_points.values())


def test_stopping_at_a_layer_returns_its_residual_and_runs_no_later_block():
    model = make_model()
    _, cache = model.run_with_cache(TOKENS, ["blocks.0.hook_resid_post", "blocks.1.*"])
    with model.cache("blocks.1.*") as later:
        residual = model(TOKENS, stop_at_layer=1)
    torch.testing.assert_close(residual, cache["blocks.0.hook_resid_post"])
    assert len(later) == 0


def test_final_residual_gives_the_logits():
    model = make_model()
    logits, cache = model.run_with_cache(TOKENS, ["blocks.1.hook_resid_post", "hook_final_norm"])
    normed = model.norm_final(cache["blocks.1.hook_resid_post"])
    torch.testing.assert_close(normed, cache["hook_final_norm"])
    torch.testing.assert_close(model.lm_head(normed), logits)


def test_editing_a_neuron_changes_the_output_and_only_inside_the_block():
    model = make_model()
    plain = model(TOKENS)

    def silence_neuron_7(x, hook):
        x = x.clone()
        x[..., 7] = 0
        return x

    edit = model.edit({"blocks.0.mlp.hook_post": silence_neuron_7})
    with edit, model.cache("blocks.0.mlp.hook_post") as cache:
        edited = model(TOKENS)
    assert torch.all(cache["blocks.0.mlp.hook_post"][..., 7] == 0)
    assert not torch.allclose(edited, plain)
    torch.testing.assert_close(model(TOKENS), plain)


def test_replacing_attention_output_matches_a_manual_recomputation():
    model = make_model()
    _, cache = model.run_with_cache(TOKENS, ["blocks.1.hook_resid_mid", "blocks.1.hook_attn_out"])
    zero = torch.zeros_like(cache["blocks.1.hook_attn_out"])
    with model.edit({"blocks.1.hook_attn_out": lambda x, hook: zero}):
        _, edited = model.run_with_cache(TOKENS, "blocks.1.hook_resid_mid")
    expected = cache["blocks.1.hook_resid_mid"] - cache["blocks.1.hook_attn_out"]
    torch.testing.assert_close(edited["blocks.1.hook_resid_mid"], expected)


def test_hooks_are_removed_even_when_the_block_raises():
    model = make_model()
    with pytest.raises(RuntimeError), model.hooks([("blocks.*.hook_mlp_out", lambda x, h: None)]):
        raise RuntimeError("boom")
    assert not any(point.active for point in model._hook_points.values())


def test_unknown_hook_name_is_a_clear_error_with_close_matches():
    model = make_model()
    with pytest.raises(KeyError, match="no hook point matches"), model.cache("blocks.9.nothing"):
        pass
    with pytest.raises(UserError, match="did you mean blocks.1.hook_resid_post"):
        model.run_with_cache(TOKENS, "blocks.1.hook_resid_pots")
    with pytest.raises(UserError, match="did you mean blocks.0.mlp.hook_post, blocks.0.mlp"):
        model.run_with_cache(TOKENS, "blocks.0.mlp.hook_neurons")


def test_an_edit_of_the_wrong_shape_or_dtype_names_the_hook_and_shapes():
    model = make_model()
    wrong = {
        "blocks.0.hook_resid_mid": lambda x, hook: x[:, :-1],
        "blocks.1.mlp.hook_post": lambda x, hook: x.double(),
    }
    for name, fn in wrong.items():
        with pytest.raises(HookEditError, match=rf"at {name} returned \("), model.edit({name: fn}):
            model(TOKENS)


def test_run_with_cache_keeps_only_what_was_named_where_and_how_asked():
    model = make_model()
    residual, cache = model.run_with_cache(
        TOKENS, "blocks.0.hook_resid_post", stop_at_layer=1, dtype=torch.bfloat16
    )
    assert set(cache) == {"blocks.0.hook_resid_post"}
    assert cache["blocks.0.hook_resid_post"].dtype == torch.bfloat16
    stored = cache["blocks.0.hook_resid_post"].float()
    torch.testing.assert_close(stored, residual, atol=0.05, rtol=0.02)
    with pytest.raises(UserError, match="not computed with stop_at_layer=1"):
        model.run_with_cache(TOKENS, "blocks.1.hook_resid_post", stop_at_layer=1)


def test_per_head_results_sum_to_the_attention_output():
    model = make_model(afrac=None)
    names = ["blocks.0.attn.hook_result", "blocks.0.hook_attn_out"]
    _, cache = model.run_with_cache(TOKENS, names)
    summed = cache["blocks.0.attn.hook_result"].sum(2) + model.blocks[0].attn.out_proj.bias
    torch.testing.assert_close(summed, cache["blocks.0.hook_attn_out"], rtol=1e-5, atol=1e-6)


def test_abs_topk_keeps_the_k_largest_magnitudes():
    x = torch.tensor([[0.1, -3.0, 2.0, -0.5, 1.0]])
    out = abs_topk(x, 2)
    assert out.tolist() == [[0.0, -3.0, 2.0, 0.0, 0.0]]
    wide = torch.randn(4, 7, 128)
    assert torch.all((abs_topk(wide, 32) != 0).sum(-1) == 32)


def test_activation_sparsity_is_applied_at_every_site():
    model = make_model(afrac=0.25)
    names = [
        "blocks.0.hook_attn_in",
        "blocks.0.attn.hook_q",
        "blocks.0.mlp.hook_post",
        "blocks.0.hook_mlp_out",
    ]
    _, cache = model.run_with_cache(TOKENS, names)
    assert torch.all((cache["blocks.0.hook_attn_in"] != 0).sum(-1) <= 16)
    assert torch.all((cache["blocks.0.attn.hook_q"].flatten(2) != 0).sum(-1) <= 16)
    assert torch.all((cache["blocks.0.mlp.hook_post"] != 0).sum(-1) <= 64)
    assert torch.all((cache["blocks.0.hook_mlp_out"] != 0).sum(-1) <= 16)


def test_sequences_longer_than_the_context_are_refused():
    model = make_model()
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_greedy_generation_extends_the_prompt():
    model = make_model()
    out = model.generate(TOKENS[:1, :4], max_new_tokens=5)
    assert out.shape == (1, 9)
    assert torch.equal(out[:, :4], TOKENS[:1, :4])


def test_sampling_with_top_k_one_is_greedy_and_a_seed_repeats_it():
    model = make_model()
    prompt = TOKENS[:2, :4]
    greedy = model.generate(prompt, max_new_tokens=6)
    assert torch.equal(model.generate(prompt, 6, temperature=1.5, top_k=1), greedy)

    def sample(seed: int) -> torch.Tensor:
        return model.generate(prompt, 6, 1.0, 5, torch.Generator().manual_seed(seed))

    assert torch.equal(sample(3), sample(3))
    samples = torch.stack([sample(seed) for seed in range(8)])
    assert not all(torch.equal(samples[0], other) for other in samples[1:])


def test_sampled_tokens_are_always_among_the_top_k():
    model = make_model().double()  # so the re-run below ranks the logits exactly as sampling did
    out = model.generate(TOKENS[:3, :4], 8, temperature=5.0, top_k=3)
    with torch.no_grad():
        logits = model(out[:, :-1])
    for position in range(4, out.shape[1]):
        allowed = logits[:, position - 1].topk(3, dim=-1).indices
        assert (allowed == out[:, position : position + 1]).any(dim=-1).all()


def test_the_hook_table_in_the_docs_lists_exactly_the_model_hooks():
    import re
    from pathlib import Path

    from sparsecircuits.model.config import ACTIVATION_SPARSITY_SITES, RESIDUAL_SPARSITY_SITES

    table = (Path(__file__).parents[1] / "docs" / "hooks.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.L]+)` \|", table, flags=re.MULTILINE))

    def names(model: GPT) -> set[str]:
        return {re.sub(r"blocks\.\d+\.", "blocks.L.", name) for name in model.hook_names}

    # AbsTopK at every site, the residual ones of imported models too: every row is a hook.
    sites = [*ACTIVATION_SPARSITY_SITES, *RESIDUAL_SPARSITY_SITES]
    assert documented == names(make_model(learned_positions=True, afrac=0.25, afrac_sites=sites))
    # A dense model has no pre-top-k points; a LayerNorm model no norm scales.
    dense = names(make_model(learned_positions=True))
    assert dense == {name for name in documented if not name.endswith(".hook_in")}
    layer_norm = names(make_model(learned_positions=True, norm="layer"))
    assert layer_norm == {name for name in dense if not name.endswith(".hook_scale")}


@pytest.mark.parametrize("options", OPTIONS)
def test_logits_at_selected_positions_match_the_full_logits(options):
    model = make_model(**options)
    positions = torch.tensor([3, 15, 0])
    selected = model(TOKENS, logits_at=positions)
    full = model(TOKENS)
    torch.testing.assert_close(selected, full[torch.arange(3), positions])
