"""Training of "ours": attention memory + DenseNet generator + PatchGAN (paper §3.3-3.4, §4.1).

Loss (eq. 9-10): L = L_GAN + lambda * L_APG. L_GAN is the non-saturating GAN loss on the
mean patch logit. L_APG matches, layer by layer, the batch-mean discriminator features of
real positron images and of generated ones: sum_i (1/W_i) || E[D_i(x)] - E[D_i(G(a))] ||_1,
W_i the number of elements of layer i. G, W_a (and optionally the memory and the CT
encoder) share one Adam optimiser; D has its own; both lr 2e-4, beta1 0.5 (paper §4.1).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..models.diffaugment import diff_augment
from ..models.discriminator import PatchDiscriminator, depth_for
from ..models.generator import MemoryGenerator
from ..models.memory import effective_slots
from .ema import EMA
from .latents import CTEncoderLatents, prior
from .loop import Trainer, adam, autocast_for, fast_device_setup
from .losses import apg_loss, gan_loss

log = logging.getLogger(__name__)


class OursTrainer(Trainer):
    """Params:
    latents: a :class:`CTLatents` or :class:`CTEncoderLatents` (the query source).
    memory: (M, k) memory vectors y_s.
    image_size: training image side.
    tcfg: the ``training`` section.
    device: torch device.
    """

    method = "ours"
    graphable = True

    def __init__(self, latents: nn.Module, memory: torch.Tensor, image_size: int, tcfg: dict, device: torch.device):
        self.device = device
        self.latents = latents.to(device)
        self.noise_dim = tcfg["noise_dim"]
        self.lambda_apg = tcfg["lambda_apg"]
        self.augment = tcfg["diffaugment"]
        self.G = MemoryGenerator(
            latents.dim,
            memory,
            self.noise_dim,
            image_size,
            channels=tcfg["g_channels"],
            growth=tcfg["growth_rate"],
            layers=tcfg["dense_layers"],
            train_memory=tcfg["train_memory"],
            memory_mode=tcfg["memory"],
            temperature=tcfg["attention_temperature"],
            normalise=tcfg["attention_norm"],
        ).to(device)
        self.query = tcfg["query"]
        self.D = PatchDiscriminator(tcfg["d_channels"], depth_for(image_size, tcfg["receptive_field"])).to(device)
        log.info(
            "ours: G %d parameters, PatchGAN D %d parameters, receptive field %d px at %d px",
            sum(p.numel() for p in self.G.parameters()),
            sum(p.numel() for p in self.D.parameters()),
            self.D.receptive_field,
            image_size,
        )
        w_a = self.G.attention.w_a
        g_params = [p for p in self.G.parameters() if p is not w_a]  # the memory too when trainable
        self.nets = {"G": self.G, "D": self.D}
        if isinstance(self.latents, CTEncoderLatents):
            g_params += list(self.latents.vae.encoder.parameters())
            g_params += list(self.latents.vae.fc_mu.parameters()) + list(self.latents.vae.fc_logvar.parameters())
            self.nets["encoder"] = self.latents.vae
        betas = (tcfg["beta1"], tcfg["beta2"])
        # W_a in its own parameter group: training.wa_lr (null = the generator's lr).
        wa_lr = tcfg["wa_lr"] if tcfg["wa_lr"] is not None else tcfg["lr"]
        self.opts = {
            "G": adam([{"params": g_params}, {"params": [w_a], "lr": wa_lr}], tcfg["lr"], betas, device),
            "D": adam(self.D.parameters(), tcfg["lr"], betas, device),
        }
        self.compiled: dict[str, nn.Module] = {}
        fast_device_setup(self, tcfg, device)
        self.g = self.compiled.get("G", self.G)  # what a step calls (compiled or not)
        self.d = self.compiled.get("D", self.D)
        self.ema = EMA(self.G, tcfg["ema"]) if tcfg["ema"] is not None else None
        self.w_a0 = self.G.attention.w_a.detach().clone()  # for summary()'s wa_change
        self.autocast = autocast_for(device, tcfg["amp"])
        # Options that change what is trained are reported as a separate variant of ours.
        options = [("diffaugment", tcfg["diffaugment"]), ("ema", self.ema is not None)]
        options += [("encoder", tcfg["train_encoder"]), ("memory", tcfg["train_memory"])]
        self.variant = "+".join(["ours"] + [name for name, on in options if on])
        if tcfg["memory"] != "attention" or tcfg["query"] != "ct":
            self.variant += f" (memory={tcfg['memory']}, query={tcfg['query']})"

    @classmethod
    def build(cls, images, tcfg, device, memory=None, latents=None) -> OursTrainer:
        return cls(latents, memory, images.shape[-1], tcfg, device)

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return MemoryGenerator.from_hparams(hparams)

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        device = next(net.parameters()).device
        if z is None:
            z = prior(n, net.latent_dim, device, generator)
        noise = torch.randn(n, net.noise_dim, generator=generator, device=device) if net.noise_dim else None
        return net(z, noise)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x) if self.augment else x

    def _query(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z from the CT latents, or from N(0, I) for the ``training.query = prior`` ablation."""
        if self.query == "prior":
            return prior(n, self.latents.dim, self.device, generator)
        return self.latents(n, generator)

    def _fake(self, n: int) -> torch.Tensor:
        z = self._query(n)
        noise = torch.randn(n, self.noise_dim, device=self.device) if self.noise_dim else None
        return self.g(z, noise)

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        with self.autocast():
            fake = self._fake(n)
            # Discriminator: real -> 1, generated -> 0 on the mean patch logit.
            d_real = self.d(self._aug(real))
            d_fake = self.d(self._aug(fake.detach()))
            loss_d = gan_loss(d_real, True) + gan_loss(d_fake, False)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()

        with self.autocast():
            with torch.no_grad():
                _, real_feats = self.d(self._aug(real), features=True)
            logits, fake_feats = self.d(self._aug(fake), features=True)
            loss_gan = gan_loss(logits, True)
            loss_apg = apg_loss(real_feats, fake_feats)
            loss_g = loss_gan + self.lambda_apg * loss_apg
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()
        # Detached device tensors: the loop reads them once per checkpoint interval, so the
        # GPU never waits for the host here.
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "loss_gan": loss_gan.detach(),
            "loss_apg": loss_apg.detach(),
            "d_real": torch.sigmoid(d_real.detach().float()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach().float()).mean(),
        }

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.G)

    def _sampling_G(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.G

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        G = self._sampling_G()
        was = G.training
        G.eval()
        lat_was = self.latents.training
        self.latents.eval()
        z = self._query(n, generator)
        noise = torch.randn(n, self.noise_dim, generator=generator, device=self.device) if self.noise_dim else None
        out = G(z, noise)
        G.train(was)
        self.latents.train(lat_was)
        return out

    @torch.no_grad()
    def summary(self, n: int = 256) -> dict[str, float]:
        """The attention after training, over ``n`` queries drawn as in sampling (fixed seed):
        ``attention_slots`` = mean exp(entropy) of the weights (the memory's size M when
        uniform, 1 when each query picks one slot), ``attention_max`` = mean largest weight,
        ``wa_change`` = ||W_a - W_a(0)|| / ||W_a(0)||."""
        G = self._sampling_G()
        att = G.attention
        g = torch.Generator(device=self.device).manual_seed(0x5107)
        lat_was = self.latents.training
        self.latents.eval()
        z = self._query(n, g)
        self.latents.train(lat_was)
        _, a = att(z.float())
        return {
            "attention_slots": float(effective_slots(a)),
            "attention_max": float(a.max(dim=1).values.mean()),
            "memory_slots": float(a.shape[1]),
            "wa_change": float((att.w_a - self.w_a0).norm() / self.w_a0.norm()),
        }

    def state(self) -> dict[str, Any]:
        return {"ema": self.ema.shadow.state_dict()} if self.ema is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.shadow.load_state_dict(state["ema"])

    def export(self) -> dict[str, Any]:
        G = self._sampling_G()
        blob: dict[str, Any] = {
            "hparams": dict(self.G.hparams),
            "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
            "variant": self.variant,
            "ema": self.ema is not None,
            "diffaugment": self.augment,
            "query": self.query,
        }
        if isinstance(self.latents, CTEncoderLatents):
            # The fine-tuned encoder's latents replace vae/latents.npz when sampling.
            blob["ct_mu"], blob["ct_logvar"] = self.latents.encode_all()
        return blob
