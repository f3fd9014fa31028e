"""The adversarial losses of every GAN method, in one place (as pix2pix's ``GANLoss``), and
the two extra terms: the APG feature matching of ours (eq. 9) and the WGAN-GP penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_MODES = ("vanilla", "wgangp")


def gan_loss(output: torch.Tensor, target_real: bool, mode: str = "vanilla") -> torch.Tensor:
    """The loss of a discriminator output against the label real or fake.

    ``vanilla``: binary cross-entropy on the logits (the non-saturating generator loss when a
    generator asks for ``target_real=True`` on its fakes). ``wgangp``: minus the mean critic
    value for real, plus it for fake. Computed in float32 (also under bf16 autocast).

    Params:
        output: logits or critic values, any shape.
        target_real: the label the loss pulls towards.
        mode: ``vanilla`` or ``wgangp``.
    Returns:
        A scalar.
    """
    output = output.float()
    if mode == "vanilla":
        target = torch.ones_like(output) if target_real else torch.zeros_like(output)
        return F.binary_cross_entropy_with_logits(output, target)
    if mode == "wgangp":
        return -output.mean() if target_real else output.mean()
    raise ValueError(f"mode must be one of {GAN_MODES}, got {mode!r}")


def apg_loss(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """L_APG (eq. 9): sum over layers of the L1 distance of batch-mean features over W_i.

    Params:
        real_feats, fake_feats: per-layer discriminator outputs (B, C, H, W) of the same shapes.
    Returns:
        A scalar; zero when the two batches have the same mean features.
    """
    total = real_feats[0].new_zeros(())
    for r, f in zip(real_feats, fake_feats):
        total = total + (r.float().mean(0) - f.float().mean(0)).abs().sum() / r[0].numel()
    return total


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] on random interpolates x_hat
    (Gulrajani et al. 2017, eq. 3).

    Always computed in float32, autocast off: the penalty differentiates the critic's input
    gradient, whose norm bf16 (8 mantissa bits) rounds to ~0.4 %, i.e. a noise of the order of
    the penalty's own |norm - 1| near the optimum."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    with torch.autocast(real.device.type, enabled=False):
        x_hat = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).float().sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
