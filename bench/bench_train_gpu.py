"""Training speed of ours, DCGAN and WGAN-GP at the paper's scale on a GPU (issue 16, item 7).

One run measures, at config/paper.yaml's widths (g_channels 128, d_channels 64,
baseline_channels 64, CT latent 128), 256 px, batch 32, bf16 autocast:

- ``ours_before``: ours as it ran before this change: contiguous (NCHW) tensors, the
  for-each Adam, and a host sync (``.item()`` on every loss) after every step;
- ``ours_after``: channels_last, fused Adam, losses kept on the device (the loop syncs once
  per checkpoint interval); ``ours_after_compile`` adds ``training.compile`` (torch.compile);
  ``ours_after_b64``: the same at batch 64 (images/s is the figure to compare);
- ``dcgan`` and ``wgan_gp`` (per-method optimisers of training.optim), before and after.

A step is one generator update (WGAN-GP: with its 5 critic updates). Each case runs
``--warmup`` steps, then steps for ``--seconds`` of wall time, CUDA-synchronised. Writes a JSON
(it/s, images/s, peak memory per case) to the path given. Needs only torch and numpy (no
MONAI, POT, uproot, pydicom or jsonschema): the training configuration is spelled out below
and checked against the config schema when PyYAML is there.

    python bench/bench_train_gpu.py results_gpu.json               # on the GPU (< 4 min)
    python bench/bench_train_gpu.py /tmp/b.json --tiny             # CPU smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from positrongan.train.baselines import DCGANTrainer, WGANGPTrainer  # noqa: E402
from positrongan.train.gan import OursTrainer  # noqa: E402
from positrongan.train.graphs import GraphedStep  # noqa: E402
from positrongan.train.latents import CTLatents  # noqa: E402

# The training section the cases share: the schema's defaults, with config/paper.yaml's widths.
TCFG = {
    "noise_dim": 32,
    "lambda_apg": 1.0,
    "diffaugment": False,
    "g_channels": 128,
    "growth_rate": 16,
    "dense_layers": 3,
    "train_memory": False,
    "memory": "attention",
    "query": "ct",
    "attention_temperature": 1.0,
    "attention_norm": False,
    "wa_lr": None,
    "d_channels": 64,
    "receptive_field": 70,
    "lr": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "ema": None,
    "amp": True,
    "train_encoder": False,
    "compile": False,
    "cuda_graphs": False,
    "latent_dim": 64,
    "baseline_channels": 64,
    "n_critic": 5,
    "gp_weight": 10.0,
    "baseline_apg": 0.0,
    "optim": {
        "dcgan": {"lr": 2e-4, "betas": [0.5, 0.999]},
        "wgan_gp": {"lr": 1e-4, "betas": [0.0, 0.9]},
    },
}
PAPER_KEYS = {"g_channels": 128, "d_channels": 64, "baseline_channels": 64}


def check_against_schema() -> None:
    """The defaults above are the schema's (skipped where PyYAML is missing, e.g. the GPU box)."""
    try:
        import yaml
    except ImportError:
        return
    schema = yaml.safe_load((ROOT / "src/positrongan/config.schema.yaml").read_text())
    props = schema["properties"]["training"]["properties"]
    for key, value in TCFG.items():
        if key in PAPER_KEYS or key == "optim":
            continue
        assert props[key]["default"] == value, f"bench TCFG[{key!r}] = {value!r}, schema {props[key]['default']!r}"
    for m in ("dcgan", "wgan_gp"):
        defaults = {k: v["default"] for k, v in props["optim"]["properties"][m]["properties"].items()}
        assert defaults == TCFG["optim"][m], f"bench TCFG['optim'][{m!r}] = {TCFG['optim'][m]!r}, schema {defaults!r}"
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())["training"]
    assert all(paper[k] == v for k, v in PAPER_KEYS.items()), "config/paper.yaml widths changed"


def as_before(trainer) -> None:
    """Undo this change's speed options: NCHW tensors and the for-each (unfused) Adam."""
    for net in trainer.nets.values():
        net.to(memory_format=torch.contiguous_format)
    for name, opt in trainer.opts.items():
        groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt.param_groups]
        for g in groups:
            g.pop("fused", None)
        trainer.opts[name] = torch.optim.Adam(groups, fused=False)
    trainer.compiled = {}
    trainer.g, trainer.d = trainer.G, trainer.D


def build(method: str, size: int, batch: int, device: torch.device, compile_, tiny: bool):
    tcfg = dict(TCFG, compile=bool(compile_))
    if tiny:
        tcfg.update(g_channels=16, d_channels=8, baseline_channels=8, growth_rate=4, dense_layers=1)
    images = torch.rand(max(64, batch), 1, size, size, device=device) * 2 - 1
    if method == "ours":
        latent = 16 if tiny else 128  # config/paper.yaml's vae.latent_dim
        memory = torch.randn(205, 32)  # the default run's memory: 205 slots, 32 PCA features
        lat = CTLatents(torch.randn(500, latent), torch.full((500, latent), -2.0))
        trainer = OursTrainer(lat, memory, size, tcfg, device)
        if isinstance(compile_, str):  # a torch.compile mode other than the default (e.g. CUDA graphs)
            trainer.compiled = {k: torch.compile(v, mode=compile_) for k, v in trainer.nets.items()}
            trainer.g, trainer.d = trainer.compiled["G"], trainer.compiled["D"]
        return trainer, images
    cls = {"dcgan": DCGANTrainer, "wgan_gp": WGANGPTrainer}[method]
    trainer = cls(size, tcfg, device)
    if method == "wgan_gp":
        trainer.set_pool(images)
    return trainer, images


