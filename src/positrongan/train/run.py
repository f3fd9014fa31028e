"""The ``train`` stage: read one method's inputs, build its trainer, run the shared loop."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.ct import load_corpus
from ..errors import ConfigError
from ..features.extract import load_memory
from ..models.vae import load_vae
from .data import training_images
from .latents import CTEncoderLatents, CTLatents, load_latents
from .loop import Outputs, train
from .registry import build_trainer, get

log = logging.getLogger(__name__)


def query_source(
    cfg: dict,
    size: int,
    device: torch.device,
    latents: str | Path | None,
    vae_model: str | Path | None = None,
    ct_root: str | Path | None = None,
) -> tuple[nn.Module, tuple[np.ndarray, ...]]:
    """Where a memory method's queries z come from during training.

    The precomputed CT latents, or with ``training.train_encoder`` the CT VAE's encoder on the
    CT slices (fine-tuned jointly).

    Params:
        cfg: the whole config (``training``, and ``ct`` for the encoder).
        size: training image side (the CT slices are read at it).
        device: torch device.
        latents: ``vae/latents.npz``.
        vae_model, ct_root: ``vae/model.pt`` and the CT corpus folder (``train_encoder`` only).
    Returns:
        (the query module, the arrays it depends on, for the run's fingerprint).
    Raises:
        ConfigError: an input the configuration needs was not given.
    """
    if not cfg["training"]["train_encoder"]:
        if not latents:
            raise ConfigError("a method with a memory needs --latents")
        mu, logvar = load_latents(latents)
        return CTLatents(torch.from_numpy(mu), torch.from_numpy(logvar)), (mu, logvar)
    if not vae_model or not ct_root:
        raise ConfigError("config key 'training.train_encoder' = true needs --vae-model and --ct-root")
    vae = load_vae(vae_model, device).train()
    ct = torch.from_numpy(load_corpus(cfg["ct"], ct_root, size))[:, None].float().to(device)
    return CTEncoderLatents(vae, ct), (ct.cpu().numpy(),)


def subsample(images: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``n`` of the training images drawn without replacement with the run's seed
    (``training.train_images``, the data-scarcity curve), in their dataset order; all for None.

    The same draw applies to any array with one row per training image (the memory: see
    :func:`train_method`), since it depends only on ``len(images)``, ``n`` and ``seed``.

    Raises:
        ConfigError: n exceeds the training split.
    """
    if n is None:
        return images
    if n > len(images):
        raise ConfigError(
            f"config key 'training.train_images' = {n} but the training split holds only {len(images)} images"
        )
    keep = np.sort(np.random.default_rng([seed, 0x5CA2]).choice(len(images), n, replace=False))
    return images[keep]


def train_method(
    method: str,
    cfg: dict,
    seed: int,
    dataset: str | Path,
    out: Outputs,
    device: torch.device,
    features: str | Path | None = None,
    latents: str | Path | None = None,
    vae_model: str | Path | None = None,
    ct_root: str | Path | None = None,
) -> dict:
    """Train (or resume) one registered method on the training split of the dataset.

    Params:
        method: a registered method name.
        cfg: the whole config.
        seed: the run's seed.
        dataset: ``dataset/positron.npz``.
        out: the four outputs.
        device: torch device.
        features, latents, vae_model, ct_root: the inputs of methods with a memory.
    Returns:
        The generator.pt blob written.
    """
    spec = get(method)
    tcfg = cfg["training"]
    all_images = training_images(dataset)
    images = (torch.from_numpy(subsample(all_images, tcfg["train_images"], seed))[:, None] * 2 - 1).to(device)
    size = images.shape[-1]
    log.info("%s: %d training images of %d px on %s", method, len(images), size, device)
    memory = queries = None
    extra: tuple[np.ndarray, ...] = ()
    if spec.memory:
        if not features or not latents:
            raise ConfigError(f"method '{method}' needs --features and --latents")
        memory_np = load_memory(features)
        if tcfg["train_images"] is not None:
            # A data-scarce run must not see the other training images through its memory: keep
            # the memory rows of the images it trains on (one row per training image, in dataset
            # order). The PCA/PCANet basis itself was fitted on the whole training split.
            if len(memory_np) != len(all_images):
                raise ConfigError(
                    f"config key 'training.train_images' needs one memory row per training image: {features} "
                    f"has {len(memory_np)} rows for {len(all_images)} training images"
                )
            memory_np = subsample(memory_np, tcfg["train_images"], seed)
        memory = torch.from_numpy(memory_np)
        queries, depends = query_source(cfg, size, device, latents, vae_model, ct_root)
        extra = (memory_np, *depends)
    torch.manual_seed(seed)  # network initialisation
    trainer = build_trainer(method, images, tcfg, device, memory=memory, latents=queries)
    return train(trainer, images, tcfg, out, seed, data_fingerprint=extra)
