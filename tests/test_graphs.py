"""Whole-step CUDA graphs (training.cuda_graphs): the warm-up leaves no trace, and a replayed
step computes what the eager step computes."""

import pytest
import torch
from helpers import outputs, read_rows, small_cfg, tiny_set
from positrongan.train.baselines import DCGANTrainer, WGANGPTrainer
from positrongan.train.gan import OursTrainer
from positrongan.train.graphs import GraphedStep, _restore, _snapshot
from positrongan.train.latents import CTLatents
from positrongan.train.loop import train


def _ours(device, **over):
    torch.manual_seed(0)
    latents = CTLatents(torch.randn(20, 6), torch.full((20, 6), -2.0))
    return OursTrainer(latents, torch.randn(12, 5), 32, small_cfg(**over), device)


def _params(trainer):
    return {f"{k}.{n}": t.detach().clone() for k, net in trainer.nets.items() for n, t in net.state_dict().items()}


def test_restore_undoes_steps_in_place_and_zeroes_new_optimiser_state():
    images = tiny_set()
    tr = _ours(torch.device("cpu"))
    before = _params(tr)
    tensors = {f"{k}.{n}": t for k, net in tr.nets.items() for n, t in net.state_dict().items()}
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    snap = _snapshot(tr)
    for _ in range(3):
        tr.step(images[:8])
    assert any(not torch.equal(before[k], v) for k, v in _params(tr).items())
    _restore(tr, snap)
    after = {f"{k}.{n}": t for k, net in tr.nets.items() for n, t in net.state_dict().items()}
    for k, t in after.items():
        assert t.data_ptr() == tensors[k].data_ptr(), f"{k} was replaced, not restored in place"
        assert torch.equal(t, before[k]), k
    for opt in tr.opts.values():
        assert opt.state and all(torch.count_nonzero(v) == 0 for s in opt.state.values() for v in s.values())
    assert torch.equal(torch.rand(3), expected_draw)  # the random state is put back too


def test_graphs_need_a_cuda_device():
    tr = _ours(torch.device("cpu"))
    with pytest.raises(ValueError, match="cuda_graphs"):
        GraphedStep(tr, tiny_set()[:8])


def test_the_option_is_ignored_on_the_cpu(tmp_path):
    images = tiny_set()
    runs = {}
    for graphs in (False, True):
        cfg = small_cfg(iterations=4, checkpoint_every=2, sample_every=4, cuda_graphs=graphs)
        train(_ours(torch.device("cpu")), images, cfg, outputs(tmp_path / str(graphs)), seed=1)
        runs[graphs] = [r["loss_d"] for r in read_rows(tmp_path / str(graphs) / "losses.csv")]
    assert runs[True] == runs[False] and len(runs[True]) == 4


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["ours", "dcgan", "wgan_gp"])  # wgan_gp: captures, though it trains eagerly
def test_a_replayed_step_computes_the_eager_step(method, monkeypatch):
    device = torch.device("cuda")
    images = tiny_set().to(device)
    cfg = small_cfg(amp=False, baseline_channels=8, latent_dim=8, n_critic=2)

    def build():
        torch.manual_seed(0)
        if method == "ours":
            return _ours(device, amp=False)
        cls = {"dcgan": DCGANTrainer, "wgan_gp": WGANGPTrainer}[method]
        tr = cls(32, cfg, device)
        if method == "wgan_gp":
            tr.set_pool(images)
        return tr

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    eager, graphed = build(), build()
    start = _params(graphed)
    step = GraphedStep(graphed, images[:8])
    assert all(torch.equal(start[k], v) for k, v in _params(graphed).items()), "the warm-up left a trace"
    losses = {}
    for name, tr, fn in (("eager", eager, eager.step), ("graphed", graphed, step)):
        torch.manual_seed(7)
        rows = []
        for _ in range(4):
            batch = images[torch.randint(images.shape[0], (8,), device=device)]
            rows.append({k: float(v) for k, v in fn(batch).items()})
        losses[name] = rows
    for row_e, row_g in zip(losses["eager"], losses["graphed"]):
        for k in row_e:
            assert row_g[k] == pytest.approx(row_e[k], rel=1e-4, abs=1e-5), (k, row_e, row_g)
    pe, pg = _params(eager), _params(graphed)
    for k in pe:
        assert torch.allclose(pe[k].float(), pg[k].float(), rtol=1e-4, atol=1e-5), k


@pytest.mark.gpu
def test_the_loop_trains_with_graphs_as_without(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    device = torch.device("cuda")
    images = tiny_set().to(device)
    runs = {}
    for graphs in (False, True):
        cfg = small_cfg(amp=False, iterations=6, checkpoint_every=2, sample_every=3, cuda_graphs=graphs)
        blob = train(_ours(device, amp=False), images, cfg, outputs(tmp_path / str(graphs)), seed=1)
        runs[graphs] = [float(r["loss_g"]) for r in read_rows(tmp_path / str(graphs) / "losses.csv")]
        assert blob["iterations"] == 6 and (tmp_path / str(graphs) / "samples.png").exists()
    assert len(runs[True]) == 6 and len(set(runs[True])) == 6  # a fresh loss each step, not one buffer
    assert runs[True] == pytest.approx(runs[False], rel=1e-4, abs=1e-5)
