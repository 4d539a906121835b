"""Sparse autoencoders: each architecture's activation and penalty, the metrics against hand
computations, and the files. Fixtures are fixed by construction: hand-set weights and data
made of known sparse features."""

from pathlib import Path

import pytest
import torch

from sparsecircuits.errors import UserError
from sparsecircuits.sae import SAEConfig, build_sae, load_sae, reconstruction_metrics, save_sae
from sparsecircuits.sae.metrics import ReconstructionTotals


def config(arch: str = "topk", **fields) -> SAEConfig:
    defaults = {"topk": {"k": 2}, "batchtopk": {"k": 2}, "relu": {"l1_coef": 0.1}}
    values = {"arch": arch, "d_in": 4, "d_sae": 4, "hook": "blocks.0.hook_resid_post"}
    return SAEConfig(**(values | defaults.get(arch, {"l0_coef": 0.1}) | fields))


def identity_sae(arch: str, **fields):
    """Encoder and decoder the identity: latent i is input channel i."""
    sae = build_sae(config(arch, **fields))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    return sae


# Two of four orthogonal features active per row, positive magnitudes: what a k=2 SAE
# with the features as its latents reconstructs exactly.
SPARSE_DATA = torch.tensor(
    [[3.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 5.0], [1.5, 0.5, 0.0, 0.0], [0.0, 0.0, 4.0, 2.0]]
)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"arch": "gated"}, "unknown SAE architecture"),
        ({"k": 5}, "1 <= k <= d_sae"),
        ({"k": 0}, "1 <= k <= d_sae"),
        ({"d_sae": 0}, "d_sae must be at least 1"),
        ({"d_out": 3}, "reconstructs its own hook"),
        ({"arch": "relu", "l1_coef": -1.0}, "l1 coefficient"),
        ({"input_scale": 0.0}, "input_scale must be positive"),
    ],
)
def test_configs_that_make_no_sense_are_one_line(fields, fragment):
    with pytest.raises(UserError, match=fragment):
        config(**fields)


def test_a_transcoder_may_write_a_hook_of_another_width():
    transcoder = config(out_hook="blocks.0.mlp.hook_out", d_out=6)
    sae = build_sae(transcoder)
    x_hat, f = sae(torch.randn(3, 4))
    assert x_hat.shape == (3, 6) and f.shape == (3, 4)


def test_topk_keeps_each_rows_k_largest_and_reconstructs_k_sparse_data_exactly():
    sae = identity_sae("topk")
    x_hat, f = sae(SPARSE_DATA)
    assert torch.equal((f != 0).sum(dim=-1), torch.full((4,), 2))
    assert torch.equal(x_hat, SPARSE_DATA)
    f = identity_sae("topk", k=1).encode(SPARSE_DATA)
    assert f.tolist() == [[3, 0, 0, 0], [0, 0, 0, 5], [1.5, 0, 0, 0], [0, 0, 4, 0]]


def test_batchtopk_keeps_k_per_row_on_average_then_a_threshold():
    sae = identity_sae("batchtopk")
    sae.train()
    f = sae.encode(SPARSE_DATA)
    # The 8 largest of the batch: row 2 keeps both of its values, as do the others.
    assert int((f != 0).sum()) == 8 and torch.equal(f, SPARSE_DATA)
    assert 0 < float(sae.threshold) < 0.5  # moved from 0 towards the smallest kept (0.5)
    lopsided = torch.tensor([[9.0, 8.0, 7.0, 6.0], [0.1, 0.0, 0.0, 0.0]])
    f = sae.encode(lopsided)
    assert (f[0] != 0).sum() == 4 and (f[1] != 0).sum() == 0  # 4 kept in one row, 0 in the other
    sae.eval()
    with torch.no_grad():
        sae.threshold.fill_(2.5)
    assert sae.encode(SPARSE_DATA).tolist() == [
        [3, 0, 0, 0],
        [0, 0, 0, 5],
        [0, 0, 0, 0],
        [0, 0, 4, 0],
    ]


def test_relu_penalty_is_l1_weighted_by_decoder_norms():
    sae = identity_sae("relu", l1_coef=0.5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([[1.0], [2.0], [1.0], [3.0]]))
    x = torch.tensor([[1.0, -1.0, 2.0, 0.5]])
    f = sae.encode(x)
    assert f.tolist() == [[1.0, 0.0, 2.0, 0.5]]
    losses = sae.losses(x, x)
    assert float(losses["sparsity"].detach()) == pytest.approx(0.5 * (1 * 1 + 2 * 1 + 0.5 * 3))


