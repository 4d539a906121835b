"""An SAE spliced into its model: latents as a hook point, exact when unedited, edits that move
the output along decoder directions, gradients that reach the latents. Fixtures are untrained
models with seeded weights in float64, and hand-set SAEs: every outcome is an identity."""

from pathlib import Path

import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.sae import SAEConfig, build_sae
from sparsecircuits.sae.splice import splice_sae
from sparsecircuits.sae.steering import clamp_latent

HOOK = "blocks.0.hook_resid_post"


def tiny_model(**fields) -> GPT:
    torch.manual_seed(0)
    values = {"vocab_size": 50, "n_layer": 2, "d_model": 16, "n_head": 2, "n_ctx": 8}
    model = GPT(GPTConfig(**(values | fields))).double().eval()
    with torch.no_grad():  # visible residual writes (initialisation keeps them small)
        for parameter in model.parameters():
            parameter.mul_(4.0)
    return model


def random_sae(d_in: int = 16, d_sae: int = 24, **fields):
    torch.manual_seed(1)
    values = {"arch": "topk", "d_in": d_in, "d_sae": d_sae, "k": 5, "hook": HOOK}
    return build_sae(SAEConfig(**(values | fields))).double().eval()


TOKENS = torch.tensor([[1, 7, 3, 9, 2, 4], [5, 5, 0, 8, 1, 6]])


def test_a_spliced_sae_changes_nothing_until_edited_and_goes_away_cleanly():
    model, sae = tiny_model(), random_sae()
    names = list(model.hook_names)
    clean = model(TOKENS)
    cached_clean = model.run_with_cache(TOKENS, "*")[0]  # caching takes the explicit paths
    with splice_sae(model, sae) as splice:
        assert splice.latents.name == f"{HOOK}.hook_sae_latents" in model.hook_names
        assert torch.equal(model(TOKENS), clean)
        logits, cache = model.run_with_cache(TOKENS, "*")
        assert torch.equal(logits, cached_clean)  # bit for bit, the latents read
        assert torch.equal(cache[f"{HOOK}.hook_sae_latents"], sae.encode(cache[HOOK]))
        error = cache[HOOK] - sae.decode(cache[f"{HOOK}.hook_sae_latents"])
        assert torch.equal(cache[f"{HOOK}.hook_sae_error"], error)
    assert model.hook_names == names
    assert torch.equal(model(TOKENS), clean)


def test_clamping_a_latent_hook_is_the_steering_edit():
    model, sae = tiny_model(), random_sae()
    latent, value = 3, 2.5

    def clamp(f: torch.Tensor, hook: object) -> torch.Tensor:
        f = f.clone()
        f[..., latent] = value
        return f

    with splice_sae(model, sae), model.edit({f"{HOOK}.hook_sae_latents": clamp}):
        through_splice = model(TOKENS)
    with model.edit({HOOK: clamp_latent(sae, latent, value)}):
        steered = model(TOKENS)
    assert torch.allclose(through_splice, steered, atol=1e-10)
    assert not torch.allclose(steered, model(TOKENS), atol=1e-3)  # the edit did something


