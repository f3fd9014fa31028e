"""Training of the Table 1 baselines on the positron images, each with the standard settings
of its paper (``training.optim``) under one budget for every method (``training.budget``:
the same number of real images seen by the discriminator, by default):

- ``vae``: :class:`~positrongan.models.vae.ConvVAE` on the positron images (negative ELBO);
  one update = one Adam step; samples decode z ~ N(0, I). Adam 1e-3 (Kingma & Welling 2014).
- ``dcgan``: DCGAN generator and discriminator, non-saturating GAN loss; Adam 2e-4, betas
  (0.5, 0.999) (Radford et al. 2016, §4).
- ``wgan_gp``: the same generator, a batch-norm-free critic, Wasserstein loss with gradient
  penalty (lambda 10, computed in float32); ``n_critic`` = 5 critic updates (each on its own
  real batch) per generator update; Adam 1e-4, betas (0, 0.9) (Gulrajani et al. 2017, Alg. 1).

``training.baseline_apg`` > 0 adds ours' feature-matching loss L_APG (eq. 9) on the
discriminator's stage outputs to the DCGAN and WGAN-GP generator losses (the "+APG" rows);
``training.diffaugment`` augments every discriminator input (Zhao et al. 2020's DiffAugment).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..models.baselines import DCGANDiscriminator, DCGANGenerator, wgan_critic
from ..models.diffaugment import diff_augment
from ..models.vae import ConvVAE, vae_loss
from .latents import prior
from .loop import Trainer, adam, autocast_for, fast_device_setup
from .losses import apg_loss, gan_loss, gradient_penalty

log = logging.getLogger(__name__)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def optimiser(tcfg: dict, method: str, params, device: torch.device) -> torch.optim.Adam:
    """Adam with ``training.optim.<method>``'s settings (the method's paper)."""
    o = tcfg["optim"][method]
    return adam(params, o["lr"], o["betas"], device)


class VAETrainer(Trainer):
    method = "vae"

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        self.device = device
        self.beta = tcfg["vae_beta"]
        self.G = ConvVAE(image_size, tcfg["latent_dim"], tcfg["baseline_channels"]).to(device)
        self.nets = {"G": self.G}
        self.opts = {"G": optimiser(tcfg, self.method, self.G.parameters(), device)}
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
        return {"loss": loss.detach(), "recon": rec.detach(), "kl": kl.detach()}

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
    graphable = True

    def __init__(self, image_size: int, tcfg: dict, device: torch.device, critic: bool):
        self.device = device
        self.latent_dim = tcfg["latent_dim"]
        self.G = DCGANGenerator(self.latent_dim, image_size, tcfg["baseline_channels"]).to(device)
        self.D = (wgan_critic if critic else DCGANDiscriminator)(image_size, tcfg["baseline_channels"]).to(device)
        self.nets = {"G": self.G, "D": self.D}
        self.opts = {k: optimiser(tcfg, self.method, net.parameters(), device) for k, net in self.nets.items()}
        self.autocast = autocast_for(device, tcfg["amp"])
        self.lambda_apg = tcfg["baseline_apg"]
        self.augment = tcfg["diffaugment"]
        self.compiled: dict[str, nn.Module] = {}
        fast_device_setup(self, tcfg, device)
        self.g = self.compiled.get("G", self.G)  # what a step calls (compiled or not)
        self.d = self.compiled.get("D", self.D)
        log.info("%s baseline: G %d parameters, D %d parameters", self.method, _count(self.G), _count(self.D))

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return DCGANGenerator(**hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        return net(prior(n, net.latent_dim, next(net.parameters()).device, generator))

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x) if self.augment else x

    def _generator_loss(self, real: torch.Tensor, fake: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The adversarial generator loss, plus lambda * L_APG when ``baseline_apg`` > 0
        (real features without gradient, as in ours). Returns (total, L_APG)."""
        if self.lambda_apg <= 0:
            return gan_loss(self.d(self._aug(fake)), True, mode), torch.zeros((), device=self.device)
        with torch.no_grad():
            _, real_feats = self.d(self._aug(real), features=True)
        logits, fake_feats = self.d(self._aug(fake), features=True)
        apg = apg_loss(real_feats, fake_feats)
        return gan_loss(logits, True, mode) + self.lambda_apg * apg, apg

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

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        with self.autocast():
            fake = self.g(self._z(n))
            loss_d = gan_loss(self.d(self._aug(real)), True) + gan_loss(self.d(self._aug(fake.detach())), False)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()
        with self.autocast():
            loss_g, apg = self._generator_loss(real, fake, "vanilla")
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_apg": apg.detach()}


class WGANGPTrainer(_GANTrainer):
    method = "wgan_gp"
    # Captures correctly (tests/test_graphs.py) but gained 6 % on an H200: the float32 double
    # backward of the penalty keeps the GPU busy already. Eager, so compile + graphs, unchecked
    # for this step, is never tried (docs/benchmarks.md).
    graphable = False

    def __init__(self, image_size: int, tcfg: dict, device: torch.device):
        super().__init__(image_size, tcfg, device, critic=True)
        self.n_critic = tcfg["n_critic"]
        self.real_batches_per_step = self.n_critic
        self.gp_weight = tcfg["gp_weight"]

    @classmethod
    def build(cls, images, tcfg, device, memory=None, latents=None) -> WGANGPTrainer:
        trainer = cls(images.shape[-1], tcfg, device)
        trainer.set_pool(images)
        return trainer

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        # The loop hands one real batch; the other critic updates draw their own, from the
        # same images and the same (checkpointed) RNG.
        pool = self._pool
        for i in range(self.n_critic):
            batch = real if i == 0 else pool[torch.randint(pool.shape[0], (n,), device=self.device)]
            with self.autocast():
                fake = self.g(self._z(n)).detach()
                a_real, a_fake = self._aug(batch), self._aug(fake)
                d_real, d_fake = self.d(a_real), self.d(a_fake)
                loss_d = gan_loss(d_real, True, "wgangp") + gan_loss(d_fake, False, "wgangp")
            # float32, autocast off inside; the eager critic: torch.compile has no double backward.
            gp = gradient_penalty(self.D, a_real, a_fake)
            loss_d = loss_d + self.gp_weight * gp
            w_dist = d_real.float().mean() - d_fake.float().mean()
            self.opts["D"].zero_grad(set_to_none=True)
            loss_d.backward()
            self.opts["D"].step()
        with self.autocast():
            loss_g, apg = self._generator_loss(batch, self.g(self._z(n)), "wgangp")
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "loss_apg": apg.detach(),
            "w_distance": w_dist.detach(),
            "gp": gp.detach(),
        }

    def set_pool(self, images: torch.Tensor) -> None:
        """The full training set, for the extra critic batches."""
        self._pool = images