def measure(step, images, batch: int, warmup: int, seconds: float, sync_each_step: bool, device) -> dict:
    """it/s of ``step`` (trainer.step or its CUDA graph) after ``warmup`` untimed steps."""

    def one():
        real = images[torch.randint(images.shape[0], (batch,), device=device)]
        losses = step(real)
        if sync_each_step:  # the old loop: every loss to the host after every step
            {k: float(v) for k, v in losses.items()}
        return losses

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    sync()
    warm_s = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while True:
        losses = one()
        steps += 1
        if steps % 10 == 0:
            sync()
            if time.perf_counter() - t0 >= seconds:
                break
    sync()
    dt = time.perf_counter() - t0
    finite = all(torch.isfinite(torch.as_tensor(v)).all().item() for v in losses.values())
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "it_per_s": steps / dt,
        "images_per_s": steps * batch / dt,
        "steps": steps,
        "seconds": dt,
        "warmup_seconds": warm_s,
        "peak_gib": peak,
        "finite": finite,
    }


def profile(step, images, batch: int, sync_each_step: bool, device, name: str, path: str) -> float | None:
    """Append the top kernels of 5 steps to ``path``; return the fraction of wall time the GPU
    was busy (low: launch- or host-bound, where CUDA graphs and fusion pay; high: kernel-bound)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(5):
            losses = step(images[torch.randint(images.shape[0], (batch,), device=device)])
            if sync_each_step:
                {k: float(v) for k, v in losses.items()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    busy = None
    if device.type == "cuda":
        kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        busy = kernel_us * 1e-6 / wall
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as f:
        f.write(f"=== {name}: 5 steps, {wall:.3f} s wall, GPU busy {busy}\n")
        f.write(events.table(sort_by=sort, row_limit=25) + "\n")
    return busy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: 32 px, narrow networks, few steps")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed wall seconds per case")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps per case (compile happens here)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile case")
    ap.add_argument("--cases", nargs="+", metavar="NAME", help="run only these cases (default: all)")
    ap.add_argument("--profile", metavar="TXT", help="also profile 5 steps of each ours case into this file")
    args = ap.parse_args(argv)
    check_against_schema()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    size, batch = (32, 8) if args.tiny else (256, 32)
    seconds, warmup = (0.5, 2) if args.tiny else (args.seconds, args.warmup)
    # (name, method, batch, compile, before, CUDA graphs)
    cases = [
        ("ours_before", "ours", batch, False, True, False),
        ("ours_after", "ours", batch, False, False, False),
        ("ours_after_b64", "ours", 2 * batch, False, False, False),
        ("dcgan_before", "dcgan", batch, False, True, False),
        ("dcgan_after", "dcgan", batch, False, False, False),
        ("wgan_gp_before", "wgan_gp", batch, False, True, False),
        ("wgan_gp_after", "wgan_gp", batch, False, False, False),
    ]
    if device.type == "cuda":
        cases[3:3] = [("ours_graphs", "ours", batch, False, False, True), ("ours_graphs_b64", "ours", 2 * batch, False, False, True)]
        cases += [("dcgan_graphs", "dcgan", batch, False, False, True), ("wgan_gp_graphs", "wgan_gp", batch, False, False, True)]
    if device.type == "cuda" and not args.no_compile:
        # Last, so that a slow compile cannot cost the other cases.
        cases.append(("ours_after_compile", "ours", batch, True, False, False))
        cases.append(("ours_graphs_compile", "ours", batch, True, False, True))
    if args.cases:
        cases = [c for c in cases if c[0] in args.cases]
    results = {}
    for name, method, b, compile_, before, graphs in cases:
        torch.manual_seed(0)
        trainer, images = build(method, size, b, device, compile_, args.tiny)
        if before:
            as_before(trainer)
        try:
            t0 = time.perf_counter()
            step = GraphedStep(trainer, images[:b]) if graphs else trainer.step
            capture_s = time.perf_counter() - t0
            r = measure(step, images, b, warmup if not compile_ else 3 * warmup, seconds, before, device)
            if graphs:
                r["capture_seconds"] = capture_s
        except Exception as exc:  # one failing case (e.g. compile) must not lose the others
            r = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        r.update(method=method, batch=b, compile=compile_, graphs=graphs, settings="before" if before else "after")
        if args.profile and method == "ours" and "error" not in r:
            try:
                r["gpu_busy"] = profile(step, images, b, before, device, name, args.profile)
            except Exception as exc:  # the profile is a diagnostic: never lose the timing for it
                r["gpu_busy"] = f"profile failed: {type(exc).__name__}: {exc}"[:300]
        results[name] = r
        print(
            f"{name:22s} {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})}",
            flush=True,
        )
        del trainer, images
        if device.type == "cuda":
            torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps({"results": results}, indent=2))  # kept if a later case hangs
    if "ours_before" in results and "it_per_s" in results["ours_after"]:
        results["ours_speedup"] = results["ours_after"]["it_per_s"] / results["ours_before"]["it_per_s"]
        for case in ("ours_after_compile", "ours_graphs", "ours_graphs_b64", "ours_graphs_compile"):
            if "it_per_s" in results.get(case, {}):
                speedup = results[case]["it_per_s"] / results["ours_before"]["it_per_s"]
                results["ours_speedup_" + case.removeprefix("ours_").removeprefix("after_")] = speedup
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "image_size": size,
        "batch": batch,
        "amp": "bf16" if device.type == "cuda" else "off (CPU)",
        "widths": {k: v for k, v in TCFG.items() if k in PAPER_KEYS} if not args.tiny else "tiny",
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