def test_zeroing_the_error_leaves_the_model_on_the_reconstruction():
    model, sae = tiny_model(), random_sae()

    def zero(e: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.zeros_like(e)

    with splice_sae(model, sae), model.edit({f"{HOOK}.hook_sae_error": zero}):
        on_latents = model(TOKENS)
    with model.edit({HOOK: lambda x, hook: sae(x)[0]}):
        reconstructed = model(TOKENS)
    assert torch.allclose(on_latents, reconstructed, atol=1e-10)


def gradients(model: GPT, names: list[str]) -> dict[str, torch.Tensor]:
    """The gradient of one logit at each named hook point's tensor."""
    kept = {}

    def keep(x: torch.Tensor, hook) -> None:
        x.retain_grad()
        kept[hook.name] = x

    with model.hooks([(name, keep) for name in names]):
        model(TOKENS)[:, -1, 0].sum().backward()
    return {name: tensor.grad for name, tensor in kept.items()}


def test_gradients_reach_the_latents_and_pass_the_splice_as_through_the_identity():
    model, sae = tiny_model(), random_sae()
    upstream, downstream = "blocks.0.hook_attn_out", "blocks.1.hook_resid_pre"
    bare = gradients(model, [upstream, downstream])
    with splice_sae(model, sae):
        latent = f"{HOOK}.hook_sae_latents"
        spliced = gradients(model, [upstream, downstream, latent, f"{HOOK}.hook_sae_error"])
    direction = sae.W_dec * sae.config.output_scale
    expected = spliced[downstream] @ direction.T  # d/df' of decode(f') + e'
    assert torch.allclose(spliced[latent], expected, atol=1e-10)
    assert spliced[latent].abs().max() > 1e-3
    assert torch.allclose(spliced[f"{HOOK}.hook_sae_error"], spliced[downstream], atol=1e-12)
    for name in (upstream, downstream):
        assert torch.allclose(spliced[name], bare[name], atol=1e-10), name


def test_a_transcoder_splices_into_the_hook_it_writes():
    model = tiny_model()
    transcoder = random_sae(
        d_in=16, d_out=16, hook="blocks.1.hook_mlp_in", out_hook="blocks.1.hook_mlp_out"
    )
    clean = model.run_with_cache(TOKENS, "blocks.1.*")[0]
    with splice_sae(model, transcoder) as splice:
        assert splice.latents.name == "blocks.1.hook_mlp_out.hook_sae_latents"
        logits, cache = model.run_with_cache(TOKENS, "blocks.1.*")
        assert torch.equal(logits, clean)
        expected = transcoder.encode(cache["blocks.1.hook_mlp_in"])
        assert torch.equal(cache["blocks.1.hook_mlp_out.hook_sae_latents"], expected)
        with model.edit({"blocks.1.hook_mlp_out.hook_sae_error": lambda e, h: e * 0}):
            on_latents = model(TOKENS)

    def replace_output(y, hook):
        return transcoder(replace_output.x)[0]

    def read_input(x, hook):
        replace_output.x = x

    pairs = [("blocks.1.hook_mlp_in", read_input), ("blocks.1.hook_mlp_out", replace_output)]
    with model.hooks(pairs):
        replaced = model(TOKENS)
    assert torch.allclose(on_latents, replaced, atol=1e-10)


def test_splicing_twice_on_one_hook_or_on_an_unknown_hook_is_one_line():
    model, sae = tiny_model(), random_sae()
    with splice_sae(model, sae), pytest.raises(UserError, match="already has a hook point"):
        splice_sae(model, random_sae())
    with pytest.raises(UserError, match="did you mean"):
        splice_sae(model, random_sae(hook="blocks.0.hook_resid_pots"))
    assert not [name for name in model.hook_names if "sae" in name]


def test_a_spliced_run_has_its_own_identity(tiny_run: Path, tmp_path: Path):
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae import save_sae
    from sparsecircuits.sae.splice import run_with_sae

    run = load_run(tiny_run)
    sae = build_sae(SAEConfig("topk", 32, 64, "blocks.1.hook_resid_post", k=4))
    sae.config.model_sha256 = run.weights_sha256
    save_sae(sae, tmp_path / "sae")
    spliced, splice = run_with_sae(run, tmp_path / "sae")
    assert spliced.model is run.model and spliced.weights_sha256 != run.weights_sha256
    assert "blocks.1.hook_resid_post.hook_sae_latents" in run.model.hook_names
    splice.remove()
    other = build_sae(SAEConfig("topk", 32, 64, "blocks.1.hook_resid_post", k=4))
    other.config.model_sha256 = "0" * 16
    save_sae(other, tmp_path / "other")
    with pytest.raises(UserError, match="trained on another model"):
        run_with_sae(run, tmp_path / "other")


# --- latents as units: explain --sae ---------------------------------------------------------


def channel_sae(run, hook: str, width: int, folder: Path) -> Path:
    """Latents (relu(x), relu(-x)): latent i < width is channel i where it is positive."""
    fields = {"arch": "topk", "d_in": width, "d_sae": 2 * width, "k": 2 * width, "hook": hook}
    sae = build_sae(SAEConfig(**fields, model_sha256=run.weights_sha256, model_path=str(run.path)))
    with torch.no_grad():
        identity = torch.eye(width)
        sae.W_enc.copy_(torch.cat([identity, -identity], dim=1))
        sae.W_dec.copy_(torch.cat([identity, -identity], dim=0))
    from sparsecircuits.sae import save_sae

    return save_sae(sae, folder)


def test_explain_sae_reads_latents_as_units_and_stores_them_apart(tiny_run: Path, tmp_path: Path):
    import json

    from cli_runner import run_in_process
    from sparsecircuits.loading import load_run

    run = load_run(tiny_run)
    folder = channel_sae(run, "blocks.1.hook_resid_post", 32, tmp_path / "sae")
    common = ["--units", "0-2", "--tokens", "2048", "--db", str(tmp_path / "e.sqlite")]
    common += ["--quiet", "--json", "--no-ablation"]
    latents = run_in_process("explain", str(tiny_run), "--sae", str(folder), *common)
    assert latents.returncode == 0, latents.stderr
    channels = run_in_process("explain", str(tiny_run), "--layer", "1", "--kind", "resid", *common)
    assert channels.returncode == 0, channels.stderr
    by_latent = [json.loads(line) for line in latents.stdout.splitlines()]
    by_channel = [json.loads(line) for line in channels.stdout.splitlines()]
    assert [row["unit"] for row in by_latent] == ["1.resid_sae.0", "1.resid_sae.1", "1.resid_sae.2"]
    assert {row["model_sha256"] for row in by_latent} != {run.weights_sha256}
    assert {row["model_sha256"] for row in by_channel} == {run.weights_sha256}
    for latent, channel in zip(by_latent, by_channel, strict=True):
        assert channel["max_activation"] > 0  # so relu keeps the channel's maximum
        assert latent["max_activation"] == pytest.approx(channel["max_activation"], rel=1e-6)
        assert 0 < latent["fraction_nonzero"] < 1


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--layer", "1"], "give one of --layer L, --circuit FILE or --sae DIR"),
        (["--units", "64"], "channels 0..63"),
        (["--backend", "weights"], "not SAE latents"),
    ],
)
def test_bad_explain_sae_flags_are_one_line(tiny_run: Path, tmp_path: Path, flags, fragment):
    from cli_runner import run_in_process
    from sparsecircuits.loading import load_run

    folder = channel_sae(load_run(tiny_run), "blocks.1.hook_resid_post", 32, tmp_path / "sae")
    db = ["--db", str(tmp_path / "e.sqlite")]
    result = run_in_process("explain", str(tiny_run), "--sae", str(folder), *flags, *db)
    assert result.returncode != 0 and fragment in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- latents in patch and probe --------------------------------------------------------------


