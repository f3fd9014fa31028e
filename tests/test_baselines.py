"""Baselines (VAE, DCGAN, WGAN-GP): networks, the gradient penalty's closed form, a few
training steps through the shared loop, and samples in range through the CLI."""

import numpy as np
import pytest
import torch

from helpers import outputs, read_rows, small_cfg, tiny_set, train_args, training_files
from positrongan.cli import main
from positrongan.io import load_npz
from positrongan.models.baselines import DCGANDiscriminator, DCGANGenerator, wgan_critic
from positrongan.train.losses import gradient_penalty
from positrongan.train.registry import build_trainer
from positrongan.train.loop import train


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_networks_shapes(size):
    g = DCGANGenerator(8, size, channels=4)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, size, size) and x.abs().max() <= 1
    assert DCGANDiscriminator(size, 4)(x).shape == (3,)
    critic = wgan_critic(size, 4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    # f(x) = <w, x>: the gradient is w everywhere, so the penalty is (||w|| - 1)^2.
    w = torch.randn(1, 1, 8, 8)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(dim=1)

    real, fake = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    gp = gradient_penalty(Linear(), real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


@pytest.mark.parametrize("method", ["vae", "dcgan", "wgan_gp"])
def test_baselines_train_a_few_steps_with_finite_losses(tmp_path, method):
    images = tiny_set()
    cfg = small_cfg(iterations=3, checkpoint_every=2, baseline_channels=4, latent_dim=8, n_critic=2)
    torch.manual_seed(0)
    tr = build_trainer(method, images, cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in tr.nets["G"].parameters()]
    blob = train(tr, images, cfg, outputs(tmp_path), seed=3)
    rows = read_rows(tmp_path / "losses.csv")
    assert len(rows) == 3
    assert all(np.isfinite(float(v)) for row in rows for v in row.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.nets["G"].parameters()))
    assert blob["method"] == method and blob["iterations"] == 3 and blob["train_seconds"] > 0


def test_vae_baseline_lowers_its_loss():
    torch.manual_seed(0)
    images = tiny_set()
    cfg = small_cfg(baseline_channels=4, latent_dim=8, lr=1e-3)
    tr = build_trainer("vae", images, cfg, torch.device("cpu"))
    losses = [tr.step(images[torch.randint(len(images), (8,))])["loss"] for _ in range(15)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize("method", ["vae", "dcgan", "wgan_gp"])
def test_baseline_commands_write_samples_in_range(tmp_path, method):
    data, _, _ = training_files(tmp_path)
    extra = ["--set", "training.baseline_channels=4", "--set", "training.latent_dim=8", "--set", "training.n_critic=2"]
    assert main(train_args(tmp_path, method, data) + extra) == 0
    out = tmp_path / f"{method}.npz"
    gen = tmp_path / method / "generator.pt"
    assert (
        main(
            [
                "sample",
                "--method",
                method,
                "--generator",
                str(gen),
                "--out",
                str(out),
                "--set",
                "evaluation.samples=7",
                "--set",
                "device=cpu",
            ]
        )
        == 0
    )
    s = load_npz(out, required=("images", "method", "train_seconds", "samples_per_second"))
    assert s["images"].shape == (7, 32, 32) and s["images"].dtype == np.float32
    assert 0 <= s["images"].min() and s["images"].max() <= 1
    assert str(s["method"]) == method
    # Sampling is seeded: the same command gives the same images.
    out2 = tmp_path / f"{method}_again.npz"
    main(
        [
            "sample",
            "--method",
            method,
            "--generator",
            str(gen),
            "--out",
            str(out2),
            "--set",
            "evaluation.samples=7",
            "--set",
            "device=cpu",
        ]
    )
    np.testing.assert_array_equal(load_npz(out2)["images"], s["images"])


def test_sample_refuses_a_generator_of_another_method(tmp_path, capsys):
    data, _, _ = training_files(tmp_path)
    assert main(train_args(tmp_path, "dcgan", data) + ["--set", "training.baseline_channels=4"]) == 0
    code = main(
        [
            "sample",
            "--method",
            "vae",
            "--generator",
            str(tmp_path / "dcgan" / "generator.pt"),
            "--out",
            str(tmp_path / "x.npz"),
        ]
    )
    assert code == 2 and "dcgan" in capsys.readouterr().err
