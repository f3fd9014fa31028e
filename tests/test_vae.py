"""The convolutional VAE, its loss, its training loop (checkpoint, exact resume) and its CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from positrongan.cli import main
from positrongan.config import validate
from helpers import outputs, read_rows
from positrongan.errors import ArtifactError
from positrongan.models.vae import ConvVAE, encode_images, kl_divergence, load_vae, vae_loss
from positrongan.train.checkpoint import TrainingError, save_checkpoint
from positrongan.train.ct_vae import CTVAETrainer, train_vae


def _vae_cfg(**over):
    cfg = validate({})["vae"]
    cfg.update({"latent_dim": 8, "base_channels": 4, "batch_size": 8, "epochs": 1, "checkpoint_every": 2})
    cfg.update(over)
    return cfg


def _images(n=24, size=32, seed=0):
    # Ellipses of random size, position and brightness on a dark background: structure a
    # small VAE can learn within a few steps.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = np.full((n, size, size), -1.0, np.float32)
    for i in range(n):
        cx, cy = rng.uniform(-0.15, 0.15, 2)
        ax, ay = rng.uniform(0.15, 0.35, 2)
        out[i][((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 < 1] = rng.uniform(0.0, 0.9)
    return out


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_at_every_resolution(size):
    model = ConvVAE(size, latent_dim=5, base_channels=4)
    x = torch.zeros(2, 1, size, size)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 5)
    assert model.decode(mu).shape == (2, 1, size, size)
    recon, _, _ = model(x)
    assert recon.shape == x.shape and recon.abs().max() <= 1
    with pytest.raises(ValueError, match="image_size"):
        ConvVAE(48, 5, 4)


def test_kl_term_equals_its_closed_form():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 7, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    reference = torch.distributions.kl_divergence(q, p).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mu, logvar), reference)
    # The posterior equal to the prior costs nothing.
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0
    # The loss adds beta x the batch-mean KL to the batch-mean sum of squared errors.
    x, r = torch.zeros(6, 1, 2, 2), torch.full((6, 1, 2, 2), 0.5)
    loss, rec, kl = vae_loss(r, x, mu.float(), logvar.float(), beta=0.25)
    assert rec.item() == pytest.approx(4 * 0.25)
    assert kl.item() == pytest.approx(reference.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(rec.item() + 0.25 * reference.mean().item(), rel=1e-5)


def test_reparameterisation_has_the_posterior_moments():
    mu, logvar = torch.tensor([[1.5, -2.0]]), torch.tensor([[0.0, float(np.log(0.25))]])
    g = torch.Generator().manual_seed(1)
    z = ConvVAE.reparameterize(mu.expand(20000, 2), logvar.expand(20000, 2), g)
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5]), atol=0.03, rtol=0)


def test_loss_falls_over_a_few_cpu_steps(tmp_path):
    out = outputs(tmp_path)
    train_vae(_images(), _vae_cfg(epochs=8, lr=3e-3), seed=0, out=out)
    losses = [float(r["loss"]) for r in read_rows(out.losses)]
    assert len(losses) == 24
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    assert all(np.isfinite(losses))


def _weights(trainer):
    return trainer.model.state_dict()


def test_resume_continues_from_the_same_step_with_the_same_result(tmp_path):
    # The CT VAE runs on the shared loop: the same exact resume as every other trainer.
    images = _images()
    straight = train_vae(images, _vae_cfg(epochs=2), seed=3, out=outputs(tmp_path / "a"))
    out = outputs(tmp_path / "b")
    first = train_vae(images, _vae_cfg(epochs=1), seed=3, out=out)
    assert first.updates == 3 and torch.load(out.checkpoint, weights_only=True)["step"] == 3
    resumed = train_vae(images, _vae_cfg(epochs=2), seed=3, out=out)
    assert resumed.updates == 3  # only the second epoch ran
    rows, full = read_rows(out.losses), read_rows(tmp_path / "a" / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert [int(r["epoch"]) for r in rows] == [1, 1, 1, 2, 2, 2]
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert list(map(drop, rows)) == list(map(drop, full))
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0)
    # A checkpoint of another run (different beta, or another seed) is not resumed: training restarts.
    other = train_vae(images, _vae_cfg(epochs=2, beta=0.5), seed=3, out=out)
    assert other.updates == 6 and len(read_rows(out.losses)) == 6
    assert train_vae(images, _vae_cfg(epochs=2, beta=0.5), seed=4, out=out).updates == 6


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # The shared loop's guard: TrainingError naming the kept checkpoint, whose weights are finite.
    real_step = CTVAETrainer.step

    def failing_step(self, batch):
        losses = real_step(self, batch)
        if self.updates == 5:
            losses["loss"] = float("nan")
        return losses

    monkeypatch.setattr(CTVAETrainer, "step", failing_step)
    out = outputs(tmp_path)
    with pytest.raises(TrainingError, match=r"ct_vae: non-finite loss.*step 5.*last good checkpoint \(step 4\)"):
        train_vae(_images(), _vae_cfg(epochs=3), seed=0, out=out)
    state = torch.load(out.checkpoint, weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["nets"]["model"].values() if v.is_floating_point())
    assert not out.generator.exists()
    assert read_rows(out.losses)[-1]["loss"] == "nan"


def test_model_file_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = ConvVAE(32, 6, 4).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"hparams": model.hparams, "state_dict": model.state_dict()})
    back = load_vae(path, "cpu")
    x = torch.from_numpy(_images(4))
    mu, logvar = encode_images(back, x, batch_size=3)
    ref_mu, ref_logvar = model.encode(x.unsqueeze(1))
    torch.testing.assert_close(mu, ref_mu)
    torch.testing.assert_close(logvar, ref_logvar)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="bad.pt"):
        load_vae(tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match="missing.pt: file not found"):
        load_vae(tmp_path / "missing.pt")


def test_cli_trains_encodes_and_reports_a_missing_corpus(tmp_path, capsys):
    import json

    cfg = json.dumps(
        {
            "seed": 0,
            "device": "cpu",
            "ct": {"synthetic_count": 6, "synthetic_size": 64, "synthetic_slices_per_series": 3, "min_size": 32},
            "vae": {"latent_dim": 4, "base_channels": 4, "epochs": 2, "batch_size": 4},
            "dataset": {"image_size": 32},
        }
    )
    ct, vae = tmp_path / "ct", tmp_path / "vae"
    common = ["--config-json", cfg, "--threads", "1"]
    assert main(["make-ct-corpus", *common, "--out", str(ct)]) == 0
    outs = {k: str(vae / f) for k, f in [("model", "model.pt"), ("losses", "losses.csv"), ("recon", "recon.png"), ("checkpoint", "checkpoint.pt")]}  # fmt: skip
    args = ["train-vae", *common, "--corpus", str(ct)] + [a for k, v in outs.items() for a in (f"--{k}", v)]
    assert main(args) == 0
    lines = (vae / "losses.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss,recon,kl,seconds" and len(lines) == 1 + 4
    assert (vae / "recon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(["encode-ct", *common, "--corpus", str(ct), "--model", outs["model"], "--out", str(vae / "latents.npz")])
        == 0
    )
    with np.load(vae / "latents.npz") as z:
        assert z["mu"].shape == z["logvar"].shape == (6, 4)
        assert list(z["names"]) == sorted(z["names"]) and z["names"][0].startswith("000001_01_01/")
    capsys.readouterr()
    assert main(["train-vae", *common, "--corpus", str(tmp_path / "absent")] + args[7:]) == 2
    assert "absent: CT corpus folder not found" in capsys.readouterr().err
