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


@pytest.mark.parametrize("method", ["vae", "dcgan", "wgan_gp", "fastgan", "diffusion"])
def test_baselines_train_a_few_steps_with_finite_losses(tmp_path, method):
    images = tiny_set()
    cfg = small_cfg(iterations=3, checkpoint_every=2, baseline_channels=4, latent_dim=8, n_critic=2, budget="updates")
    torch.manual_seed(0)
    tr = build_trainer(method, images, cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in tr.nets["G"].parameters()]
    blob = train(tr, images, cfg, outputs(tmp_path), seed=3)
    rows = read_rows(tmp_path / "losses.csv")
    assert len(rows) == 3
    assert all(np.isfinite(float(v)) for row in rows for v in row.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.nets["G"].parameters()))
    assert blob["method"] == method and blob["iterations"] == 3 and blob["train_seconds"] > 0
    assert blob["g_params"] == sum(p.numel() for p in tr.nets["G"].parameters())


def test_image_budget_gives_every_discriminator_the_same_real_images(tmp_path):
    # budget = images: WGAN-GP's critic takes n_critic batches per generator update, so it gets
    # iterations / n_critic updates and sees as many real images as DCGAN's discriminator.
    images = tiny_set()
    cfg = small_cfg(iterations=6, baseline_channels=4, latent_dim=8, n_critic=3, budget="images")
    seen = {}
    for method in ("dcgan", "wgan_gp"):
        torch.manual_seed(0)
        blob = train(
            build_trainer(method, images, cfg, torch.device("cpu")), images, cfg, outputs(tmp_path / method), 0
        )
        seen[method] = (blob["iterations"], blob["real_images_seen"])
    assert seen == {"dcgan": (6, 6 * 8), "wgan_gp": (2, 6 * 8)}


def test_baselines_use_their_papers_optimiser_settings():
    images = tiny_set()
    cfg = small_cfg(baseline_channels=4, latent_dim=8)
    expected = {"vae": (1e-3, (0.9, 0.999)), "dcgan": (2e-4, (0.5, 0.999)), "wgan_gp": (1e-4, (0.0, 0.9))}
    for method, (lr, betas) in expected.items():
        tr = build_trainer(method, images, cfg, torch.device("cpu"))
        for opt in tr.opts.values():
            assert opt.param_groups[0]["lr"] == lr and tuple(opt.param_groups[0]["betas"]) == betas


def test_apg_variant_adds_the_feature_matching_loss():
    images = tiny_set()
    for method in ("dcgan", "wgan_gp"):
        losses = {}
        for lam in (0.0, 1.0):
            torch.manual_seed(0)
            cfg = small_cfg(baseline_channels=4, latent_dim=8, n_critic=1, baseline_apg=lam)
            losses[lam] = {
                k: float(v) for k, v in build_trainer(method, images, cfg, torch.device("cpu")).step(images[:8]).items()
            }
        assert losses[0.0]["loss_apg"] == 0.0 and losses[1.0]["loss_apg"] > 0
        # Same seed, same D update: the generator loss differs by exactly lambda * L_APG.
        np.testing.assert_allclose(losses[1.0]["loss_d"], losses[0.0]["loss_d"], rtol=1e-6)
        np.testing.assert_allclose(losses[1.0]["loss_g"] - losses[1.0]["loss_apg"], losses[0.0]["loss_g"], rtol=1e-5)


def test_gradient_penalty_is_float32_under_autocast():
    from positrongan.train.losses import gradient_penalty

    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    real, fake = real.bfloat16().float(), fake.bfloat16().float()  # exactly representable in bf16
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 1))
    torch.manual_seed(1)
    ref = gradient_penalty(critic, real, fake)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(critic, real.bfloat16(), fake.bfloat16())
    # The same float32 computation, autocast or not.
    assert gp.dtype == torch.float32
    assert float(gp.detach()) == float(ref.detach())


def test_vae_baseline_lowers_its_loss():
    torch.manual_seed(0)
    images = tiny_set()
    cfg = small_cfg(baseline_channels=4, latent_dim=8, lr=1e-3)
    tr = build_trainer("vae", images, cfg, torch.device("cpu"))
    losses = [tr.step(images[torch.randint(len(images), (8,))])["loss"] for _ in range(15)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize("method", ["vae", "dcgan", "wgan_gp", "fastgan", "diffusion"])
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


def test_fastgan_sle_gates_the_high_resolution_channels():
    from positrongan.models.fastgan import SLE

    torch.manual_seed(0)
    sle = SLE(4, 3)
    big = torch.ones(2, 3, 16, 16)
    out = sle(torch.randn(2, 4, 8, 8), big)
    # One sigmoid gate per (image, channel), constant over the map, in (0, 1).
    gates = out[:, :, 0, 0]
    assert torch.equal(out, gates[:, :, None, None].expand_as(out))
    assert ((gates > 0) & (gates < 1)).all()


def test_fastgan_discriminator_reconstructs_real_images_it_is_trained_on():
    from positrongan.models.fastgan import FastGANDiscriminator

    torch.manual_seed(0)
    d = FastGANDiscriminator(32, 8)
    x = tiny_set(8, 32)
    opt = torch.optim.Adam(d.parameters(), 2e-3)
    first = None
    for i in range(30):
        _, rec = d.reconstruction_loss(x, i % 4)
        first = float(rec) if first is None else first
        opt.zero_grad()
        rec.backward()
        opt.step()
    assert float(d.reconstruction_loss(x, 0)[1]) < 0.7 * first


def test_diffusion_ddim_sampling_is_seeded_and_inverts_a_perfect_noise_model():
    from positrongan.models.diffusion import DiffusionGenerator

    torch.manual_seed(0)
    net = DiffusionGenerator(16, 8, timesteps=100, ddim_steps=10).eval()
    a = net.sample(2, torch.Generator().manual_seed(1))
    b = net.sample(2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 1, 16, 16) and a.abs().max() <= 1
    # With the exact noise of x_T = sqrt(abar) x0 + sqrt(1 - abar) eps as the prediction,
    # deterministic DDIM (eta 0) returns x0 (known answer).
    x0 = torch.rand(2, 1, 16, 16) * 1.6 - 0.8
    eps = torch.randn(2, 1, 16, 16)
    sched = net.train_scheduler()
    xt = sched.add_noise(original_samples=x0, noise=eps, timesteps=torch.full((2,), 99))

    class Oracle(torch.nn.Module):
        def forward(self, x, t):
            abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
            return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    from monai.networks.schedulers import DDIMScheduler

    ddim = DDIMScheduler(num_train_timesteps=100, schedule="linear_beta", clip_sample=True)
    ddim.set_timesteps(10)
    x = xt
    for t in ddim.timesteps:
        x, _ = ddim.step(Oracle()(x, torch.full((2,), int(t))), int(t), x)
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=0)
