"""Training of the learned enhancement methods with one matched budget.

Every learned method draws ``enhancement.iterations`` mini-batches of ``batch_size`` training
pairs (slice, fraction) at random from the train split (the same number of pairs seen by every
method), with the same random flips and quarter turns of input and target, the same Adam
settings, and the same model selection: the generator is scored on ``val_pairs`` pairs of the
validation split (mean L1 against the reference; evenly spaced slices, every fraction) every
``val_every`` iterations and at the end, and the best-scoring weights are kept.

- ``unet``: L1.
- ``pix2pix`` (Isola et al. 2017): the same U-Net, conditional PatchGAN, L_GAN + lambda_l1 L1
  (lambda_l1 = 100), D loss halved as in pix2pix.
- ``ours``: the dense memory U-Net, the same conditional PatchGAN,
  lambda_l1 L1 + lambda_apg L_APG + lambda_adv L_GAN; L_APG (eq. 9, ``train.losses.apg_loss``)
  matches the discriminator's batch-mean intermediate features of (input, reference) and
  (input, enhanced) pairs.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.discriminator import depth_for
from ..models.init import init_weights
from ..runtime import progress
from ..train.losses import apg_loss, gan_loss
from .data import PairSet, network_input
from .networks import DenseMemoryUNet, UNet, conditional_patch_discriminator

log = logging.getLogger(__name__)

LEARNED = ("ours", "unet", "pix2pix")
CLASSICAL = ("gaussian", "osem_early", "map_rdp")
METHODS = LEARNED + CLASSICAL
ADVERSARIAL = ("ours", "pix2pix")


@dataclass
class FitResult:
    """A trained generator and its record."""

    net: torch.nn.Module
    train_seconds: float
    best_iteration: int
    history: list[dict] = field(default_factory=list)


def build(method: str, ecfg: dict, image_size: int, memory: np.ndarray | None) -> torch.nn.Module:
    """The generator of a learned method from the ``enhancement`` config, He-initialised (ReLU
    networks; pix2pix's N(0, 0.02) leaves a plain U-Net's output near 0 for hundreds of steps,
    which a short budget cannot afford). Discriminators keep pix2pix's N(0, 0.02).

    Params:
        method: ``ours``, ``unet`` or ``pix2pix``.
        ecfg: the ``enhancement`` section.
        image_size: the dataset's slice side.
        memory: (M, k) positron feature memory (ours only).
    Returns:
        The initialised network.
    """
    if method in ("unet", "pix2pix"):
        return init_weights(UNet(image_size, ecfg["unet_channels"], ecfg["unet_depth"]), "kaiming")
    if method == "ours":
        if memory is None:
            raise ValueError("ours needs the positron feature memory")
        net = DenseMemoryUNet(
            image_size,
            ecfg["dense_channels"],
            ecfg["dense_growth"],
            ecfg["dense_layers"],
            ecfg["dense_depth"],
            torch.as_tensor(memory, dtype=torch.float32),
            ecfg["query_dim"],
            ecfg["memory_mode"],
        )
        return init_weights(net, "kaiming")
    raise ValueError(f"{method!r} is not a learned enhancement method {LEARNED}")


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # One of the 8 symmetries of the square for the whole batch: the tubes have no preferred
    # orientation in the transverse plane, and input and target move together.
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    if flip:
        x, y = torch.flip(x, (3,)), torch.flip(y, (3,))
    return x, y


@torch.no_grad()
def predict(net: torch.nn.Module, low: np.ndarray, fractions: np.ndarray, device, batch: int = 64) -> np.ndarray:
    """Enhance (N, F, S, S) low-count slices -> (N, F, S, S) float32 in [0, 1]."""
    net.eval()
    n, f, s, _ = low.shape
    x = network_input(low, fractions)
    out = np.empty((len(x), s, s), dtype=np.float32)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).to(device)
        out[i : i + batch] = ((net(xb)[:, 0] + 1.0) / 2.0).clamp(0, 1).cpu().numpy()
    return out.reshape(n, f, s, s)


def fit(
    method: str,
    ecfg: dict,
    train: PairSet,
    val: PairSet,
    memory: np.ndarray | None,
    seed: int,
    device,
) -> FitResult:
    """Train one learned method on the training pairs, select on validation.

    Params:
        method: ``ours``, ``unet`` or ``pix2pix``.
        ecfg: the ``enhancement`` config section.
        train, val: the train and val pairs (val may be empty: the last weights are kept).
        memory: the positron feature memory (ours).
        seed: the run's derived seed (weights, batches, augmentation).
        device: torch device.
    Returns:
        :class:`FitResult` with the selected generator (in eval mode, on ``device``).
    """
    if len(train) == 0:
        raise ValueError("the train split has no slice to learn enhancement from")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = train.reference.shape[-1]
    net = build(method, ecfg, size, memory).to(device)
    disc = None
    betas = (ecfg["beta1"], ecfg["beta2"])
    opt_g = torch.optim.Adam(net.parameters(), lr=ecfg["lr"], betas=betas)
    if method in ADVERSARIAL:
        disc = init_weights(
            conditional_patch_discriminator(ecfg["d_channels"], depth_for(size, ecfg["patch_field_at_256"]))
        ).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=ecfg["lr"], betas=betas)
    x_all = torch.from_numpy(network_input(train.low, train.fractions))
    f = train.low.shape[1]
    y_all = torch.from_numpy(2.0 * train.reference - 1.0)[:, None]
    x_val = y_val = None
    if len(val):
        # A fixed, evenly spaced subset of the val pairs (every fraction of each picked slice):
        # scoring all of them every val_every iterations would cost as much as the training.
        keep = np.unique(
            np.linspace(0, len(val) - 1, min(len(val), max(1, ecfg["val_pairs"] // f))).round().astype(int)
        )
        x_val = network_input(val.low[keep], val.fractions)
        y_val = torch.from_numpy(np.repeat(2.0 * val.reference[keep] - 1.0, f, axis=0)[:, None])
    bs, iters, every = ecfg["batch_size"], ecfg["iterations"], ecfg["val_every"]
    history, best, best_state, best_it = [], np.inf, None, iters

    @torch.no_grad()
    def validate() -> float:
        net.eval()
        total = 0.0
        for i in range(0, len(x_val), 64):
            xb = torch.from_numpy(x_val[i : i + 64]).to(device)
            total += float((net(xb) - y_val[i : i + 64].to(device)).abs().sum()) / 2.0  # [0, 1] scale
        net.train()
        return total / y_val.numel()

    t0 = time.perf_counter()
    net.train()
    for it in progress(range(1, iters + 1), desc=f"enhance {method}"):
        pick = rng.integers(len(x_all), size=bs)
        xb, yb = x_all[pick], y_all[pick // f]
        if ecfg["augment"]:
            xb, yb = _augment(xb, yb, rng)
        xb, yb = xb.to(device), yb.to(device)
        fake = net(xb)
        row = {"iteration": it}
        if disc is not None:
            opt_d.zero_grad(set_to_none=True)
            d_real = disc(torch.cat([xb, yb], 1))
            d_fake = disc(torch.cat([xb, fake.detach()], 1))
            loss_d = 0.5 * (gan_loss(d_real, True) + gan_loss(d_fake, False))
            loss_d.backward()
            opt_d.step()
            row["loss_d"] = float(loss_d.detach())
        opt_g.zero_grad(set_to_none=True)
        l1 = (fake - yb).abs().mean()
        if method == "unet":
            loss = l1
        else:
            logits, fake_feats = disc(torch.cat([xb, fake], 1), features=True)
            adv = gan_loss(logits, True)
            loss = ecfg["lambda_l1"] * l1 + (1.0 if method == "pix2pix" else ecfg["lambda_adv"]) * adv
            row["loss_adv"] = float(adv.detach())
            if method == "ours" and ecfg["lambda_apg"] > 0:
                with torch.no_grad():
                    _, real_feats = disc(torch.cat([xb, yb], 1), features=True)
                apg = apg_loss(real_feats, fake_feats)
                loss = loss + ecfg["lambda_apg"] * apg
                row["loss_apg"] = float(apg.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"enhance {method}: non-finite generator loss at iteration {it}")
        loss.backward()
        opt_g.step()
        row["loss_l1"] = float(l1.detach()) / 2.0
        if x_val is not None and (it % every == 0 or it == iters):
            row["val_l1"] = validate()
            if row["val_l1"] < best:
                best, best_it = row["val_l1"], it
                best_state = copy.deepcopy(net.state_dict())
        history.append(row)
    seconds = time.perf_counter() - t0
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    log.info(
        "%s: %d iterations x %d pairs in %.1f s; best val L1 %.4f at iteration %d",
        method,
        iters,
        bs,
        seconds,
        best,
        best_it,
    )
    return FitResult(net, seconds, best_it, history)
