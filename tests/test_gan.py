"""Ours: the DenseNet generator, the PatchGAN (eq. 8), L_APG (eq. 9), training steps,
checkpoint/resume and the non-finite loss guard, and the train/sample commands."""

import math

import numpy as np
import pytest
import torch

from helpers import SMALL, outputs, read_rows, rings, small_cfg, tiny_set, train_args, training_files
from positrongan.cli import main
from positrongan.io import load_npz
from positrongan.models.diffaugment import diff_augment
from positrongan.models.discriminator import PatchDiscriminator, depth_for, layer_specs, receptive_field
from positrongan.models.generator import DenseGenerator, MemoryGenerator
from positrongan.train.checkpoint import TrainingError
from positrongan.train.gan import OursTrainer
from positrongan.train.latents import CTLatents
from positrongan.train.losses import apg_loss
from positrongan.train.loop import train


def ours(cfg, images, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(123)
    latents = CTLatents(torch.randn(20, 6, generator=g), torch.full((20, 6), -2.0))
    memory = torch.from_numpy(rings(len(images), images.shape[-1], seed=5).reshape(len(images), -1)[:, :10])
    return OursTrainer(latents, memory, images.shape[-1], cfg, torch.device("cpu"))


def test_receptive_field_by_eq8_is_70_at_256_px():
    # pix2pix's 70x70 PatchGAN: three strided 4x4 convolutions and two of stride 1.
    assert receptive_field(layer_specs(3)) == 70
    assert depth_for(256) == 3
    assert PatchDiscriminator(4, depth_for(256)).receptive_field == 70
    # Eq. 8 by hand for one layer: (1 - 1) * s + k.
    assert receptive_field([(4, 2)]) == 4
    # Depth scales with resolution: the field stays near the same fraction of the image.
    assert depth_for(128) == 2 and receptive_field(layer_specs(2)) == 34
    assert depth_for(64) == 1 and receptive_field(layer_specs(1)) == 16


def test_receptive_field_matches_the_network_gradient_support():
    # The input pixels that influence one interior output pixel span exactly the eq. 8 field.
    torch.manual_seed(0)
    net = PatchDiscriminator(4, 2).eval()
    x = torch.randn(1, 1, 96, 96, requires_grad=True)
    h = x
    for block in net.blocks:
        h = block(h)
    out = net.head(h)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(dim=0)).flatten()
    assert int(rows.max() - rows.min() + 1) == net.receptive_field == 34
    assert int(cols.max() - cols.min() + 1) == 34


def test_discriminator_output_is_the_mean_of_the_patch_map():
    net = PatchDiscriminator(8, 1).eval()
    x = torch.randn(3, 1, 32, 32)
    logits, feats = net(x, features=True)
    patch = net.head(feats[-1])
    assert patch.shape[-1] > 1  # a map of patches, not one logit
    torch.testing.assert_close(logits, patch.mean(dim=(1, 2, 3)))


def test_dense_generator_shapes_range_and_dense_connectivity():
    for size in (32, 64):
        g = DenseGenerator(10, size, channels=16, growth=4, layers=3)
        x = g(torch.randn(2, 10))
        assert x.shape == (2, 1, size, size)
        assert x.abs().max() <= 1
    block = g.body[0]
    # Layer l sees the concatenation of the input and all previous layers' outputs (eq. 7).
    assert [layer.body[2].in_channels for layer in block] == [16, 20, 24]
    assert block.out_channels == 28


def test_apg_loss_is_zero_for_identical_batches_and_per_element():
    d = PatchDiscriminator(8, 1).eval()
    x = torch.randn(4, 1, 32, 32)
    _, fr = d(x, features=True)
    _, ff = d(x.clone(), features=True)
    assert apg_loss(fr, ff).item() == 0.0
    # Each layer's L1 distance is divided by its element count: a constant offset of 1
    # in every layer gives exactly the number of layers.
    shifted = [f + 1 for f in fr]
    assert apg_loss(fr, shifted).item() == pytest.approx(len(fr))
    _, fy = d(torch.randn(4, 1, 32, 32), features=True)
    assert apg_loss(fr, fy).item() > 0


def test_gradients_reach_w_a_and_the_generator():
    cfg = small_cfg()
    images = tiny_set()
    tr = ours(cfg, images)
    w0 = tr.G.attention.w_a.detach().clone()
    tr.step(images[:8])
    assert not torch.equal(w0, tr.G.attention.w_a)
    assert tr.G.attention.w_a.grad.abs().sum() > 0


