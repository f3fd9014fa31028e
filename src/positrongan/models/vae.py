"""The convolutional variational auto-encoder (paper §3.2).

Encoder: strided 4x4 convolutions halve the image down to 4x4, then two linear heads give
mu and log sigma^2 (eq. 3). Decoder: a linear layer back to 4x4 and transposed 4x4
convolutions up to the image size, tanh output. Images are 1-channel in [-1, 1].

The same network serves the CT prior (trained on CT slices; its encoder gives z for the
attention memory) and the "VAE" baseline on positron images, so nothing in it is CT-specific.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError
from ..io import load_torch

SIZES = (32, 64, 128, 256)


def _channels(image_size: int, base_channels: int) -> list[int]:
    # One stage per halving from image_size to 4; channels double per stage, capped at 8x
    # so a 256 px model does not grow to 2048 channels.
    stages = int(math.log2(image_size)) - 2
    return [base_channels * 2 ** min(i, 3) for i in range(stages)]


class ConvVAE(nn.Module):
    """Convolutional VAE.

    Params:
        image_size: side of the square 1-channel input, one of 32, 64, 128, 256.
        latent_dim: dimension of z.
        base_channels: channels of the first encoder convolution (doubled per stage, capped at 8x).
    """

    def __init__(self, image_size: int, latent_dim: int, base_channels: int):
        super().__init__()
        if image_size not in SIZES:
            raise ValueError(f"image_size must be one of {SIZES}, got {image_size}")
        if latent_dim < 1 or base_channels < 1:
            raise ValueError("latent_dim and base_channels must be positive")
        self.hparams = {"image_size": image_size, "latent_dim": latent_dim, "base_channels": base_channels}
        self.image_size = image_size
        self.latent_dim = latent_dim
        chans = _channels(image_size, base_channels)
        self._top = chans[-1]

        enc: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(chans):
            enc.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:  # no normalisation on the raw image (DCGAN practice)
                enc.append(nn.BatchNorm2d(c))
            enc.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = chans[-1] * 4 * 4
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        self.fc_dec = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = chans[::-1]
        for c, c_next in itertools.pairwise(rev):
            dec += [
                nn.ConvTranspose2d(c, c_next, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.ReLU(inplace=True),
            ]
        dec += [nn.ConvTranspose2d(rev[-1], 1, 4, stride=2, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Params: x (B, 1, S, S) in [-1, 1]. Returns: (mu, logvar), each (B, latent_dim)."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Params: z (B, latent_dim). Returns: images (B, 1, S, S) in [-1, 1]."""
        h = self.fc_dec(z).view(-1, self._top, 4, 4)
        return self.decoder(torch.relu(h))

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): sampling that gradients flow through."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Params: x (B, 1, S, S). Returns: (reconstruction, mu, logvar)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws of z ~ N(0, I). Returns (n, 1, S, S) in [-1, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag sigma^2) || N(0, I) ) per sample, in nats.

    Params:
        mu, logvar: (B, d).
    Returns:
        (B,) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def vae_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO (beta-weighted), averaged over the batch.

    The reconstruction term is the per-image sum of squared errors (a Gaussian decoder with
    fixed variance 1/2), so it and the KL are on the same per-image scale and beta means
    what it means in the beta-VAE paper.

    Params:
        recon, x: (B, 1, S, S).
        mu, logvar: (B, d).
        beta: weight of the KL term.
    Returns:
        (loss, reconstruction term, KL term), each a scalar tensor.
    """
    rec = torch.sum((recon - x).pow(2).flatten(1), dim=1).mean()
    kl = kl_divergence(mu, logvar).mean()
    return rec + beta * kl, rec, kl


@torch.no_grad()
def encode_images(model: ConvVAE, images, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode many images in batches (eval mode, no sampling).

    Params:
        model: a ConvVAE.
        images: (N, S, S) or (N, 1, S, S) array or tensor in [-1, 1].
        batch_size: images per forward pass.
    Returns:
        (mu, logvar), each (N, latent_dim) float32 on the CPU.
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    mus, logvars = [], []
    for i in range(0, x.shape[0], batch_size):
        mu, logvar = model.encode(x[i : i + batch_size].to(device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    model.train(was_training)
    return torch.cat(mus), torch.cat(logvars)


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> ConvVAE:
    """Read ``vae/model.pt`` (written by the training loop: ``hparams`` and ``state_dict``), in eval mode on ``device``.

    Params:
        path: ``vae/model.pt``.
        device: where to put it.
    Returns:
        The ConvVAE.
    Raises:
        ArtifactError: naming the file when it is missing, corrupt or not a VAE.
    """
    blob = load_torch(path, required=("state_dict", "hparams"), what="VAE model file")
    try:
        model = ConvVAE(**blob["hparams"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: VAE weights do not match their hparams ({exc})") from None
    return model.to(device).eval()
