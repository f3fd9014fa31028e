"""One owner per training concept: the method registry (schema, CLI, sampling, table order all
from it; a new method is one class and one line), the GAN-loss and weight-init helpers, the
artifact readers (torch files, dataset) and the append-only loss log across a resume."""

import pickle

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from helpers import outputs, read_rows, small_cfg, tiny_set, train_args, training_files
from positrongan.cli import main
from positrongan.config import validate
from positrongan.data.positron import load_dataset
from positrongan.errors import ArtifactError
from positrongan.io import load_npz, load_torch, save_npz
from positrongan.models.init import init_weights
from positrongan.report import table
from positrongan.train import registry
from positrongan.train.loop import Trainer, train
from positrongan.train.losses import gan_loss
from positrongan.train.registry import METHODS, Method, build_trainer


def test_schema_enum_is_the_registry():
    schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml"))
    methods = schema["properties"]["training"]["properties"]["methods"]
    assert set(methods["items"]["enum"]) == set(METHODS)
    # The default trains the paper's Table 1; the anchors come with config/study.yaml.
    assert methods["default"] == ["ours", "vae", "dcgan", "wgan_gp"]
    assert table.ORDER == list(METHODS) == ["vae", "dcgan", "wgan_gp", "ours", "fastgan", "diffusion"]
    assert table.NAMES["wgan_gp"] == METHODS["wgan_gp"].label == "WGAN-GP"
    assert [m for m, spec in METHODS.items() if spec.memory] == ["ours"]


def test_unknown_method_names_the_known_ones():
    with pytest.raises(Exception, match="known: vae, dcgan, wgan_gp, ours, fastgan, diffusion"):
        registry.get("stylegan")


class ToyTrainer(Trainer):
    """A method in a dozen lines: a linear generator, a least-squares pull to the batch mean."""

    method = "toy"

    def __init__(self, image_size, tcfg, device):
        self.G = self.network({"latent_dim": 4, "image_size": image_size})
        self.nets = {"G": self.G}
        self.opts = {"G": torch.optim.Adam(self.G.parameters(), lr=tcfg["lr"])}

    @staticmethod
    def network(hparams):
        s = hparams["image_size"]
        net = nn.Sequential(nn.Linear(hparams["latent_dim"], s * s), nn.Tanh(), nn.Unflatten(1, (1, s, s)))
        net.hparams, net.latent_dim = dict(hparams), hparams["latent_dim"]
        return net

    @staticmethod
    def draw(net, n, generator, z=None):
        return net(torch.randn(n, net.latent_dim, generator=generator))

    def step(self, real):
        loss = ((self.G(torch.randn(len(real), 4)).mean(0) - real.mean(0)) ** 2).mean()
        self.opts["G"].zero_grad()
        loss.backward()
        self.opts["G"].step()
        return {"loss": loss.item()}

    def sample(self, n, generator):
        return self.draw(self.G, n, generator)

    def export(self):
        return {"hparams": self.G.hparams, "state_dict": self.G.state_dict()}


def test_a_new_method_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "toy", Method(ToyTrainer, "Toy"))
    data, _, _ = training_files(tmp_path)
    assert main(train_args(tmp_path, "toy", data)) == 0
    assert [int(r["step"]) for r in read_rows(tmp_path / "toy" / "losses.csv")] == [1, 2, 3]
    out = tmp_path / "toy.npz"
    args = ["sample", "--method", "toy", "--generator", str(tmp_path / "toy" / "generator.pt"), "--out", str(out)]
    assert main([*args, "--set", "evaluation.samples=5"]) == 0
    s = load_npz(out)
    assert s["images"].shape == (5, 32, 32) and str(s["latent"]) == "prior"
    assert table.order(["ours", "toy", "vae", "real"]) == ["vae", "ours", "toy", "real"]


def test_gan_loss_known_values():
    zero = torch.zeros(5)
    # BCE of logit 0 is log 2 for either label; a confident right logit costs ~0.
    assert gan_loss(zero, True).item() == pytest.approx(np.log(2))
    assert gan_loss(zero, False).item() == pytest.approx(np.log(2))
    assert gan_loss(torch.full((3,), 30.0), True).item() == pytest.approx(0.0, abs=1e-12)
    assert gan_loss(torch.full((3,), 30.0), False).item() == pytest.approx(30.0)
    x = torch.tensor([1.0, 2.0, 6.0])
    assert gan_loss(x, True, "wgangp").item() == -3.0 and gan_loss(x, False, "wgangp").item() == 3.0
    with pytest.raises(ValueError, match="mode"):
        gan_loss(x, True, "hinge")


