"""A mask-conditioned generator: truth activity + defect label map -> reference positron slice.

The learned stand-in for the Monte Carlo + reconstruction chain (issue 17 item 4): given what a
user can draw, or what the phantom generator makes (a slice's truth activity map and its
per-pixel defect types), it returns a reference-count positron image with that geometry, so a
labelled image costs one forward pass instead of a simulated scan.

- **Generator** (:class:`ConditionalGenerator`): the enhancement study's plain U-Net
  (``enhance.networks.UNet``) on ``COND_CHANNELS`` = 5 planes (the truth activity in [0, 1]
  and one binary mask per defect type, ``detect.train.TYPES``) returning a mean image and a
  texture amplitude; the output adds the amplitude times white noise through a learned
  correlation kernel. The noise is what lets one label map give many images: the
  reconstruction's speckle is not a function of the truth, and a generator without noise can
  only learn its conditional mean.
- **Discriminator**: the project's PatchGAN (``models.discriminator.PatchDiscriminator``) with
  a first convolution taking the 5 condition planes beside the candidate (pix2pix's
  conditional D judges the pair, not the image alone).
- **Loss**: ``lambda_l1`` * L1 of the mean image + non-saturating GAN loss of the full output
  (pix2pix's L1 + PatchGAN, with the L1 kept off the texture and the GAN term off the mean). With ``lambda_adv`` = 0 it is the
  L1 regression alone (no texture), whose optimum is the conditional median, smooth where the
  real images are speckled; :func:`texture_ratio` measures how much of the real high-frequency texture a
  generator reproduces in regions of uniform activity.
- Every batch in one of the 8 dihedral orientations (conditions and target together); Adam;
  everything seeded on one thread, so the same seed gives the same weights on a CPU.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..enhance.networks import UNet
from ..errors import ArtifactError
from ..io import atomic_path, load_torch
from ..models.discriminator import PatchDiscriminator, depth_for
from ..models.init import init_weights
from ..runtime import progress
from ..train.losses import gan_loss
from .train import TYPES, _dihedral

log = logging.getLogger(__name__)

FORMAT = "positrongan-conditional-1"
# Largest texture amplitude s on the [-1, 1] scale (0.125 on the image's [0, 1] scale, about 3x
# the real interior std of 0.038 on the default data): without a bound one of 9 adversarial
# runs let s grow until the images were mostly noise (validation L1 0.18 instead of 0.015).
MAX_TEXTURE = 0.25
COND_CHANNELS = 1 + len(TYPES)  # truth activity + one mask per defect type


def condition_planes(truth: np.ndarray, labels: np.ndarray, types: int = len(TYPES)) -> np.ndarray:
    """(N, 1 + T, S, S) float32 conditions: truth activity, then one binary mask per type.

    Params:
        truth: (N, S, S) truth activity in [0, 1] (the dataset's ``truth``).
        labels: (N, S, S) integer defect labels (0 background, t + 1 for type t).
        types: number of defect types T.
    Returns:
        The condition planes.
    """
    truth = np.asarray(truth, np.float32)
    labels = np.asarray(labels)
    if truth.ndim != 3 or truth.shape != labels.shape:
        raise ValueError(f"truth {truth.shape} and labels {labels.shape} must both be (N, S, S)")
    masks = np.stack([labels == t + 1 for t in range(types)], axis=1).astype(np.float32)
    return np.concatenate([truth[:, None], masks], axis=1)


class _Heads(nn.Module):
    """The two 1x1 output convolutions of the U-Net's last features: the mean image from the
    features, the texture amplitude from the features detached, so the adversarial gradient that
    trains the amplitude cannot reshape the features the mean is read from."""

    def __init__(self, channels: int):
        super().__init__()
        self.mean = nn.Conv2d(channels, 1, 1)
        self.scale = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mean(x), self.scale(x.detach())], dim=1)


class ConditionalGenerator(nn.Module):
    """The U-Net on the condition planes -> mean image, plus a learned noise texture.

    Output = m(c) + s(c) * (K * z) / ||K||: m and s are two output planes of the enhancement
    U-Net (tanh, and a sigmoid scaled to ``MAX_TEXTURE``), z is white N(0, 1) noise and K a learned ``kernel`` x ``kernel``
    convolution that gives the noise the reconstruction's spatial correlation (blobs of a few
    pixels, not white speckle). The L1 term trains m (and the whole U-Net); the adversarial
    term, which judges m (detached) plus the texture, trains only s's 1x1 head and K, so the
    texture's amplitude and grain come from the discriminator and the mean stays the L1
    regression. When D's gradient reached the U-Net (through m, or through s's features), the
    mean image grew fixed bright blobs or bands (the same in every noise draw) to mimic the
    real hot spots. A noise plane fed to
    the U-Net input instead was ignored by the trained network (pix2pix's own observation): two
    draws differed by a pixel std of 0.006 against a real speckle std of 0.038.

    Params:
        image_size: slice side (divisible by 2**depth).
        channels: channels of the first U-Net level.
        depth: down-sampling steps.
        texture: add the noise texture (False: the output is m alone, the L1 regression).
        kernel: side of the noise kernel K (odd).
    """

    def __init__(self, image_size: int, channels: int, depth: int, texture: bool = True, kernel: int = 15):
        super().__init__()
        self.unet = UNet(image_size, channels, depth)
        first = self.unet.down[0][0][0]
        # The enhancement U-Net takes 2 planes and returns 1; only its ends change.
        self.unet.down[0][0][0] = nn.Conv2d(COND_CHANNELS, first.out_channels, 3, padding=1, bias=False)
        self.unet.head = _Heads(self.unet.head[0].in_channels)
        self.texture = bool(texture)
        self.kernel = nn.Conv2d(1, 1, kernel, bias=False)  # its weight only: see correlated()
        self.hparams = {"image_size": image_size, "channels": channels, "depth": depth, "texture": texture}
        self.hparams["kernel"] = kernel

    def reset_texture(self) -> None:
        """Start K as a Gaussian blob (sigma kernel / 6) and s at 0.05: initialisers meant for
        ReLU layers would give K an arbitrary sign pattern."""
        k = self.kernel.kernel_size[0]
        r = torch.arange(k, dtype=torch.float32) - k // 2
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (k / 6) ** 2))
        with torch.no_grad():
            self.kernel.weight.copy_((g / g.pow(2).sum().sqrt())[None, None])
            self.unet.head.scale.bias.fill_(math.log(0.05 / (MAX_TEXTURE - 0.05)))

    def mean_and_scale(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s), each (B, 1, S, S): the mean image in [-1, 1] and the texture amplitude in
        (0, ``MAX_TEXTURE``)."""
        h = self.unet(cond)
        return torch.tanh(h[:, :1]), MAX_TEXTURE * torch.sigmoid(h[:, 1:])

    def correlated(self, noise: torch.Tensor) -> torch.Tensor:
        """White noise through K / ||K||: unit variance whatever K learns, so s alone sets the
        amplitude and K only the grain."""
        w = self.kernel.weight
        return nn.functional.conv2d(
            nn.functional.pad(noise, [w.shape[-1] // 2] * 4, mode="reflect"), w / w.pow(2).sum().sqrt()
        )

    def forward(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Params: cond (B, 1 + T, S, S), noise (B, 1, S, S). Returns: (B, 1, S, S), about [-1, 1]."""
        m, scale = self.mean_and_scale(cond)
        return m + scale * self.correlated(noise) if self.texture else m


def conditional_discriminator(channels: int, n_layers: int) -> PatchDiscriminator:
    """The PatchGAN judging [conditions, candidate] (``COND_CHANNELS`` + 1 planes)."""
    d = PatchDiscriminator(channels, n_layers)
    first = d.blocks[0][0]
    d.blocks[0][0] = nn.Conv2d(
        COND_CHANNELS + 1, first.out_channels, first.kernel_size, stride=first.stride, padding=first.padding, bias=True
    )
    d.hparams = {**d.hparams, "in_channels": COND_CHANNELS + 1}
    return d


@torch.no_grad()
def generate(
    net: ConditionalGenerator, truth: np.ndarray, labels: np.ndarray, seed: int, batch: int = 64
) -> np.ndarray:
    """Positron slices for given truth and label maps.

    Params:
        net: a trained generator.
        truth: (N, S, S) truth activity in [0, 1].
        labels: (N, S, S) defect labels.
        seed: seeds the noise planes (same seed, same images).
        batch: slices per forward pass.
    Returns:
        (N, S, S) float32 images in [0, 1] (the dataset's reference scale).
    """
    net.eval()
    cond = condition_planes(truth, labels)
    gen = torch.Generator().manual_seed(int(seed))
    out = np.empty((len(cond), cond.shape[-2], cond.shape[-1]), np.float32)
    for i in range(0, len(cond), batch):
        c = torch.from_numpy(cond[i : i + batch])
        z = torch.randn(c.shape[0], 1, *c.shape[2:], generator=gen)
        out[i : i + batch] = ((net(c, z)[:, 0] + 1.0) / 2.0).clamp(0, 1).numpy()
    return out


def interior_mask(truth: np.ndarray, labels: np.ndarray | None = None, margin: int = 3) -> np.ndarray:
    """(N, S, S) pixels of uniform activity: truth >= 0.95 of its maximum, no defect, at least
    ``margin`` pixels from any other value (the blurred wall edge and defects excluded)."""
    truth = np.asarray(truth)
    flat = truth >= 0.95
    if labels is not None:
        flat &= np.asarray(labels) == 0
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # erode within each slice only
    return ndimage.binary_erosion(flat, structure=structure, iterations=margin)


def interior_std(images: np.ndarray, mask: np.ndarray, min_pixels: int = 20) -> np.ndarray:
    """Per-slice standard deviation of ``images`` over ``mask`` (NaN where fewer than
    ``min_pixels``): the reconstruction's noise texture, which a conditional mean lacks."""
    out = np.full(len(images), np.nan)
    for i, (img, m) in enumerate(zip(np.asarray(images, np.float64), np.asarray(mask, bool))):
        if m.sum() >= min_pixels:
            out[i] = img[m].std()
    return out


def texture_ratio(fake: np.ndarray, real: np.ndarray, truth: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Mean interior std of generated over real slices of the same maps (:func:`interior_mask`):
    1 reproduces the real noise level, near 0 is a smooth mean image. NaN without any interior."""
    mask = interior_mask(truth, labels)
    f, r = interior_std(fake, mask), interior_std(real, mask)
    ok = np.isfinite(r)
    if not ok.any() or np.nanmean(r[ok]) == 0:
        return float("nan")
    return float(np.mean(f[ok]) / np.mean(r[ok]))


@dataclass
class ConditionalFit:
    """A trained conditional generator and its record."""

    net: ConditionalGenerator
    seconds: float
    history: list[dict] = field(default_factory=list)


SETTINGS = ("iterations", "batch_size", "lr", "channels", "depth", "d_channels", "lambda_l1", "lambda_adv", "kernel")


def settings_of(gcfg: dict) -> dict:
    """The keyword arguments of :func:`train_conditional` that ``detection.conditional`` sets."""
    return {k: gcfg[k] for k in SETTINGS}


def train_conditional(
    images: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    *,
    iterations: int = 300,
    batch_size: int = 8,
    lr: float = 5e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    channels: int = 16,
    depth: int = 3,
    d_channels: int = 32,
    patch_field_at_256: int = 70,
    lambda_l1: float = 10.0,
    lambda_adv: float = 1.0,
    kernel: int = 15,
    log_every: int = 50,
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    desc: str = "conditional",
) -> ConditionalFit:
    """Train the mask-conditioned generator on (truth, labels) -> image pairs.

    Params:
        images: (N, S, S) reference slices in [0, 1] (the targets).
        truth: (N, S, S) their truth activity in [0, 1].
        labels: (N, S, S) their defect labels.
        iterations: generator steps (one discriminator step before each when adversarial).
        batch_size: pairs per step, drawn at random with replacement.
        lr, betas: Adam settings of G and D.
        channels, depth: the U-Net's first-level width and down-sampling steps.
        d_channels, patch_field_at_256: the PatchGAN's width and receptive field (scaled to S).
        lambda_l1: weight of the L1 term.
        lambda_adv: weight of the GAN term (0: plain L1 regression, no discriminator, no texture).
        kernel: side of the noise texture's correlation kernel (odd).
        log_every: iterations between history rows with validation L1 and texture ratio.
        val: optional (images, truth, labels) scored at each history row.
        seed: seeds weights, batches, orientations and noise.
        desc: progress-bar label.
    Returns:
        :class:`ConditionalFit` with the last weights (eval mode); the GAN's weights are not
        selected on validation L1, which would favour the smooth conditional mean.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, S, S) array, got {images.shape}")
    cond_all = torch.from_numpy(condition_planes(truth, labels))
    if cond_all.shape[0] != len(images) or cond_all.shape[2:] != images.shape[1:]:
        raise ValueError(f"truth/labels {tuple(cond_all.shape)} do not match images {images.shape}")
    size = images.shape[-1]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = init_weights(ConditionalGenerator(size, channels, depth, texture=lambda_adv > 0, kernel=kernel), "kaiming")
    net.reset_texture()
    opt_g = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    disc = None
    if lambda_adv > 0:
        disc = init_weights(conditional_discriminator(d_channels, depth_for(size, patch_field_at_256)))
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    y_all = torch.from_numpy(2.0 * images - 1.0)[:, None]
    history: list[dict] = []
    t0 = time.perf_counter()
    net.train()
    for it in progress(range(1, iterations + 1), desc=desc, unit="it"):
        pick = torch.from_numpy(rng.integers(len(images), size=batch_size))
        k = int(rng.integers(8))
        c, y = _dihedral(cond_all[pick], k), _dihedral(y_all[pick], k)
        z = torch.randn(len(pick), 1, size, size)
        mean, scale = net.mean_and_scale(c)
        texture = scale * net.correlated(z) if net.texture else torch.zeros_like(mean)
        fake = mean + texture
        # What D judges: the texture on a detached mean. The mean image is the L1 regression
        # alone; letting D's gradient reach it too made the mean grow a fixed bright blob (the
        # same in every noise draw) to mimic the real hot spots.
        judged = mean.detach() + texture
        row: dict = {"iteration": it}
        if disc is not None:
            opt_d.zero_grad(set_to_none=True)
            loss_d = 0.5 * (
                gan_loss(disc(torch.cat([c, y], 1)), True) + gan_loss(disc(torch.cat([c, fake.detach()], 1)), False)
            )
            loss_d.backward()
            opt_d.step()
            row["loss_d"] = float(loss_d.detach())
        opt_g.zero_grad(set_to_none=True)
        # L1 on the mean image only: against the noisy output it would pull the texture to zero.
        l1 = (mean - y).abs().mean()
        loss = lambda_l1 * l1
        if disc is not None:
            adv = gan_loss(disc(torch.cat([c, judged], 1)), True)
            loss = loss + lambda_adv * adv
            row["loss_adv"] = float(adv.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"conditional generator: non-finite loss at iteration {it}")
        loss.backward()
        opt_g.step()
        row["loss_l1"] = float(l1.detach()) / 2.0  # on the [0, 1] image scale
        if val is not None and (it % log_every == 0 or it == iterations):
            v_img, v_truth, v_lab = val
            fake_val = generate(net, v_truth, v_lab, seed=seed + it)
            row["val_l1"] = float(np.abs(fake_val - v_img).mean())
            row["val_texture_ratio"] = texture_ratio(fake_val, v_img, v_truth, v_lab)
            net.train()
        history.append(row)
    net.eval()
    seconds = time.perf_counter() - t0
    last = history[-1] if history else {}
    log.info(
        "%s: %d iterations x %d pairs in %.1f s; last train L1 %.4f, val L1 %s, texture ratio %s",
        desc,
        iterations,
        batch_size,
        seconds,
        last.get("loss_l1", float("nan")),
        f"{last['val_l1']:.4f}" if "val_l1" in last else "n/a",
        f"{last['val_texture_ratio']:.3f}" if "val_texture_ratio" in last else "n/a",
    )
    return ConditionalFit(net, seconds, history)


def save_conditional(path: str | Path, net: ConditionalGenerator, meta: dict) -> None:
    """Write the generator (weights, architecture, metadata) atomically."""
    blob = {"format": FORMAT, "state_dict": net.state_dict(), "arch": dict(net.hparams), "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_conditional(path: str | Path) -> ConditionalGenerator:
    """Read a generator written by :func:`save_conditional` (eval mode, ``meta`` attribute).

    Raises:
        ArtifactError: naming the file when it is missing, corrupt or not such a generator.
    """
    blob = load_torch(path, ("format", "state_dict", "arch"), what="conditional generator file")
    if blob["format"] != FORMAT:
        raise ArtifactError(f"{path}: format {blob['format']!r}, expected {FORMAT!r}")
    net = ConditionalGenerator(**blob["arch"])
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not match the stored architecture ({exc})") from None
    net.meta = blob.get("meta", {})
    return net.eval()
