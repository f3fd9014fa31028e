"""The anchors a user would pick instead of ours for about 200 images (issue 16, item 3):

- ``fastgan``: :mod:`positrongan.models.fastgan` (Liu et al. 2021): hinge loss, the
  discriminator's self-supervised reconstruction of real images added to its loss, Adam
  2e-4, betas (0.5, 0.999) (the paper's code). ``training.diffaugment`` adds DiffAugment
  (the paper trains with it); ``training.baseline_apg`` ours' feature matching.
- ``diffusion``: :mod:`positrongan.models.diffusion`, MONAI's DDPM UNet: the noise-prediction
  MSE at a uniform random step (Ho et al. 2020, Algorithm 1); one update = one Adam step on
  one real batch; samples by DDIM (eta 0) in ``training.ddim_steps`` steps.

The DiffAugment GAN row of the study is DCGAN with ``training.diffaugment`` (a variant).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.diffaugment import diff_augment
from ..models.diffusion import DiffusionGenerator
from ..models.fastgan import FastGANDiscriminator, FastGANGenerator
from .baselines import optimiser
from .latents import prior
from .loop import Trainer, autocast_for, fast_device_setup
from .losses import apg_loss

log = logging.getLogger(__name__)


class FastGANTrainer(Trainer):
    method = "fastgan"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        self.device = device
        self.latent_dim = tcfg["latent_dim"]
        self.G = FastGANGenerator(self.latent_dim, image_size, tcfg["baseline_channels"]).to(device)
        self.D = FastGANDiscriminator(image_size, tcfg["baseline_channels"]).to(device)
        self.nets = {"G": self.G, "D": self.D}
        self.opts = {k: optimiser(tcfg, self.method, net.parameters(), device) for k, net in self.nets.items()}
        self.autocast = autocast_for(device, tcfg["amp"])
        self.augment = tcfg["diffaugment"]
        self.lambda_apg = tcfg["baseline_apg"]
        self.compiled: dict[str, nn.Module] = {}
        fast_device_setup(self, {}, device)  # channels_last only: the decoders' crops do not compile well
        cap = self.capacity()
        log.info("fastgan: G %d parameters, D %d parameters (decoders included)", cap["G"], cap["D"])

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return FastGANGenerator(**hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        return net(prior(n, net.latent_dim, next(net.parameters()).device, generator))

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x) if self.augment else x

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        part = int(torch.randint(4, ()))  # the quarter the decoder reconstructs (torch's RNG)
        with self.autocast():
            fake = self.G(torch.randn(n, self.latent_dim, device=self.device))
            logits_real, rec = self.D.reconstruction_loss(self._aug(real), part)
            logits_fake = self.D(self._aug(fake.detach()))
            # Hinge loss (the paper's code), plus the self-supervised reconstruction of real images.
            hinge = F.relu(1 - logits_real.float()).mean() + F.relu(1 + logits_fake.float()).mean()
            loss_d = hinge + rec.float()
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()
        with self.autocast():
            if self.lambda_apg > 0:
                with torch.no_grad():
                    _, real_feats = self.D(self._aug(real), features=True)
                logits, fake_feats = self.D(self._aug(fake), features=True)
                apg = apg_loss(real_feats, fake_feats)
            else:
                logits, apg = self.D(self._aug(fake)), torch.zeros((), device=self.device)
            loss_g = -logits.float().mean() + self.lambda_apg * apg
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "recon": rec.detach(), "loss_apg": apg.detach()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        was = self.G.training
        self.G.eval()
        out = self.G(torch.randn(n, self.latent_dim, generator=generator, device=self.device))
        self.G.train(was)
        return out

    def export(self) -> dict[str, Any]:
        return {"hparams": dict(self.G.hparams), "state_dict": {k: v.cpu() for k, v in self.G.state_dict().items()}}


class DiffusionTrainer(Trainer):
    method = "diffusion"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        self.device = device
        self.G = DiffusionGenerator(
            image_size, tcfg["baseline_channels"], tcfg["diffusion_timesteps"], tcfg["ddim_steps"]
        ).to(device)
        self.scheduler = self.G.train_scheduler()
        self.nets = {"G": self.G}
        self.opts = {"G": optimiser(tcfg, self.method, self.G.parameters(), device)}
        self.autocast = autocast_for(device, tcfg["amp"])
        log.info(
            "diffusion: UNet %d parameters, T = %d, DDIM %d steps",
            self.capacity()["G"],
            self.G.timesteps,
            self.G.ddim_steps,
        )

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return DiffusionGenerator(**hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        return net.sample(n, generator)

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        noise = torch.randn_like(real)
        t = torch.randint(0, self.G.timesteps, (n,), device=self.device)
        noisy = self.scheduler.add_noise(original_samples=real, noise=noise, timesteps=t)
        with self.autocast():
            loss = F.mse_loss(self.G(noisy, t).float(), noise)
        self.opts["G"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["G"].step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        was = self.G.training
        self.G.eval()
        out = self.G.sample(n, generator)
        self.G.train(was)
        return out

    def write_grid(self, path, generator: torch.Generator) -> None:
        # 16 images, not 64: each costs ddim_steps UNet passes.
        from .loop import save_grid

        save_grid(self.sample(16, generator), path, nrow=4)

    def export(self) -> dict[str, Any]:
        return {"hparams": dict(self.G.hparams), "state_dict": {k: v.cpu() for k, v in self.G.state_dict().items()}}