def test_init_weights_gives_the_dcgan_statistics():
    torch.manual_seed(0)
    net = init_weights(nn.Sequential(nn.Conv2d(64, 64, 4, bias=True), nn.BatchNorm2d(64)))
    w = net[0].weight
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    assert net[0].bias.abs().max() == 0
    assert net[1].weight.mean().item() == pytest.approx(1.0, abs=0.01) and net[1].bias.abs().max() == 0
    with pytest.raises(ValueError, match="kind"):
        init_weights(net, "uniform")


def test_trainers_take_their_sizes_from_the_config_only():
    # No network default stands in for the schema's: the built nets have the configured widths.
    cfg = small_cfg(baseline_channels=4)
    for method in ("vae", "dcgan", "wgan_gp"):
        tr = build_trainer(method, tiny_set(), cfg, torch.device("cpu"))
        assert tr.G.hparams.get("channels", tr.G.hparams.get("base_channels")) == 4
    assert validate({})["training"]["baseline_channels"] == 16


def test_load_torch_refuses_pickled_objects_and_names_the_file(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "hparams": {"a": 1}}, tmp_path / "ok.pt")
    assert load_torch(tmp_path / "ok.pt", required=("state_dict",))["hparams"] == {"a": 1}
    with pytest.raises(ArtifactError, match="missing.pt: file not found"):
        load_torch(tmp_path / "missing.pt")
    with pytest.raises(ArtifactError, match=r"ok.pt: not a generator file .*missing \['method'\]"):
        load_torch(tmp_path / "ok.pt", required=("state_dict", "method"), what="generator file")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="junk.pt: not a readable torch file"):
        load_torch(tmp_path / "junk.pt")
    with open(tmp_path / "evil.pt", "wb") as fh:  # a pickled object (could run code): never loaded
        torch.save({"obj": pickle.loads(pickle.dumps(np.random.default_rng(0)))}, fh)
    with pytest.raises(ArtifactError, match="evil.pt"):
        load_torch(tmp_path / "evil.pt")


def test_one_dataset_reader_with_one_range_tolerance(tmp_path):
    images = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    split = np.array(["train"] * 3 + ["test"] * 3)
    save_npz(tmp_path / "ok.npz", images=images, split=split, scan=np.array(["s"] * 6), plane=np.arange(6))
    data = load_dataset(tmp_path / "ok.npz")
    np.testing.assert_array_equal(data["images"], images)
    assert list(data["plane"]) == list(range(6))
    images[0, 0, 0] = 1 + 1e-4  # beyond float rounding: refused by every stage alike
    save_npz(tmp_path / "bad.npz", images=images, split=split)
    with pytest.raises(ArtifactError, match=r"bad.npz: 'images' must lie in \[0, 1\]"):
        load_dataset(tmp_path / "bad.npz")
    code = main(["extract-features", "--dataset", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "f.npz")])
    assert code == 2
    save_npz(tmp_path / "split.npz", images=images[:, :, :4], split=split)
    with pytest.raises(ArtifactError, match="must be \\(N, S, S\\)"):
        load_dataset(tmp_path / "split.npz")


def _dcgan_run(tmp_path, iterations, method="dcgan"):
    cfg = small_cfg(iterations=iterations, checkpoint_every=2, sample_every=100, baseline_channels=4)
    images = tiny_set()
    torch.manual_seed(0)
    train(build_trainer(method, images, cfg, torch.device("cpu")), images, cfg, outputs(tmp_path), seed=5)


def test_loss_log_is_appended_and_survives_resume_without_duplicates_or_gaps(tmp_path):
    _dcgan_run(tmp_path / "full", 6)
    full = read_rows(tmp_path / "full" / "losses.csv")
    # A run killed after step 5: its log holds a row past the last checkpoint (step 4).
    _dcgan_run(tmp_path / "cut", 4)
    log = tmp_path / "cut" / "losses.csv"
    log.write_text(log.read_text() + "5,0.1,0.2,0.0\n")
    _dcgan_run(tmp_path / "cut", 6)
    rows = read_rows(log)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert list(map(drop, rows)) == list(map(drop, full))
    # Snakemake removes the log before rerunning the job: the checkpoint's rows come back.
    _dcgan_run(tmp_path / "gone", 4)
    (tmp_path / "gone" / "losses.csv").unlink()
    _dcgan_run(tmp_path / "gone", 6)
    assert list(map(drop, read_rows(tmp_path / "gone" / "losses.csv"))) == list(map(drop, full))
    # Appended, not rewritten: one header, one line per step.
    lines = (tmp_path / "gone" / "losses.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and len(lines) == 7 and sum(line.startswith("step") for line in lines) == 1