def test_jumprelu_thresholds_and_learns_them_through_the_kernel():
    sae = identity_sae("jumprelu", jumprelu_init_threshold=1.0, jumprelu_bandwidth=0.5, l0_coef=1.0)
    x = torch.tensor([[0.9, 1.1, 2.0, 0.2]])
    assert sae.encode(x)[0].tolist() == pytest.approx([0.0, 1.1, 2.0, 0.0])
    sparsity = sae.losses(x, x)["sparsity"]
    assert float(sparsity.detach()) == 2.0  # two latents above their threshold
    sparsity.backward()
    # d L0 / d theta = -(1/eps) K((z - theta)/eps): nonzero where |z - theta| < eps/2 (0.9,
    # 1.1); through theta = exp(log theta) with theta = 1 the chain rule multiplies by 1.
    expected = [-2.0, -2.0, 0.0, 0.0]
    assert sae.log_threshold.grad.tolist() == pytest.approx(expected)


def test_metrics_match_a_hand_computation():
    x = torch.tensor([[10.0, 0.0], [12.0, 2.0], [14.0, 4.0]])  # mean (12, 2)
    x_hat = torch.tensor([[10.0, 1.0], [12.0, 2.0], [13.0, 4.0]])
    f = torch.tensor([[1.0, 0.0, 0.0], [2.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    metrics = reconstruction_metrics(x, x_hat, f)
    assert metrics["mse"] == pytest.approx(2 / 6)
    # Against the mean: 1 - 2 / (4 + 4 + 0 + 0 + 4 + 4). Against zero it would be 0.9968.
    assert metrics["explained_variance"] == pytest.approx(1 - 2 / 16)
    assert metrics["l0"] == pytest.approx(4 / 3)
    assert metrics["dead_fraction"] == pytest.approx(1 / 3)
    cosines = [
        torch.nn.functional.cosine_similarity(a, b, dim=0) for a, b in zip(x, x_hat, strict=True)
    ]
    assert metrics["cosine"] == pytest.approx(float(sum(cosines)) / 3)


def test_metrics_do_not_depend_on_how_tokens_are_batched():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=generator) + 5
    x_hat = x + 0.1 * torch.randn(64, 8, generator=generator)
    f = torch.relu(torch.randn(64, 16, generator=generator))
    whole = reconstruction_metrics(x, x_hat, f)
    totals = ReconstructionTotals()
    for start in range(0, 64, 7):
        totals.add(x[start : start + 7], x_hat[start : start + 7], f[start : start + 7])
    for name, value in totals.result().items():
        assert value == pytest.approx(whole[name], rel=1e-9), name


def test_an_sae_round_trips_through_its_folder(tmp_path: Path):
    sae = build_sae(config("jumprelu", model_sha256="abc", model_path="models/x"))
    folder = save_sae(sae, tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "sae.safetensors"]
    again = load_sae(folder, model_sha256="abc")
    assert again.config == sae.config
    for name, tensor in sae.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
    x = torch.randn(5, 4)
    assert torch.equal(again(x)[0], sae(x)[0])


def test_an_sae_of_another_model_is_refused_unless_forced(tmp_path: Path, capsys):
    folder = save_sae(build_sae(config(model_sha256="abc", model_path="models/x")), tmp_path / "s")
    with pytest.raises(UserError, match="trained on another model .*--force"):
        load_sae(folder, model_sha256="def")
    load_sae(folder, model_sha256="def", force=True)
    assert "warning" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["zero", "garbage", "config"])
def test_a_damaged_sae_folder_is_one_line(tmp_path: Path, damage: str):
    folder = save_sae(build_sae(config()), tmp_path / "s")
    if damage == "zero":
        (folder / "sae.safetensors").write_bytes(b"")
    elif damage == "garbage":
        (folder / "sae.safetensors").write_bytes(b"\x00" * 50)
    else:
        (folder / "config.json").write_text(
            '{"arch": "topk", "d_in": 4, "d_sae": 4, "hook": "h", "k": 9}'
        )
    with pytest.raises(UserError):
        load_sae(folder)


def test_an_existing_folder_is_never_overwritten(tmp_path: Path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        save_sae(build_sae(config()), folder)
    assert (folder / "keep.txt").read_text() == "mine"


# --- training on a model's activations ------------------------------------------------------


def trained_sae(run_path: Path, out: Path, tokens: int, resume: bool = False, **fields):
    from sparsecircuits.loading import load_run
    from sparsecircuits.sae.training import SAETrainConfig, train_sae

    run = load_run(run_path)
    values = {"arch": "topk", "k": 4, "d_in": 32, "d_sae": 64, "hook": "blocks.1.hook_resid_post"}
    train = SAETrainConfig(tokens=tokens, batch_size=64, buffer_windows=2, lr=1e-3)
    return train_sae(run, SAEConfig(**(values | fields)), train, out, resume, progress=False)


def test_training_writes_an_sae_of_this_model_with_its_scales(tiny_run: Path, tmp_path: Path):
    from sparsecircuits.loading import load_run

    out = tmp_path / "sae"
    summary = trained_sae(tiny_run, out, tokens=4 * 128)
    assert summary["buffer"] == 4 and summary["tokens_trained"] == 4 * 128
    assert 0 < summary["l0"] <= 4 and summary["explained_variance"] <= 1
    sae = load_sae(out, model_sha256=load_run(tiny_run).weights_sha256)
    assert sae.config.input_scale > 0 and sae.config.model_path == str(load_run(tiny_run).path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_resumed_training_ends_exactly_where_an_unbroken_one_does(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from sparsecircuits.sae import training

    trained_sae(tiny_run, tmp_path / "whole", tokens=4 * 128)
    real_save, saves = training.save_training, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_training", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trained_sae(tiny_run, tmp_path / "cut", tokens=4 * 128)
    monkeypatch.setattr(training, "save_training", real_save)
    trained_sae(tiny_run, tmp_path / "cut", tokens=4 * 128, resume=True)
    whole, cut = load_sae(tmp_path / "whole"), load_sae(tmp_path / "cut")
    for name, tensor in whole.state_dict().items():
        assert torch.equal(cut.state_dict()[name], tensor), name
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (
        tmp_path / "cut" / "metrics.jsonl"
    ).read_text()


def test_an_unknown_hook_is_one_line_with_close_matches(tiny_run: Path, tmp_path: Path):
    with pytest.raises(UserError, match="blocks.1.hook_resid_post"):
        trained_sae(tiny_run, tmp_path / "s", tokens=128, hook="blocks.1.hook_resid_pots")
    assert not (tmp_path / "s").exists()


# --- evaluation and the command line --------------------------------------------------------


def test_loss_recovered_is_one_for_an_exact_sae_and_zero_for_the_mean(tiny_run: Path):
    from sparsecircuits.loading import load_run
    from sparsecircuits.loading.activations import iter_activations
    from sparsecircuits.sae.evaluation import evaluate_sae

    run = load_run(tiny_run)
    hook, width = "blocks.0.hook_resid_post", 32
    fields = {"arch": "topk", "d_in": width, "d_sae": 2 * width, "k": 2 * width, "hook": hook}
    exact = build_sae(SAEConfig(**fields))
    with torch.no_grad():  # f = (relu(x), relu(-x)), x_hat = relu(x) - relu(-x) = x
        identity = torch.eye(width)
        exact.W_enc.copy_(torch.cat([identity, -identity], dim=1))
        exact.W_dec.copy_(torch.cat([identity, -identity], dim=0))
    result = evaluate_sae(run, exact, tokens=512)
    assert result["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-5)
    assert result["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)
    assert result["ce_ablated"] > result["ce_clean"]

    windows = iter_activations(run, hook, 512, 8, split="val")
    mean = torch.cat([w.activations[hook].flatten(0, 1) for w in windows]).mean(dim=0)
    constant = build_sae(SAEConfig(**fields))
    with torch.no_grad():  # writes the mean whatever it reads: the ablation itself
        constant.W_dec.zero_()
        constant.b_dec.copy_(mean)
    result = evaluate_sae(run, constant, tokens=512)
    assert result["loss_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert result["l0"] > 0 and result["explained_variance"] == pytest.approx(0.0, abs=1e-5)


def test_sae_train_and_eval_from_the_command_line(tiny_run: Path, tmp_path: Path):
    from cli_runner import run_in_process

    out = tmp_path / "sae"
    flags = ["--hook", "blocks.1.hook_resid_post", "--width", "64", "--k", "4"]
    flags += ["--tokens", "256", "--batch-size", "64", "--buffer-windows", "2", "--quiet"]
    result = run_in_process("sae", "train", str(tiny_run), *flags, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "explained variance" in result.stdout
    evaluated = run_in_process("sae", "eval", str(out), "--tokens", "256", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    import json

    metrics = json.loads(evaluated.stdout)
    wanted = {"mse", "explained_variance", "l0", "dead_fraction", "cosine", "loss_recovered", "kl"}
    assert wanted <= set(metrics) and metrics["l0"] <= 4


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--hook", "blocks.1.hook_resid_pots", "--width", "8", "--k", "2"], "hook_resid_post"),
        (["--hook", "blocks.*.hook_resid_post", "--width", "8", "--k", "2"], "one hook point"),
        (["--hook", "blocks.1.hook_resid_post", "--width", "8", "--k", "9"], "1 <= k <= d_sae"),
        (["--hook", "blocks.1.hook_resid_post", "--width", "8"], "needs 1 <= k"),
        (["--hook", "blocks.1.attn.hook_q", "--width", "8", "--k", "2"], "an SAE reads one vector"),
    ],
)
def test_bad_sae_flags_are_one_line(tiny_run: Path, tmp_path: Path, flags, fragment):
    from cli_runner import run_in_process

    result = run_in_process("sae", "train", str(tiny_run), *flags, "--out", str(tmp_path / "s"))
    assert result.returncode == 2 and fragment in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s").exists()


# --- steering -------------------------------------------------------------------------------


def test_clamping_a_latent_moves_the_activation_along_its_decoder_direction():
    from sparsecircuits.sae.steering import clamp_latent

    sae = identity_sae("topk", k=4)
    act = torch.tensor([[[1.0, -2.0, 0.5, 3.0]]])
    steered = clamp_latent(sae, 2, 4.0)(act, None)
    # Latent 2 read 0.5; set to 4 it adds 3.5 along e_2; every other channel stays.
    assert steered.tolist() == [[[1.0, -2.0, 4.0, 3.0]]]
    with pytest.raises(UserError, match="latent 9"):
        clamp_latent(sae, 9, 1.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("blocks.0.hook_resid_post:3", "expected"), ("x:1=nan", "expected"), ("h:1=1e9", "below 1e6")],
)
def test_bad_steers_are_one_line(text, fragment):
    from sparsecircuits.sae.steering import parse_steer

    with pytest.raises(UserError, match=fragment):
        parse_steer(text)


def test_generate_steers_a_channel_and_reports_its_cost(tiny_run: Path):
    import json

    from cli_runner import run_in_process

    base = ["generate", str(tiny_run), "--prompt", "def f(x):\n    return", "--tokens", "6"]
    plain = run_in_process(*base, "--json")
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)) == {"prompt", "completion", "ids"}
    # Every residual channel of the last layer held at one value: every position's output is
    # the same, so the steered continuation repeats one token.
    steers = [f"--steer=blocks.1.hook_resid_post:{i}=50" for i in range(32)]
    steered = run_in_process(*base, *steers, "--cost-tokens", "256", "--json")
    assert steered.returncode == 0, steered.stderr
    result = json.loads(steered.stdout)
    assert result["completion"] == json.loads(plain.stdout)["completion"]
    assert len(result["steered_ids"]) == 6 and len(set(result["steered_ids"])) == 1
    assert result["loss_cost"] > 0 and result["steered_loss"] == pytest.approx(
        result["loss"] + result["loss_cost"]
    )
    wrong = run_in_process(*base, "--steer", "blocks.1.hook_resid_post:99=1")
    assert wrong.returncode == 2 and "channel 99" in wrong.stderr


def test_training_again_into_a_trained_folder_needs_resume(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "sae"
    trained_sae(tiny_run, out, tokens=128)
    before = (out / "sae.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds an SAE training: pass --resume"):
        trained_sae(tiny_run, out, tokens=128)
    assert (out / "sae.safetensors").read_bytes() == before


@pytest.mark.parametrize("transcoder", [False, True])
def test_topks_sparse_pass_has_the_dense_computations_value_and_gradients(transcoder):
    """TopK decodes only the active rows and back-propagates only through the active encoder
    columns: the same loss and gradients as the plain dense computation (float64)."""
    from sparsecircuits.sae.base import SparseAutoencoder

    fields = {"arch": "topk", "d_in": 6, "d_sae": 20, "k": 3, "hook": "h", "input_scale": 1.7}
    if transcoder:
        fields |= {"out_hook": "o", "d_out": 5, "output_scale": 0.6}
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(**fields)).double()
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 6, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 7, sae.config.d_out, generator=generator, dtype=torch.float64)
    results = []
    for losses in (sae.losses, lambda a, b: SparseAutoencoder.losses(sae, a, b)):
        sae.zero_grad()
        out = losses(x, target)
        out["loss"].backward()
        results.append((out, {name: p.grad.clone() for name, p in sae.named_parameters()}))
    (sparse, sparse_grads), (dense, dense_grads) = results
    torch.testing.assert_close(sparse["loss"], dense["loss"])
    torch.testing.assert_close(sparse["f"], dense["f"])
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, msg=name)
    x_hat, f = sae(x)
    torch.testing.assert_close(x_hat, sae.decode(f))