def test_a_few_cpu_steps_lower_the_discriminator_loss():
    torch.manual_seed(0)
    cfg = small_cfg(lambda_apg=0.0)
    images = tiny_set()
    tr = ours(cfg, images)
    losses = [tr.step(images[torch.randint(len(images), (8,))])["loss_d"] for _ in range(12)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(tmp_path):
    images = tiny_set()
    cfg = small_cfg(iterations=4, checkpoint_every=2, sample_every=2, ema=0.9, diffaugment=True)
    train(ours(cfg, images), images, cfg, outputs(tmp_path / "a"), seed=7)
    full = read_rows(tmp_path / "a" / "losses.csv")

    # Interrupted after step 2 (checkpoint written), then a new process continues to 4.
    first = dict(cfg, iterations=2)
    train(ours(first, images), images, first, outputs(tmp_path / "b"), seed=7)
    train(ours(cfg, images, seed=99), images, cfg, outputs(tmp_path / "b"), seed=7)
    resumed = read_rows(tmp_path / "b" / "losses.csv")
    assert len(resumed) == len(full) == 4
    for a, b in zip(full, resumed):
        for key in a:
            if key != "seconds":
                assert float(a[key]) == float(b[key]), (key, a, b)
    ga = torch.load(tmp_path / "a" / "generator.pt", weights_only=True)
    gb = torch.load(tmp_path / "b" / "generator.pt", weights_only=True)
    for k in ga["state_dict"]:
        torch.testing.assert_close(ga["state_dict"][k], gb["state_dict"][k], rtol=0, atol=0)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    images = tiny_set()
    cfg = small_cfg(iterations=2, checkpoint_every=1)
    train(ours(cfg, images), images, cfg, outputs(tmp_path), seed=1)
    other = dict(cfg, lr=1e-3)
    train(ours(other, images), images, other, outputs(tmp_path), seed=1)
    assert len(read_rows(tmp_path / "losses.csv")) == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    images = tiny_set()
    cfg = small_cfg(iterations=10, checkpoint_every=3)
    tr = ours(cfg, images)
    real_step = tr.step
    calls = {"n": 0}

    def failing_step(batch):
        calls["n"] += 1
        losses = real_step(batch)
        if calls["n"] == 5:
            losses["loss_g"] = math.nan
        return losses

    tr.step = failing_step
    out = outputs(tmp_path)
    with pytest.raises(TrainingError, match=r"non-finite loss.*step 5.*step 3"):
        train(tr, images, cfg, out, seed=0)
    state = torch.load(out.checkpoint, weights_only=True)
    assert state["step"] == 3
    assert not out.generator.exists()
    assert read_rows(out.losses)[-1]["loss_g"] == "nan"


def test_diffaugment_keeps_shape_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    # Cutout zeroes a quarter of the pixels (a half-side square) where it lies inside the image.
    z = diff_augment(torch.ones(8, 1, 16, 16), ("cutout",))
    assert ((z == 0).float().mean(dim=(1, 2, 3)) <= 0.25 + 1e-6).all()


def test_memory_generator_round_trips_through_hparams():
    g = MemoryGenerator(6, torch.randn(9, 5), 3, 32, channels=16, growth=4, layers=2).eval()
    h = MemoryGenerator.from_hparams(g.hparams).eval()
    h.load_state_dict(g.state_dict())
    z, n = torch.randn(2, 6), torch.randn(2, 3)
    torch.testing.assert_close(g(z, n), h(z, n))


@pytest.mark.parametrize("latent", ["ct", "prior"])
def test_train_and_sample_commands_for_ours(tmp_path, latent):
    data, feats, lat = training_files(tmp_path)
    assert main(train_args(tmp_path, "ours", data, ["--features", str(feats), "--latents", str(lat)])) == 0
    for name in ("generator.pt", "checkpoint.pt", "losses.csv", "samples.png"):
        assert (tmp_path / "ours" / name).stat().st_size > 0
    out = tmp_path / "ours.npz"
    assert (
        main(
            [
                "sample",
                "--method",
                "ours",
                "--generator",
                str(tmp_path / "ours" / "generator.pt"),
                "--latents",
                str(lat),
                "--out",
                str(out),
                "--set",
                f"training.sample_latent={latent}",
                *SMALL,
            ]
        )
        == 0
    )
    s = load_npz(out, required=("images", "method", "train_seconds", "samples_per_second"))
    assert s["images"].shape == (10, 32, 32)
    assert s["images"].min() >= 0 and s["images"].max() <= 1
    assert str(s["method"]) == "ours" and float(s["train_seconds"]) > 0 and float(s["samples_per_second"]) > 0
    assert str(s["variant"]) == "ours" and str(s["latent"]) == latent


def test_train_command_errors_are_one_line(tmp_path, capsys):
    data, _, _ = training_files(tmp_path)
    assert main(train_args(tmp_path, "ours", data)) == 2
    assert "--features" in capsys.readouterr().err
    assert main(train_args(tmp_path, "dcgan", tmp_path / "missing.npz")) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    args = train_args(tmp_path, "dcgan", data)
    args[args.index("--checkpoint") + 1] = str(bad)
    assert main(args) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_fine_tuning_the_ct_encoder_updates_it_and_exports_its_latents(tmp_path):
    from positrongan.models.vae import ConvVAE
    from positrongan.train.latents import CTEncoderLatents

    torch.manual_seed(0)
    images = tiny_set()
    cfg = small_cfg(iterations=2, checkpoint_every=1, train_encoder=True)
    vae = ConvVAE(32, 6, 4)
    latents = CTEncoderLatents(vae, torch.rand(10, 1, 32, 32) * 2 - 1)
    memory = torch.randn(len(images), 5)
    tr = OursTrainer(latents, memory, 32, cfg, torch.device("cpu"))
    w0 = vae.fc_mu.weight.detach().clone()
    blob = train(tr, images, cfg, outputs(tmp_path), seed=0)
    assert not torch.equal(w0, vae.fc_mu.weight)
    assert blob["ct_mu"].shape == (10, 6) and blob["ct_logvar"].shape == (10, 6)


def test_options_are_named_in_the_variant():
    images = tiny_set()
    assert ours(small_cfg(), images).variant == "ours"
    assert ours(small_cfg(diffaugment=True, ema=0.99), images).variant == "ours+diffaugment+ema"
    assert ours(small_cfg(train_memory=True), images).variant == "ours+memory"


@pytest.mark.gpu
def test_mixed_precision_steps_on_cuda_are_finite():
    device = torch.device("cuda")
    images = tiny_set().to(device)
    torch.manual_seed(0)
    latents = CTLatents(torch.randn(20, 6), torch.full((20, 6), -2.0))
    tr = OursTrainer(latents, torch.randn(len(images), 5), 32, small_cfg(amp=True), device)
    for _ in range(3):
        losses = tr.step(images[:8])
    assert all(math.isfinite(v) for v in losses.values())
    assert tr.sample(4, torch.Generator(device=device).manual_seed(0)).shape == (4, 1, 32, 32)


@pytest.mark.parametrize("mode", ["mean", "none"])
def test_memory_ablation_round_trips_and_is_named(mode):
    images = tiny_set()
    tr = ours(small_cfg(memory=mode), images)
    assert tr.G.attention.mode == mode and mode in tr.variant
    h = MemoryGenerator.from_hparams(tr.G.hparams)
    assert h.attention.mode == mode


def test_prior_query_draws_z_from_n01_in_training_and_sampling():
    images = tiny_set()
    far = CTLatents(torch.full((20, 6), 100.0), torch.full((20, 6), -2.0))  # CT latents far from N(0, I)
    memory = torch.randn(len(images), 5)
    g = torch.Generator().manual_seed(0)
    ct = OursTrainer(far, memory, 32, small_cfg(), torch.device("cpu"))
    assert ct._query(500, g).mean() > 90
    tr = OursTrainer(far, memory, 32, small_cfg(query="prior"), torch.device("cpu"))
    z = tr._query(500, g)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    assert tr.export()["query"] == "prior" and "query=prior" in tr.variant


def _variant_config(tmp_path):
    cfg = tmp_path / "variants.yaml"
    cfg.write_text(
        "training:\n"
        "  seeds: [0, 1]\n"
        "  variants:\n"
        "    ours_prior_query: {method: ours, set: {query: prior}}\n"
        "    ours_no_apg: {method: ours, label: 'Ours, no L_APG', set: {lambda_apg: 0}}\n"
    )
    return cfg


def test_a_variant_trains_and_samples_as_its_own_method_per_seed(tmp_path):
    data, feats, lat = training_files(tmp_path)
    cfg = _variant_config(tmp_path)
    weights = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        args = train_args(out, "ours_prior_query", data, ["--features", str(feats), "--latents", str(lat)])
        assert main([*args, "-c", str(cfg), "--seed", str(seed)]) == 0
        gen = out / "ours_prior_query" / "generator.pt"
        blob = torch.load(gen, weights_only=False)
        assert blob["method"] == "ours" and blob["query"] == "prior"
        weights[seed] = blob["state_dict"]["dense.project.weight"]
        npz = tmp_path / f"ours_prior_query_seed{seed}.npz"
        argv = ["sample", "-c", str(cfg), "--method", "ours_prior_query", "--seed", str(seed)]
        assert main([*argv, "--generator", str(gen), "--out", str(npz), *SMALL]) == 0
        s = load_npz(npz)
        assert str(s["method"]) == "ours_prior_query" and int(s["seed"]) == seed
        assert str(s["latent"]) == "prior"  # trained on N(0, I): sampled from it, no --latents needed
    assert not torch.equal(weights[0], weights[1])  # the seed reaches the initialisation


def test_variant_set_is_validated_against_the_training_schema():
    from positrongan.config import validate
    from positrongan.errors import ConfigError
    from positrongan.train.registry import label, resolve, run_names

    tcfg = validate({"training": {"variants": {"ours_no_apg": {"method": "ours", "set": {"lambda_apg": 0}}}}})[
        "training"
    ]
    assert run_names(tcfg) == ["ours", "vae", "dcgan", "wgan_gp", "ours_no_apg"]
    base, resolved = resolve(tcfg, "ours_no_apg")
    assert base == "ours" and resolved["lambda_apg"] == 0 and "variants" not in resolved
    assert resolve(tcfg, "ours")[1]["lambda_apg"] == 1.0
    assert label(tcfg, "ours_no_apg") == "ours_no_apg" and label(tcfg, "ours") == "Ours"
    for bad, match in (({"lambda_apg": -1}, "lambda_apg"), ({"memroy": "mean"}, "memroy"), ({"seeds": [1]}, "seeds")):
        tcfg["variants"]["x"] = {"method": "ours", "set": bad}
        with pytest.raises(ConfigError, match=match):
            resolve(tcfg, "x")
    with pytest.raises(ConfigError, match="unknown method"):
        resolve(tcfg, "nope")


def test_effective_slots_known_answers():
    from positrongan.models.memory import effective_slots

    assert float(effective_slots(torch.full((3, 8), 1 / 8))) == pytest.approx(8.0)
    assert float(effective_slots(torch.eye(4))) == pytest.approx(1.0)
    # Half the mass on each of two slots: exp(ln 2) = 2.
    assert float(effective_slots(torch.tensor([[0.5, 0.5, 0.0, 0.0]]))) == pytest.approx(2.0)


def test_attention_temperature_and_cosine_scores():
    from positrongan.models.memory import AttentionMemory, effective_slots

    torch.manual_seed(0)
    memory = torch.randn(50, 8)
    z = torch.randn(32, 4)
    base = AttentionMemory(4, memory)
    sharp = AttentionMemory(4, memory, temperature=0.01)
    sharp.load_state_dict(base.state_dict())
    # softmax(s / T) with the same scores: T -> 0 approaches one slot per query.
    assert float(effective_slots(sharp.attention(z))) < 1.5 < float(effective_slots(base.attention(z)))
    cos = AttentionMemory(4, memory, normalise=True)
    cos.load_state_dict(base.state_dict())
    q = z @ cos.w_a
    # Cosine scores times sqrt(k) are bounded by sqrt(k) whatever the norms.
    scores = torch.log(cos.attention(q.new_ones(1, 4) * 1e3)).squeeze()
    assert float(scores.max() - scores.min()) <= 2 * 8**0.5 + 1e-4


def test_summary_reports_attention_and_capacity(tmp_path):
    images = tiny_set()
    cfg = small_cfg(iterations=2, wa_lr=1e-2)
    tr = ours(cfg, images)
    assert (
        tr.opts["G"].param_groups[1]["lr"] == 1e-2 and tr.opts["G"].param_groups[1]["params"][0] is tr.G.attention.w_a
    )
    blob = train(tr, images, cfg, outputs(tmp_path), seed=0)
    assert 1.0 <= blob["attention_slots"] <= blob["memory_slots"] == len(images)
    assert blob["wa_change"] > 0 and blob["g_params"] == sum(p.numel() for p in tr.G.parameters())
    assert blob["real_images_seen"] == 2 * cfg["batch_size"]


def test_train_images_subsample_is_seeded_and_checked():
    from positrongan.errors import ConfigError
    from positrongan.train.run import subsample

    x = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    a, b, c = subsample(x, 10, 0), subsample(x, 10, 0), subsample(x, 10, 1)
    assert len(a) == 10 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a[:, 0, 0])) == 10  # without replacement
    assert subsample(x, None, 0) is x
    with pytest.raises(ConfigError, match="training.train_images"):
        subsample(x, 41, 0)
    # The memory (one row per training image) gets the same draw as the images.
    mem = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    assert np.array_equal(subsample(mem, 10, 0)[:, 0], a[:, 0, 0])


def test_a_data_scarce_run_of_ours_keeps_only_its_images_in_memory(tmp_path):
    # training.train_images = 5 of 12: the memory must hold those 5 images' features, not all 12
    # (otherwise the scarce run still sees every training image through its memory).
    from positrongan.features.extract import load_memory

    data, feats, lat = training_files(tmp_path)
    extra = ["--features", str(feats), "--latents", str(lat), "--set", "training.train_images=5"]
    assert main(train_args(tmp_path, "ours", data, extra)) == 0
    blob = torch.load(tmp_path / "ours" / "generator.pt", map_location="cpu", weights_only=False)
    assert blob["memory_slots"] == 5
    assert len(load_memory(feats)) == 12
