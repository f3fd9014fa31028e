"""The diffusion anchor: MONAI's ``DiffusionModelUNet`` predicting the noise (Ho et al. 2020,
DDPM), trained with MONAI's DDPM scheduler and sampled with its DDIM scheduler (Song et al.
2021, eta = 0: deterministic given the initial noise).

MONAI (and einops, which its UNet's middle attention block needs) is imported when a network
is built, so importing this module (the method registry does) needs neither.
"""

from __future__ import annotations

import torch
from torch import nn


def unet_channels(channels: int) -> tuple[int, int, int]:
    """The UNet's three levels from ``training.baseline_channels`` c: (c / 2, c, c), at least 4."""
    half = max(4, channels // 2)
    return (half, max(4, channels), max(4, channels))


class DiffusionGenerator(nn.Module):
    """A noise-predicting UNet plus its schedules.

    Params:
        image_size: S (a multiple of 4: the UNet halves twice).
        channels: width c (levels (c/2, c, c), one residual block each, attention only in the
            middle block, as MONAI always puts one there).
        timesteps: DDPM training steps T (linear beta schedule 1e-4 .. 0.02, Ho et al.).
        ddim_steps: DDIM sampling steps.
    """

    def __init__(self, image_size: int, channels: int, timesteps: int = 1000, ddim_steps: int = 50):
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        if image_size % 4:
            raise ValueError(f"the diffusion UNet needs an image size divisible by 4, got {image_size}")
        self.hparams = {
            "image_size": image_size,
            "channels": channels,
            "timesteps": timesteps,
            "ddim_steps": ddim_steps,
        }
        ch = unet_channels(channels)
        groups = 4 if all(c % 4 == 0 for c in ch) else 1
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=ch,
            attention_levels=(False, False, False),
            num_res_blocks=1,
            norm_num_groups=groups,
            num_head_channels=ch[-1],
        )
        self.image_size = image_size
        self.timesteps = timesteps
        self.ddim_steps = ddim_steps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The predicted noise of x_t (B, 1, S, S) at integer steps t (B,)."""
        return self.unet(x, t)

    def train_scheduler(self):
        from monai.networks.schedulers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.timesteps, schedule="linear_beta")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n images (n, 1, S, S) in [-1, 1] by DDIM (eta 0) from noise drawn with ``generator``."""
        from monai.networks.schedulers import DDIMScheduler

        device = next(self.parameters()).device
        scheduler = DDIMScheduler(num_train_timesteps=self.timesteps, schedule="linear_beta", clip_sample=True)
        scheduler.set_timesteps(self.ddim_steps, device=device)
        x = torch.randn(n, 1, self.image_size, self.image_size, generator=generator, device=device)
        for t in scheduler.timesteps:
            eps = self.unet(x, torch.full((n,), int(t), device=device, dtype=torch.long))
            x, _ = scheduler.step(eps, int(t), x, eta=0.0)
        return x.clamp(-1, 1)