def test_patch_and_probe_read_an_sae_s_latents(tiny_run: Path, tmp_path: Path):
    import json

    from cli_runner import run_in_process
    from sparsecircuits.loading import load_run

    folder = channel_sae(load_run(tiny_run), "blocks.1.hook_resid_post", 32, tmp_path / "sae")
    task = ["--task", "single_double_quote", "--n", "8"]
    for method in ([], ["--attribution"]):
        out = tmp_path / f"patch{len(method)}"
        flags = ["--sae", str(folder), "--site", "latents", *method, "--out", str(out)]
        result = run_in_process("patch", str(tiny_run), *task, *flags)
        assert result.returncode == 0, result.stderr
        (grid_file,) = out.glob("*.json")
        grid = json.loads(grid_file.read_text())
        assert grid["rows"] == ["layer 1"] and len(grid["columns"]) == 64
        assert "layer 1 '" in result.stdout
    probed = run_in_process(
        "probe", str(tiny_run), *task, "--sae", str(folder), "--out", str(tmp_path / "probe")
    )
    assert probed.returncode == 0, probed.stderr
    assert "SAE latents" in probed.stdout


def test_patching_latents_needs_an_sae(tiny_run: Path, tmp_path: Path):
    from cli_runner import run_in_process

    result = run_in_process(
        "patch", str(tiny_run), "--task", "single_double_quote", "--site", "latents",
        "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert result.returncode != 0 and "--site latents and --sae DIR go together" in result.stderr
    assert not (tmp_path / "p").exists()


# --- the viewer's SAE pages --------------------------------------------------------------------


def test_the_viewer_shows_an_sae_as_a_model_whose_units_are_its_latents(
    tiny_run: Path, tmp_path: Path
):
    import json
    import re

    from sparsecircuits.loading import load_run
    from sparsecircuits.loading.activations import iter_activations
    from sparsecircuits.viewer.links import Links
    from sparsecircuits.viewer.pages import unit_page, units_page
    from sparsecircuits.viewer.site import NotFound, Site

    run = load_run(tiny_run)
    hook = "blocks.1.hook_resid_post"
    folder = channel_sae(run, hook, 32, tmp_path / "sae")
    site = Site([tiny_run], sae_paths=[folder])
    assert [viewed.name for viewed in site.runs] == ["tiny", "tiny + sae"]
    html = units_page(site, Links(), 1, n_tokens=2048)
    rows = json.loads(re.search(r'id="unit-rows">(.*?)</script>', html, re.S).group(1))
    assert [row["unit"] for row in rows] == [f"1.resid_sae.{i}" for i in range(64)]
    # Latent i is relu(channel i), latent 32 + i relu(-channel i): together they fire wherever
    # the channel is nonzero, over the same tokens.
    values = torch.cat(
        [
            b.activations[hook].flatten(0, 1)
            for b in iter_activations(run, hook, 2048, 16, split="train")
        ]
    )
    for i in range(32):
        together = rows[i]["density"] + rows[32 + i]["density"]
        assert together == pytest.approx(float((values[:, i] != 0).float().mean()), abs=1e-6)
    page = unit_page(site, Links(), 1, "1.resid_sae.3", n_tokens=2048)
    assert "Decoder direction" in page and "--sae" in page
    with pytest.raises(NotFound):
        unit_page(site, Links(), 1, "1.resid_sae.64", n_tokens=2048)
    with pytest.raises(NotFound):
        unit_page(site, Links(), 0, "1.resid_sae.3", n_tokens=2048)  # the bare model has none


def test_the_viewer_refuses_an_sae_of_no_given_model(tiny_run: Path, tmp_path: Path):
    from sparsecircuits.sae import save_sae
    from sparsecircuits.viewer.site import Site

    sae = build_sae(SAEConfig("topk", 32, 64, "blocks.1.hook_resid_post", k=4))
    sae.config.model_sha256 = "0" * 16
    save_sae(sae, tmp_path / "other")
    with pytest.raises(UserError, match="trained on none of the models"):
        Site([tiny_run], sae_paths=[tmp_path / "other"])
