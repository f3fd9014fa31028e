"""Training of the Table 1 baselines on the positron images, with the same budget as ours
(``training.iterations`` generator updates, same batch size and Adam settings):

- ``vae``: :class:`~positrongan.models.vae.ConvVAE` on the positron images (negative ELBO);
  one update = one Adam step; samples decode z ~ N(0, I).
- ``dcgan``: DCGAN generator and discriminator, non-saturating GAN loss.
- ``wgan_gp``: the same generator, a batch-norm-free critic, Wasserstein loss with gradient
  penalty; ``n_critic`` critic updates (each on its own real batch) per generator update.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..models.baselines import DCGANDiscriminator, DCGANGenerator, wgan_critic
from ..models.vae import ConvVAE, vae_loss
from .latents import prior
from .loop import Trainer, autocast_for
from .losses import gan_loss, gradient_penalty

log = logging.getLogger(__name__)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class VAETrainer(Trainer):
    method = "vae"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        self.device = device
        self.beta = tcfg["vae_beta"]
        self.G = ConvVAE(image_size, tcfg["latent_dim"], tcfg["baseline_channels"]).to(device)
        self.nets = {"G": self.G}
        self.opts = {"G": torch.optim.Adam(self.G.parameters(), lr=tcfg["lr"], betas=(tcfg["beta1"], tcfg["beta2"]))}
        self.autocast = autocast_for(device, tcfg["amp"])
        log.info("vae baseline: %d parameters", _count(self.G))

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return ConvVAE(**hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        return net.decode(prior(n, net.latent_dim, next(net.parameters()).device, generator))

    def step(self, real: torch.Tensor) -> dict[str, float]:
        with self.autocast():
            recon, mu, logvar = self.G(real)
            loss, rec, kl = vae_loss(recon.float(), real, mu.float(), logvar.float(), self.beta)
        self.opts["G"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["G"].step()
        return {"loss": loss.item(), "recon": rec.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        was = self.G.training
        self.G.eval()
        out = self.G.decode(torch.randn(n, self.G.latent_dim, generator=generator, device=self.device))
        self.G.train(was)
        return out

    def export(self) -> dict[str, Any]:
        return {"hparams": dict(self.G.hparams), "state_dict": {k: v.cpu() for k, v in self.G.state_dict().items()}}


class _GANTrainer(Trainer):
    def __init__(self, image_size: int, tcfg: dict, device: torch.device, critic: bool):
        self.device = device
        self.latent_dim = tcfg["latent_dim"]
        self.G = DCGANGenerator(self.latent_dim, image_size, tcfg["baseline_channels"]).to(device)
        self.D = (wgan_critic if critic else DCGANDiscriminator)(image_size, tcfg["baseline_channels"]).to(device)
        betas = (tcfg["beta1"], tcfg["beta2"])
        self.nets = {"G": self.G, "D": self.D}
        self.opts = {
            "G": torch.optim.Adam(self.G.parameters(), lr=tcfg["lr"], betas=betas),
            "D": torch.optim.Adam(self.D.parameters(), lr=tcfg["lr"], betas=betas),
        }
        self.autocast = autocast_for(device, tcfg["amp"])
        log.info("%s baseline: G %d parameters, D %d parameters", self.method, _count(self.G), _count(self.D))

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return DCGANGenerator(**hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        return net(prior(n, net.latent_dim, next(net.parameters()).device, generator))

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        was = self.G.training
        self.G.eval()
        out = self.G(self._z(n, generator))
        self.G.train(was)
        return out

    def export(self) -> dict[str, Any]:
        return {"hparams": dict(self.G.hparams), "state_dict": {k: v.cpu() for k, v in self.G.state_dict().items()}}


class DCGANTrainer(_GANTrainer):
    method = "dcgan"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        super().__init__(image_size, tcfg, device, critic=False)

    def step(self, real: torch.Tensor) -> dict[str, float]:
        n = real.shape[0]
        with self.autocast():
            fake = self.G(self._z(n))
            loss_d = gan_loss(self.D(real), True) + gan_loss(self.D(fake.detach()), False)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()
        with self.autocast():
            loss_g = gan_loss(self.D(fake), True)
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


class WGANGPTrainer(_GANTrainer):
    method = "wgan_gp"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        super().__init__(image_size, tcfg, device, critic=True)
        self.n_critic = tcfg["n_critic"]
        self.gp_weight = tcfg["gp_weight"]

    @classmethod
    def build(cls, images, tcfg, device, memory=None, latents=None) -> WGANGPTrainer:
        trainer = cls(images.shape[-1], tcfg, device)
        trainer.set_pool(images)
        return trainer

    def step(self, real: torch.Tensor) -> dict[str, float]:
        n = real.shape[0]
        # The loop hands one real batch; the other critic updates draw their own, from the
        # same images and the same (checkpointed) RNG.
        pool = self._pool
        for i in range(self.n_critic):
            batch = real if i == 0 else pool[torch.randint(pool.shape[0], (n,), device=self.device)]
            with self.autocast():
                fake = self.G(self._z(n)).detach()
                d_real, d_fake = self.D(batch), self.D(fake)
                gp = gradient_penalty(self.D, batch, fake)
                loss_d = gan_loss(d_real, True, "wgangp") + gan_loss(d_fake, False, "wgangp") + self.gp_weight * gp
            w_dist = d_real.float().mean() - d_fake.float().mean()
            self.opts["D"].zero_grad(set_to_none=True)
            loss_d.backward()
            self.opts["D"].step()
        with self.autocast():
            loss_g = gan_loss(self.D(self.G(self._z(n))), True, "wgangp")
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "w_distance": w_dist.item(), "gp": gp.item()}

    def set_pool(self, images: torch.Tensor) -> None:
        """The full training set, for the extra critic batches."""
        self._pool = images
